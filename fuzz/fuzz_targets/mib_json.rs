#![no_main]
//! Fuzz target `mib_json`: see `headcode_fuzz::drivers::mib_json` for what it feeds where.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An Err is the right answer to a bad file; only panics and aborts are findings.
    headcode_fuzz::drivers::show(headcode_fuzz::drivers::mib_json(data));
});

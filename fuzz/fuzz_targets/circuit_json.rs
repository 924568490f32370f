#![no_main]
//! Fuzz target `circuit_json`: see `headcode_fuzz::drivers::circuit_json` for what it feeds where.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An Err is the right answer to a bad file; only panics and aborts are findings.
    headcode_fuzz::drivers::show(headcode_fuzz::drivers::circuit_json(data));
});

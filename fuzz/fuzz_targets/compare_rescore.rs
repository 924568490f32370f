#![no_main]
//! Fuzz target `compare_rescore`: see `headcode_fuzz::drivers::compare_rescore` for what it feeds where.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An Err is the right answer to a bad file; only panics and aborts are findings.
    headcode_fuzz::drivers::show(headcode_fuzz::drivers::compare_rescore(data));
});

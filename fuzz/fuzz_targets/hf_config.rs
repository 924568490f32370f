#![no_main]
//! Fuzz target `hf_config`: see `headcode_fuzz::drivers::hf_config` for what it feeds where.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An Err is the right answer to a bad file; only panics and aborts are findings.
    headcode_fuzz::drivers::show(headcode_fuzz::drivers::hf_config(data));
});

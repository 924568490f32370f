//! Checks of the GPU path against the CPU path: every kernel against its CPU reference
//! ([`selftest`]) and the whole `discover` run on both devices ([`end_to_end`]). They sit
//! above the pipeline and the backend because they drive both.
pub mod end_to_end;
pub mod selftest;

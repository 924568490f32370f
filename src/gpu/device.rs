//! What bounds the device, read from its attributes: the numbers the hardware floors
//! (`bench::floor`) are computed from. Plain data, so the floors' arithmetic is tested on
//! the CPU.
use serde::{Deserialize, Serialize};

/// What bounds the device, read from its attributes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DeviceLimits {
    pub sms: u32,
    /// Peak SM clock (kHz), as the driver reports it.
    pub clock_khz: u32,
    /// FP32 FMA lanes per SM for the compute capability (0 when unknown).
    pub fp32_lanes_per_sm: u32,
    /// DRAM clock (kHz) and bus width (bits); DDR, so bandwidth = 2 · clock · width / 8.
    pub mem_clock_khz: u32,
    pub mem_bus_bits: u32,
    pub l2_bytes: u64,
}

/// FP32 lanes per SM by compute capability (CUDA C Programming Guide, "Arithmetic
/// Instructions" throughput table); 0 for an unknown one, which disables the compute floor.
pub fn fp32_lanes_per_sm(major: i32, minor: i32) -> u32 {
    match (major, minor) {
        (6, 0) | (7, _) | (8, 0) => 64,
        (6, _) | (8, _) | (9, 0) | (10, _) | (12, _) => 128,
        _ => 0,
    }
}

impl DeviceLimits {
    /// Peak FP32 rate of one SM (FLOP/s; an FMA counts 2).
    pub fn sm_flops(&self) -> f64 {
        2.0 * self.fp32_lanes_per_sm as f64 * self.clock_khz as f64 * 1e3
    }
    pub fn peak_flops(&self) -> f64 {
        self.sm_flops() * self.sms as f64
    }
    /// Peak DRAM bandwidth (bytes/s).
    pub fn dram_bytes_per_s(&self) -> f64 {
        2.0 * self.mem_clock_khz as f64 * 1e3 * self.mem_bus_bits as f64 / 8.0
    }
}

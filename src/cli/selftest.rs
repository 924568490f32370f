//! `headcode selftest`: every CUDA kernel against its CPU reference, and `discover` end to
//! end on both devices.
use anyhow::{bail, Result};
use clap::Args;
use headcode::check::selftest::{selftest, SelfTestOptions};
use headcode::say;

use super::DeviceArg;

#[derive(Args)]
pub struct SelftestArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    device: DeviceArg,
    /// Smaller shapes and shorter training runs.
    #[arg(long)]
    quick: bool,
    /// Only headcode's kernels: skip the end-to-end `discover` check (candle's kernels).
    #[arg(long)]
    kernels_only: bool,
    /// IOI pairs in the end-to-end check (default 32, or 12 with --quick).
    #[arg(long)]
    e2e_pairs: Option<usize>,
    /// SAE training steps in the end-to-end check (default 500, or 100 with --quick).
    #[arg(long)]
    e2e_steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(a: &SelftestArgs) -> Result<()> {
    if a.device == DeviceArg::Cpu {
        bail!("selftest compares GPU kernels with their CPU references: use --device cuda (CPU parity is covered by `cargo test`)");
    }
    let r = selftest(&SelfTestOptions {
        seed: a.seed,
        quick: a.quick,
        kernels_only: a.kernels_only,
        e2e_pairs: a.e2e_pairs,
        e2e_steps: a.e2e_steps,
        print: true,
    })?;
    say!(
        "selftest: {} passed, {} failed on {}",
        r.passed,
        r.failed,
        r.device
    );
    if !r.all_passed {
        bail!("selftest FAILED");
    }
    Ok(())
}

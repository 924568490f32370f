//! `headcode bench`: per-stage timings on the CPU or the GPU.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use headcode::bench::BenchRequest;

use super::DeviceArg;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// gpt2-small-shape | gpt2-xl-shape | qwen2.5-0.5b-shape | llama-3.2-1b-shape |
    /// gemma-2-2b-shape | llama-3.1-8b-shape (random weights; timing does not depend on
    /// them), or a real model: a path or a known name such as smollm2-135m (its head layout
    /// for the kernel stages)
    #[arg(long, default_value = "gpt2-small-shape")]
    model: String,
    /// Timed runs per stage.
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// Prompts for the forward + hooks stages (default: 64 on the CPU; 500 on CUDA, the
    /// workload of the targets).
    #[arg(long)]
    prompts: Option<usize>,
    /// Time the baselines instead (ACDC head and edge tests, one EAP batch) on PAIRS
    /// prompt pairs; on CUDA also checks the edge test against the CPU.
    #[arg(long)]
    baselines: bool,
    #[arg(long, default_value_t = 32)]
    pairs: usize,
    /// SAE training steps: on CUDA instead of the workload's 500 (a quick run; the printed
    /// hardware floors follow it), on the CPU instead of 20 (its rows report ms per step).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    steps: Option<u32>,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Weights' precision (default: f32 for the GPT-2 shapes, bf16 for qwen2.5-0.5b-shape,
    /// llama-3.2-1b-shape, gemma-2-2b-shape and llama-3.1-8b-shape, the device's for a
    /// real model).
    #[arg(long, value_parser = super::parse_dtype)]
    dtype: Option<headcode::model::WeightDtype>,
    /// Time the whole discover on PAIRS IOI pairs instead of the kernel stages (per stage,
    /// with peak memory; on CUDA after the forward + hooks on 2·PAIRS prompts).
    #[arg(long, value_name = "PAIRS")]
    discover: Option<usize>,
    /// Time the CPU forward + hooks on TASK's prompts (ioi | gt | docstring; --prompts of
    /// them, default 500) through the CPU path and through candle's ops, against the floor
    /// a 2048³ GEMM measures on this machine.
    #[arg(long, value_name = "TASK", conflicts_with_all = ["baselines", "discover"])]
    forward: Option<String>,
    /// Prompts per forward chunk for --forward (default: discover's CPU batch, 32).
    #[arg(long, requires = "forward", value_parser = clap::value_parser!(u32).range(1..))]
    batch: Option<u32>,
    /// With --forward: write the prompts' token ids as JSON, for
    /// scripts/peer_cpu_forward.py to time PyTorch on the same batches.
    #[arg(long, requires = "forward")]
    save_tokens: Option<PathBuf>,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    for p in a.json.iter().chain(&a.save_tokens) {
        headcode::report::out::check_file_target(p)?;
    }
    // The GPU paths check for the device themselves; `auto` is the GPU, as before.
    Ok(headcode::bench::run(&BenchRequest {
        gpu: a.device != DeviceArg::Cpu,
        model: a.model.clone(),
        reps: a.reps,
        prompts: a.prompts,
        baselines: a.baselines,
        pairs: a.pairs,
        steps: a.steps,
        json: a.json.clone(),
        dtype: a.dtype,
        discover: a.discover,
        forward: a.forward.clone(),
        batch: a.batch.map(|b| b as usize),
        save_tokens: a.save_tokens.clone(),
    })?)
}

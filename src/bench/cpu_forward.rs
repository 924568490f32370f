//! `bench --forward TASK`: the CPU forward + hooks on a task's prompts (the clean prompts
//! then the corrupted ones, as `discover` runs them), through the CPU path and through
//! candle's ops, against the floor that a dense GEMM measured on the same machine allows.
//! `--save-tokens` writes the prompts' token ids for the PyTorch peer
//! (`scripts/peer_cpu_forward.py`), so both time the same batches.
use candle_core::Device;

use super::floor::{forward_flops, ForwardDims};
use super::BenchRequest;
use crate::error::{write_file, Result};
use crate::gpu::clocks::median;
use crate::hooks::{collect, Collected, Reduce};
use crate::pipeline::discover::CPU_BATCH_SIZE;
use crate::pipeline::prompts::{prepare, Split};
use crate::pipeline::TaskSource;

/// Side of the square GEMM that measures the machine's f32 rate.
const GEMM_SIDE: usize = 2048;

/// Median milliseconds of `reps` runs of `f` after one warm-up, and its last result.
fn timed<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<(f64, T)> {
    let mut last = f()?;
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        last = f()?;
        v.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    Ok((median(&v), last))
}

/// The f32 GEMM rate of this machine (FLOP/s): a 2048³ product through the same `gemm`
/// call the forward makes, on every thread.
pub fn gemm_rate(reps: usize) -> Result<f64> {
    let n = GEMM_SIDE;
    let a: Vec<f32> = (0..n * n)
        .map(|i| ((i % 97) as f32 - 48.0) * 0.01)
        .collect();
    let b: Vec<f32> = (0..n * n)
        .map(|i| ((i % 89) as f32 - 44.0) * 0.01)
        .collect();
    let (ms, _) = timed(reps, || {
        crate::linalg::matmul(&a, n, n, false, &b, n, n, false)
    })?;
    Ok(2.0 * (n as f64).powi(3) / (ms / 1e3))
}

/// max |a − b| / max |b| over z and result.
fn rel_diff(a: &Collected, b: &Collected) -> f32 {
    let one = |x: &[f32], y: &[f32]| {
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
    };
    one(&a.z.data, &b.z.data).max(one(&a.result.data, &b.result.data))
}

pub fn run(a: &BenchRequest, task: &str) -> Result<()> {
    let (mut model, tok): (crate::model::Model, Box<dyn crate::tokenize::Tokenizer>) =
        if crate::model::random::shape(&a.model).is_ok() {
            let m = crate::model::random::random_model(&a.model, 0, &Device::Cpu, a.dtype)?;
            (m, Box::new(crate::tokenize::Gpt2Tokenizer::new()?))
        } else {
            let spec = crate::model::ModelSpec::resolve(&a.model)?;
            let opts = crate::model::LoadOptions {
                dtype: a.dtype,
                ..Default::default()
            };
            crate::model::load(&spec, &opts)?
        };
    let pairs = (a.prompts.unwrap_or(500) / 2).max(1);
    let prep = prepare(
        &TaskSource::parse(task)?,
        tok.as_ref(),
        pairs,
        0,
        true,
        Split::All,
    )?;
    let mut tokens = prep.clean.clone();
    tokens.extend(prep.corrupt.iter().cloned());
    let batch = a.batch.unwrap_or(CPU_BATCH_SIZE).max(1);
    let n_tokens: usize = tokens.iter().map(Vec::len).sum();
    if let Some(p) = &a.save_tokens {
        write_file(
            p,
            serde_json::to_string(&serde_json::json!({
                "model": a.model, "task": task, "batch": batch, "tokens": tokens,
            }))?,
        )?;
    }
    let reps = a.reps.max(1);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    say!(
        "CPU forward + hooks, {} ({}), {} {task} prompts ({n_tokens} tokens), batch {batch}, {threads} threads, median of {reps}",
        model.source,
        model.dtype(),
        tokens.len()
    );
    let rate = gemm_rate(reps)?;
    // The arithmetic of the forward (projections, MLP, causal attention, last-position
    // logits), prompt by prompt at its own length.
    let flops: f64 = tokens
        .iter()
        .map(|s| forward_flops(&ForwardDims::for_config(&model.cfg, 1, s.len())))
        .sum();
    let floor_ms = 1e3 * flops / rate;
    let hook = |m: &crate::model::Model| collect(m, &tokens, Reduce::Mean, batch, |_| {});
    let (cpu_ms, cpu) = timed(reps, || hook(&model))?;
    model.use_candle_forward(true);
    let (candle_ms, candle) = timed(reps, || hook(&model))?;
    model.use_candle_forward(false);
    let diff = rel_diff(&cpu, &candle);
    let tok_s = |ms: f64| n_tokens as f64 / (ms / 1e3);
    say!(
        "  GEMM {GEMM_SIDE}^3 (f32, gemm crate)             {:>10.1} GFLOP/s",
        rate / 1e9
    );
    say!(
        "  forward arithmetic                            {:>10.3} TFLOP -> floor {:.0} ms at that rate",
        flops / 1e12,
        floor_ms
    );
    say!(
        "  forward + hooks, CPU path                     {cpu_ms:>10.1} ms  {:.0} tokens/s, {:.2}x the floor",
        tok_s(cpu_ms),
        cpu_ms / floor_ms
    );
    say!(
        "  forward + hooks, candle ops                   {candle_ms:>10.1} ms  {:.0} tokens/s, {:.2}x the floor",
        tok_s(candle_ms),
        candle_ms / floor_ms
    );
    say!(
        "  CPU path / candle: {:.2}x faster; z and result agree to {diff:.1e} (max rel)",
        candle_ms / cpu_ms
    );
    if let Some(p) = &a.json {
        write_file(
            p,
            serde_json::to_string_pretty(&serde_json::json!({
                "device": "cpu", "model": a.model, "dtype": model.dtype(), "task": task,
                "prompts": tokens.len(), "tokens": n_tokens, "batch": batch,
                "threads": threads, "reps": reps,
                "gemm_gflops": rate / 1e9, "forward_tflop": flops / 1e12, "floor_ms": floor_ms,
                "forward_hooks_ms": cpu_ms, "forward_hooks_candle_ms": candle_ms,
                "z_result_max_rel_diff": diff,
            }))?,
        )?;
    }
    Ok(())
}

//! The CPU bench: forward + hooks, SAE training (shared and per head), and encode + score,
//! through the library's CPU path on a named shape or a real model.
use candle_core::Device;

use super::forward::{bench_model, bench_prompts};
use super::BenchRequest;
use crate::error::{write_file, Error, Result};
use crate::gpu::clocks::median;
use crate::hooks::{collect, Reduce};

/// Time each CPU stage (median of `reps` after one warm-up) and print the table.
pub fn run(a: &BenchRequest) -> Result<()> {
    let model = bench_model(&a.model, &Device::Cpu, a.dtype)?;
    let cfg = model.cfg.clone();
    let heads = cfg.n_heads_total();
    let prompts = bench_prompts(a.prompts.unwrap_or(64).max(2), cfg.d_vocab);
    let reps = a.reps.max(1);
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        let mut v = Vec::new();
        for _ in 0..reps {
            let t0 = std::time::Instant::now();
            f()?;
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&v))
    };
    let mut rows: Vec<(String, f64, String)> = Vec::new();
    let mut meter = crate::memory::MemoryMeter::new(None);
    let mut col = None;
    let ms = time(&mut || {
        col = Some(collect(&model, &prompts, Reduce::Mean, 32, |_| {})?);
        Ok(())
    })?;
    let tok_s = (prompts.len() * 18) as f64 / (ms / 1e3);
    rows.push((
        format!("forward + hooks ({} prompts x 18 tokens)", prompts.len()),
        ms,
        format!("{tok_s:.0} tokens/s"),
    ));
    meter.stage_end("forward_hooks");
    let col = col.ok_or_else(|| Error::InvalidInput("no activations".into()))?;
    let k = 10.min(prompts.len());
    let x: Vec<f32> = col.result.data[..k * heads * cfg.d_model].to_vec();
    let xz: Vec<f32> = col.z.data[..k * heads * cfg.d_head].to_vec();
    let steps = a.steps.map_or(20, |s| s as usize); // ms/step is what the CPU rows report
    let sc = crate::sae::SaeConfig {
        steps,
        ..Default::default()
    };
    let ms = time(&mut || crate::sae::train_shared(&x, k * heads, cfg.d_model, &sc).map(|_| ()))?;
    rows.push((
        format!(
            "shared SAE {}x{}->200, {steps} steps",
            k * heads,
            cfg.d_model
        ),
        ms,
        format!("{:.1} ms/step", ms / steps as f64),
    ));
    meter.stage_end("sae_shared");
    let ms = time(&mut || crate::sae::train_per_head(&xz, k, heads, cfg.d_head, &sc).map(|_| ()))?;
    rows.push((
        format!(
            "{heads} per-head SAEs on z ({k}x{}->200), {steps} steps",
            cfg.d_head
        ),
        ms,
        format!("{:.1} ms/step", ms / steps as f64),
    ));
    meter.stage_end("sae_per_head");
    let (sae, _) = crate::sae::train_shared(&x, k * heads, cfg.d_model, &sc)?;
    let n = col.result.batch();
    let is_pos: Vec<bool> = (0..n).map(|i| i < n / 2).collect();
    let ms = time(&mut || {
        let t = crate::codes::CodeTable::from_shared(
            &sae,
            &col.result.data,
            n,
            heads,
            is_pos.clone(),
            Default::default(),
        )?;
        crate::score::node_scores(&t, false)?;
        Ok(())
    })?;
    rows.push((
        format!("encode + argmax + node score ({n} prompts)"),
        ms,
        String::new(),
    ));
    meter.stage_end("encode_score");
    let memory = meter.peaks();
    say!(
        "CPU bench, {}, {} threads, median of {reps}",
        model.source,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (name, ms, note) in &rows {
        say!("  {name:<55} {ms:>10.1} ms  {note}");
    }
    say!("  {}", memory.summary());
    if let Some(p) = &a.json {
        let j: Vec<_> = rows
            .iter()
            .map(|(n, m, note)| serde_json::json!({"stage": n, "median_ms": m, "note": note}))
            .collect();
        write_file(
            p,
            serde_json::to_string_pretty(
                &serde_json::json!({"device": "cpu", "model": a.model, "dtype": model.dtype(),
                    "reps": reps, "stages": j, "memory": memory}),
            )?,
        )?;
    }
    Ok(())
}

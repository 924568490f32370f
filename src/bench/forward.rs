//! The model's forward + hooks on the GPU, timed the ways `discover` and `collect` use it
//! (with the pass's FP32 floor and parity against the CPU), and the whole
//! `discover --device cuda` on a random GPT-2-small-shape model.
use candle_core::Device;

use super::floor::DeviceLimits;
use crate::error::Result;
use crate::gpu::clocks::median;
use crate::hooks::{collect, HookPoint, Reduce};
use crate::model::{LoadOptions, Model, ModelSpec};

/// The model forward + hooks through candle's CUDA backend: `n_prompts` × 18 tokens, timed
/// the ways `discover` and `collect` use it, plus parity of z and result against the CPU
/// forward on the same weights (f32 and TF32 GEMMs).
pub fn gpu_forward_bench(
    shape: &str,
    dtype: Option<crate::model::WeightDtype>,
    reps: usize,
    n_prompts: usize,
    limits: Option<DeviceLimits>,
) -> Result<serde_json::Value> {
    use crate::hooks::collect_on_device;
    let dev = crate::gpu::cuda_device()?;
    let gpu_model = bench_model(shape, &dev, dtype)?;
    // Parity against the CPU and the TF32 timing apply to f32 models the CPU can hold
    // (the GPT-2 shapes and real checkpoints): a bf16 8B shape has neither.
    let f32_model = gpu_model.dtype() == crate::model::WeightDtype::F32;
    // at least the 8 of the CPU parity check below
    let n_prompts = n_prompts.max(8);
    let prompts = bench_prompts(n_prompts, gpu_model.cfg.d_vocab);
    // Wall clock around a device synchronise: one warm-up, then the median of `reps`.
    let timed = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?;
        dev.synchronize()?;
        let mut v = Vec::new();
        for _ in 0..reps {
            let t0 = std::time::Instant::now();
            f()?;
            dev.synchronize()?;
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(&v))
    };
    let on_device = |m: &Model| -> Result<crate::hooks::DeviceCollected> {
        collect_on_device(m, &prompts, Reduce::Mean, 500, |_| {})
    };
    // What `discover --device cuda` does: activations stay on the device and the task
    // metrics read compact last-position rows (two kept tokens per row, as for IOI).
    let device_ms = timed(&mut || on_device(&gpu_model).map(|_| ()))?;
    // two distinct token ids inside any vocabulary of 3 or more
    let v = gpu_model.cfg.d_vocab as u32;
    let keep = vec![vec![v / 3, 2 * v / 3]; prompts.len()];
    let discover_ms = timed(&mut || {
        crate::tasks::compact_logits(&on_device(&gpu_model)?.last_logits, &keep)?;
        Ok(())
    })?;
    // The same with every logits row copied to the host instead (the earlier discover).
    let full_logits_ms = timed(&mut || {
        on_device(&gpu_model)?.last_logits.to_vec2::<f32>()?;
        Ok(())
    })?;
    // Everything copied to the host (`hooks`, the CPU-side consumers).
    let host_ms = timed(&mut || {
        collect(&gpu_model, &prompts, Reduce::Mean, 500, |_| {})?;
        Ok(())
    })?;
    // The bare forward (no logits, nothing captured) and with last-position logits.
    let stage = |logits: crate::model::LogitsAt| -> Result<f64> {
        timed(&mut || {
            gpu_model.forward(
                &prompts,
                crate::model::ForwardOptions {
                    logits,
                    ..Default::default()
                },
            )?;
            Ok(())
        })
    };
    let bare_ms = stage(crate::model::LogitsAt::None)?;
    let logits_ms = stage(crate::model::LogitsAt::Last)?;
    let dt = gpu_model.dtype();
    if !f32_model {
        say!(
            "forward + hooks (candle CUDA, {shape}, {dt}, {n_prompts} x 18 tokens, mean over positions; median of {reps}):"
        );
        say!("  activations left on the device (as discover)  {device_ms:>9.2} ms");
        say!("  the same + compact logits rows (as discover)  {discover_ms:>9.2} ms");
        say!("  everything copied to the host (collect)       {host_ms:>9.2} ms");
        say!("  bare forward / with last-position logits      {bare_ms:>9.2} / {logits_ms:.2} ms");
        return Ok(serde_json::json!({
            "dtype": dt,
            "median_ms": device_ms,
            "device_resident_ms": device_ms,
            "discover_ms": discover_ms,
            "full_logits_ms": full_logits_ms,
            "host_copy_ms": host_ms,
            "forward_only_ms": bare_ms,
            "forward_logits_ms": logits_ms,
            "reps": reps,
            "pass": serde_json::Value::Null,
        }));
    }
    // Parity on 8 prompts against the CPU path, f32 and TF32 GEMMs.
    let cpu_model = bench_model(shape, &Device::Cpu, dtype)?;
    let few = &prompts[..8];
    let b = collect(&cpu_model, few, Reduce::Mean, 8, |_| {})?;
    let rel = |x: &[f32], y: &[f32]| {
        let scale = y.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
        x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale
    };
    let parity = || -> Result<(f32, f32)> {
        let a = collect(&gpu_model, few, Reduce::Mean, 8, |_| {})?;
        Ok((
            rel(&a.z.data, &b.z.data),
            rel(&a.result.data, &b.result.data),
        ))
    };
    let (ez, er) = parity()?;
    crate::gpu::set_tf32(true)?;
    let tf32 = timed(&mut || on_device(&gpu_model).map(|_| ())).and_then(|ms| Ok((ms, parity()?)));
    crate::gpu::set_tf32(false)?;
    let (tf32_ms, (tz, tr)) = tf32?;
    let ok = ez <= 1e-4 && er <= 1e-4;
    // The pass's FP32 floor (bench::floor::forward_floor): GEMM FLOPs at the device's peak.
    let tokens = prompts.first().map_or(0, Vec::len);
    let floor = limits.map(|lim| {
        use super::floor::{forward_floor, ForwardDims};
        forward_floor(
            &ForwardDims::for_config(&gpu_model.cfg, prompts.len(), tokens),
            &lim,
        )
    });
    say!(
        "forward + hooks (candle CUDA, {shape}, {n_prompts} x 18 tokens, mean over positions; median of {reps}, wall clock to a device synchronise):"
    );
    say!("  activations left on the device (as discover)  {device_ms:>9.2} ms");
    say!("  the same + compact logits rows (as discover)  {discover_ms:>9.2} ms");
    say!("  the same + full logits rows to the host       {full_logits_ms:>9.2} ms");
    say!("  everything copied to the host (collect)       {host_ms:>9.2} ms");
    say!("  bare forward / with last-position logits      {bare_ms:>9.2} / {logits_ms:.2} ms");
    say!("  on the device with TF32 GEMMs                 {tf32_ms:>9.2} ms (vs CPU f32: z {tz:.2e}, result {tr:.2e})");
    if let Some(f) = &floor {
        say!(
            "  FP32 floor of the pass ({:.1} GFLOP at peak)   {:>9.2} ms (the bare forward is {:.1}x it)",
            f.flops / 1e9,
            f.compute_ms,
            bare_ms / f.compute_ms
        );
    }
    say!(
        "  parity vs CPU on 8 prompts, f32: z {ez:.2e}, result {er:.2e} (max |diff| / max |ref|) {}",
        if ok { "PASS" } else { "FAIL" }
    );
    Ok(serde_json::json!({
        "median_ms": device_ms,
        "device_resident_ms": device_ms,
        "discover_ms": discover_ms,
        "full_logits_ms": full_logits_ms,
        "host_copy_ms": host_ms,
        "forward_only_ms": bare_ms,
        "forward_logits_ms": logits_ms,
        "tf32_device_resident_ms": tf32_ms,
        "tf32_parity_z": tz,
        "tf32_parity_result": tr,
        "reps": reps,
        "parity_z": ez,
        "parity_result": er,
        "fp32_floor": floor,
        "pass": ok
    }))
}

/// The whole `discover --device cuda` on a random GPT-2-small-shape model: 250 IOI pairs
/// (500 prompts), 500 SAE steps, every baseline, node and edge scores, no faithfulness.
/// Wall clock of the library call (tokenising the prompts included; loading the model and
/// building the tokenizer not), median of `reps` after one warm-up, with discover's own
/// stage timings of the median run.
pub fn gpu_discover_bench(reps: usize) -> Result<serde_json::Value> {
    use crate::check::end_to_end::{discover_ioi, random_gpt2_small};
    let tok = crate::tokenize::Gpt2Tokenizer::new()?;
    use crate::pipeline::discover::SaeMode;
    let model = random_gpt2_small(&crate::gpu::cuda_device()?)?;
    let mut out = serde_json::Map::new();
    say!("discover --device cuda, random gpt2-small-shape, 250 IOI pairs, 500 steps (median of {reps}, wall clock):");
    for (name, mode, on) in [
        ("per_head_z", SaeMode::PerHead, HookPoint::Z),
        ("shared_result", SaeMode::Shared, HookPoint::Result),
    ] {
        discover_ioi(&model, &tok, true, mode, on, 250, 500)?;
        let mut runs = Vec::new();
        for _ in 0..reps.max(1) {
            let t0 = std::time::Instant::now();
            let r = discover_ioi(&model, &tok, true, mode, on, 250, 500)?;
            runs.push((t0.elapsed().as_secs_f64() * 1e3, r.timings_ms));
        }
        runs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ms, stages) = runs.swap_remove(runs.len() / 2);
        let split: Vec<String> = stages.iter().map(|(k, v)| format!("{k} {v:.1}")).collect();
        say!("  {name:<14} {ms:>9.1} ms  ({})", split.join(", "));
        out.insert(
            name.into(),
            serde_json::json!({"median_ms": ms, "stages_ms": stages, "reps": reps}),
        );
    }
    Ok(serde_json::Value::Object(out))
}

/// The whole `discover` on IOI (`pairs` pairs, GPT-2 tokenizer, the CLI's defaults: one
/// SAE per head on z, `--steps` or 500 steps, no faithfulness) on `a.model` on `dev`: the
/// wall time (median of `reps` after a warm-up when `reps` > 1), the stages' times and
/// peak memory, whole and per stage. Against the built-in IOI circuit at the GPT-2-small
/// shape; without a circuit (no AUC) elsewhere.
pub fn discover_bench(
    a: &super::BenchRequest,
    dev: &Device,
    pairs: usize,
    reps: usize,
) -> Result<serde_json::Value> {
    use crate::pipeline::discover::{CircuitSpec, DiscoverConfig, SaeMode};
    let t0 = std::time::Instant::now();
    let model = bench_model(&a.model, dev, a.dtype)?;
    let load_s = t0.elapsed().as_secs_f64();
    let tok = crate::tokenize::Gpt2Tokenizer::new()?;
    let mut cfg = DiscoverConfig::paper(crate::pipeline::TaskSource::parse("ioi")?);
    cfg.n = pairs;
    cfg.sae_mode = SaeMode::PerHead;
    cfg.on = HookPoint::Z;
    cfg.sae.steps = a.steps.map_or(500, |s| s as usize);
    cfg.faithfulness = None;
    cfg.circuit = match crate::model::random::shape(&a.model) {
        Ok(c) if c.n_layers == 12 && c.n_heads == 12 => CircuitSpec::Named("ioi".into()),
        _ => CircuitSpec::None,
    };
    cfg.gpu = dev.is_cuda();
    if cfg.gpu {
        cfg.batch_size = crate::pipeline::discover::GPU_BATCH_SIZE;
    }
    let where_ = if cfg.gpu { "cuda" } else { "cpu" };
    say!(
        "discover --device {where_}, {} ({}), {pairs} IOI pairs, {} steps, batch {} (model built in {load_s:.1} s):",
        a.model,
        model.dtype(),
        cfg.sae.steps,
        cfg.batch_size
    );
    let run = || crate::pipeline::discover(&model, &tok, &cfg, &mut |_, _, _| {});
    if reps > 1 {
        run()?;
    }
    let mut runs = Vec::new();
    for _ in 0..reps.max(1) {
        let t0 = std::time::Instant::now();
        let r = run()?;
        runs.push((t0.elapsed().as_secs_f64() * 1e3, r));
    }
    runs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (ms, r) = runs.swap_remove(runs.len() / 2);
    let split: Vec<String> = r
        .timings_ms
        .iter()
        .map(|(k, v)| format!("{k} {v:.0}"))
        .collect();
    say!("  total {ms:.0} ms ({})", split.join(", "));
    say!("  {}", r.memory.summary());
    Ok(serde_json::json!({
        "model": a.model,
        "dtype": model.dtype(),
        "device": where_,
        "pairs": pairs,
        "prompts": 2 * pairs,
        "steps": cfg.sae.steps,
        "batch_size": cfg.batch_size,
        "build_model_s": load_s,
        "median_ms": ms,
        "reps": reps,
        "stages_ms": r.timings_ms,
        "memory": r.memory,
        "clean_top1_acc": r.task.clean_top1_acc,
    }))
}

/// The model a bench runs: a named shape with seeded random weights (timing does not depend
/// on them), or else a real checkpoint (a path, or a known name such as `smollm2-135m`).
pub fn bench_model(
    name: &str,
    dev: &Device,
    dtype: Option<crate::model::WeightDtype>,
) -> Result<Model> {
    if crate::model::random::shape(name).is_ok() {
        return crate::model::random::random_model(name, 0, dev, dtype);
    }
    // Not a shape: a model, whose own error says what is wrong with it.
    let spec = ModelSpec::resolve(name)?;
    let opts = LoadOptions {
        device: dev.clone(),
        dtype,
        ..Default::default()
    };
    Ok(crate::model::load(&spec, &opts)?.0)
}

/// `n` fixed prompts of 18 tokens below `vocab`.
pub fn bench_prompts(n: usize, vocab: usize) -> Vec<Vec<u32>> {
    let v = vocab.max(1) as u32;
    (0..n as u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % v).collect())
        .collect()
}

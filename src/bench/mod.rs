//! `headcode bench`: per-stage timings on the CPU or the GPU, with the hardware floors they
//! are judged against. It sits above the pipeline and the GPU backend because it times
//! both.
//! * [`stages`]: the discovery stages' kernels on the GPU at the paper's shapes (CUDA events);
//! * [`forward`]: the model's forward + hooks on the GPU and the whole `discover --device cuda`;
//! * [`cpu`]: the same stages through the CPU path;
//! * [`cpu_forward`]: the CPU forward + hooks on a task's prompts against a GEMM floor;
//! * [`baselines`]: the unit costs of ACDC and EAP;
//! * [`floor`]: the least time the device's peak rates allow for a stage.
use std::path::PathBuf;

use candle_core::Device;

use crate::error::{write_file, Error, Result};

pub mod baselines;
pub mod cpu;
pub mod cpu_forward;
pub mod floor;
pub mod forward;
pub mod stages;

/// What `headcode bench` was asked to time.
#[derive(Debug, Clone)]
pub struct BenchRequest {
    /// On the GPU (CUDA) instead of the CPU.
    pub gpu: bool,
    /// A named shape (`gpt2-small-shape`, `gpt2-xl-shape`; random weights) or a real model
    /// (a path or a built-in name: its head layout for the kernel stages).
    pub model: String,
    /// Timed runs per stage.
    pub reps: usize,
    /// Prompts for the forward + hooks stages (default: 64 on the CPU, 500 on CUDA).
    pub prompts: Option<usize>,
    /// Time the baselines' unit costs instead, on `pairs` prompt pairs.
    pub baselines: bool,
    pub pairs: usize,
    /// SAE training steps instead of the workload's (CUDA: 500; CPU: 20).
    pub steps: Option<u32>,
    /// Where the JSON report goes.
    pub json: Option<PathBuf>,
    /// `--dtype` (default: f32 for the GPT-2 shapes, bf16 for the larger shapes, the
    /// device's default for a real model).
    pub dtype: Option<crate::model::WeightDtype>,
    /// Time the whole `discover` on this many IOI pairs instead of the kernel stages.
    pub discover: Option<usize>,
    /// Time the CPU forward + hooks on this task's prompts instead (`bench --forward`).
    pub forward: Option<String>,
    /// Prompts per forward chunk for `forward` (default: discover's CPU batch).
    pub batch: Option<usize>,
    /// Where `forward` writes the prompts' token ids (for the PyTorch peer).
    pub save_tokens: Option<PathBuf>,
}

impl Default for BenchRequest {
    fn default() -> Self {
        BenchRequest {
            gpu: false,
            model: "gpt2-small-shape".into(),
            reps: 10,
            prompts: None,
            baselines: false,
            pairs: 32,
            steps: None,
            json: None,
            dtype: None,
            discover: None,
            forward: None,
            batch: None,
            save_tokens: None,
        }
    }
}

/// Run the bench `req` asks for, printing its table and writing its JSON.
pub fn run(req: &BenchRequest) -> Result<()> {
    if req.baselines {
        baselines::run(req)
    } else if let Some(task) = &req.forward {
        if req.gpu {
            return Err(Error::InvalidInput(
                "bench --forward times the CPU forward; on CUDA, `bench --device cuda` times the GPU's".into(),
            ));
        }
        cpu_forward::run(req, task)
    } else if let Some(pairs) = req.discover {
        discover_only(req, pairs)
    } else if req.gpu {
        run_gpu(req)
    } else {
        cpu::run(req)
    }
}

/// `bench --discover PAIRS`: the whole `discover` on the model, per stage with peak
/// memory (one run on the CPU; on CUDA the forward + hooks section first, then the median
/// of up to 3 runs after a warm-up). The JSON is written after each section.
fn discover_only(a: &BenchRequest, pairs: usize) -> Result<()> {
    let write = |j: &serde_json::Value| -> Result<()> {
        if let Some(p) = &a.json {
            write_file(p, serde_json::to_string_pretty(j)?)?;
        }
        Ok(())
    };
    if !a.gpu {
        let j = forward::discover_bench(a, &Device::Cpu, pairs, 1)?;
        return write(&serde_json::json!({ "device": "cpu", "discover": j }));
    }
    crate::gpu::require_gpu()?;
    let dev = crate::gpu::cuda_device()?;
    let mut meter = crate::memory::MemoryMeter::new(Some(&dev));
    let limits = crate::gpu::GpuContext::new()?.device_limits();
    let fwd = forward::gpu_forward_bench(
        &a.model,
        a.dtype,
        a.reps.max(3),
        a.prompts.unwrap_or(2 * pairs),
        Some(limits),
    )?;
    meter.stage_end("forward_hooks");
    let mut j = serde_json::json!({
        "device": "cuda",
        "model": a.model,
        "forward_hooks_candle_cuda": fwd,
        "memory": meter.peaks(),
    });
    write(&j)?;
    j["discover_cuda"] = forward::discover_bench(a, &dev, pairs, a.reps.clamp(1, 3))?;
    meter.stage_end("discover");
    j["memory"] = serde_json::to_value(meter.peaks())?;
    write(&j)
}

/// The GPU bench: the kernel stages ([`stages::bench`]), then the forward + hooks and, at
/// the GPT-2-small shape, the whole `discover`. The JSON is rewritten after each section,
/// so a later failure or a time limit (gpu-check.sh runs this under `timeout`) keeps what
/// was measured; a failed section is recorded as {"error": ...} and fails the run after
/// writing.
fn run_gpu(a: &BenchRequest) -> Result<()> {
    use stages::{ModelShape, ShapeDims};
    // A named shape, or a larger shape's or a real checkpoint's head layout for the
    // kernel stages (a shape's from its config alone: its weights are never built here).
    let (model, dims) = match ModelShape::parse(&a.model) {
        Ok(m) => (m, None),
        Err(_) => {
            let c = match crate::model::random::shape(&a.model) {
                Ok(c) => c,
                Err(_) => forward::bench_model(&a.model, &Device::Cpu, a.dtype)?.cfg,
            };
            let d = ShapeDims::for_model(&a.model, c.n_layers, c.n_heads, c.d_head, c.d_model);
            (ModelShape::Gpt2Small, Some(d))
        }
    };
    let r = stages::bench(&stages::BenchOptions {
        model,
        dims: dims.clone(),
        reps: a.reps.max(1),
        steps: a.steps,
        ..Default::default()
    })?;
    let mut meter =
        crate::memory::MemoryMeter::after("kernel_stages", Some(&crate::gpu::cuda_device()?));
    let mut j = serde_json::to_value(&r)?;
    let write = |j: &serde_json::Value| -> Result<()> {
        if let Some(p) = &a.json {
            write_file(p, serde_json::to_string_pretty(j)?)?;
        }
        Ok(())
    };
    write(&j)?;
    let mut failed = Vec::new();
    let mut section = |j: &mut serde_json::Value, key: &str, res: Result<serde_json::Value>| {
        j[key] = res.unwrap_or_else(|e| {
            eprintln!("bench section {key} failed: {e:#}");
            failed.push(key.to_string());
            serde_json::json!({ "error": format!("{e:#}") })
        });
    };
    section(
        &mut j,
        "forward_hooks_candle_cuda",
        forward::gpu_forward_bench(
            &a.model,
            a.dtype,
            a.reps.max(3),
            a.prompts.unwrap_or(500),
            r.device_limits,
        ),
    );
    meter.stage_end("forward_hooks");
    j["memory"] = serde_json::to_value(meter.peaks())?;
    write(&j)?;
    if dims.is_none() && model == ModelShape::Gpt2Small {
        section(&mut j, "discover_cuda", forward::gpu_discover_bench(3));
    } else {
        j["discover_cuda"] = serde_json::Value::Null;
    }
    meter.stage_end("discover");
    j["memory"] = serde_json::to_value(meter.peaks())?;
    write(&j)?;
    if !failed.is_empty() {
        return Err(Error::Failed(format!(
            "bench sections failed: {} (the rest is in the JSON)",
            failed.join(", ")
        )));
    }
    Ok(())
}

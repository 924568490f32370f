//! Per-stage GPU timings at the paper's shapes, measured with CUDA events (median of
//! `reps` runs after `warmup` runs), on device-resident random inputs (timings do not depend
//! on the values). Stages:
//! * `hook_result`: mean over 18 positions of z [500, 18, H, 64] projected by W_O -> [500, H, d_model]
//! * `hook_z`: the same without the projection -> [500, H, 64]
//! * `sae_shared`: one SAE d_model -> 200 on 10 x H rows, 500 Adam steps
//! * `sae_shared_cublas`, `sae_shared_cublas_tf32`: the same through the cuBLAS path
//! * `sae_per_head_z`: H SAEs 64 -> 200, 10 rows each, 500 steps (Auto: the register-tiled
//!   persistent kernel; `sae_per_head_z_untiled`: the untiled one, for comparison)
//! * `sae_per_head_result`: H SAEs d_model -> 200, 10 rows each, 500 steps
//!   (`sae_per_head_result_cublas_tf32`: through the cuBLAS path, GPT-2-small shape only)
//! * `encode_argmax_score`: shared-SAE codes of all 500 x H vectors + node scores |P\N|, |N\P|
//! * `encode_argmax_score_per_head_z`: per-head-SAE codes of z + node scores
//! * `edge_score`: per-head-pair counts of code pairs seen only on positives
//!
//! `pipeline_shared_ms` = hook_result + sae_shared + encode_argmax_score (the paper's method);
//! `pipeline_per_head_z_ms` = hook_z + sae_per_head_z + encode_argmax_score_per_head_z.
//! The report also gives each SAE stage's hardware floor (`bench::floor`), and a kernel-by-kernel
//! breakdown of one batched training step for the shared SAE and the per-head SAEs on result
//! (`step_breakdown`).
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Model shapes the benchmark knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelShape {
    /// GPT-2 small: 12 x 12 heads, d_head 64, d_model 768.
    Gpt2Small,
    /// GPT-2 XL: 48 x 25 heads, d_head 64, d_model 1600.
    Gpt2Xl,
}

impl ModelShape {
    /// Accepts "gpt2-small-shape", "gpt2-small", "small", "gpt2-xl-shape", "gpt2-xl", "xl".
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().trim_end_matches("-shape") {
            "gpt2-small" | "gpt2" | "small" => Ok(ModelShape::Gpt2Small),
            "gpt2-xl" | "xl" => Ok(ModelShape::Gpt2Xl),
            other => Err(Error::InvalidInput(format!(
                "unknown bench model shape {other:?} (expected gpt2-small-shape or gpt2-xl-shape)"
            ))),
        }
    }

    pub fn dims(self) -> ShapeDims {
        let sae = crate::sae::SaeConfig::default();
        let (name, layers, heads_per_layer, d_model) = match self {
            ModelShape::Gpt2Small => ("gpt2-small-shape", 12, 12, 768),
            ModelShape::Gpt2Xl => ("gpt2-xl-shape", 48, 25, 1600),
        };
        ShapeDims {
            name: name.into(),
            prompts: 500,
            positives: 250,
            tokens: 18,
            layers,
            heads_per_layer,
            heads: layers * heads_per_layer,
            d_head: 64,
            d_model,
            features: sae.n_features,
            sae_examples: sae.examples,
            steps: sae.steps as u32,
        }
    }
}

impl ShapeDims {
    /// The bench's workload (500 prompts × 18 tokens, 10 SAE examples, 200 features, 500
    /// steps) at a real model's head layout, e.g. a checkpoint passed to `bench --model`.
    pub fn for_model(
        name: &str,
        layers: usize,
        heads_per_layer: usize,
        d_head: usize,
        d_model: usize,
    ) -> Self {
        ShapeDims {
            name: name.into(),
            layers,
            heads_per_layer,
            heads: layers * heads_per_layer,
            d_head,
            d_model,
            ..ModelShape::Gpt2Small.dims()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeDims {
    pub name: String,
    pub prompts: usize,
    pub positives: usize,
    pub tokens: usize,
    pub layers: usize,
    pub heads_per_layer: usize,
    pub heads: usize,
    pub d_head: usize,
    pub d_model: usize,
    pub features: usize,
    pub sae_examples: usize,
    pub steps: u32,
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub model: ModelShape,
    /// Dimensions to use instead of `model`'s (a real checkpoint's head layout).
    pub dims: Option<ShapeDims>,
    /// Timed runs per stage (>= 10 asked; a stage whose one run exceeds
    /// `stage_budget_s / reps` gets fewer, never under 3; the report says how many).
    pub reps: usize,
    pub warmup: usize,
    pub stage_budget_s: f64,
    pub print: bool,
    /// SAE training steps instead of the workload's 500 (a quick run; the floors follow).
    pub steps: Option<u32>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            model: ModelShape::Gpt2Small,
            dims: None,
            reps: 10,
            warmup: 2,
            stage_budget_s: 30.0,
            print: true,
            steps: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageTiming {
    pub stage: String,
    pub detail: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub reps: usize,
    /// Peak device memory in use during the stage, above the context's baseline (bytes).
    pub peak_mem_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchReport {
    pub device: String,
    pub shape: ShapeDims,
    pub timing_method: String,
    pub stages: Vec<StageTiming>,
    pub pipeline_shared_ms: f64,
    pub pipeline_per_head_z_ms: f64,
    /// Largest device memory in use above the baseline, over all stages (bytes).
    pub peak_mem_bytes: u64,
    /// Device memory in use right after the context was created (bytes).
    pub baseline_mem_bytes: u64,
    /// The device's peak rates, and the floors they set for each SAE stage
    /// (`bench::floor`; counting rule there).
    #[serde(default)]
    pub device_limits: Option<crate::bench::floor::DeviceLimits>,
    #[serde(default)]
    pub floors: Vec<crate::bench::floor::SaeFloor>,
    /// Where a batched training step's time goes, kernel by kernel (`step_breakdown`).
    #[serde(default)]
    pub step_breakdown: Vec<StepBreakdown>,
    /// Where a persistent trainer's step goes, phase by phase (`gpu::clocks`).
    #[serde(default)]
    pub phase_clocks: Vec<PhaseClocksEntry>,
}

/// One persistent trainer's phase profile: its phase-clock twin run once, all steps, on the
/// bench stage's SAE shape (fresh random SAEs and rows).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseClocksEntry {
    /// The bench stage whose trainer this is (e.g. `sae_per_head_z_untiled`).
    pub stage: String,
    pub profile: Option<crate::gpu::clocks::PhaseProfile>,
    /// Set instead of `profile` when the run failed (the stages above still stand).
    #[serde(default)]
    pub error: Option<String>,
}

/// One batched training step taken apart: the trainer's steps launched one at a time (no
/// CUDA graph) with an event after every kernel; medians over `BREAKDOWN_STEPS - 1` steps
/// (the first is dropped). Launch gaps count towards the kernel after them, so the sum
/// (`step_us`) can exceed the graph-replayed step (`stage`'s median / steps).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepBreakdown {
    /// The bench stage this step belongs to (e.g. `sae_shared`).
    pub stage: String,
    /// "Batched", "Cublas FP32" or "Cublas TF32".
    pub path: String,
    pub step_us: f64,
    pub kernels: Vec<crate::gpu::KernelTime>,
    /// Set instead of `kernels` when the breakdown failed (the stages above still stand).
    #[serde(default)]
    pub error: Option<String>,
}

/// Steps profiled per breakdown (the first one dropped).
pub const BREAKDOWN_STEPS: u32 = 11;

impl BenchReport {
    pub fn stage_ms(&self, stage: &str) -> Option<f64> {
        self.stages
            .iter()
            .find(|s| s.stage == stage)
            .map(|s| s.median_ms)
    }
}

pub use crate::gpu::clocks::median;

/// Run the benchmark (requires `--features cuda` and a GPU).
pub fn bench(opts: &BenchOptions) -> Result<BenchReport> {
    #[cfg(feature = "cuda")]
    {
        imp::run(opts)
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = opts;
        Err(Error::NoCuda)
    }
}

/// Receives the bench's stages one at a time, for a harness of its own (`benches/kernels.rs`
/// puts each under criterion). `run(k)` runs the stage `k` times, each after its untimed
/// preparation (e.g. restoring the initial SAE parameters), and returns the summed device
/// time between CUDA events recorded around each run (the device is synchronised before it
/// returns). `elements` is the stage's unit of work for throughput: (prompt, head) pairs for
/// hooks and codes, SAE steps summed over SAEs for trainers, head pairs for the edge score.
/// The returned milliseconds (a per-run time, or 0.0 where the harness keeps its own) feed
/// the pipeline sums of `bench`'s report only.
pub trait StageSink {
    fn stage(
        &mut self,
        name: &str,
        detail: &str,
        elements: u64,
        run: &mut dyn FnMut(u64) -> Result<std::time::Duration>,
    ) -> Result<f64>;
}

/// Every stage of `bench` (the same inputs, shapes and order), handed to `sink` instead of
/// timed into a report. Without CUDA: `Error::NoCuda`.
pub fn visit_stages(opts: &BenchOptions, sink: &mut dyn StageSink) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        let gpu = crate::gpu::GpuContext::new()?;
        imp::stages(&gpu, &imp::shape(opts), sink).map(|_| ())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = (opts, sink);
        Err(Error::NoCuda)
    }
}

#[cfg(feature = "cuda")]
mod imp {
    use cudarc::driver::sys::CUevent_flags;
    use cudarc::driver::CudaSlice;

    use super::*;
    use crate::bench::floor;
    use crate::gpu::cuda::{CudaResultExt, DevSaes};
    use crate::gpu::{GpuContext, HookDims, HookReduce, TrainConfig, TrainPath};

    /// CUDA-event time of one run of `f` on the context's stream.
    fn time_once(gpu: &GpuContext, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        let ctx = gpu.context();
        let stream = gpu.stream();
        let a = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .cuda("event")?;
        let b = ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .cuda("event")?;
        a.record(stream).cuda("event record")?;
        f()?;
        b.record(stream).cuda("event record")?;
        b.synchronize().cuda("event synchronize")?;
        Ok(a.elapsed_ms(&b).cuda("event elapsed")? as f64)
    }

    /// `bench`'s own sink: warm-up, then the median of up to `reps` runs, and the peak
    /// device memory of the stage.
    struct Report<'a> {
        gpu: &'a GpuContext,
        opts: &'a BenchOptions,
        stages: Vec<StageTiming>,
    }

    impl StageSink for Report<'_> {
        fn stage(
            &mut self,
            name: &str,
            detail: &str,
            _elements: u64,
            run: &mut dyn FnMut(u64) -> Result<std::time::Duration>,
        ) -> Result<f64> {
            self.gpu.sync()?;
            self.gpu.reset_mem_peak();
            let base = self.gpu.mem_stats().0;
            let mut once = || run(1).map(|d| d.as_secs_f64() * 1e3);
            let mut first = f64::INFINITY;
            for _ in 0..self.opts.warmup.max(1) {
                first = first.min(once()?);
                if first > 1000.0 {
                    break; // a slow stage (GPT-2-XL per-head SAEs): one warm-up is enough
                }
            }
            let budget_reps = (self.opts.stage_budget_s * 1e3 / first.max(1e-3)).floor() as usize;
            let reps = self.opts.reps.max(1).min(budget_reps.max(3));
            let mut ts = Vec::with_capacity(reps);
            for _ in 0..reps {
                ts.push(once()?);
            }
            let peak = self.gpu.mem_stats().1.saturating_sub(base) as u64;
            let t = StageTiming {
                stage: name.into(),
                detail: detail.into(),
                median_ms: median(&ts),
                min_ms: ts.iter().cloned().fold(f64::INFINITY, f64::min),
                max_ms: ts.iter().cloned().fold(0.0, f64::max),
                reps,
                peak_mem_bytes: peak,
            };
            if self.opts.print {
                crate::say!(
                    "{:>10.3} ms  (min {:.3}, max {:.3}, n={})  {:<32} {}",
                    t.median_ms,
                    t.min_ms,
                    t.max_ms,
                    t.reps,
                    t.stage,
                    t.detail
                );
            }
            let m = t.median_ms;
            self.stages.push(t);
            Ok(m)
        }
    }

    /// Hands each stage to the sink with a runner that times it with CUDA events.
    struct Stages<'a> {
        gpu: &'a GpuContext,
        sink: &'a mut dyn StageSink,
    }

    impl Stages<'_> {
        /// `prep` runs untimed before every run (e.g. restoring the initial SAE params).
        fn stage(
            &mut self,
            name: &str,
            detail: String,
            elements: u64,
            prep: &mut dyn FnMut() -> Result<()>,
            f: &mut dyn FnMut() -> Result<()>,
        ) -> Result<f64> {
            let gpu = self.gpu;
            let mut run = |k: u64| -> Result<std::time::Duration> {
                let mut ms = 0.0;
                for _ in 0..k {
                    prep()?;
                    ms += time_once(gpu, f)?;
                }
                Ok(std::time::Duration::from_secs_f64(ms / 1e3))
            };
            self.sink.stage(name, &detail, elements, &mut run)
        }

        /// Times training `saes` on `x` with `cfg`, restored from `init` before every run.
        #[allow(clippy::too_many_arguments)]
        fn train(
            &mut self,
            name: &str,
            detail: String,
            elements: u64,
            x: &CudaSlice<f32>,
            rows: usize,
            saes: &mut DevSaes,
            init: &DevSaes,
            cfg: &TrainConfig,
        ) -> Result<f64> {
            let gpu = self.gpu;
            let sae = std::cell::RefCell::new(saes);
            self.stage(
                name,
                detail,
                elements,
                &mut || restore(gpu, &mut sae.borrow_mut(), init),
                &mut || {
                    gpu.d_train(x, rows, &mut sae.borrow_mut(), cfg, None)
                        .map(|_| ())
                },
            )
        }
    }

    /// The pipeline sums of `bench`'s report, from the sink's per-stage times.
    pub(super) struct PipelineMs {
        shared: f64,
        per_head_z: f64,
    }

    pub(super) fn shape(opts: &BenchOptions) -> ShapeDims {
        let mut sh = opts.dims.clone().unwrap_or_else(|| opts.model.dims());
        if let Some(steps) = opts.steps {
            sh.steps = steps;
        }
        sh
    }

    fn rand_saes(gpu: &GpuContext, count: usize, d: usize, n: usize, seed: u64) -> Result<DevSaes> {
        let mut w_enc = gpu.zeros::<f32>(count * n * d)?;
        let mut w_dec = gpu.zeros::<f32>(count * d * n)?;
        let mut b_enc = gpu.zeros::<f32>(count * n)?;
        let b = gpu.zeros::<f32>(count * d)?;
        gpu.d_fill_uniform(&mut w_enc, seed, -1.0, 1.0)?;
        gpu.d_fill_uniform(&mut w_dec, seed + 1, -1.0, 1.0)?;
        let bound = 1.0 / (d as f32).sqrt();
        gpu.d_fill_uniform(&mut b_enc, seed + 2, -bound, bound)?;
        gpu.d_renorm_rows(&mut w_enc, count * n, d)?;
        gpu.d_renorm_rows(&mut w_dec, count * d, n)?;
        Ok(DevSaes {
            count,
            d,
            n,
            w_enc,
            b_enc,
            w_dec,
            b,
        })
    }

    fn restore(gpu: &GpuContext, dst: &mut DevSaes, src: &DevSaes) -> Result<()> {
        let s = gpu.stream();
        s.memcpy_dtod(&src.w_enc, &mut dst.w_enc).cuda("copy")?;
        s.memcpy_dtod(&src.b_enc, &mut dst.b_enc).cuda("copy")?;
        s.memcpy_dtod(&src.w_dec, &mut dst.w_dec).cuda("copy")?;
        s.memcpy_dtod(&src.b, &mut dst.b).cuda("copy")?;
        Ok(())
    }

    fn clone_saes(gpu: &GpuContext, s: &DevSaes) -> Result<DevSaes> {
        let st = gpu.stream();
        Ok(DevSaes {
            count: s.count,
            d: s.d,
            n: s.n,
            w_enc: st.clone_dtod(&s.w_enc).cuda("copy")?,
            b_enc: st.clone_dtod(&s.b_enc).cuda("copy")?,
            w_dec: st.clone_dtod(&s.w_dec).cuda("copy")?,
            b: st.clone_dtod(&s.b).cuda("copy")?,
        })
    }

    fn filled(gpu: &GpuContext, len: usize, seed: u64) -> Result<CudaSlice<f32>> {
        let mut x = gpu.zeros::<f32>(len)?;
        gpu.d_fill_uniform(&mut x, seed, -1.0, 1.0)?;
        Ok(x)
    }

    /// Step breakdowns of the batched trainer for the shared SAE (tiled GEMMs and cuBLAS
    /// TF32) and the per-head SAEs on result, on fresh random SAEs and rows. A failure is
    /// recorded in its entry, not returned.
    fn breakdowns(gpu: &GpuContext, sh: &ShapeDims) -> Vec<StepBreakdown> {
        let (h, dm, n, ex) = (sh.heads, sh.d_model, sh.features, sh.sae_examples);
        let cases = [
            ("sae_shared_tiled", 1, ex * h, TrainPath::Batched, false),
            ("sae_shared_cublas_tf32", 1, ex * h, TrainPath::Cublas, true),
            ("sae_per_head_result", h, ex, TrainPath::Batched, false),
        ];
        cases
            .iter()
            .enumerate()
            .map(|(i, &(stage, count, rows, path, tf32))| {
                let path_name = match (path, tf32) {
                    (TrainPath::Cublas, true) => "Cublas TF32".to_string(),
                    (TrainPath::Cublas, false) => "Cublas FP32".to_string(),
                    (p, _) => format!("{p:?}"),
                };
                let run = || -> Result<Vec<crate::gpu::KernelTime>> {
                    let x = filled(gpu, count * rows * dm, 400 + i as u64)?;
                    let mut saes = rand_saes(gpu, count, dm, n, 500 + i as u64)?;
                    let cfg = TrainConfig {
                        path,
                        tf32,
                        ..TrainConfig::with_steps(BREAKDOWN_STEPS)
                    };
                    let steps = gpu.d_profile_steps(&x, rows, &mut saes, &cfg)?;
                    Ok(crate::gpu::step_breakdown(&steps))
                };
                match run() {
                    Ok(kernels) => StepBreakdown {
                        stage: stage.into(),
                        path: path_name,
                        step_us: kernels.iter().map(|k| k.median_us).sum(),
                        kernels,
                        error: None,
                    },
                    Err(e) => StepBreakdown {
                        stage: stage.into(),
                        path: path_name,
                        step_us: f64::NAN,
                        kernels: Vec::new(),
                        error: Some(e.to_string()),
                    },
                }
            })
            .collect()
    }

    pub(super) fn run(opts: &BenchOptions) -> Result<BenchReport> {
        let gpu = GpuContext::new()?;
        let sh = shape(opts);
        if opts.print {
            crate::say!(
                "bench {} on {} (CUDA events, median of {} after {} warm-up)",
                sh.name,
                gpu.device_name(),
                opts.reps,
                opts.warmup
            );
        }
        let mut report = Report {
            gpu: &gpu,
            opts,
            stages: Vec::new(),
        };
        let pipe = stages(&gpu, &sh, &mut report)?;
        let stages_timed = report.stages;
        let (h, dh, dm, n, ex) = (
            sh.heads,
            sh.d_head,
            sh.d_model,
            sh.features,
            sh.sae_examples,
        );
        let lim = gpu.device_limits();
        let floors = vec![
            floor::sae_floor("sae_shared", 1, ex * h, dm, n, sh.steps, &lim),
            floor::sae_floor("sae_per_head_z", h, ex, dh, n, sh.steps, &lim),
            floor::sae_floor("sae_per_head_result", h, ex, dm, n, sh.steps, &lim),
        ];
        let (baseline, _) = gpu.mem_stats();
        let peak = stages_timed
            .iter()
            .map(|s| s.peak_mem_bytes)
            .max()
            .unwrap_or(0);
        let step_breakdown = breakdowns(&gpu, &sh);
        let phase_clocks = phase_clock_runs(&gpu, &sh);
        let report = BenchReport {
            device: gpu.device_name().to_string(),
            shape: sh,
            timing_method: format!(
                "CUDA events on one stream; median of up to {} runs after {} warm-up",
                opts.reps, opts.warmup
            ),
            pipeline_shared_ms: pipe.shared,
            pipeline_per_head_z_ms: pipe.per_head_z,
            stages: stages_timed,
            peak_mem_bytes: peak,
            baseline_mem_bytes: baseline as u64,
            device_limits: Some(lim),
            floors,
            step_breakdown,
            phase_clocks,
        };
        if opts.print {
            crate::say!(
                "{:>10.3} ms  pipeline (hook_result + sae_shared + encode_argmax_score)",
                report.pipeline_shared_ms
            );
            crate::say!(
                "{:>10.3} ms  pipeline (hook_z + sae_per_head_z + encode_argmax_score_per_head_z)",
                report.pipeline_per_head_z_ms
            );
            crate::say!(
                "peak device memory above baseline: {:.1} MiB",
                peak as f64 / (1 << 20) as f64
            );
            crate::say!(
                "hardware floors ({} SMs, {:.1} TFLOP/s FP32, {:.2} TB/s DRAM; GEMM FLOPs only, see bench::floor):",
                lim.sms,
                lim.peak_flops() / 1e12,
                lim.dram_bytes_per_s() / 1e12
            );
            for f in &report.floors {
                let measured = report.stage_ms(&f.stage).unwrap_or(f64::NAN);
                let dram = f
                    .dram_ms
                    .map_or("state fits L2".into(), |m| format!("DRAM {m:.2} ms"));
                let waves = f
                    .compute_one_block_per_sae_ms
                    .map_or(String::new(), |m| format!(" (one block per SAE {m:.3} ms)"));
                crate::say!(
                    "  {:<22} compute {:>8.3} ms{waves}, {dram}; measured {measured:.3} ms",
                    f.stage,
                    f.compute_ms
                );
            }
            for b in &report.step_breakdown {
                // The stage's own time a step, where it ran on the same path.
                let per_step = report
                    .stages
                    .iter()
                    .find(|s| {
                        s.stage == b.stage
                            && s.detail.to_lowercase().ends_with(&b.path.to_lowercase())
                    })
                    .map_or(String::new(), |s| {
                        format!(
                            "; the stage's graph-replayed step {:.1} us",
                            s.median_ms * 1e3 / f64::from(report.shape.steps.max(1))
                        )
                    });
                match &b.error {
                    Some(e) => crate::say!("step breakdown {} ({}): failed: {e}", b.stage, b.path),
                    None => {
                        crate::say!(
                            "step breakdown {} ({}): {:.1} us a step without a graph{per_step}",
                            b.stage,
                            b.path,
                            b.step_us
                        );
                        for k in &b.kernels {
                            crate::say!(
                                "  {:<18} {:>9.1} us  {:>5.1} %",
                                k.kernel,
                                k.median_us,
                                100.0 * k.share
                            );
                        }
                    }
                }
            }
            for c in &report.phase_clocks {
                match (&c.profile, &c.error) {
                    (Some(p), _) => {
                        let stage = report.stage_ms(&c.stage).map_or(String::new(), |ms| {
                            format!(
                                " (the stage: {:.3} ms, {:.1} us a step for all its waves)",
                                ms,
                                ms * 1e3 / f64::from(report.shape.steps.max(1))
                            )
                        });
                        crate::say!("{}{stage}:", c.stage);
                        // The table ends its own last line; `say!` adds it back.
                        crate::say!("{}", p.table().trim_end_matches('\n'));
                    }
                    (None, e) => crate::say!(
                        "phase clocks {}: failed: {}",
                        c.stage,
                        e.as_deref().unwrap_or("no profile")
                    ),
                }
            }
        }
        Ok(report)
    }

    /// The persistent trainers' phase profiles on the per-head-z stage's shape: the path
    /// `Auto` picks (stage `sae_per_head_z`) and the untiled kernel beside it where the
    /// tiled one ran (`sae_per_head_z_untiled`). A shape neither fits gives no entry.
    fn phase_clock_runs(gpu: &GpuContext, sh: &ShapeDims) -> Vec<PhaseClocksEntry> {
        let (h, dh, n, ex) = (sh.heads, sh.d_head, sh.features, sh.sae_examples);
        let runs = match gpu.auto_train_path(ex, dh, n) {
            TrainPath::PersistentTiled => vec![
                ("sae_per_head_z", TrainPath::PersistentTiled),
                ("sae_per_head_z_untiled", TrainPath::Persistent),
            ],
            TrainPath::Persistent => vec![("sae_per_head_z", TrainPath::Persistent)],
            _ => Vec::new(),
        };
        runs.into_iter()
            .enumerate()
            .map(|(i, (stage, path))| {
                let run = || -> Result<crate::gpu::clocks::PhaseProfile> {
                    let x = filled(gpu, h * ex * dh, 600 + i as u64)?;
                    let mut saes = rand_saes(gpu, h, dh, n, 700 + i as u64)?;
                    let cfg = TrainConfig {
                        path,
                        ..TrainConfig::with_steps(sh.steps)
                    };
                    gpu.d_phase_clocks(&x, ex, &mut saes, &cfg)
                };
                match run() {
                    Ok(p) => PhaseClocksEntry {
                        stage: stage.into(),
                        profile: Some(p),
                        error: None,
                    },
                    Err(e) => PhaseClocksEntry {
                        stage: stage.into(),
                        profile: None,
                        error: Some(e.to_string()),
                    },
                }
            })
            .collect()
    }

    /// Every stage, in order, on fresh device-resident random inputs.
    pub(super) fn stages(
        gpu: &GpuContext,
        sh: &ShapeDims,
        sink: &mut dyn StageSink,
    ) -> Result<PipelineMs> {
        let (e, t, h, dh, dm, n, ex) = (
            sh.prompts,
            sh.tokens,
            sh.heads,
            sh.d_head,
            sh.d_model,
            sh.features,
            sh.sae_examples,
        );
        let mut tm = Stages { gpu, sink };
        let mut none = || Ok(());

        // ---- hook
        let z = filled(gpu, e * t * h * dh, 11)?;
        let mask = gpu.upload(&vec![1u8; e * t])?;
        let w_o = filled(gpu, h * dh * dm, 12)?;
        let dims = HookDims {
            batch: e,
            pos: t,
            heads: h,
            d_head: dh,
        };
        let mut x_res = gpu.zeros::<f32>(e * h * dm)?;
        let mut x_z = gpu.zeros::<f32>(e * h * dh)?;
        let t_hook = tm.stage(
            "hook_result",
            format!("mean over {t} positions of z[{e},{t},{h},{dh}] @ W_O -> [{e},{h},{dm}]"),
            (e * h) as u64,
            &mut none,
            &mut || {
                gpu.d_hook(
                    &z,
                    &mask,
                    dims,
                    HookReduce::Mean,
                    Some((&w_o, dm)),
                    &mut x_res,
                )
            },
        )?;
        let t_hook_z = tm.stage(
            "hook_z",
            format!("mean over {t} positions -> [{e},{h},{dh}]"),
            (e * h) as u64,
            &mut none,
            &mut || gpu.d_hook(&z, &mask, dims, HookReduce::Mean, None, &mut x_z),
        )?;
        drop(z);

        let cfg = TrainConfig::with_steps(sh.steps);
        // ---- shared SAE
        let x_sh = filled(gpu, ex * h * dm, 13)?;
        let init_sh = rand_saes(gpu, 1, dm, n, 100)?;
        let mut sh_sae = clone_saes(gpu, &init_sh)?;
        let path_sh = gpu.auto_train_path(ex * h, dm, n);
        let t_sae = tm.train(
            "sae_shared",
            format!(
                "1 SAE {dm}->{n}, {} rows, {} steps, {path_sh:?}",
                ex * h,
                sh.steps
            ),
            u64::from(sh.steps),
            &x_sh,
            ex * h,
            &mut sh_sae,
            &init_sh,
            &cfg,
        )?;
        // Our tiled GEMMs (`Batched`), which `Auto` picked here before cuBLAS FP32 measured
        // faster; timed where `Auto` now picks another path.
        if path_sh != TrainPath::Batched {
            let cfg_t = TrainConfig {
                path: TrainPath::Batched,
                ..cfg
            };
            tm.train(
                "sae_shared_tiled",
                format!(
                    "1 SAE {dm}->{n}, {} rows, {} steps, Batched",
                    ex * h,
                    sh.steps
                ),
                u64::from(sh.steps),
                &x_sh,
                ex * h,
                &mut clone_saes(gpu, &init_sh)?,
                &init_sh,
                &cfg_t,
            )?;
        }
        // The same SAE through the cuBLAS path (path C), FP32 and TF32 GEMMs.
        for (stage, tf32) in [
            ("sae_shared_cublas", false),
            ("sae_shared_cublas_tf32", true),
        ] {
            let cfg_c = TrainConfig {
                path: TrainPath::Cublas,
                tf32,
                ..cfg
            };
            tm.train(
                stage,
                format!(
                    "1 SAE {dm}->{n}, {} rows, {} steps, cuBLAS {}",
                    ex * h,
                    sh.steps,
                    if tf32 { "TF32" } else { "FP32" }
                ),
                u64::from(sh.steps),
                &x_sh,
                ex * h,
                &mut clone_saes(gpu, &init_sh)?,
                &init_sh,
                &cfg_c,
            )?;
        }
        drop(x_sh);

        // ---- per-head SAEs on z
        let x_phz = filled(gpu, h * ex * dh, 14)?;
        let init_z = rand_saes(gpu, h, dh, n, 200)?;
        let mut z_sae = clone_saes(gpu, &init_z)?;
        let path_z = gpu.auto_train_path(ex, dh, n);
        let t_sae_z = tm.train(
            "sae_per_head_z",
            format!(
                "{h} SAEs {dh}->{n}, {ex} rows each, {} steps, {path_z:?}",
                sh.steps
            ),
            u64::from(sh.steps) * h as u64,
            &x_phz,
            ex,
            &mut z_sae,
            &init_z,
            &cfg,
        )?;
        // The untiled persistent kernel on the same SAEs, for comparison (Auto picks the
        // tiled one where both fit).
        if path_z == TrainPath::PersistentTiled {
            let cfg_p = TrainConfig {
                path: TrainPath::Persistent,
                ..cfg
            };
            tm.train(
                "sae_per_head_z_untiled",
                format!(
                    "{h} SAEs {dh}->{n}, {ex} rows each, {} steps, Persistent",
                    sh.steps
                ),
                u64::from(sh.steps) * h as u64,
                &x_phz,
                ex,
                &mut clone_saes(gpu, &init_z)?,
                &init_z,
                &cfg_p,
            )?;
        }
        drop(x_phz);
        drop(init_z);

        // ---- per-head SAEs on result
        {
            let x_phr = filled(gpu, h * ex * dm, 15)?;
            let init_r = rand_saes(gpu, h, dm, n, 300)?;
            let mut r_sae = clone_saes(gpu, &init_r)?;
            let path_r = gpu.auto_train_path(ex, dm, n);
            tm.train(
                "sae_per_head_result",
                format!(
                    "{h} SAEs {dm}->{n}, {ex} rows each, {} steps, {path_r:?}",
                    sh.steps
                ),
                u64::from(sh.steps) * h as u64,
                &x_phr,
                ex,
                &mut r_sae,
                &init_r,
                &cfg,
            )?;
            // The cuBLAS path up to the small shape's size (at XL one run takes ~15 s).
            if h * dm <= 144 * 768 {
                let cfg_c = TrainConfig {
                    path: TrainPath::Cublas,
                    tf32: true,
                    ..cfg
                };
                tm.train(
                    "sae_per_head_result_cublas_tf32",
                    format!(
                        "{h} SAEs {dm}->{n}, {ex} rows each, {} steps, cuBLAS TF32",
                        sh.steps
                    ),
                    u64::from(sh.steps) * h as u64,
                    &x_phr,
                    ex,
                    &mut r_sae,
                    &init_r,
                    &cfg_c,
                )?;
            }
        }

        // ---- encode + argmax + node score
        let is_pos: Vec<u8> = (0..e).map(|i| (i < sh.positives) as u8).collect();
        let is_pos = gpu.upload(&is_pos)?;
        let mut codes = gpu.zeros::<u32>(e * h)?;
        let t_enc = tm.stage(
            "encode_argmax_score",
            format!("shared SAE codes of [{e},{h},{dm}] + node |P\\N|, |N\\P|"),
            (e * h) as u64,
            &mut none,
            &mut || {
                gpu.d_encode_argmax(&sh_sae, &x_res, e, h, &mut codes)?;
                gpu.d_node_overlap(&codes, &is_pos, e, h, n).map(|_| ())
            },
        )?;
        let mut codes_z = gpu.zeros::<u32>(e * h)?;
        let t_enc_z = tm.stage(
            "encode_argmax_score_per_head_z",
            format!("per-head SAE codes of [{e},{h},{dh}] + node scores"),
            (e * h) as u64,
            &mut none,
            &mut || {
                gpu.d_encode_argmax(&z_sae, &x_z, e, h, &mut codes_z)?;
                gpu.d_node_overlap(&codes_z, &is_pos, e, h, n).map(|_| ())
            },
        )?;
        tm.stage(
            "edge_score",
            format!(
                "{} head pairs x {e} examples, {n}^2-bit sets",
                h * (h - 1) / 2
            ),
            (h * (h - 1) / 2) as u64,
            &mut none,
            &mut || {
                gpu.d_edge_overlap(&codes, &is_pos, e, h, n, None)
                    .map(|_| ())
            },
        )?;

        Ok(PipelineMs {
            shared: t_hook + t_sae + t_enc,
            per_head_z: t_hook_z + t_sae_z + t_enc_z,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without CUDA (or, in a `cuda` build, without a GPU) `visit_stages` reports why and
    /// hands the sink nothing.
    #[test]
    fn visit_stages_without_a_gpu_says_why() {
        struct Count(usize);
        impl StageSink for Count {
            fn stage(
                &mut self,
                _: &str,
                _: &str,
                _: u64,
                _: &mut dyn FnMut(u64) -> Result<std::time::Duration>,
            ) -> Result<f64> {
                self.0 += 1;
                Ok(0.0)
            }
        }
        if cfg!(feature = "cuda") && crate::gpu::require_gpu().is_ok() {
            return; // a GPU is here: the bench itself runs in gpu-check.sh
        }
        let mut sink = Count(0);
        let err = visit_stages(&BenchOptions::default(), &mut sink).unwrap_err();
        assert_eq!(sink.0, 0);
        let msg = err.to_string();
        assert!(
            msg.contains("CUDA") || msg.contains("GPU") || msg.contains("cuda"),
            "{msg}"
        );
    }

    #[test]
    fn shapes_and_parsing() {
        assert_eq!(
            ModelShape::parse("gpt2-small-shape").unwrap(),
            ModelShape::Gpt2Small
        );
        assert_eq!(
            ModelShape::parse("GPT2-XL-shape").unwrap(),
            ModelShape::Gpt2Xl
        );
        assert!(ModelShape::parse("llama").is_err());
        let s = ModelShape::Gpt2Small.dims();
        assert_eq!((s.heads, s.d_model), (144, 768));
        let x = ModelShape::Gpt2Xl.dims();
        assert_eq!((x.heads, x.d_model), (1200, 1600));
        assert!(serde_json::to_string(&x).is_ok());
    }

    #[test]
    fn median_odd_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}

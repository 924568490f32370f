//! The `headcode` command line: parses, calls the library, prints. No logic of its own.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use headcode::hooks::{collect, HookPoint, Reduce};
use headcode::model::{self, LoadOptions, Model, ModelSpec, Processing};
use headcode::say;
use headcode::tokenize::Tokenizer;

#[derive(Parser)]
#[command(
    name = "headcode",
    version,
    about = "Find circuits in transformer language models with sparse autoencoders on attention-head outputs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model: a folder (HF GPT-2 / Llama, TransformerLens), a .gguf/.safetensors/.pth file,
    /// or a built-in name (`smollm2-135m`, fetched on first use).
    model: String,
    /// Skip TransformerLens weight processing (fold LN, centre writing weights and
    /// unembed, fold value biases).
    #[arg(long)]
    no_processing: bool,
    /// Keep LayerNorm/RMSNorm weights unfolded.
    #[arg(long)]
    no_fold_ln: bool,
    #[arg(long)]
    no_center_writing_weights: bool,
    #[arg(long)]
    no_center_unembed: bool,
    #[arg(long)]
    no_fold_value_biases: bool,
}

fn cuda_device() -> Result<Device> {
    Device::new_cuda(0).context("opening CUDA device 0 for the forward pass")
}

impl ModelArgs {
    fn load(&self) -> Result<(Model, Box<dyn Tokenizer>)> {
        self.load_on(Device::Cpu)
    }

    fn load_on(&self, device: Device) -> Result<(Model, Box<dyn Tokenizer>)> {
        let spec = ModelSpec::resolve(&self.model)?;
        let processing = if self.no_processing {
            Processing::NONE
        } else {
            Processing {
                fold_ln: !self.no_fold_ln,
                center_writing_weights: !self.no_center_writing_weights,
                center_unembed: !self.no_center_unembed,
                fold_value_biases: !self.no_fold_value_biases,
            }
        };
        Ok(model::load(&spec, &LoadOptions { processing, device })?)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, sizes, parameter count and the processing applied.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Next-token candidates with probabilities.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Do not prepend BOS.
        #[arg(long)]
        no_bos: bool,
    },
    /// Hook every head's z or result and write them with their labels to safetensors.
    Hooks {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: Vec<String>,
        /// A text file with one prompt per line.
        #[arg(long)]
        prompts: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "result")]
        hook: HookPoint,
        #[arg(long, value_enum, default_value = "mean")]
        reduce: Reduce,
        #[arg(long)]
        no_bos: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run the whole method: hooks → SAEs → codes → scores → evaluation, with baselines.
    Discover(Box<DiscoverArgs>),
    /// The SAE method beside activation patching, ACDC and edge attribution patching on the
    /// same model, prompts and device: node (and edge) AUC against one circuit, wall time.
    Compare(Box<CompareArgs>),
    /// Re-score the codes saved by `discover` with other options, without retraining.
    Score {
        dir: PathBuf,
        /// Normalised score |P\N|/|P∪N|.
        #[arg(long)]
        normalise: bool,
        /// Edge variant with `k` list entries (default heads²/2).
        #[arg(long, conflicts_with = "normalise")]
        edge: bool,
        /// Mutual information between each head's code and the class: counts how often
        /// each code occurs, where the paper's score asks only whether it occurs.
        #[arg(long, conflicts_with_all = ["normalise", "edge"])]
        mi: bool,
        #[arg(long, requires = "edge")]
        k: Option<usize>,
        /// Circuit to evaluate against (default: the one saved with the run).
        #[arg(long)]
        circuit: Option<String>,
    },
    /// Activation patching per head: each head's z from the corrupted run patched into the
    /// clean run; the normalised change of the task metric, as CSV, JSON and a heatmap.
    Patch {
        #[command(flatten)]
        model: ModelArgs,
        /// ioi | gt | docstring | FILE.jsonl
        #[arg(long)]
        task: String,
        /// Prompt pairs to patch over.
        #[arg(long, default_value_t = 32)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Also write the top K heads (or those with effect ≥ X) as circuit.json.
        #[arg(long)]
        top: Option<usize>,
        #[arg(long)]
        threshold: Option<f32>,
        /// Do not prepend BOS.
        #[arg(long)]
        no_bos: bool,
        #[arg(long)]
        quiet: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Check every CUDA kernel against its CPU reference on seeded random inputs.
    Selftest {
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
    },
    /// Per-stage timings (medians) on CPU or GPU, as a table and JSON.
    Bench(BenchArgs),
    /// Generate a task's prompt pairs as JSONL.
    Task {
        /// ioi | gt | docstring
        task: String,
        #[arg(long)]
        model: String,
        #[arg(long, default_value_t = 250)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep only pairs whose clean prompt the model answers correctly (top-1) and whose
        /// corrupt one it does not.
        #[arg(long)]
        filter: bool,
        #[arg(long)]
        out: PathBuf,
    },
    /// Accuracy and mean metric of the model on a task's positives and negatives.
    TaskStats {
        #[arg(long)]
        model: String,
        /// ioi | gt | docstring | FILE.jsonl
        #[arg(long)]
        task: String,
        #[arg(long, default_value_t = 250)]
        n: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// gpt2-small-shape | gpt2-xl-shape (random weights; timing does not depend on them), or a real model: a path or a known name such as smollm2-135m (its head layout for the kernel stages)
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
}

#[derive(Args)]
struct DiscoverArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// ioi | gt | docstring | FILE.jsonl | auto-circuit FILE.json
    #[arg(long)]
    task: String,
    /// Ground truth: a built-in (ioi, ioi-sae-repo, gt, gt-sae-repo, docstring,
    /// docstring-sae-repo), a JSON file, `patching:top=K` / `patching:threshold=X`, or none.
    #[arg(long, default_value = "none")]
    circuit: String,
    /// Default: one SAE per head on z, which scored better than the paper's shared SAE on
    /// the real model (README); `--sae shared --on result` is the paper's setting.
    #[arg(long, value_enum, default_value = "per-head")]
    sae: headcode::pipeline::SaeMode,
    #[arg(long, value_enum, default_value = "z")]
    on: HookPoint,
    #[arg(long, value_enum, default_value = "sae")]
    scorer: headcode::pipeline::ScorerKind,
    #[arg(long, default_value_t = 1)]
    trials: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Prompt pairs (positives = clean, negatives = corrupt).
    #[arg(long, default_value_t = 250)]
    n: usize,
    /// L1 coefficient (default: the paper's, 0.02; 0.05 for docstring).
    #[arg(long)]
    lambda: Option<f32>,
    #[arg(long, default_value_t = 200)]
    features: usize,
    #[arg(long, default_value_t = 500)]
    steps: usize,
    #[arg(long, default_value_t = 10)]
    sae_examples: usize,
    /// Draw the SAE training examples half from each class.
    #[arg(long)]
    balanced: bool,
    #[arg(long, value_enum, default_value = "mean")]
    reduce: Reduce,
    /// Keep positives the model gets right and negatives it gets wrong.
    #[arg(long)]
    filter: bool,
    /// Skip the edge variant.
    #[arg(long)]
    no_edge: bool,
    /// Pairs used for patching and faithfulness.
    #[arg(long, default_value_t = 32)]
    patch_pairs: usize,
    /// Ablation for faithfulness (or `none` to skip it).
    #[arg(long, default_value = "mean")]
    faithfulness: String,
    /// Prompts per forward chunk (default: 32 on the CPU; 500 on CUDA, where 32-prompt
    /// chunks leave the GPU waiting on launches).
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// On CUDA, let the forward pass's f32 GEMMs use TF32 tensor cores (faster; about 1e-3
    /// relative error on the hooked vectors, reported by `bench --device cuda`).
    #[arg(long)]
    tf32: bool,
    #[arg(long)]
    save_sae: bool,
    /// Also write the hooked vectors every scorer read (`z` and `result` per example and
    /// head, with labels and pair indices) to activations.safetensors.
    #[arg(long)]
    save_activations: bool,
    #[arg(long)]
    quiet: bool,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct CompareArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// ioi | gt | docstring | FILE.jsonl | auto-circuit FILE.json
    #[arg(long, default_value = "")]
    task: String,
    /// Ground truth: a built-in name or a JSON file (`{"heads": [..], "edges": [..]}`;
    /// edges as `L0H1->L2H3.q`, needed for edge AUCs).
    #[arg(long)]
    circuit: String,
    /// Re-evaluate a finished run's saved scores (`DIR/compare.json`) against `--circuit`
    /// instead of running anything; writes to `--out`.
    #[arg(long)]
    rescore: Option<PathBuf>,
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sae,patching,acdc,eap"
    )]
    methods: Vec<headcode::pipeline::Method>,
    /// Prompt pairs for patching, ACDC and EAP: the first PAIRS of the task.
    #[arg(long, default_value_t = 32)]
    pairs: usize,
    /// Prompt pairs for the SAE method (positives = clean, negatives = corrupt).
    #[arg(long, default_value_t = 250)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "per-head")]
    sae: headcode::pipeline::SaeMode,
    #[arg(long, value_enum, default_value = "z")]
    on: HookPoint,
    #[arg(long)]
    lambda: Option<f32>,
    #[arg(long, default_value_t = 1)]
    trials: usize,
    /// ACDC's graph: edges-qkv (the reference), edges (one input per head) or heads
    /// (prune heads, a head-only mode that is far cheaper on a CPU).
    #[arg(long, value_enum, default_value = "edges-qkv")]
    acdc_granularity: headcode::baselines::Granularity,
    #[arg(long, value_enum, default_value = "kl")]
    acdc_metric: headcode::baselines::AcdcMetric,
    /// Comma-separated thresholds τ (default 1e-4, 3e-4, …, 0.3, 1).
    #[arg(long, value_delimiter = ',')]
    acdc_thresholds: Vec<f64>,
    /// EAP on one input per head instead of separate q/k/v inputs.
    #[arg(long)]
    eap_no_split: bool,
    /// Prompts per forward chunk (default: 32 on the CPU, 500 on CUDA).
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    quiet: bool,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { model } => inspect(&model),
        Cmd::Predict {
            model,
            prompt,
            top,
            no_bos,
        } => predict(&model, &prompt, top, !no_bos),
        Cmd::Hooks {
            model,
            prompt,
            prompts,
            hook,
            reduce,
            no_bos,
            out,
        } => hooks(&model, prompt, prompts, hook, reduce, !no_bos, &out),
        Cmd::Discover(a) => discover(*a),
        Cmd::Compare(a) => compare(*a),
        Cmd::Score {
            dir,
            normalise,
            edge,
            mi,
            k,
            circuit,
        } => {
            use headcode::pipeline::ScorerKind;
            use headcode::score::ScoreMethod;
            // Named as `discover` names these scorers in scores.json.
            let (method, kind) = if mi {
                (ScoreMethod::MutualInformation, ScorerKind::SaeMi)
            } else if edge {
                (ScoreMethod::Edge { k }, ScorerKind::SaeEdge)
            } else if normalise {
                (ScoreMethod::Node { normalise }, ScorerKind::SaeNormalised)
            } else {
                (ScoreMethod::Node { normalise }, ScorerKind::Sae)
            };
            score(&dir, &method, kind.name(), circuit)
        }
        Cmd::Task {
            task,
            model,
            n,
            seed,
            filter,
            out,
        } => task_cmd(&task, &model, n, seed, filter, &out),
        Cmd::TaskStats {
            model,
            task,
            n,
            seed,
        } => task_stats(&model, &task, n, seed),
        Cmd::Selftest {
            device,
            quick,
            kernels_only,
            e2e_pairs,
            e2e_steps,
            seed,
        } => selftest(
            &headcode::gpu::selftest::SelfTestOptions {
                seed,
                quick,
                kernels_only,
                e2e_pairs,
                e2e_steps,
                print: true,
            },
            device,
        ),
        Cmd::Patch {
            model,
            task,
            n,
            seed,
            batch_size,
            top,
            threshold,
            no_bos,
            quiet,
            out,
        } => patch(
            &model,
            &task,
            n,
            seed,
            batch_size,
            (top, threshold),
            !no_bos,
            quiet,
            &out,
        ),
        Cmd::Bench(a) => bench(a),
    }
}

fn selftest(opts: &headcode::gpu::selftest::SelfTestOptions, device: DeviceArg) -> Result<()> {
    if device == DeviceArg::Cpu {
        bail!("selftest compares GPU kernels with their CPU references: use --device cuda (CPU parity is covered by `cargo test`)");
    }
    let r = headcode::gpu::selftest::selftest(opts)?;
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

/// The baselines' unit costs (ACDC head and edge tests, one EAP batch) at a random-weight
/// shape; on CUDA also the edge test's logits against the CPU.
fn bench_baselines(a: &BenchArgs) -> Result<()> {
    let build = |dev: &Device| -> Result<Model> {
        Ok(headcode::model::random::random_model(&a.model, 0, dev)?)
    };
    let gpu = a.device != DeviceArg::Cpu;
    if gpu {
        headcode::gpu::require_gpu()?;
    }
    let dev = if gpu { cuda_device()? } else { Device::Cpu };
    let reps = a.reps.max(1);
    let c = headcode::baselines::bench::unit_costs(&build(&dev)?, a.pairs, reps)?;
    let mut j = serde_json::to_value(&c)?;
    j["device"] = if gpu { "cuda:0" } else { "cpu" }.into();
    j["model"] = a.model.clone().into();
    say!(
        "baselines, {} (random weights), {}, {} pairs x {} tokens, resumed at layer {}, median of {reps}",
        a.model, if gpu { "CUDA" } else { "CPU" }, c.pairs, c.tokens_per_prompt, c.start_layer
    );
    say!(
        "  ACDC head test      {:>10.2} ms  ({} heads: ~{:.1} s per threshold)",
        c.acdc_head_test_ms,
        c.n_heads,
        c.acdc_head_test_ms * c.n_heads as f64 / 1e3
    );
    say!(
        "  ACDC edge test      {:>10.2} ms  ({} q/k/v-split edges: at most ~{:.0} s per threshold)",
        c.acdc_edge_test_ms,
        c.n_edges_qkv,
        c.acdc_edge_test_ms * c.n_edges_qkv as f64 / 1e3
    );
    say!("  EAP batch           {:>10.2} ms", c.eap_batch_ms);
    if gpu {
        // The same edge test on the CPU, for parity.
        let cpu = headcode::baselines::bench::unit_costs(&build(&Device::Cpu)?, a.pairs.min(4), 1)?;
        let g = headcode::baselines::bench::unit_costs(&build(&dev)?, a.pairs.min(4), 1)?;
        let scale = cpu
            .edge_test_logits
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-12);
        let err = g
            .edge_test_logits
            .iter()
            .zip(&cpu.edge_test_logits)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        let ok = err <= 1e-4;
        say!(
            "  edge test logits, CUDA vs CPU (4 pairs): max |diff| / max |ref| {err:.2e} {}",
            if ok { "PASS" } else { "FAIL" }
        );
        j["edge_test_parity"] = err.into();
        j["edge_test_parity_pass"] = ok.into();
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&j)?)
            .with_context(|| p.display().to_string())?;
    }
    Ok(())
}

/// The model forward + hooks through candle's CUDA backend: `n_prompts` × 18 tokens, timed
/// the ways `discover` and `collect` use it, plus parity of z and result against the CPU
/// forward on the same weights (f32 and TF32 GEMMs).
fn gpu_forward_bench(
    shape: &str,
    reps: usize,
    n_prompts: usize,
    limits: Option<headcode::gpu::floor::DeviceLimits>,
) -> Result<serde_json::Value> {
    use headcode::hooks::collect_on_device;
    let dev = cuda_device()?;
    let gpu_model = bench_model(shape, &dev)?;
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
        Ok(median(v))
    };
    let on_device = |m: &Model| -> Result<headcode::hooks::DeviceCollected> {
        Ok(collect_on_device(m, &prompts, Reduce::Mean, 500, |_| {})?)
    };
    // What `discover --device cuda` does: activations stay on the device and the task
    // metrics read compact last-position rows (two kept tokens per row, as for IOI).
    let device_ms = timed(&mut || on_device(&gpu_model).map(|_| ()))?;
    // two distinct token ids inside any vocabulary of 3 or more
    let v = gpu_model.cfg.d_vocab as u32;
    let keep = vec![vec![v / 3, 2 * v / 3]; prompts.len()];
    let discover_ms = timed(&mut || {
        headcode::tasks::compact_logits(&on_device(&gpu_model)?.last_logits, &keep)?;
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
    let stage = |logits: headcode::model::LogitsAt| -> Result<f64> {
        timed(&mut || {
            gpu_model.forward(
                &prompts,
                headcode::model::ForwardOptions {
                    logits,
                    ..Default::default()
                },
            )?;
            Ok(())
        })
    };
    let bare_ms = stage(headcode::model::LogitsAt::None)?;
    let logits_ms = stage(headcode::model::LogitsAt::Last)?;
    // Parity on 8 prompts against the CPU path, f32 and TF32 GEMMs.
    let cpu_model = bench_model(shape, &Device::Cpu)?;
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
    headcode::gpu::set_tf32(true)?;
    let tf32 = timed(&mut || on_device(&gpu_model).map(|_| ())).and_then(|ms| Ok((ms, parity()?)));
    headcode::gpu::set_tf32(false)?;
    let (tf32_ms, (tz, tr)) = tf32?;
    let ok = ez <= 1e-4 && er <= 1e-4;
    // The pass's FP32 floor (gpu::floor::forward_floor): GEMM FLOPs at the device's peak.
    let tokens = prompts.first().map_or(0, Vec::len);
    let floor = limits.map(|lim| {
        use headcode::gpu::floor::{forward_floor, ForwardDims};
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
fn gpu_discover_bench(reps: usize) -> Result<serde_json::Value> {
    use headcode::gpu::end_to_end::{discover_ioi, random_gpt2_small};
    let tok = headcode::tokenize::Gpt2Tokenizer::new()?;
    use headcode::pipeline::discover::SaeMode;
    let model = random_gpt2_small(&cuda_device()?)?;
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

/// The model a bench runs: a named shape with seeded random weights (timing does not depend
/// on them), or else a real checkpoint (a path, or a known name such as `smollm2-135m`).
fn bench_model(name: &str, dev: &Device) -> Result<Model> {
    if headcode::model::random::gpt2_shape(name).is_ok() {
        return Ok(headcode::model::random::random_model(name, 0, dev)?);
    }
    // Not a shape: a model, whose own error says what is wrong with it.
    let spec = ModelSpec::resolve(name)?;
    let opts = LoadOptions {
        device: dev.clone(),
        ..Default::default()
    };
    Ok(model::load(&spec, &opts)?.0)
}

/// `n` fixed prompts of 18 tokens below `vocab`.
fn bench_prompts(n: usize, vocab: usize) -> Vec<Vec<u32>> {
    let v = vocab.max(1) as u32;
    (0..n as u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % v).collect())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(a: BenchArgs) -> Result<()> {
    if a.baselines {
        return bench_baselines(&a);
    }
    if a.device != DeviceArg::Cpu {
        use headcode::gpu::bench::{ModelShape, ShapeDims};
        // A named shape, or a real checkpoint's head layout for the kernel stages.
        let (model, dims) = match ModelShape::parse(&a.model) {
            Ok(m) => (m, None),
            Err(_) => {
                let c = bench_model(&a.model, &Device::Cpu)?.cfg;
                let d = ShapeDims::for_model(&a.model, c.n_layers, c.n_heads, c.d_head, c.d_model);
                (ModelShape::Gpt2Small, Some(d))
            }
        };
        let r = headcode::gpu::bench::bench(&headcode::gpu::bench::BenchOptions {
            model,
            dims: dims.clone(),
            reps: a.reps.max(1),
            steps: a.steps,
            ..Default::default()
        })?;
        // The JSON is rewritten after each section, so a later failure or a time limit
        // (gpu-check.sh runs this under `timeout`) keeps what was measured; a failed section
        // is recorded as {"error": ...} and makes the command fail after writing.
        let mut j = serde_json::to_value(&r)?;
        let write = |j: &serde_json::Value| -> Result<()> {
            if let Some(p) = &a.json {
                std::fs::write(p, serde_json::to_string_pretty(j)?)
                    .with_context(|| p.display().to_string())?;
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
            gpu_forward_bench(
                &a.model,
                a.reps.max(3),
                a.prompts.unwrap_or(500),
                r.device_limits,
            ),
        );
        write(&j)?;
        if dims.is_none() && model == ModelShape::Gpt2Small {
            section(&mut j, "discover_cuda", gpu_discover_bench(3));
        } else {
            j["discover_cuda"] = serde_json::Value::Null;
        }
        write(&j)?;
        if !failed.is_empty() {
            bail!(
                "bench sections failed: {} (the rest is in the JSON)",
                failed.join(", ")
            );
        }
        return Ok(());
    }
    // CPU: the same stages through the library's CPU path.
    let model = bench_model(&a.model, &Device::Cpu)?;
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
        Ok(median(v))
    };
    let mut rows: Vec<(String, f64, String)> = Vec::new();
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
    let col = col.context("no activations")?;
    let k = 10.min(prompts.len());
    let x: Vec<f32> = col.result.data[..k * heads * cfg.d_model].to_vec();
    let xz: Vec<f32> = col.z.data[..k * heads * cfg.d_head].to_vec();
    let steps = a.steps.map_or(20, |s| s as usize); // ms/step is what the CPU rows report
    let sc = headcode::sae::SaeConfig {
        steps,
        ..Default::default()
    };
    let ms =
        time(
            &mut || Ok(headcode::sae::train_shared(&x, k * heads, cfg.d_model, &sc).map(|_| ())?),
        )?;
    rows.push((
        format!(
            "shared SAE {}x{}->200, {steps} steps",
            k * heads,
            cfg.d_model
        ),
        ms,
        format!("{:.1} ms/step", ms / steps as f64),
    ));
    let ms = time(&mut || {
        Ok(headcode::sae::train_per_head(&xz, k, heads, cfg.d_head, &sc).map(|_| ())?)
    })?;
    rows.push((
        format!(
            "{heads} per-head SAEs on z ({k}x{}->200), {steps} steps",
            cfg.d_head
        ),
        ms,
        format!("{:.1} ms/step", ms / steps as f64),
    ));
    let (sae, _) = headcode::sae::train_shared(&x, k * heads, cfg.d_model, &sc)?;
    let n = col.result.batch();
    let is_pos: Vec<bool> = (0..n).map(|i| i < n / 2).collect();
    let ms = time(&mut || {
        let t = headcode::codes::CodeTable::from_shared(
            &sae,
            &col.result.data,
            n,
            heads,
            is_pos.clone(),
            Default::default(),
        )?;
        headcode::score::node_scores(&t, false)?;
        Ok(())
    })?;
    rows.push((
        format!("encode + argmax + node score ({n} prompts)"),
        ms,
        String::new(),
    ));
    say!(
        "CPU bench, {}, {} threads, median of {reps}",
        model.source,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    for (name, ms, note) in &rows {
        say!("  {name:<55} {ms:>10.1} ms  {note}");
    }
    if let Some(p) = &a.json {
        let j: Vec<_> = rows
            .iter()
            .map(|(n, m, note)| serde_json::json!({"stage": n, "median_ms": m, "note": note}))
            .collect();
        std::fs::write(
            p,
            serde_json::to_string_pretty(
                &serde_json::json!({"device": "cpu", "model": a.model, "reps": reps, "stages": j}),
            )?,
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn patch(
    m: &ModelArgs,
    task: &str,
    n: usize,
    seed: u64,
    batch_size: usize,
    (top, threshold): (Option<usize>, Option<f32>),
    bos: bool,
    quiet: bool,
    out: &std::path::Path,
) -> Result<()> {
    let (model, tok) = m.load()?;
    let src = headcode::pipeline::TaskSource::parse(task)?;
    let prep = headcode::pipeline::prompts::prepare(&src, tok.as_ref(), n, seed, bos)?;
    let heads = model.cfg.n_heads_total();
    let mut bars = Bars::new(quiet);
    let metric = |i: usize, l: &[f32]| prep.metric(i, l);
    let t0 = std::time::Instant::now();
    let r = headcode::eval::patching::patch_heads(
        &model,
        &prep.clean,
        &prep.corrupt,
        &metric,
        batch_size,
        |d| bars.update("patching", d, heads),
    )?;
    let secs = t0.elapsed().as_secs_f64();
    std::fs::create_dir_all(out).with_context(|| out.display().to_string())?;
    let circuit = (top.is_some() || threshold.is_some()).then(|| r.circuit(top, threshold));
    let mask = circuit.as_ref().map(|c| {
        let mut m = vec![false; heads];
        for &(l, h) in c {
            m[l * model.cfg.n_heads + h] = true;
        }
        m
    });
    let p = out.join("patching.csv");
    let mut w = csv::Writer::from_path(&p)?;
    w.write_record(["layer", "head", "label", "effect", "in_circuit"])?;
    for i in 0..heads {
        w.write_record([
            (i / model.cfg.n_heads).to_string(),
            (i % model.cfg.n_heads).to_string(),
            r.labels[i].clone(),
            r.effect[i].to_string(),
            mask.as_ref().map_or(String::new(), |m| m[i].to_string()),
        ])?;
    }
    w.flush()?;
    let j = serde_json::json!({"model": model.source, "task": prep.name, "seconds": secs, "patching": r});
    std::fs::write(out.join("patching.json"), serde_json::to_string_pretty(&j)?)?;
    let svg = headcode::report::svg::heatmap(
        &format!("patching effect per head ({})", prep.name),
        &r.effect,
        r.n_layers,
        r.n_heads,
        mask.as_deref().unwrap_or(&vec![false; heads]),
    );
    std::fs::write(out.join("patching.svg"), svg)?;
    if let Some(c) = &circuit {
        let labels: Vec<String> = c.iter().map(|(l, h)| format!("L{l}H{h}")).collect();
        std::fs::write(
            out.join("circuit.json"),
            serde_json::to_string_pretty(&labels)?,
        )?;
    }
    say!(
        "patched {} heads over {} pairs in {secs:.1} s; metric clean {:.3}, corrupt {:.3}",
        heads,
        r.n_prompts,
        r.metric_clean,
        r.metric_corrupt
    );
    let mut order: Vec<usize> = (0..heads).collect();
    order.sort_by(|&a, &b| r.effect[b].total_cmp(&r.effect[a]).then(a.cmp(&b)));
    for &i in order.iter().take(10) {
        say!("  {:<8} {:>8.4}", r.labels[i], r.effect[i]);
    }
    say!(
        "wrote patching.csv, patching.json, patching.svg{} in {}",
        if circuit.is_some() {
            ", circuit.json"
        } else {
            ""
        },
        out.display()
    );
    Ok(())
}

fn load_named(model: &str) -> Result<(Model, Box<dyn Tokenizer>)> {
    ModelArgs {
        model: model.to_string(),
        no_processing: false,
        no_fold_ln: false,
        no_center_writing_weights: false,
        no_center_unembed: false,
        no_fold_value_biases: false,
    }
    .load()
}

/// Progress bars, one per stage, hidden when stderr is not a terminal or with --quiet.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl Bars {
    fn new(quiet: bool) -> Self {
        use std::io::IsTerminal;
        let target = if quiet || !std::io::stderr().is_terminal() {
            indicatif::ProgressDrawTarget::hidden()
        } else {
            indicatif::ProgressDrawTarget::stderr()
        };
        Self {
            multi: indicatif::MultiProgress::with_draw_target(target),
            bars: Default::default(),
        }
    }
    fn update(&mut self, stage: &str, done: usize, total: usize) {
        let bar = self.bars.entry(stage.to_string()).or_insert_with(|| {
            let b = self.multi.add(indicatif::ProgressBar::new(total as u64));
            if let Ok(st) = indicatif::ProgressStyle::with_template(
                "{prefix:>16} [{bar:30}] {pos}/{len} {elapsed}",
            ) {
                b.set_style(st.progress_chars("=> "));
            }
            b.set_prefix(stage.to_string());
            b
        });
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        if done >= total {
            bar.finish();
        }
    }
}

/// Whether a run uses the GPU: `cuda` needs one (an error without), `auto` falls back to
/// the CPU with a one-line note.
/// Prompts per forward chunk: the user's, or the library's default for the device.
fn batch_size_for(arg: Option<usize>, gpu: bool) -> Result<usize> {
    match arg {
        Some(0) => bail!("--batch-size must be at least 1"),
        Some(b) => Ok(b),
        None if gpu => Ok(headcode::pipeline::discover::GPU_BATCH_SIZE),
        None => Ok(headcode::pipeline::discover::CPU_BATCH_SIZE),
    }
}

fn use_gpu(device: DeviceArg) -> Result<bool> {
    Ok(match device {
        DeviceArg::Cpu => false,
        DeviceArg::Cuda => {
            headcode::gpu::require_gpu()?;
            true
        }
        DeviceArg::Auto => match headcode::gpu::require_gpu() {
            Ok(()) => true,
            Err(e) => {
                eprintln!("note: {e}; running on CPU");
                false
            }
        },
    })
}

fn discover(a: DiscoverArgs) -> Result<()> {
    use headcode::pipeline::{discover::CircuitSpec, DiscoverConfig, TaskSource};
    let gpu = use_gpu(a.device)?;
    let task = TaskSource::parse(&a.task)?;
    let mut cfg = DiscoverConfig::paper(task);
    cfg.circuit = CircuitSpec::parse(&a.circuit)?;
    cfg.sae_mode = a.sae;
    cfg.on = a.on;
    cfg.scorer = a.scorer;
    cfg.trials = a.trials;
    cfg.seed = a.seed;
    cfg.n = a.n;
    if let Some(l) = a.lambda {
        cfg.sae.lambda = l;
    }
    cfg.sae.n_features = a.features;
    cfg.sae.steps = a.steps;
    cfg.n_sae_examples = a.sae_examples;
    cfg.balanced = a.balanced;
    cfg.reduce = a.reduce;
    cfg.filter = a.filter.then_some(headcode::tasks::FilterRule::TopRank);
    cfg.edge = !a.no_edge;
    cfg.patch_pairs = a.patch_pairs;
    cfg.batch_size = batch_size_for(a.batch_size, gpu)?;
    cfg.faithfulness = match a.faithfulness.as_str() {
        "none" => None,
        "mean" => Some(headcode::eval::faithfulness::Ablation::Mean),
        "corrupt" => Some(headcode::eval::faithfulness::Ablation::Corrupt),
        o => bail!("--faithfulness {o:?}: expected mean, corrupt or none"),
    };
    let t0 = std::time::Instant::now();
    cfg.gpu = gpu;
    cfg.keep_activations = a.save_activations;
    if a.tf32 {
        if !cfg.gpu {
            bail!("--tf32 applies to the CUDA forward: use it with --device cuda (or auto on a GPU machine)");
        }
        headcode::gpu::set_tf32(true)?;
    }
    let (model, tok) = a
        .model
        .load_on(if cfg.gpu { cuda_device()? } else { Device::Cpu })?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut bars = Bars::new(a.quiet);
    let mut r = headcode::pipeline::discover(&model, tok.as_ref(), &cfg, &mut |s, d, t| {
        bars.update(s, d, t)
    })?;
    r.timings_ms.insert("load_model".into(), load_ms);
    let files = headcode::report::run::write_discover(&a.out, &model, &r, a.save_sae)?;
    print_summary(&r, &a.out, &files, t0.elapsed().as_secs_f64());
    Ok(())
}

fn compare(a: CompareArgs) -> Result<()> {
    use headcode::pipeline::{discover::CircuitSpec, CompareConfig, DiscoverConfig, TaskSource};
    if let Some(dir) = &a.rescore {
        let path = dir.join("compare.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let saved: headcode::pipeline::CompareResult = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a compare result", path.display()))?;
        let r = saved.rescore(headcode::tasks::Circuit::load(&a.circuit)?)?;
        let files = headcode::report::compare::write_compare(&a.out, &r)?;
        say!("{}", r.markdown());
        say!("wrote {} in {}", files.join(", "), a.out.display());
        return Ok(());
    }
    if a.task.is_empty() {
        bail!("--task is required (or --rescore DIR)");
    }
    let gpu = use_gpu(a.device)?;
    let mut d = DiscoverConfig::paper(TaskSource::parse(&a.task)?);
    d.circuit = CircuitSpec::Named(a.circuit.clone());
    d.sae_mode = a.sae;
    d.on = a.on;
    d.trials = a.trials;
    d.seed = a.seed;
    d.n = a.n;
    if let Some(l) = a.lambda {
        d.sae.lambda = l;
    }
    d.batch_size = batch_size_for(a.batch_size, gpu)?;
    d.faithfulness = None;
    d.gpu = gpu;
    let mut acdc = headcode::baselines::AcdcConfig {
        granularity: a.acdc_granularity,
        metric: a.acdc_metric,
        ..Default::default()
    };
    if !a.acdc_thresholds.is_empty() {
        acdc.thresholds = a.acdc_thresholds.clone();
    }
    let cfg = CompareConfig {
        discover: d,
        methods: a.methods.clone(),
        pairs: a.pairs,
        acdc,
        eap_split_qkv: !a.eap_no_split,
    };
    let (model, tok) = a
        .model
        .load_on(if gpu { cuda_device()? } else { Device::Cpu })?;
    let device = if gpu { "cuda:0" } else { "cpu" };
    let mut bars = Bars::new(a.quiet);
    let t0 = std::time::Instant::now();
    let r = headcode::pipeline::compare(&model, tok.as_ref(), &cfg, device, &mut |s, d, t| {
        bars.update(s, d, t)
    })?;
    let files = headcode::report::compare::write_compare(&a.out, &r)?;
    say!("{}", r.markdown());
    say!(
        "total {:.1} s; wrote {} in {}",
        t0.elapsed().as_secs_f64(),
        files.join(", "),
        a.out.display()
    );
    Ok(())
}

fn print_summary(
    r: &headcode::pipeline::DiscoverResult,
    out: &std::path::Path,
    files: &[String],
    total_s: f64,
) {
    let t = &r.task;
    say!(
        "task {}: {} pairs, {} positives / {} negatives; top-1 accuracy clean {:.3}, corrupt {:.3}; mean metric clean {:.3}, corrupt {:.3}",
        r.config.task.name(), t.pairs, t.positives, t.negatives, t.clean_top1_acc, t.corrupt_top1_acc, t.clean_metric_mean, t.corrupt_metric_mean
    );
    let primary = r.primary();
    let mut order: Vec<usize> = (0..primary.len()).collect();
    order.sort_by(|&a, &b| primary[b].total_cmp(&primary[a]).then(a.cmp(&b)));
    let mask = r.circuit.as_ref().map(|c| c.mask(r.n_layers, r.n_heads));
    say!("top heads by {}:", r.config.scorer.name());
    for &i in order.iter().take(10) {
        let inc = mask
            .as_ref()
            .map_or("", |m| if m[i] { "  (in circuit)" } else { "" });
        say!("  {:<8} {:>10.4}{inc}", r.labels[i], primary[i]);
    }
    if let Some(c) = &r.circuit {
        say!(
            "ROC AUC against circuit {} ({} heads), mean ± std over {} trial(s):",
            c.name,
            c.heads.len(),
            r.trials.len()
        );
        let mut rows: Vec<(&String, &headcode::eval::roc::MeanStd)> = r.auc.iter().collect();
        rows.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
        for (name, ms) in rows {
            let mark = if name == r.config.scorer.name() {
                " *"
            } else {
                ""
            };
            say!("  {:<16} {:.3} ± {:.3}{mark}", name, ms.mean, ms.std);
        }
    }
    if let Some(f) = &r.faithfulness {
        let show: Vec<String> =
            f.ks.iter()
                .zip(f.ours.iter().zip(&f.random))
                .map(|(k, (o, rn))| format!("k={k}: {o:.2} (random {rn:.2})"))
                .collect();
        say!(
            "faithfulness ({:?} ablation): {}",
            f.ablation,
            show.join(", ")
        );
    }
    let mut st: Vec<String> = r
        .timings_ms
        .iter()
        .map(|(k, v)| format!("{k} {:.0} ms", v))
        .collect();
    st.push(format!("total {:.1} s", total_s));
    say!("time: {}", st.join(", "));
    say!("wrote {} in {}", files.join(", "), out.display());
}

fn score(
    dir: &std::path::Path,
    method: &headcode::score::ScoreMethod,
    name: &str,
    circuit: Option<String>,
) -> Result<()> {
    let saved = headcode::report::run::read_codes(dir)?;
    let circ = match circuit {
        Some(c) => Some(headcode::tasks::Circuit::load(&c)?),
        None => saved.circuit.clone(),
    };
    if let Some(c) = &circ {
        c.validate(saved.n_layers, saved.n_heads)?;
    }
    let mask = circ.as_ref().map(|c| c.mask(saved.n_layers, saved.n_heads));
    let heads = saved.n_layers * saved.n_heads;
    let mut mean = vec![0f64; heads];
    let mut aucs = Vec::new();
    for t in &saved.trials {
        let inp = headcode::score::ScoreInputs {
            codes: Some(t),
            ..Default::default()
        };
        let s = method.score(&inp, saved.n_layers, saved.n_heads)?.values;
        if let Some(m) = &mask {
            aucs.push(headcode::eval::roc::evaluate(&s, m)?.auc);
        }
        for (a, b) in mean.iter_mut().zip(&s) {
            *a += b / saved.trials.len() as f64;
        }
    }
    let p = dir.join(format!("rescore-{name}.csv"));
    let mut w = csv::Writer::from_path(&p)?;
    w.write_record(["layer", "head", "label", "score", "in_circuit"])?;
    for i in 0..heads {
        w.write_record([
            (i / saved.n_heads).to_string(),
            (i % saved.n_heads).to_string(),
            saved.labels[i].clone(),
            mean[i].to_string(),
            mask.as_ref().map_or(String::new(), |m| m[i].to_string()),
        ])?;
    }
    w.flush()?;
    if let (false, Some(m)) = (aucs.is_empty(), &mask) {
        let ms = headcode::eval::roc::mean_std(&aucs)?;
        say!(
            "{name}: AUC {:.3} ± {:.3} over {} trial(s)",
            ms.mean,
            ms.std,
            aucs.len()
        );
        match headcode::report::run::rescore_baselines(dir, m)? {
            Some(base) => {
                say!("beside it, the run's baselines against the same circuit:");
                let mut rows: Vec<_> = base.iter().collect();
                rows.sort_by(|a, b| b.1.mean.total_cmp(&a.1.mean));
                for (n, ms) in rows {
                    say!("  {:<16} {:.3} ± {:.3}", n, ms.mean, ms.std);
                }
            }
            None => say!("(no scores.json in {}: baselines not shown)", dir.display()),
        }
    }
    say!("wrote {}", p.display());
    Ok(())
}

fn task_cmd(
    task: &str,
    model: &str,
    n: usize,
    seed: u64,
    filter: bool,
    out: &std::path::Path,
) -> Result<()> {
    let kind: headcode::tasks::TaskKind = task.parse()?;
    let (m, tok) = load_named(model)?;
    let set = headcode::tasks::generate(kind, tok.as_ref(), n, seed)?;
    for wl in &set.stats.word_lists {
        say!(
            "{}: {} of {} are single tokens",
            wl.list,
            wl.kept,
            wl.available
        );
    }
    say!(
        "pairs regenerated for unequal token length: {}",
        set.stats.pairs_regenerated
    );
    let mut pairs = set.pairs;
    if filter {
        let src = headcode::pipeline::TaskSource::Builtin(kind);
        let prep = headcode::pipeline::prompts::prepare(&src, tok.as_ref(), n, seed, true)?;
        let lc = m.last_logits(&prep.clean, 32)?;
        let lx = m.last_logits(&prep.corrupt, 32)?;
        let rep = headcode::tasks::filter(
            &prep.tokens,
            &lc,
            &lx,
            headcode::tasks::FilterRule::TopRank,
            1,
        )?;
        say!(
            "filter: clean accuracy {:.3} → {:.3}, corrupt accuracy {:.3} → {:.3}; {} of {} pairs kept",
            rep.clean_acc_before, rep.clean_acc_after, rep.corrupt_acc_before, rep.corrupt_acc_after, rep.kept_pairs.len(), rep.n_pairs
        );
        pairs = rep.kept_pairs.iter().map(|&i| pairs[i].clone()).collect();
    }
    headcode::tasks::write_jsonl(out, &pairs)?;
    say!("wrote {} pairs to {}", pairs.len(), out.display());
    Ok(())
}

fn task_stats(model: &str, task: &str, n: usize, seed: u64) -> Result<()> {
    let (m, tok) = load_named(model)?;
    let src = headcode::pipeline::TaskSource::parse(task)?;
    let prep = headcode::pipeline::prompts::prepare(&src, tok.as_ref(), n, seed, true)?;
    let mut rows = m.last_logits(&prep.clean, 32)?;
    rows.extend(m.last_logits(&prep.corrupt, 32)?);
    let s = headcode::pipeline::prompts::logit_summary(&rows, &prep, None, 0)?;
    let (ca, cm, xa, xm) = (s.clean_acc, s.clean_metric, s.corrupt_acc, s.corrupt_metric);
    say!(
        "task {} on {} ({} pairs)",
        prep.name,
        m.source,
        prep.pairs.len()
    );
    say!("  positives (clean):   top-1 accuracy {ca:.3}, mean metric {cm:.3}");
    say!("  negatives (corrupt): top-1 accuracy {xa:.3}, mean metric {xm:.3}");
    Ok(())
}

fn inspect(m: &ModelArgs) -> Result<()> {
    let (model, tok) = m.load()?;
    let c = &model.cfg;
    say!("source        {}", model.source);
    say!("architecture  {}", c.architecture);
    say!("layers        {}", c.n_layers);
    say!(
        "heads         {} per layer ({} key/value), {} in all",
        c.n_heads,
        c.n_kv_heads,
        c.n_heads_total()
    );
    say!("d_model       {}", c.d_model);
    say!("d_head        {}", c.d_head);
    say!(
        "d_mlp         {}",
        if c.attn_only {
            "none (attention-only)".to_string()
        } else {
            c.d_mlp.to_string()
        }
    );
    say!("vocab         {}", c.d_vocab);
    say!("context       {}", c.n_ctx);
    say!("norm          {:?}, eps {}", c.norm, c.eps);
    say!("positions     {:?}", c.pos);
    say!("activation    {:?}", c.act);
    say!(
        "parameters    {} (after processing: folded norm weights are not counted)",
        model.weights.n_params()
    );
    let p = model.processing;
    say!(
        "processing    fold_ln={} center_writing_weights={} center_unembed={} fold_value_biases={}",
        p.fold_ln,
        p.center_writing_weights,
        p.center_unembed,
        p.fold_value_biases
    );
    say!("tokenizer     {} (vocab {})", tok.name(), tok.vocab_size());
    Ok(())
}

fn encode_prompt(tok: &dyn Tokenizer, prompt: &str, bos: bool) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    Ok(tok.encode_with_bos(prompt, bos)?)
}

fn predict(m: &ModelArgs, prompt: &str, top: usize, bos: bool) -> Result<()> {
    let (model, tok) = m.load()?;
    let ids = encode_prompt(tok.as_ref(), prompt, bos)?;
    let logits = model.last_logits(&[ids], 1)?.remove(0);
    let probs = model::softmax(&logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    say!("{prompt:?}");
    for &i in order.iter().take(top.max(1)) {
        say!(
            "  {:>8.4}  {:>6}  {:?}",
            probs[i],
            i,
            tok.decode(&[i as u32])?
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn hooks(
    m: &ModelArgs,
    mut prompts: Vec<String>,
    file: Option<PathBuf>,
    hook: HookPoint,
    reduce: Reduce,
    bos: bool,
    out: &std::path::Path,
) -> Result<()> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt or --prompts FILE");
    }
    let (model, tok) = m.load()?;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| encode_prompt(tok.as_ref(), p, bos))
        .collect::<Result<_>>()?;
    let c = collect(&model, &ids, reduce, 32, |_| {})?;
    let acts = match hook {
        HookPoint::Z => c.z,
        HookPoint::Result => c.result,
    };
    headcode::report::write_head_acts(out, &acts, &ids, &c.last_logits, &model)?;
    say!(
        "wrote {} [{}] ({} heads, hook {:?}, reduce {:?})",
        out.display(),
        acts.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        acts.heads(),
        hook,
        reduce
    );
    Ok(())
}

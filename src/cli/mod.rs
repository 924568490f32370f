//! The subcommands, one file each: parse the arguments, call the library, print. Shared
//! here: the model arguments, the device choice and the progress bars.
use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use headcode::model::{self, LoadOptions, Model, ModelSpec, Processing};
use headcode::report::out::OutDir;
use headcode::tokenize::Tokenizer;

pub mod bench;
pub mod compare;
pub mod discover;
pub mod evaluate;
pub mod model_cmds;
pub mod patch;
pub mod score;
pub mod selftest;
pub mod task;

#[derive(Parser)]
#[command(
    name = "headcode",
    version,
    about = "Find circuits in transformer language models with sparse autoencoders on attention-head outputs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Architecture, sizes, parameter count and the processing applied.
    Inspect(model_cmds::InspectArgs),
    /// Next-token candidates with probabilities.
    Predict(model_cmds::PredictArgs),
    /// Hook every head's z or result and write them with their labels to safetensors.
    Hooks(model_cmds::HooksArgs),
    /// Run the whole method: hooks → SAEs → codes → scores → evaluation, with baselines.
    Discover(Box<discover::DiscoverArgs>),
    /// The SAE method beside activation patching, ACDC, EAP and EAP-IG on the same model,
    /// prompts and device: AUC against one circuit, CPR and CMD, stability, wall time.
    Compare(Box<compare::CompareArgs>),
    /// A circuit file's faithfulness by MIB's protocol on held-out pairs: the curve over 11
    /// circuit sizes, CPR and CMD.
    Evaluate(Box<evaluate::EvaluateArgs>),
    /// Re-score the codes saved by `discover` with other options, without retraining.
    Score(score::ScoreArgs),
    /// Activation patching per head: each head's z from the corrupted run patched into the
    /// clean run; the normalised change of the task metric, as CSV, JSON and a heatmap.
    Patch(patch::PatchArgs),
    /// Check every CUDA kernel against its CPU reference on seeded random inputs.
    Selftest(selftest::SelftestArgs),
    /// Per-stage timings (medians) on CPU or GPU, as a table and JSON.
    Bench(bench::BenchArgs),
    /// Generate a task's prompt pairs as JSONL.
    Task(task::TaskArgs),
    /// Accuracy and mean metric of the model on a task's positives and negatives.
    TaskStats(task::TaskStatsArgs),
}

/// Run one parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect(a) => model_cmds::inspect(&a),
        Cmd::Predict(a) => model_cmds::predict(&a),
        Cmd::Hooks(a) => model_cmds::hooks(a),
        Cmd::Discover(a) => discover::run(*a),
        Cmd::Compare(a) => compare::run(*a),
        Cmd::Evaluate(a) => evaluate::run(*a),
        Cmd::Score(a) => score::run(&a),
        Cmd::Patch(a) => patch::run(&a),
        Cmd::Selftest(a) => selftest::run(&a),
        Cmd::Bench(a) => bench::run(&a),
        Cmd::Task(a) => task::task(&a),
        Cmd::TaskStats(a) => task::task_stats(&a),
    }
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// Model: a built-in name (`smollm2-135m`, `gemma-3-270m`; fetched on first use), a
    /// Hugging Face repo id (`gpt2`, `Qwen/Qwen2.5-0.5B`, `EleutherAI/pythia-160m`,
    /// `google/gemma-2-2b` with HF_TOKEN), a local folder (Hugging Face GPT-2, Llama,
    /// Mistral, Qwen2, Gemma 2/3, GPT-NeoX; TransformerLens) or a .gguf/.safetensors/.pth file.
    pub model: String,
    /// Skip TransformerLens weight processing (fold LN, centre writing weights and
    /// unembed, fold value biases).
    #[arg(long)]
    pub no_processing: bool,
    /// Keep LayerNorm/RMSNorm weights unfolded.
    #[arg(long)]
    pub no_fold_ln: bool,
    #[arg(long)]
    pub no_center_writing_weights: bool,
    #[arg(long)]
    pub no_center_unembed: bool,
    #[arg(long)]
    pub no_fold_value_biases: bool,
    /// Precision of the weights and the forward: f32, bf16 or f16 (default: the
    /// checkpoint's own on CUDA, f32 on the CPU). Hooked activations reach the SAEs in f32.
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<model::WeightDtype>,
    /// Memory budget in GB: weights beyond it are refused before loading, and `discover`
    /// and `compare` choose their forward batch size to fit (or refuse up front).
    #[arg(long, value_name = "GB", value_parser = parse_gb)]
    pub max_memory: Option<u64>,
}

fn parse_gb(s: &str) -> std::result::Result<u64, String> {
    headcode::pipeline::budget::parse_gb(s).map_err(|e| e.to_string())
}

pub(crate) fn parse_dtype(s: &str) -> std::result::Result<model::WeightDtype, String> {
    s.parse().map_err(|e: headcode::Error| e.to_string())
}

impl ModelArgs {
    /// A model named on the command line with the default processing.
    pub fn named(model: &str) -> Self {
        ModelArgs {
            model: model.to_string(),
            no_processing: false,
            no_fold_ln: false,
            no_center_writing_weights: false,
            no_center_unembed: false,
            no_fold_value_biases: false,
            dtype: None,
            max_memory: None,
        }
    }

    /// With `--max-memory`, set `cfg.batch_size` so that the run fits it, and say so.
    pub fn fit_batch(
        &self,
        model: &Model,
        tok: &dyn Tokenizer,
        cfg: &mut headcode::pipeline::DiscoverConfig,
    ) -> Result<()> {
        if let Some(budget) = self.max_memory {
            let est = headcode::pipeline::budget::fit_discover(model, tok, cfg, budget)?;
            eprintln!(
                "--max-memory {}: batch size {} (estimated peak {})",
                headcode::memory::human(budget as u128),
                cfg.batch_size,
                headcode::memory::human(est)
            );
        }
        Ok(())
    }

    pub fn load(&self) -> Result<(Model, Box<dyn Tokenizer>)> {
        self.load_on(Device::Cpu)
    }

    pub fn load_on(&self, device: Device) -> Result<(Model, Box<dyn Tokenizer>)> {
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
        Ok(model::load(
            &spec,
            &LoadOptions {
                processing,
                device,
                dtype: self.dtype,
                max_memory: self.max_memory,
            },
        )?)
    }
}

/// The SAE run's settings that `discover` and `compare` share.
#[derive(Args)]
pub struct SaeRunArgs {
    /// Default: one SAE per head on z, which scored better than the paper's shared SAE on
    /// the real model (docs/method-study.md); `--sae shared --on result` is the paper's
    /// setting.
    #[arg(long, value_enum, default_value = "per-head")]
    pub sae: headcode::pipeline::SaeMode,
    #[arg(long, value_enum, default_value = "z")]
    pub on: headcode::hooks::HookPoint,
    #[arg(long, default_value_t = 1)]
    pub trials: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompt pairs for the SAE method (positives = clean, negatives = corrupt).
    #[arg(long, default_value_t = 250)]
    pub n: usize,
    /// L1 coefficient (default: the paper's, 0.02; 0.05 for docstring).
    #[arg(long)]
    pub lambda: Option<f32>,
    /// The task's fixed split to discover on: all | train | validation | test (default:
    /// all for discover, train for compare, whose CPR and CMD use validation).
    #[arg(long, value_enum)]
    pub split: Option<headcode::pipeline::Split>,
}

impl SaeRunArgs {
    /// Write these settings into a run's config.
    pub fn apply(&self, cfg: &mut headcode::pipeline::DiscoverConfig) {
        cfg.sae_mode = self.sae;
        cfg.on = self.on;
        cfg.trials = self.trials;
        cfg.seed = self.seed;
        cfg.n = self.n;
        if let Some(l) = self.lambda {
            cfg.sae.lambda = l;
        }
        if let Some(s) = self.split {
            cfg.split = s;
        }
    }
}

/// A run's output folder, the same two flags for every command that writes one.
#[derive(Args)]
pub struct OutArgs {
    /// Output folder (created if missing). One that holds a headcode run is refused
    /// unless --force.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace the run in --out: its files that this run does not rewrite are removed once
    /// this run's files are complete (files headcode did not write are left alone).
    #[arg(long)]
    pub force: bool,
}

impl OutArgs {
    /// Check the folder before any work and make Ctrl-C stop the run gracefully.
    pub fn prepare(&self) -> Result<OutDir> {
        let out = OutDir::prepare(&self.out, self.force)?;
        headcode::interrupt::install()?;
        Ok(out)
    }
}

/// `f`'s error, with an interrupt saying what is left in `out` (`nothing written to DIR`).
pub fn in_out<T>(out: &mut OutDir, f: impl FnOnce(&mut OutDir) -> Result<T>) -> Result<T> {
    f(out).map_err(|e| match e.downcast::<headcode::Error>() {
        Ok(e) => out.explain(e).into(),
        Err(e) => e,
    })
}

/// After a commit with --force: say what of the earlier run went.
pub fn say_replaced(out: &OutDir) {
    let Some(c) = out.committed() else { return };
    if c.removed.is_empty() && c.replaced == 0 {
        return;
    }
    let mut msg = format!(
        "note: --force: replaced the earlier run in {}",
        out.path().display()
    );
    if !c.removed.is_empty() {
        // One entry for the saved SAEs, which are two files per head.
        let saes = c.removed.iter().filter(|p| p.starts_with("saes")).count();
        let mut names: Vec<String> = c
            .removed
            .iter()
            .filter(|p| !p.starts_with("saes"))
            .map(|p| p.display().to_string())
            .collect();
        if saes > 0 {
            names.push(format!("saes/ ({saes} files)"));
        }
        msg += &format!(
            "; removed its files this run does not write: {}",
            names.join(", ")
        );
    }
    eprintln!("{msg}");
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
    Auto,
}

/// Whether a run uses the GPU: `cuda` needs one (an error without), `auto` falls back to
/// the CPU with a one-line note.
pub fn use_gpu(device: DeviceArg) -> Result<bool> {
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

/// The device the model is loaded on.
pub fn device(gpu: bool) -> Result<Device> {
    Ok(if gpu {
        headcode::gpu::cuda_device()?
    } else {
        Device::Cpu
    })
}

/// Prompts per forward chunk: the user's, or the library's default for the device.
pub fn batch_size_for(arg: Option<usize>, gpu: bool) -> Result<usize> {
    match arg {
        Some(0) => bail!("--batch-size must be at least 1"),
        Some(b) => Ok(b),
        None if gpu => Ok(headcode::pipeline::discover::GPU_BATCH_SIZE),
        None => Ok(headcode::pipeline::discover::CPU_BATCH_SIZE),
    }
}

/// Progress bars, one per stage, hidden when stderr is not a terminal or with --quiet.
pub struct Bars {
    multi: indicatif::MultiProgress,
    bars: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl Bars {
    pub fn new(quiet: bool) -> Self {
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
    pub fn update(&mut self, stage: &str, done: usize, total: usize) {
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

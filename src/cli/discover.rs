//! `headcode discover`: the whole method on one model and task.
use anyhow::{bail, Result};
use clap::Args;
use headcode::hooks::Reduce;
use headcode::report::out::OutDir;
use headcode::sae::SaeConfig;

use super::{
    batch_size_for, device, in_out, say_replaced, use_gpu, Bars, DeviceArg, ModelArgs, OutArgs,
    SaeRunArgs,
};

#[derive(Args)]
pub struct DiscoverArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// ioi | gt | docstring | FILE.jsonl | auto-circuit FILE.json
    #[arg(long)]
    task: String,
    /// Ground truth: a built-in (ioi, ioi-sae-repo, gt, gt-sae-repo, docstring,
    /// docstring-sae-repo), a JSON file, `patching:top=K` / `patching:threshold=X`
    /// (heads ranked by |effect|; add `,signed` to rank by the signed effect), or none.
    #[arg(long, default_value = "none")]
    circuit: String,
    #[command(flatten)]
    run: SaeRunArgs,
    #[arg(long, value_enum, default_value = "sae")]
    scorer: headcode::pipeline::ScorerKind,
    /// SAE features (dictionary size).
    #[arg(long, default_value_t = SaeConfig::default().n_features)]
    features: usize,
    /// SAE training steps (full batch).
    #[arg(long, default_value_t = SaeConfig::default().steps)]
    steps: usize,
    /// Prompts each SAE trains on (every prompt is encoded).
    #[arg(long, default_value_t = SaeConfig::default().examples)]
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
    /// Also write every scorer's head scores as MIB submission folders
    /// (`DIR/<scorer>/<task>_<model>/importances.json`, node level).
    #[arg(long)]
    mib: Option<std::path::PathBuf>,
    #[command(flatten)]
    out: OutArgs,
}

pub fn run(a: DiscoverArgs) -> Result<()> {
    let mut out = a.out.prepare()?;
    in_out(&mut out, |out| discover_into(a, out))
}

fn discover_into(a: DiscoverArgs, out: &mut OutDir) -> Result<()> {
    use headcode::pipeline::{discover::CircuitSpec, DiscoverConfig, TaskSource};
    let gpu = use_gpu(a.device)?;
    let task = TaskSource::parse(&a.task)?;
    let mut cfg = DiscoverConfig::paper(task);
    cfg.circuit = CircuitSpec::parse(&a.circuit)?;
    a.run.apply(&mut cfg);
    cfg.scorer = a.scorer;
    cfg.sae.n_features = a.features;
    cfg.sae.steps = a.steps;
    cfg.sae.examples = a.sae_examples;
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
    let mut mib_out = match &a.mib {
        Some(dir) => Some(OutDir::prepare(dir, a.out.force)?),
        None => None,
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
    let (model, tok) = a.model.load_on(device(cfg.gpu)?)?;
    a.model.fit_batch(&model, tok.as_ref(), &mut cfg)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    headcode::interrupt::check()?;
    let mut bars = Bars::new(a.quiet);
    let mut r = headcode::pipeline::discover(&model, tok.as_ref(), &cfg, &mut |s, d, t| {
        bars.update(s, d, t)
    })?;
    r.timings_ms.insert("load_model".into(), load_ms);
    let files = headcode::report::run::write_discover(out, &model, &r, a.save_sae)?;
    say_replaced(out);
    headcode::report::summary::print_discover(&r, out.path(), &files, t0.elapsed().as_secs_f64());
    if let Some(m) = mib_out.as_mut() {
        let graph = headcode::model::graph::CircuitGraph::for_model(&model, true);
        let methods = r
            .scores
            .iter()
            .map(|(name, s)| {
                let m = headcode::mib::MibScores::for_heads(&graph, s)?;
                Ok((name.clone(), m, headcode::mib::MibLevel::Node))
            })
            .collect::<headcode::Result<Vec<_>>>()?;
        let written = headcode::report::mib::write_mib(
            m,
            &headcode::report::short_name(&r.config.task.name()),
            &headcode::report::short_name(&model.source),
            &graph,
            model.cfg.d_model,
            &methods,
        )?;
        headcode::say!(
            "wrote {} MIB files in {}",
            written.len(),
            m.path().display()
        );
    }
    Ok(())
}

//! `headcode compare`: the SAE method beside patching, ACDC and EAP on the same prompts.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use headcode::say;

use headcode::report::out::OutDir;

use super::{
    batch_size_for, device, in_out, say_replaced, use_gpu, Bars, DeviceArg, ModelArgs, OutArgs,
    SaeRunArgs,
};

#[derive(Args)]
pub struct CompareArgs {
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
        default_value = "sae,patching,acdc,eap,eap-ig"
    )]
    methods: Vec<headcode::pipeline::Method>,
    /// Prompt pairs for patching, ACDC and EAP: the first PAIRS of the task.
    #[arg(long, default_value_t = 32)]
    pairs: usize,
    #[command(flatten)]
    run: SaeRunArgs,
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
    /// EAP-IG's interpolation steps between the corrupted and clean input embeddings.
    #[arg(long, default_value_t = headcode::baselines::eap::Attribution::DEFAULT_IG_STEPS)]
    ig_steps: usize,
    /// Pairs per EAP / EAP-IG backward pass (default: 4 on the CPU, 32 on CUDA). 16
    /// SmolLM2-135M Docstring pairs in one pass peaked at 18.3 GB; the scores do not depend
    /// on it.
    #[arg(long)]
    eap_batch: Option<usize>,
    /// Pairs of the evaluation split for CPR and CMD (0: skip the faithfulness curves).
    #[arg(long, default_value_t = 32)]
    eval_pairs: usize,
    #[arg(long, value_enum, default_value = "validation")]
    eval_split: headcode::pipeline::Split,
    /// What an edge outside a circuit reads: the counterfactual prompt (MIB's default), the
    /// mean over the counterfactual prompts, or zero.
    #[arg(long, value_enum, default_value = "patching")]
    ablation: headcode::eval::mib_curve::CircuitAblation,
    /// Bootstrap resamples of the pairs for each method's stability (0: skip).
    #[arg(long, default_value_t = 20)]
    resamples: usize,
    /// The k of stability's top-k heads (default: 10 % of the heads, rounded up).
    #[arg(long)]
    stability_k: Option<usize>,
    /// Also write every method's scores as MIB submission folders
    /// (`DIR/<method>/<task>_<model>/importances.json`).
    #[arg(long)]
    mib: Option<PathBuf>,
    /// Prompts per forward chunk (default: 32 on the CPU, 500 on CUDA).
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    out: OutArgs,
}

pub fn run(a: CompareArgs) -> Result<()> {
    let mut out = a.out.prepare()?;
    in_out(&mut out, |out| compare_into(a, out))
}

fn compare_into(a: CompareArgs, out: &mut OutDir) -> Result<()> {
    use headcode::pipeline::{discover::CircuitSpec, CompareConfig, DiscoverConfig, TaskSource};
    if let Some(dir) = &a.rescore {
        let path = dir.join("compare.json");
        let text = headcode::error::read_text(&path)?;
        let saved = headcode::pipeline::CompareResult::from_json(&text, &path)?;
        let r = saved.rescore(headcode::tasks::Circuit::load(&a.circuit)?)?;
        let files = headcode::report::compare::write_compare(out, &r)?;
        say_replaced(out);
        say!("{}", r.markdown());
        say!("wrote {} in {}", files.join(", "), out.path().display());
        return Ok(());
    }
    if a.task.is_empty() {
        bail!("--task is required (or --rescore DIR)");
    }
    let gpu = use_gpu(a.device)?;
    if a.eap_batch == Some(0) {
        bail!("--eap-batch must be at least 1");
    }
    let mut d = DiscoverConfig::paper(TaskSource::parse(&a.task)?);
    d.circuit = CircuitSpec::Named(a.circuit.clone());
    d.split = headcode::pipeline::Split::Train;
    a.run.apply(&mut d);
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
        ig_steps: a.ig_steps,
        eap_batch: a
            .eap_batch
            .unwrap_or_else(|| headcode::baselines::eap::Attribution::default_batch(gpu)),
        eval_pairs: a.eval_pairs,
        eval_split: a.eval_split,
        ablation: a.ablation,
        resamples: a.resamples,
        stability_k: a.stability_k,
    };
    // The MIB folder is checked before the run, like --out.
    let mut mib_out = match &a.mib {
        Some(dir) => Some(OutDir::prepare(dir, a.out.force)?),
        None => None,
    };
    let (model, tok) = a.model.load_on(device(gpu)?)?;
    let mut cfg = cfg;
    a.model.fit_batch(&model, tok.as_ref(), &mut cfg.discover)?;
    headcode::interrupt::check()?;
    let device = if gpu { "cuda:0" } else { "cpu" };
    let mut bars = Bars::new(a.quiet);
    let t0 = std::time::Instant::now();
    let r = headcode::pipeline::compare(&model, tok.as_ref(), &cfg, device, &mut |s, d, t| {
        bars.update(s, d, t)
    })?;
    let files = headcode::report::compare::write_compare(out, &r)?;
    say_replaced(out);
    say!("{}", r.markdown());
    say!("{}", r.memory.summary());
    if let Some(m) = mib_out.as_mut() {
        let methods = r
            .rows
            .iter()
            .map(|row| Ok((row.method.clone(), r.mib_scores(&row.method)?)))
            .collect::<headcode::Result<Vec<_>>>()?
            .into_iter()
            .filter_map(|(n, s)| s.map(|(s, l)| (n, s, l)))
            .collect::<Vec<_>>();
        let written = headcode::report::mib::write_mib(
            m,
            &r.task,
            &headcode::report::short_name(&r.model),
            &r.mib_graph(),
            r.d_model,
            &methods,
        )?;
        say!(
            "wrote {} MIB files in {}",
            written.len(),
            m.path().display()
        );
    }
    say!(
        "total {:.1} s; wrote {} in {}",
        t0.elapsed().as_secs_f64(),
        files.join(", "),
        out.path().display()
    );
    Ok(())
}

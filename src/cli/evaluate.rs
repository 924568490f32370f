//! `headcode evaluate`: a MIB circuit file's faithfulness curve, CPR and CMD on held-out pairs.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use headcode::report::out::OutDir;
use headcode::say;

use super::{
    batch_size_for, device, in_out, say_replaced, use_gpu, Bars, DeviceArg, ModelArgs, OutArgs,
};

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// ioi | gt | docstring | FILE.jsonl | auto-circuit FILE.json
    #[arg(long)]
    task: String,
    /// The scores: a MIB / EAP-IG graph file (`importances.json`, as `compare --mib` and
    /// `discover --mib` write them, or EAP-IG's `Graph.to_json`).
    #[arg(long)]
    scores: PathBuf,
    /// Rank edges (edge scores) or nodes (node scores; unscored nodes always stay in).
    #[arg(long, value_enum, default_value = "edge")]
    level: headcode::mib::MibLevel,
    /// What an edge outside the circuit reads: the counterfactual prompt (MIB's default),
    /// the mean over the counterfactual prompts, or zero.
    #[arg(long, value_enum, default_value = "patching")]
    ablation: headcode::eval::mib_curve::CircuitAblation,
    /// Pairs of the split to evaluate on.
    #[arg(long, default_value_t = 100)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The held-out split (discovery on `train` never sees it).
    #[arg(long, value_enum, default_value = "validation")]
    split: headcode::pipeline::Split,
    /// Circuit sizes as percentages of the items, increasing (default MIB's: 0, 0.1, 0.2,
    /// 0.5, 1, 2, 5, 10, 20, 50, 100).
    #[arg(long, value_delimiter = ',')]
    percentages: Vec<f64>,
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

pub fn run(a: EvaluateArgs) -> Result<()> {
    let mut out = a.out.prepare()?;
    in_out(&mut out, |out| evaluate_into(a, out))
}

fn evaluate_into(a: EvaluateArgs, out: &mut OutDir) -> Result<()> {
    use headcode::pipeline::evaluate::{evaluate, EvaluateConfig};
    use headcode::pipeline::TaskSource;
    let gpu = use_gpu(a.device)?;
    let percentages = if a.percentages.is_empty() {
        headcode::eval::mib_curve::PERCENTAGES.to_vec()
    } else {
        a.percentages.iter().map(|p| p / 100.0).collect()
    };
    headcode::eval::mib_curve::check_percentages(&percentages)?;
    let file = headcode::mib::MibGraph::read(&a.scores)?;
    let cfg = EvaluateConfig {
        task: TaskSource::parse(&a.task)?,
        n: a.n,
        seed: a.seed,
        split: a.split,
        bos: true,
        level: a.level,
        ablation: a.ablation,
        percentages,
        batch_size: batch_size_for(a.batch_size, gpu)?,
    };
    let (model, tok) = a.model.load_on(device(gpu)?)?;
    let graph = headcode::model::graph::CircuitGraph::for_model(&model, true);
    file.check_model(&graph, model.cfg.d_model, &a.scores)?;
    headcode::interrupt::check()?;
    let name = headcode::report::short_name(&a.scores.display().to_string());
    let mut bars = Bars::new(a.quiet);
    let e = evaluate(
        &model,
        tok.as_ref(),
        &cfg,
        &name,
        &file.scores,
        &mut |s, d, t| bars.update(s, d, t),
    )?;
    let files = headcode::report::evaluate::write_evaluation(out, &e, &name)?;
    say_replaced(out);
    say!(
        "{} on {} pairs of {} ({} split, {} ablation, {} level): CPR {:.3} (higher is better), \
         CMD {:.3} (lower is better); m(model) {:.3}, m(ablated) {:.3}; {:.1} s",
        name,
        e.pairs,
        e.task,
        e.split.name(),
        e.ablation.name(),
        match a.level {
            headcode::mib::MibLevel::Edge => "edge",
            headcode::mib::MibLevel::Node => "node",
        },
        e.curves.cpr,
        e.curves.cmd,
        e.metric_full,
        e.metric_empty,
        e.seconds
    );
    say!("| size | edges | faithfulness (signed) | faithfulness (abs) |");
    say!("| --- | --- | --- | --- |");
    for (s, b) in e.curves.signed.points.iter().zip(&e.curves.absolute.points) {
        say!(
            "| {}% | {} / {} | {:.3} | {:.3} |",
            s.fraction * 100.0,
            s.edges,
            b.edges,
            s.faithfulness,
            b.faithfulness
        );
    }
    say!("wrote {} in {}", files.join(", "), out.path().display());
    Ok(())
}

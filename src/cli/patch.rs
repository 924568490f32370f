//! `headcode patch`: activation patching per head, and the circuit it implies.
use anyhow::Result;
use clap::Args;
use headcode::pipeline::patch::{patch, PatchConfig};
use headcode::pipeline::TaskSource;
use headcode::report::out::OutDir;
use headcode::say;

use super::{in_out, say_replaced, Bars, ModelArgs, OutArgs};

#[derive(Args)]
pub struct PatchArgs {
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
    /// Also write the top K heads by |effect| (or those with |effect| ≥ X) as
    /// circuit.json.
    #[arg(long)]
    top: Option<usize>,
    #[arg(long)]
    threshold: Option<f32>,
    /// Rank heads by their signed effect instead of its size (heads that work against
    /// the task fall to the bottom).
    #[arg(long)]
    signed: bool,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    out: OutArgs,
}

pub fn run(a: &PatchArgs) -> Result<()> {
    let mut out = a.out.prepare()?;
    in_out(&mut out, |out| patch_into(a, out))
}

fn patch_into(a: &PatchArgs, out: &mut OutDir) -> Result<()> {
    let (model, tok) = a.model.load()?;
    headcode::interrupt::check()?;
    let cfg = PatchConfig {
        task: TaskSource::parse(&a.task)?,
        n: a.n,
        seed: a.seed,
        batch_size: a.batch_size,
        bos: !a.no_bos,
        top: a.top,
        threshold: a.threshold,
        signed: a.signed,
    };
    let mut bars = Bars::new(a.quiet);
    let r = patch(&model, tok.as_ref(), &cfg, &mut |d, t| {
        bars.update("patching", d, t)
    })?;
    let files = headcode::report::patch::write_patch(out, &model.source, &r)?;
    say_replaced(out);
    let p = &r.result;
    say!(
        "patched {} heads over {} pairs in {:.1} s; metric clean {:.3}, corrupt {:.3}",
        p.effect.len(),
        p.n_prompts,
        r.seconds,
        p.metric_clean,
        p.metric_corrupt
    );
    for &i in p.ranking(a.signed).iter().take(10) {
        say!("  {:<8} {:>8.4}", p.labels[i], p.effect[i]);
    }
    say!("wrote {} in {}", files.join(", "), out.path().display());
    Ok(())
}

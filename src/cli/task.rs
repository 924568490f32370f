//! `headcode task` (a task's prompt pairs as JSONL) and `headcode task-stats` (how well a
//! model does on them).
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use headcode::pipeline::prompts::{filter_pairs, logit_summary, prepare};
use headcode::pipeline::TaskSource;
use headcode::say;

use super::ModelArgs;

#[derive(Args)]
pub struct TaskArgs {
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
}

#[derive(Args)]
pub struct TaskStatsArgs {
    #[arg(long)]
    model: String,
    /// ioi | gt | docstring | FILE.jsonl
    #[arg(long)]
    task: String,
    #[arg(long, default_value_t = 250)]
    n: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn task(a: &TaskArgs) -> Result<()> {
    headcode::report::out::check_file_target(&a.out)?;
    let kind: headcode::tasks::TaskKind = a.task.parse()?;
    let (m, tok) = ModelArgs::named(&a.model).load()?;
    let set = headcode::tasks::generate(kind, tok.as_ref(), a.n, a.seed)?;
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
    if a.filter {
        let (kept, rep) = filter_pairs(&m, tok.as_ref(), kind, a.n, a.seed, pairs)?;
        say!(
            "filter: clean accuracy {:.3} → {:.3}, corrupt accuracy {:.3} → {:.3}; {} of {} pairs kept",
            rep.clean_acc_before, rep.clean_acc_after, rep.corrupt_acc_before, rep.corrupt_acc_after, rep.kept_pairs.len(), rep.n_pairs
        );
        pairs = kept;
    }
    headcode::tasks::write_jsonl(&a.out, &pairs)?;
    say!("wrote {} pairs to {}", pairs.len(), a.out.display());
    Ok(())
}

pub fn task_stats(a: &TaskStatsArgs) -> Result<()> {
    let (m, tok) = ModelArgs::named(&a.model).load()?;
    let src = TaskSource::parse(&a.task)?;
    let prep = prepare(&src, tok.as_ref(), a.n, a.seed, true, Default::default())?;
    let mut rows = m.last_logits(&prep.clean, 32)?;
    rows.extend(m.last_logits(&prep.corrupt, 32)?);
    let s = logit_summary(&rows, &prep, None, 0)?;
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

//! `headcode score`: re-score the codes a `discover` run saved, without retraining.
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use headcode::pipeline::ScorerKind;
use headcode::score::ScoreMethod;

#[derive(Args)]
pub struct ScoreArgs {
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
}

pub fn run(a: &ScoreArgs) -> Result<()> {
    // Named as `discover` names these scorers in scores.json.
    let (method, kind) = if a.mi {
        (ScoreMethod::MutualInformation, ScorerKind::SaeMi)
    } else if a.edge {
        (ScoreMethod::Edge { k: a.k }, ScorerKind::SaeEdge)
    } else {
        let normalise = a.normalise;
        let kind = if normalise {
            ScorerKind::SaeNormalised
        } else {
            ScorerKind::Sae
        };
        (ScoreMethod::Node { normalise }, kind)
    };
    let r = headcode::report::summary::rescore(&a.dir, &method, kind.name(), a.circuit.as_deref())?;
    headcode::report::summary::print_rescore(&r, &a.dir);
    Ok(())
}

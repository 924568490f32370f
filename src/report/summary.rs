//! What the commands print: the summary of a `discover` run, a re-scored run, and a
//! model's description. Plain text through [`crate::say`], so a closed stdout never
//! panics.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::eval::roc::{evaluate, mean_std, MeanStd};
use crate::model::Model;
use crate::pipeline::DiscoverResult;
use crate::score::{ScoreInputs, ScoreMethod};
use crate::tasks::Circuit;
use crate::tokenize::Tokenizer;

/// Print a finished `discover` run: task counts, top heads, AUCs, faithfulness, timings
/// and the files written.
pub fn print_discover(r: &DiscoverResult, out: &Path, files: &[String], total_s: f64) {
    let t = &r.task;
    say!(
        "task {}: {} pairs, {} positives / {} negatives; top-1 accuracy clean {:.3}, corrupt {:.3}; mean metric clean {:.3}, corrupt {:.3}",
        r.config.task.name(), t.pairs, t.positives, t.negatives, t.clean_top1_acc, t.corrupt_top1_acc, t.clean_metric_mean, t.corrupt_metric_mean
    );
    for w in &t.warnings {
        eprintln!("warning: {w}");
    }
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
        let mut rows: Vec<(&String, &MeanStd)> = r.auc.iter().collect();
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
    say!("{}", r.memory.summary());
    say!("wrote {} in {}", files.join(", "), out.display());
}

/// A saved run's codes scored again (`headcode score`).
#[derive(Debug, Clone)]
pub struct Rescore {
    /// The scorer's name, as `discover` names it in scores.json.
    pub name: String,
    /// Per head, the mean over trials.
    pub mean: Vec<f64>,
    /// AUC mean ± std over trials, when there is a circuit.
    pub auc: Option<MeanStd>,
    pub trials: usize,
    /// The run's baselines against the same circuit (`None` without scores.json).
    pub baselines: Option<BTreeMap<String, MeanStd>>,
    /// The CSV written beside the run.
    pub csv: PathBuf,
}

/// Score the codes saved in `dir` with `method` against `circuit` (a built-in name or a
/// file; default: the run's own), write `rescore-<name>.csv` there, and return the result.
pub fn rescore(
    dir: &Path,
    method: &ScoreMethod,
    name: &str,
    circuit: Option<&str>,
) -> Result<Rescore> {
    let saved = super::run::read_codes(dir)?;
    let circ = match circuit {
        Some(c) => Some(Circuit::load(c)?),
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
        let inp = ScoreInputs {
            codes: Some(t),
            ..Default::default()
        };
        let s = method.score(&inp, saved.n_layers, saved.n_heads)?.values;
        if let Some(m) = &mask {
            aucs.push(evaluate(&s, m)?.auc);
        }
        for (a, b) in mean.iter_mut().zip(&s) {
            *a += b / saved.trials.len() as f64;
        }
    }
    let csv = dir.join(format!("rescore-{name}.csv"));
    super::out::write_atomic_with(&csv, |csv| {
        let mut w = csv::Writer::from_path(csv)?;
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
        w.flush().map_err(|e| Error::io(csv, e))
    })?;
    let (auc, baselines) = match (aucs.is_empty(), &mask) {
        (false, Some(m)) => (
            Some(mean_std(&aucs)?),
            super::run::rescore_baselines(dir, m)?,
        ),
        _ => (None, None),
    };
    Ok(Rescore {
        name: name.to_string(),
        mean,
        auc,
        trials: aucs.len(),
        baselines,
        csv,
    })
}

/// Print a [`Rescore`] (`dir` names the run when it has no scores.json).
pub fn print_rescore(r: &Rescore, dir: &Path) {
    if let Some(ms) = &r.auc {
        say!(
            "{}: AUC {:.3} ± {:.3} over {} trial(s)",
            r.name,
            ms.mean,
            ms.std,
            r.trials
        );
        match &r.baselines {
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
    say!("wrote {}", r.csv.display());
}

/// Print a model's architecture, sizes, parameter count, processing and tokenizer.
pub fn print_model(model: &Model, tok: &dyn Tokenizer) {
    let c = &model.cfg;
    say!("source        {}", model.source);
    say!(
        "dtype         {} ({} of weights)",
        model.dtype(),
        crate::memory::human(model.weights.bytes() as u128)
    );
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
    for line in arch_details(c) {
        say!("{line}");
    }
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
}

/// The family features beyond the GPT-2/Llama block, one `inspect` line each.
fn arch_details(c: &crate::model::ModelConfig) -> Vec<String> {
    use crate::model::config::RopeScaling;
    let d = &c.details;
    let mut out = Vec::new();
    if d.parallel_attn_mlp {
        out.push("block         attention and MLP in parallel".to_string());
    }
    if let Some(r) = d.rotary_dim {
        out.push(format!(
            "rotary        first {r} of {} dims per head",
            c.d_head
        ));
    }
    match d.rope_scaling {
        RopeScaling::None => {}
        s => out.push(format!("rope scaling  {s:?}")),
    }
    if d.attn_scale.is_some() {
        out.push(format!("attn scale    {}", c.attn_scale()));
    }
    if let Some(cap) = d.attn_softcap {
        out.push(format!("attn softcap  {cap}"));
    }
    if let Some(cap) = d.final_softcap {
        out.push(format!("final softcap {cap}"));
    }
    let local: Vec<String> = (0..c.n_layers)
        .filter(|&l| c.is_local(l))
        .map(|l| l.to_string())
        .collect();
    if !local.is_empty() {
        out.push(format!(
            "local layers  {} (window {}{})",
            local.join(","),
            d.sliding_window.unwrap_or(0),
            d.rope_local_base
                .map(|b| format!(", rope base {b}"))
                .unwrap_or_default()
        ));
    }
    out
}

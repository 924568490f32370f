//! The files `discover` leaves in its output folder, and reading them back for
//! `headcode score DIR`.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::out::OutDir;
use super::svg;
use crate::codes::CodeTable;
use crate::error::{Error, Result};
use crate::eval::roc::roc_curve;
use crate::model::Model;
use crate::pipeline::{DiscoverResult, SaeMode};
use crate::sae::Sae;

/// f64 that may be ±∞ (ROC thresholds) as JSON: non-finite → null.
fn finite(v: &[f64]) -> Vec<Option<f64>> {
    v.iter()
        .map(|&x| if x.is_finite() { Some(x) } else { None })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RocJson {
    pub scorer: String,
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    pub thresholds: Vec<Option<f64>>,
    pub auc: f64,
}

/// What `headcode score DIR` needs to re-score without retraining.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedCodes {
    pub n_layers: usize,
    pub n_heads: usize,
    pub labels: Vec<String>,
    pub circuit: Option<crate::tasks::Circuit>,
    pub trials: Vec<CodeTable>,
}

/// Write the run's files into `out` and commit them (`scores.json`, the marker, last);
/// returns their names.
pub fn write_discover(
    out: &mut OutDir,
    model: &Model,
    r: &DiscoverResult,
    save_sae: bool,
) -> Result<Vec<String>> {
    let mut written = Vec::new();
    let primary = r.config.scorer.name();
    let scores = r.primary();
    let mask = r.circuit.as_ref().map(|c| c.mask(r.n_layers, r.n_heads));

    // Manifest.
    let manifest = serde_json::json!({
        "headcode_version": env!("CARGO_PKG_VERSION"),
        "model": {
            "source": model.source,
            "config": model.cfg,
            "processing": model.processing,
            "dtype": model.dtype(),
        },
        "task": r.config.task.name(),
        "counts": r.task,
        "config": r.config,
        "seeds": r.trials.iter().map(|t| t.seed).collect::<Vec<_>>(),
        "circuit": r.circuit,
        "primary_scorer": primary,
        "auc": r.auc,
        "trials": r.trials.iter().map(|t| serde_json::json!({
            "seed": t.seed, "sae_train": t.sae_train, "loss_first": t.loss_first,
            "loss_last": t.loss_last, "evals": t.evals,
        })).collect::<Vec<_>>(),
        "scores": r.scores,
        "labels": r.labels,
        "patching": r.patching,
        "faithfulness": r.faithfulness,
        "timings_ms": r.timings_ms,
        "memory": r.memory,
    });
    out.write("scores.json", serde_json::to_string_pretty(&manifest)?)?;
    written.push("scores.json".into());

    // CSV.
    out.write_with("scores.csv", |p| {
        let mut w = csv::Writer::from_path(p).map_err(|e| Error::format(p, e.to_string()))?;
        w.write_record([
            "layer",
            "head",
            "label",
            "score",
            "n_unique_pos",
            "n_unique_neg",
            "in_circuit",
        ])?;
        let t0 = r.trials.first();
        for i in 0..r.n_layers * r.n_heads {
            let (l, h) = (i / r.n_heads, i % r.n_heads);
            w.write_record([
                l.to_string(),
                h.to_string(),
                r.labels[i].clone(),
                format!("{}", scores.get(i).copied().unwrap_or(f64::NAN)),
                t0.map_or(String::new(), |t| t.node.n_unique_pos[i].to_string()),
                t0.map_or(String::new(), |t| t.node.n_unique_neg[i].to_string()),
                mask.as_ref().map_or(String::new(), |m| m[i].to_string()),
            ])?;
        }
        w.flush().map_err(|e| Error::io(p, e))
    })?;
    written.push("scores.csv".into());

    // Heatmap.
    let outlined = mask.clone().unwrap_or_else(|| vec![false; scores.len()]);
    let vals: Vec<f32> = scores.iter().map(|&x| x as f32).collect();
    let title = format!(
        "{primary} score per head ({} on {})",
        super::short_name(&r.config.task.name()),
        super::short_name(&model.source)
    );
    out.write(
        "heatmap.svg",
        svg::heatmap(&title, &vals, r.n_layers, r.n_heads, &outlined),
    )?;
    written.push("heatmap.svg".into());

    // ROC.
    if let Some(m) = &mask {
        let mut series = Vec::new();
        let mut all = BTreeMap::new();
        for (name, s) in &r.scores {
            let c = roc_curve(s, m, true)?;
            let auc = crate::eval::roc::auc_of(&c);
            series.push((
                format!("{name} ({auc:.3})"),
                c.fpr
                    .iter()
                    .zip(&c.tpr)
                    .map(|(&a, &b)| (a as f32, b as f32))
                    .collect(),
            ));
            all.insert(
                name.clone(),
                RocJson {
                    scorer: name.clone(),
                    fpr: c.fpr.clone(),
                    tpr: c.tpr.clone(),
                    thresholds: finite(&c.thresholds),
                    auc,
                },
            );
        }
        let primary_roc = all.get(primary).cloned();
        let j = serde_json::json!({
            "circuit": r.circuit,
            "fpr": primary_roc.as_ref().map(|x| x.fpr.clone()),
            "tpr": primary_roc.as_ref().map(|x| x.tpr.clone()),
            "thresholds": primary_roc.as_ref().map(|x| x.thresholds.clone()),
            "auc": primary_roc.as_ref().map(|x| x.auc),
            "scorer": primary,
            "all": all,
        });
        out.write("roc.json", serde_json::to_string_pretty(&j)?)?;
        let cname = r
            .circuit
            .as_ref()
            .map_or(String::new(), |c| super::short_name(&c.name));
        out.write(
            "roc.svg",
            svg::lines(
                &format!("ROC against {cname}, mean scores over trials"),
                "false positive rate",
                "true positive rate",
                &series,
                true,
            ),
        )?;
        written.push("roc.json".into());
        written.push("roc.svg".into());
    }

    // Faithfulness.
    if let Some(f) = &r.faithfulness {
        let ser = vec![
            (
                format!("{primary} ranking"),
                f.ks.iter()
                    .zip(&f.ours)
                    .map(|(&k, &v)| (k as f32, v))
                    .collect(),
            ),
            (
                "random ranking".to_string(),
                f.ks.iter()
                    .zip(&f.random)
                    .map(|(&k, &v)| (k as f32, v))
                    .collect(),
            ),
        ];
        out.write(
            "faithfulness.svg",
            svg::lines(
                &format!("metric recovered, other heads {}", f.ablation.describe()),
                "heads kept",
                "metric / full model",
                &ser,
                false,
            ),
        )?;
        written.push("faithfulness.svg".into());
    }
    if let Some(p) = &r.patching {
        let circ = r
            .circuit
            .as_ref()
            .map(|c| c.mask(r.n_layers, r.n_heads))
            .unwrap_or_else(|| vec![false; p.effect.len()]);
        out.write(
            "patching.svg",
            svg::heatmap(
                "activation patching effect per head",
                &p.effect,
                p.n_layers,
                p.n_heads,
                &circ,
            ),
        )?;
        written.push("patching.svg".into());
    }

    // The circuit itself, reusable with `--circuit FILE` (patching is the costly stage).
    if let Some(c) = &r.circuit {
        let labels: Vec<String> = c.heads.iter().map(|(l, h)| format!("L{l}H{h}")).collect();
        out.write("circuit.json", serde_json::to_string_pretty(&labels)?)?;
        written.push("circuit.json".into());
    }

    // Codes for re-scoring.
    let saved = SavedCodes {
        n_layers: r.n_layers,
        n_heads: r.n_heads,
        labels: r.labels.clone(),
        circuit: r.circuit.clone(),
        trials: r.trials.iter().map(|t| t.codes.clone()).collect(),
    };
    out.write("codes.json", serde_json::to_string(&saved)?)?;
    written.push("codes.json".into());

    if save_sae {
        save_saes(out, &r.saes, r.config.sae_mode, r, model)?;
        written.push("saes/".into());
    }
    if let Some(a) = &r.activations {
        out.write_with("activations.safetensors", |p| {
            write_activations(p, a, r, model)
        })?;
        written.push("activations.safetensors".into());
    }
    out.commit()?;
    Ok(written)
}

/// The run's hooked vectors, for scorers of one's own: `z` [examples, heads, d_head],
/// `result` [examples, heads, d_model], `is_pos` and `pair` [examples] (i64), in the
/// example order of `codes.json`; metadata holds the head labels (JSON), the reduction
/// over positions, the model and its processing.
fn write_activations(
    path: &Path,
    a: &crate::pipeline::discover::Activations,
    r: &DiscoverResult,
    model: &Model,
) -> Result<()> {
    let is_pos: Vec<i64> = a.is_pos.iter().map(|&p| p as i64).collect();
    let pair: Vec<i64> = a.pair.iter().map(|&p| p as i64).collect();
    let mut meta = HashMap::new();
    meta.insert("labels".into(), serde_json::to_string(&r.labels)?);
    meta.insert("reduce".into(), serde_json::to_string(&r.config.reduce)?);
    meta.insert("model".into(), model.source.clone());
    meta.insert(
        "processing".into(),
        serde_json::to_string(&model.processing)?,
    );
    meta.insert("headcode_version".into(), env!("CARGO_PKG_VERSION").into());
    super::write_safetensors(
        path,
        &[
            ("z", &a.z, vec![a.examples, a.heads, a.d_head]),
            ("result", &a.result, vec![a.examples, a.heads, a.d_model]),
        ],
        &[
            ("is_pos", &is_pos, vec![a.examples]),
            ("pair", &pair, vec![a.examples]),
        ],
        meta,
    )
}

/// SAELens layout: `cfg.json` + `sae_weights.safetensors` with W_enc [d_in, d_sae],
/// b_enc, W_dec [d_sae, d_in], b_dec. Per-head SAEs go to
/// `blocks.{l}.attn.hook_{z|result}/h{h}/`.
fn save_saes(
    out: &mut OutDir,
    saes: &[Sae],
    mode: SaeMode,
    r: &DiscoverResult,
    model: &Model,
) -> Result<()> {
    let hook = match r.config.on {
        crate::hooks::HookPoint::Z => "hook_z",
        crate::hooks::HookPoint::Result => "hook_result",
    };
    for (i, s) in saes.iter().enumerate() {
        let s = s.normalised();
        let (dir, meta_hook, head) = match mode {
            SaeMode::Shared => (
                Path::new("saes").join(format!("all_heads.attn.{hook}")),
                format!("blocks.*.attn.{hook}"),
                None,
            ),
            SaeMode::PerHead => {
                let (l, h) = (i / r.n_heads, i % r.n_heads);
                (
                    Path::new("saes")
                        .join(format!("blocks.{l}.attn.{hook}"))
                        .join(format!("h{h}")),
                    format!("blocks.{l}.attn.{hook}"),
                    Some(h),
                )
            }
        };
        let t = |w: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            let mut o = vec![0f32; w.len()];
            for a in 0..rows {
                for b in 0..cols {
                    o[b * rows + a] = w[a * cols + b];
                }
            }
            o
        };
        let w_enc = t(&s.w_enc, s.n, s.d); // [d, n]
        let w_dec = t(&s.w_dec, s.d, s.n); // [n, d]
        out.write_with(dir.join("sae_weights.safetensors"), |p| {
            super::write_safetensors(
                p,
                &[
                    ("W_enc", &w_enc, vec![s.d, s.n]),
                    ("b_enc", &s.b_enc, vec![s.n]),
                    ("W_dec", &w_dec, vec![s.n, s.d]),
                    ("b_dec", &s.b, vec![s.d]),
                ],
                &[],
                HashMap::new(),
            )
        })?;
        let cfg = serde_json::json!({
            "architecture": "standard",
            "d_in": s.d,
            "d_sae": s.n,
            "dtype": "float32",
            "device": "cpu",
            "apply_b_dec_to_input": true,
            "normalize_activations": "none",
            "reshape_activations": if hook == "hook_z" { "hook_z" } else { "none" },
            "metadata": {
                "hook_name": meta_hook,
                "hook_head_index": head,
                "model_name": model.source,
                "prepend_bos": r.config.bos,
                "headcode_version": env!("CARGO_PKG_VERSION"),
                "note": "decoder rows over d_in are unit norm (the paper's library quirk); encoder rows unit norm",
            }
        });
        out.write(dir.join("cfg.json"), serde_json::to_string_pretty(&cfg)?)?;
    }
    Ok(())
}

/// The AUC of every baseline a `discover` run saved in `dir/scores.json`, against `mask`
/// (one flag per head, layer-major): what `headcode score DIR --circuit C` prints beside the
/// re-scored SAE, so the method is never reported alone.
///
/// The baselines computed from the hooked vectors (class means, Fisher ratios, mean norm) do
/// not depend on the trial seed, so their saved scores are re-evaluated as they are. The
/// random scores do; they are redrawn from each trial's saved seed, exactly as `discover`
/// drew them. Mean ± std over the run's trials, as `discover` reports them (against the run's
/// own circuit this gives `discover`'s numbers bit for bit). `Ok(None)` when the folder has no
/// `scores.json` (codes saved without it); a malformed one is an error.
pub fn rescore_baselines(
    dir: &Path,
    mask: &[bool],
) -> Result<Option<BTreeMap<String, crate::eval::roc::MeanStd>>> {
    use crate::eval::roc::{evaluate, mean_std};
    use crate::pipeline::discover::ScorerKind;
    let p = dir.join("scores.json");
    if !p.is_file() {
        return Ok(None);
    }
    let text = crate::error::read_text(&p)?;
    let bad = |why: String| Error::format(&p, why);
    let j: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let seeds: Vec<u64> = j["trials"]
        .as_array()
        .ok_or_else(|| bad("no `trials` list".into()))?
        .iter()
        .map(|t| t["seed"].as_u64())
        .collect::<Option<_>>()
        .ok_or_else(|| bad("a trial without an integer `seed`".into()))?;
    if seeds.is_empty() {
        return Err(bad("`trials` is empty".into()));
    }
    let mut out = BTreeMap::new();
    for kind in [
        ScorerKind::ClassMeans,
        ScorerKind::ClassMeansZ,
        ScorerKind::Fisher,
        ScorerKind::FisherZ,
        ScorerKind::MeanNorm,
    ] {
        let Some(v) = j["scores"].get(kind.name()) else {
            continue;
        };
        let v: Vec<f64> = serde_json::from_value(v.clone())
            .map_err(|e| bad(format!("scores.{}: {e}", kind.name())))?;
        if v.len() != mask.len() {
            return Err(Error::shape(
                format!("{} scores.{}", p.display(), kind.name()),
                mask.len(),
                v.len(),
            ));
        }
        let auc = evaluate(&v, mask)?.auc;
        out.insert(kind.name().to_string(), mean_std(&vec![auc; seeds.len()])?);
    }
    let random: Vec<f64> = seeds
        .iter()
        .map(|&seed| {
            let v = crate::score::baseline::random_scores(mask.len(), seed);
            Ok(evaluate(&v, mask)?.auc)
        })
        .collect::<Result<_>>()?;
    out.insert(ScorerKind::Random.name().to_string(), mean_std(&random)?);
    Ok(Some(out))
}

pub fn read_codes(dir: &Path) -> Result<SavedCodes> {
    let p = dir.join("codes.json");
    let text = crate::error::read_text(&p)?;
    let saved: SavedCodes = serde_json::from_str(&text)
        .map_err(|e| Error::format(&p, format!("not a headcode codes.json: {e}")))?;
    saved.check().map_err(|why| Error::format(&p, why))?;
    Ok(saved)
}

impl SavedCodes {
    /// The run's sizes agree with each other (each trial's table is checked as it is read).
    fn check(&self) -> std::result::Result<(), String> {
        let heads = self
            .n_layers
            .checked_mul(self.n_heads)
            .filter(|&h| h > 0)
            .ok_or_else(|| {
                format!(
                    "n_layers {} × n_heads {} is not a head count",
                    self.n_layers, self.n_heads
                )
            })?;
        if self.labels.len() != heads {
            return Err(format!("{} labels for {heads} heads", self.labels.len()));
        }
        if self.trials.is_empty() {
            return Err("`trials` is empty".into());
        }
        if let Some((i, t)) = self
            .trials
            .iter()
            .enumerate()
            .find(|(_, t)| t.heads != heads)
        {
            return Err(format!("trial {i} has {} heads, the run {heads}", t.heads));
        }
        Ok(())
    }
}

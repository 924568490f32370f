//! `evaluate`: a circuit file's faithfulness by MIB's protocol. The scores of a MIB graph
//! file (or any method's, in `compare`) are turned into circuits at each size by EAP-IG's
//! top-n and pruning ([`crate::mib::apply_topn`]), each circuit is run with everything
//! outside it ablated ([`crate::eval::mib_curve::masked_metrics`]), and the two curves give
//! CPR and CMD ([`crate::eval::mib_curve::Curve`]). It runs on pairs of a held-out split
//! (validation by default), which discovery on `train` never saw.
use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::discover::Progress;
use super::prompts::{prepare, Split, TaskSource};
use crate::error::{Error, Result};
use crate::eval::mib_curve::{
    check_percentages, masked_metrics, CircuitAblation, Curve, CurvePoint, MaskedMetrics,
};
use crate::mib::{apply_topn, n_items, MibLevel, MibScores};
use crate::model::graph::GraphModel;
use crate::model::Model;
use crate::tasks::PairTokens;
use crate::tokenize::Tokenizer;

/// One method's two curves and their areas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodCurves {
    pub level: MibLevel,
    /// Items the percentages are taken of (all edges, or the scored nodes).
    pub items: usize,
    /// Items by signed score: CPR's curve.
    pub signed: Curve,
    /// Items by |score|: CMD's curve.
    pub absolute: Curve,
    /// Area under the signed curve (higher is better).
    pub cpr: f64,
    /// Area between the |score| curve and 1 (lower is better).
    pub cmd: f64,
}

/// Circuits at each size for each method, run in one pass over the pairs (one clean and
/// one ablation cache per batch, shared by every circuit), and each method's curves.
#[allow(clippy::too_many_arguments)]
pub fn circuit_curves(
    gm: &GraphModel,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    tokens: &[PairTokens],
    methods: &[(String, MibScores, MibLevel)],
    percentages: &[f64],
    ablation: CircuitAblation,
    batch: usize,
    progress: &mut Progress<'_>,
) -> Result<(MaskedMetrics, BTreeMap<String, MethodCurves>)> {
    check_percentages(percentages)?;
    let g = &gm.graph;
    let ne = g.n_edges();
    // Per method, per curve (signed, absolute), per size: (items, selection).
    let mut plan = Vec::with_capacity(methods.len());
    let mut masks: Vec<Vec<bool>> = Vec::new();
    for (name, scores, level) in methods {
        let items =
            n_items(scores, *level).map_err(|e| Error::InvalidInput(format!("{name}: {e}")))?;
        let mut curves = Vec::with_capacity(2);
        for absolute in [false, true] {
            let mut points = Vec::with_capacity(percentages.len());
            for &p in percentages {
                // MIB takes int(pct · items).
                let n = ((p * items as f64) as usize).min(items);
                let sel = apply_topn(g, scores, n, absolute, *level)
                    .map_err(|e| Error::InvalidInput(format!("{name}: {e}")))?;
                points.push((p, n, sel.n_edges(), sel.weighted_edge_count, masks.len()));
                masks.push(sel.edges);
            }
            curves.push(points);
        }
        plan.push((name.clone(), *level, items, curves));
    }
    let m = masked_metrics(
        gm,
        clean,
        corrupt,
        tokens,
        &masks,
        ablation,
        batch,
        |d, t| progress("faithfulness", d, t),
    )?;
    let mut out = BTreeMap::new();
    for (name, level, items, curves) in plan {
        let mut built = Vec::with_capacity(2);
        for (points, absolute) in curves.into_iter().zip([false, true]) {
            let pts = points
                .into_iter()
                .map(|(fraction, n, edges, weighted, mi)| {
                    let metric = m.masked[mi];
                    Ok(CurvePoint {
                        fraction,
                        items: n,
                        edges,
                        weighted_edges: weighted,
                        edge_fraction: edges as f64 / ne as f64,
                        metric,
                        faithfulness: m.faithfulness(metric)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            built.push(Curve::new(absolute, pts));
        }
        let absolute = built
            .pop()
            .ok_or_else(|| Error::InvalidInput("curve".into()))?;
        let signed = built
            .pop()
            .ok_or_else(|| Error::InvalidInput("curve".into()))?;
        out.insert(
            name,
            MethodCurves {
                level,
                items,
                cpr: signed.area_under,
                cmd: absolute.area_from_1,
                signed,
                absolute,
            },
        );
    }
    Ok((m, out))
}

/// `headcode evaluate`'s settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvaluateConfig {
    pub task: TaskSource,
    /// Pairs of the split (0: all of a file's; a generator needs a count).
    pub n: usize,
    pub seed: u64,
    pub split: Split,
    pub bos: bool,
    pub level: MibLevel,
    pub ablation: CircuitAblation,
    /// Circuit sizes as fractions of the items (MIB's by default).
    pub percentages: Vec<f64>,
    pub batch_size: usize,
}

/// What `evaluate` gives (`evaluation.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Evaluation {
    pub model: String,
    pub task: String,
    pub split: Split,
    pub ablation: CircuitAblation,
    pub pairs: usize,
    /// Edges of the model's graph (q/k/v split).
    pub n_edges: usize,
    /// m(N): the whole model's mean task metric.
    pub metric_full: f64,
    /// m(∅): every edge ablated.
    pub metric_empty: f64,
    pub curves: MethodCurves,
    pub seconds: f64,
}

/// A score file's circuits on `cfg`'s pairs: the curves, CPR and CMD.
pub fn evaluate(
    model: &Model,
    tok: &dyn Tokenizer,
    cfg: &EvaluateConfig,
    name: &str,
    scores: &MibScores,
    progress: &mut Progress<'_>,
) -> Result<Evaluation> {
    let t0 = Instant::now();
    let task = prepare(&cfg.task, tok, cfg.n, cfg.seed, cfg.bos, cfg.split)?;
    if task.clean.is_empty() {
        return Err(Error::Task(format!(
            "{}: the {} split holds no pairs",
            task.name,
            cfg.split.name()
        )));
    }
    let gm = GraphModel::new(model, true)?;
    scores.check(&gm.graph)?;
    let (m, mut curves) = circuit_curves(
        &gm,
        &task.clean,
        &task.corrupt,
        &task.tokens,
        &[(name.to_string(), scores.clone(), cfg.level)],
        &cfg.percentages,
        cfg.ablation,
        cfg.batch_size,
        progress,
    )?;
    let curves = curves
        .remove(name)
        .ok_or_else(|| Error::InvalidInput("no curve computed".into()))?;
    Ok(Evaluation {
        model: model.source.clone(),
        task: task.name.clone(),
        split: cfg.split,
        ablation: cfg.ablation,
        pairs: task.clean.len(),
        n_edges: gm.graph.n_edges(),
        metric_full: m.full,
        metric_empty: m.empty,
        curves,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

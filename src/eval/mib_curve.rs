//! MIB's faithfulness curve (Mueller et al. 2025, arXiv 2504.13151; `evaluate_area_under_curve`
//! in hannamw/MIB-circuit-track): a circuit of the top items at each of 11 sizes is run with
//! everything outside it ablated, and its faithfulness
//! `f = (m(C) − m(∅)) / (m(N) − m(∅))` is plotted against the circuit's size.
//!
//! - m(C): the mean task metric with only the circuit's edges reading the current run;
//!   every other edge reads the ablation (the counterfactual prompt by default, or a mean
//!   or zero value) — [`crate::model::graph::GraphRunOptions::mask`];
//! - m(N): the whole model (the clean run); m(∅): every edge ablated.
//!
//! Two numbers summarise the curves, as trapezoid areas over the circuit's edge count as a
//! fraction of all edges (0 … 1):
//! - CPR, the area under f, from the items taken by *signed* score (higher is better);
//! - CMD, the area between f and 1, from the items taken by |score| (lower is better).
//!
//! MIB-circuit-track's code takes its areas over the size fractions instead (0.1 % … 100 %,
//! no empty circuit), and at the node level EAP-IG's edge count includes matrix entries that
//! are not edges; [`Curve`] keeps those areas too (`*_by_size`).
//!
//! This module takes the circuits as edge masks; which edges make the circuit at each size
//! (top-n and pruning, as EAP-IG's `Graph`) is [`crate::mib`]'s.
use std::collections::HashMap;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::patching::check_pairs;
use crate::model::graph::{GraphCache, GraphModel, GraphRunOptions, PatchContext};
use crate::tasks::{metric_value, PairTokens};

/// The circuit sizes, as fractions of the scored items: MIB's ten and the empty circuit.
pub const PERCENTAGES: [f64; 11] = [
    0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];

/// What an edge outside the circuit reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum CircuitAblation {
    /// The sender's value on the counterfactual (corrupted) prompt: MIB's default.
    #[default]
    Patching,
    /// The sender's mean over every token of the counterfactual prompts.
    Mean,
    /// Zero.
    Zero,
}

impl CircuitAblation {
    pub fn name(&self) -> &'static str {
        match self {
            CircuitAblation::Patching => "patching",
            CircuitAblation::Mean => "mean",
            CircuitAblation::Zero => "zero",
        }
    }
}

/// Checks a list of circuit sizes: fractions in [0, 1], strictly increasing.
pub fn check_percentages(p: &[f64]) -> Result<()> {
    if p.len() < 2 {
        return Err(Error::InvalidInput(
            "a faithfulness curve needs at least two circuit sizes".into(),
        ));
    }
    for (i, &x) in p.iter().enumerate() {
        if !(0.0..=1.0).contains(&x) {
            return Err(Error::InvalidInput(format!(
                "circuit size {x} (item {i}) is outside 0 … 1 (100 %)"
            )));
        }
        if i > 0 && x <= p[i - 1] {
            return Err(Error::InvalidInput(format!(
                "circuit sizes must increase: {} then {x} (item {i})",
                p[i - 1]
            )));
        }
    }
    Ok(())
}

/// One circuit on the curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// The fraction of scored items asked for.
    pub fraction: f64,
    /// Items taken (edges or nodes).
    pub items: usize,
    /// Edges in the circuit after pruning.
    pub edges: usize,
    /// EAP-IG's `weighted_edge_count()`: at the node level it also counts the entries of
    /// its dense matrix that are not edges (kept for comparison with MIB's files).
    pub weighted_edges: f64,
    /// `edges` over all edges of the graph: the curve's x.
    pub edge_fraction: f64,
    /// m(C), the mean task metric.
    pub metric: f64,
    pub faithfulness: f64,
}

/// One curve: the circuits of the items taken by signed score or by |score|.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Curve {
    /// Items ranked by |score| (CMD's curve) or by signed score (CPR's).
    pub absolute: bool,
    pub points: Vec<CurvePoint>,
    /// Trapezoid area under f over the edge fraction.
    pub area_under: f64,
    /// Trapezoid area of |1 − f| over the edge fraction.
    pub area_from_1: f64,
    /// The same two areas as MIB-circuit-track's `evaluate_area_under_curve` computes them:
    /// over the size fractions themselves, from the first non-empty size (its list has no
    /// 0 %), so numbers can be set beside MIB's leaderboard.
    #[serde(default)]
    pub area_under_by_size: f64,
    #[serde(default)]
    pub area_from_1_by_size: f64,
}

impl Curve {
    pub fn new(absolute: bool, points: Vec<CurvePoint>) -> Self {
        let (mut under, mut from_1) = (0.0, 0.0);
        for w in points.windows(2) {
            let dx = w[1].edge_fraction - w[0].edge_fraction;
            under += dx * (w[0].faithfulness + w[1].faithfulness) / 2.0;
            from_1 +=
                dx * ((1.0 - w[0].faithfulness).abs() + (1.0 - w[1].faithfulness).abs()) / 2.0;
        }
        let (mut under_s, mut from_1_s) = (0.0, 0.0);
        let sized: Vec<&CurvePoint> = points.iter().filter(|p| p.fraction > 0.0).collect();
        for w in sized.windows(2) {
            let dx = w[1].fraction - w[0].fraction;
            under_s += dx * (w[0].faithfulness + w[1].faithfulness) / 2.0;
            from_1_s +=
                dx * ((1.0 - w[0].faithfulness).abs() + (1.0 - w[1].faithfulness).abs()) / 2.0;
        }
        Curve {
            absolute,
            points,
            area_under: under,
            area_from_1: from_1,
            area_under_by_size: under_s,
            area_from_1_by_size: from_1_s,
        }
    }
}

/// m(N), m(∅) and the masked runs' metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedMetrics {
    /// The whole model (clean run).
    pub full: f64,
    /// Every edge ablated.
    pub empty: f64,
    /// One per mask, in order.
    pub masked: Vec<f64>,
}

impl MaskedMetrics {
    /// f of a metric value; an error when the ablation does not move the metric, since every
    /// faithfulness would then divide by zero.
    pub fn faithfulness(&self, m: f64) -> Result<f64> {
        let span = self.full - self.empty;
        if !span.is_finite() || span.abs() < 1e-12 {
            return Err(Error::InvalidInput(format!(
                "the whole model's metric {:.6} equals the ablated model's {:.6}: faithfulness \
                 is undefined on these pairs",
                self.full, self.empty
            )));
        }
        Ok((m - self.empty) / span)
    }
}

fn batch_metric(logits: &Tensor, tokens: &[PairTokens]) -> Result<f64> {
    let rows = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let mut s = 0f64;
    for (r, t) in rows.iter().zip(tokens) {
        let m = metric_value(t.metric, r, t)?;
        if !m.is_finite() {
            return Err(Error::InvalidInput(
                "the task metric is not finite on a prompt pair".into(),
            ));
        }
        s += m as f64;
    }
    Ok(s)
}

/// Each sender block's mean output over every real token of `prompts` ([1, k, d]).
fn sender_means(gm: &GraphModel, prompts: &[Vec<u32>], batch: usize) -> Result<Vec<Tensor>> {
    let mut sums: Vec<Option<Tensor>> = Vec::new();
    let mut count = 0usize;
    for chunk in prompts.chunks(batch.max(1)) {
        crate::interrupt::check()?;
        let cache = capture(gm, chunk, None)?;
        let t = cache.lengths.iter().copied().max().unwrap_or(0);
        // 1 on each prompt's real positions, 0 on padding, as [N, 1, 1].
        let mut w = vec![0f32; chunk.len() * t];
        for (i, &len) in cache.lengths.iter().enumerate() {
            w[i * t..i * t + len].iter_mut().for_each(|x| *x = 1.0);
        }
        count += cache.lengths.iter().sum::<usize>();
        let dev = cache.blocks[0].device().clone();
        let w = Tensor::from_vec(w, (chunk.len() * t, 1, 1), &dev)?;
        if sums.is_empty() {
            sums = vec![None; cache.blocks.len()];
        }
        for (s, b) in sums.iter_mut().zip(&cache.blocks) {
            let x = b.broadcast_mul(&w)?.sum_keepdim(0)?;
            *s = Some(match s.take() {
                Some(a) => (a + x)?,
                None => x,
            });
        }
    }
    sums.into_iter()
        .map(|s| {
            let s = s.ok_or_else(|| Error::InvalidInput("no prompts to average".into()))?;
            Ok((s / count.max(1) as f64)?)
        })
        .collect()
}

fn capture(gm: &GraphModel, tokens: &[Vec<u32>], input: Option<&Tensor>) -> Result<GraphCache> {
    gm.run(
        tokens,
        GraphRunOptions {
            capture: true,
            input,
            ..Default::default()
        },
    )?
    .cache
    .ok_or_else(|| Error::InvalidInput("graph run captured nothing".into()))
}

/// m(N), m(∅) and the mean task metric with each of `masks` (kept edges, one per edge id)
/// over the pairs, in batches of `batch` pairs. Identical masks run once; an all-kept mask
/// is the clean run. `progress(done, total)` counts masked forwards.
#[allow(clippy::too_many_arguments)]
pub fn masked_metrics(
    gm: &GraphModel,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    tokens: &[PairTokens],
    masks: &[Vec<bool>],
    ablation: CircuitAblation,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<MaskedMetrics> {
    check_pairs(clean, corrupt, "faithfulness")?;
    if tokens.len() != clean.len() {
        return Err(Error::shape("metric tokens", clean.len(), tokens.len()));
    }
    let ne = gm.graph.n_edges();
    let none = vec![false; ne];
    // Distinct masks to run: index 0 is the empty circuit.
    let mut distinct: Vec<&[bool]> = vec![&none];
    let mut index: HashMap<&[bool], usize> = HashMap::from([(none.as_slice(), 0)]);
    let mut of_mask = Vec::with_capacity(masks.len());
    for m in masks {
        if m.len() != ne {
            return Err(Error::shape("circuit edge mask", ne, m.len()));
        }
        let i = *index.entry(m.as_slice()).or_insert_with(|| {
            distinct.push(m.as_slice());
            distinct.len() - 1
        });
        of_mask.push(i);
    }
    let values = match ablation {
        CircuitAblation::Patching => None,
        CircuitAblation::Mean => Some(sender_means(gm, corrupt, batch)?),
        CircuitAblation::Zero => None,
    };
    let runs: Vec<usize> = (0..distinct.len())
        .filter(|&i| !distinct[i].iter().all(|&k| k))
        .collect();
    let total = runs.len() * clean.len().div_ceil(batch.max(1));
    let mut done = 0;
    let mut sums = vec![0f64; distinct.len()];
    let mut full = 0f64;
    for ((cl, co), tk) in clean
        .chunks(batch.max(1))
        .zip(corrupt.chunks(batch.max(1)))
        .zip(tokens.chunks(batch.max(1)))
    {
        crate::interrupt::check()?;
        let clean_cache = capture(gm, cl, None)?;
        let m_clean = batch_metric(&clean_cache.logits, tk)?;
        full += m_clean;
        let ctx = match ablation {
            CircuitAblation::Patching => PatchContext::new(clean_cache, capture(gm, co, None)?)?,
            CircuitAblation::Mean => {
                let v = values
                    .as_ref()
                    .ok_or_else(|| Error::InvalidInput("sender means missing".into()))?;
                PatchContext::ablate(clean_cache, v)?
            }
            CircuitAblation::Zero => {
                let v = clean_cache
                    .blocks
                    .iter()
                    .map(|b| Ok(b.zeros_like()?))
                    .collect::<Result<Vec<_>>>()?;
                PatchContext::ablate(clean_cache, &v)?
            }
        };
        for (i, m) in distinct.iter().enumerate() {
            if m.iter().all(|&k| k) {
                sums[i] += m_clean;
                continue;
            }
            crate::interrupt::check()?;
            let out = gm.run(
                cl,
                GraphRunOptions {
                    mask: Some(m),
                    patch: Some(&ctx),
                    ..Default::default()
                },
            )?;
            sums[i] += batch_metric(&out.logits, tk)?;
            done += 1;
            progress(done, total);
        }
    }
    let n = clean.len() as f64;
    Ok(MaskedMetrics {
        full: full / n,
        empty: sums[0] / n,
        masked: of_mask.iter().map(|&i| sums[i] / n).collect(),
    })
}

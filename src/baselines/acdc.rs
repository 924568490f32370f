//! ACDC (Conmy et al. 2023, arXiv 2304.14997), faithful to the reference implementation.
//!
//! Receivers are visited in reverse topological order (the output, then each layer's MLP,
//! then its heads, from the last layer down; higher head index first), and each receiver's
//! incoming edges from later to earlier senders. An edge is cut (its receiver reads the
//! sender's corrupted value) and kept out if the metric rises by less than τ:
//! `metric(H \ e) − metric(H) < τ`, after which `metric(H)` is the new value. A receiver
//! whose node has no kept outgoing edge left is dropped with all its inputs untested, as
//! ACDC does (`current_node_connected`). The default metric is the mean KL divergence from
//! the clean model's last-position distribution; the task metric (negated, so that lower is
//! better as in ACDC) can be chosen instead.
//!
//! Granularities: `edges-qkv` (ACDC's graph: separate q/k/v inputs), `edges` (one input per
//! head, as the ACDC IOI run), and `heads`, a head-only mode that prunes nodes (a head
//! cut from everything downstream) and leaves MLPs in place.
//!
//! Each forward re-runs only the layers from the tested receiver's upward, from cached
//! clean activations (everything below it is still the clean model). A τ sweep runs all
//! thresholds in lockstep: thresholds whose decisions have agreed so far share their
//! forwards, so a sweep costs far less than one run per τ.
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::patching::{check_pairs, logits_rows, replace_heads, MetricFn};
use crate::model::graph::{kl_from_logits, log_softmax, GraphModel, GraphRunOptions};
use crate::model::{ForwardOptions, Intervention, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    /// Nodes are heads; MLPs are never pruned.
    Heads,
    /// Edges into one input per head, each MLP and the output.
    Edges,
    /// ACDC's graph: edges into each head's query, key and value inputs.
    #[default]
    EdgesQkv,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Heads => "heads",
            Granularity::Edges => "edges",
            Granularity::EdgesQkv => "edges-qkv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum AcdcMetric {
    /// Mean KL(clean ‖ pruned) at the last position.
    #[default]
    Kl,
    /// The negated task metric (logit difference, probability difference, …).
    Task,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcdcConfig {
    pub granularity: Granularity,
    pub metric: AcdcMetric,
    /// Thresholds τ ≥ 0 (any order; duplicates removed).
    pub thresholds: Vec<f64>,
}

impl Default for AcdcConfig {
    fn default() -> Self {
        Self {
            granularity: Granularity::default(),
            metric: AcdcMetric::default(),
            thresholds: default_thresholds(),
        }
    }
}

/// 10⁻⁴ … 1 in half decades (1, 3 × 10^k).
pub fn default_thresholds() -> Vec<f64> {
    vec![1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0]
}

/// The circuit ACDC finds at one τ.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcdcRun {
    pub threshold: f64,
    /// Heads in the circuit (with a kept outgoing edge, or not pruned in `heads` mode).
    pub heads: Vec<(usize, usize)>,
    /// Kept edge ids (graph granularities; empty in `heads` mode).
    pub kept_edges: Vec<u32>,
    /// The metric of the pruned model as ACDC tracked it.
    pub metric: f64,
    /// The same, recomputed by one full forward of the pruned model (no cached layers).
    pub metric_recomputed: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AcdcResult {
    pub config: AcdcConfig,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Whether the graph has MLP nodes (with `n_layers`, `n_heads` and the granularity it
    /// rebuilds the [`crate::model::graph::CircuitGraph`] that edge ids index).
    pub has_mlp: bool,
    /// GPT-NeoX's parallel attention and MLP (the graph differs).
    #[serde(default)]
    pub parallel: bool,
    /// Edges in the graph (0 in `heads` mode).
    pub n_edges: usize,
    pub n_prompts: usize,
    /// Runs in ascending τ.
    pub runs: Vec<AcdcRun>,
    /// Per head (layer-major): 1 + the index of the largest τ whose circuit holds it,
    /// 0 if none does. A ranking for ROC curves, as auto-circuit scores ACDC.
    pub head_scores: Vec<f64>,
    /// The same per edge (graph granularities).
    pub edge_scores: Vec<f64>,
    /// Metric of the full model (0 for KL) and with every head / edge cut.
    pub metric_full: f64,
    pub metric_all_cut: f64,
    /// Forward passes the sweep ran (partial ones included).
    pub forwards: usize,
    pub seconds: f64,
}

impl AcdcResult {
    /// The graph the edge ids index (`None` in `heads` mode).
    pub fn graph(&self) -> Option<crate::model::graph::CircuitGraph> {
        let split = match self.config.granularity {
            Granularity::Heads => return None,
            Granularity::Edges => false,
            Granularity::EdgesQkv => true,
        };
        Some(crate::model::graph::CircuitGraph::new(
            self.n_layers,
            self.n_heads,
            self.has_mlp,
            split,
            self.parallel,
        ))
    }
}

/// How the metric is read from last-position logits [B, V]; lower = closer to the clean
/// model.
enum Metric<'a> {
    Kl(Tensor),
    Task(&'a MetricFn<'a>),
}

impl Metric<'_> {
    fn eval(&self, logits: &Tensor) -> Result<f64> {
        match self {
            Metric::Kl(clean_logp) => kl_from_logits(clean_logp, logits),
            Metric::Task(f) => {
                let rows = logits_rows(&Some(logits.clone()))?;
                let s: f64 = rows.iter().enumerate().map(|(i, r)| f(i, r) as f64).sum();
                Ok(-s / rows.len() as f64)
            }
        }
    }
}

/// A group of thresholds (a range of the sorted list) whose decisions agree so far.
struct Group<S> {
    lo: usize,
    hi: usize,
    state: S,
    cur: f64,
}

/// Decides one unit for every group: `auto` says the unit is removed untested in a state;
/// `eval` runs the state with the unit removed (after `remove`).
fn lockstep_step<S: Clone>(
    groups: &mut Vec<Group<S>>,
    taus: &[f64],
    auto: impl Fn(&S) -> bool,
    remove: impl Fn(&mut S),
    restore: impl Fn(&mut S),
    mut eval: impl FnMut(&S) -> Result<f64>,
) -> Result<()> {
    // Each step is a forward per group: the unit of ACDC's work to answer Ctrl-C between.
    crate::interrupt::check()?;
    let mut out = Vec::with_capacity(groups.len() + 1);
    for mut g in groups.drain(..) {
        if auto(&g.state) {
            remove(&mut g.state);
            out.push(g);
            continue;
        }
        remove(&mut g.state);
        let m = eval(&g.state)?;
        let result = m - g.cur;
        // Removed where result < τ: a suffix of the ascending thresholds (none if NaN).
        let k = g.lo + taus[g.lo..g.hi].partition_point(|&t| result.is_nan() || t <= result);
        if k == g.hi {
            // Every threshold keeps the unit.
            restore(&mut g.state);
            out.push(g);
        } else if k == g.lo {
            g.cur = m;
            out.push(g);
        } else {
            let mut keep = Group {
                lo: g.lo,
                hi: k,
                state: g.state.clone(),
                cur: g.cur,
            };
            restore(&mut keep.state);
            out.push(keep);
            out.push(Group {
                lo: k,
                hi: g.hi,
                state: g.state,
                cur: m,
            });
        }
    }
    *groups = out;
    Ok(())
}

fn sorted_thresholds(t: &[f64]) -> Result<Vec<f64>> {
    if t.is_empty() {
        return Err(Error::InvalidInput(
            "ACDC needs at least one threshold".into(),
        ));
    }
    if let Some(bad) = t.iter().find(|x| x.is_nan() || **x < 0.0) {
        return Err(Error::InvalidInput(format!(
            "ACDC threshold {bad} (thresholds are ≥ 0)"
        )));
    }
    let mut v = t.to_vec();
    v.sort_by(f64::total_cmp);
    v.dedup();
    Ok(v)
}

/// Patches the heads marked in `removed` (layer-major) with the corrupted z.
struct CutHeads<'a> {
    removed: &'a [bool],
    n_heads: usize,
    corrupt_z: &'a [Tensor],
}

impl Intervention for CutHeads<'_> {
    fn on_z(&mut self, layer: usize, z: &Tensor, _l: &[usize]) -> Result<Option<Tensor>> {
        let heads: Vec<usize> = (0..self.n_heads)
            .filter(|&h| self.removed[layer * self.n_heads + h])
            .collect();
        if heads.is_empty() {
            return Ok(None);
        }
        Ok(Some(replace_heads(z, &self.corrupt_z[layer], &heads)?))
    }
}

/// Runs ACDC on one batch of prompt pairs (all pairs in one forward, as the reference).
/// `metric` is the task metric of prompt i (higher = better), used when
/// `cfg.metric == Task`. `progress(done, total)` counts units (heads or edges).
pub fn acdc(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    metric: &MetricFn<'_>,
    cfg: &AcdcConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<AcdcResult> {
    check_pairs(clean, corrupt, "ACDC")?;
    let taus = sorted_thresholds(&cfg.thresholds)?;
    let t0 = Instant::now();
    let mut res = match cfg.granularity {
        Granularity::Heads => acdc_heads(model, clean, corrupt, metric, cfg, &taus, &mut progress)?,
        Granularity::Edges | Granularity::EdgesQkv => acdc_edges(
            model,
            clean,
            corrupt,
            metric,
            cfg,
            &taus,
            cfg.granularity == Granularity::EdgesQkv,
            &mut progress,
        )?,
    };
    res.config = AcdcConfig {
        thresholds: taus,
        ..cfg.clone()
    };
    res.seconds = t0.elapsed().as_secs_f64();
    Ok(res)
}

/// 1 + index of the largest τ (runs ascending) whose run holds the item, else 0;
/// `items` lists a run's items by index below `n`.
fn scores_from_runs(
    n: usize,
    runs: &[AcdcRun],
    items: impl Fn(&AcdcRun) -> Vec<usize>,
) -> Vec<f64> {
    let mut s = vec![0f64; n];
    for (i, r) in runs.iter().enumerate() {
        for j in items(r) {
            s[j] = (i + 1) as f64;
        }
    }
    s
}

/// [`scores_from_runs`] over heads (layer-major).
fn head_scores(n_layers: usize, n_heads: usize, runs: &[AcdcRun]) -> Vec<f64> {
    scores_from_runs(n_layers * n_heads, runs, |r| {
        r.heads.iter().map(|&(l, h)| l * n_heads + h).collect()
    })
}

fn acdc_heads(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    metric: &MetricFn<'_>,
    cfg: &AcdcConfig,
    taus: &[f64],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AcdcResult> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let base = model.forward(
        clean,
        ForwardOptions {
            capture_resid: true,
            ..Default::default()
        },
    )?;
    let corr = model.forward(
        corrupt,
        ForwardOptions {
            capture_z: true,
            ..Default::default()
        },
    )?;
    let clean_logits = base
        .logits
        .clone()
        .ok_or_else(|| Error::InvalidInput("no clean logits".into()))?;
    let m = match cfg.metric {
        AcdcMetric::Kl => Metric::Kl(log_softmax(&clean_logits)?),
        AcdcMetric::Task => Metric::Task(metric),
    };
    let mut forwards = 2usize;
    let run_cut = |removed: &[bool], start: usize| -> Result<f64> {
        let mut iv = CutHeads {
            removed,
            n_heads: nh,
            corrupt_z: &corr.z,
        };
        let out = model.forward(
            clean,
            ForwardOptions {
                start: (start > 0).then(|| (start, base.resid[start].clone())),
                intervention: Some(&mut iv),
                ..Default::default()
            },
        )?;
        let l = out
            .logits
            .ok_or_else(|| Error::InvalidInput("no logits".into()))?;
        m.eval(&l)
    };
    let metric_full = m.eval(&clean_logits)?;
    let metric_all_cut = run_cut(&vec![true; nl * nh], 0)?;
    forwards += 1;
    let mut groups = vec![Group {
        lo: 0,
        hi: taus.len(),
        state: vec![false; nl * nh],
        cur: metric_full,
    }];
    let total = nl * nh;
    for (done, unit) in (0..total).rev().enumerate() {
        let layer = unit / nh;
        lockstep_step(
            &mut groups,
            taus,
            |_| false,
            |s: &mut Vec<bool>| s[unit] = true,
            |s: &mut Vec<bool>| s[unit] = false,
            |s| {
                forwards += 1;
                run_cut(s, layer)
            },
        )?;
        progress(done + 1, total);
    }
    let mut runs = Vec::with_capacity(taus.len());
    for g in &groups {
        let recomputed = run_cut(&g.state, 0)?;
        forwards += 1;
        for &threshold in &taus[g.lo..g.hi] {
            runs.push(AcdcRun {
                threshold,
                heads: (0..total)
                    .filter(|&u| !g.state[u])
                    .map(|u| (u / nh, u % nh))
                    .collect(),
                kept_edges: Vec::new(),
                metric: g.cur,
                metric_recomputed: recomputed,
            });
        }
    }
    runs.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
    let head_scores = head_scores(nl, nh, &runs);
    Ok(AcdcResult {
        config: cfg.clone(),
        n_layers: nl,
        n_heads: nh,
        has_mlp: crate::model::graph::model_has_mlp(&model.cfg),
        parallel: model.cfg.details.parallel_attn_mlp,
        n_edges: 0,
        n_prompts: clean.len(),
        runs,
        head_scores,
        edge_scores: Vec::new(),
        metric_full,
        metric_all_cut,
        forwards,
        seconds: 0.0,
    })
}

#[derive(Clone)]
struct EdgeState {
    mask: Vec<bool>,
    /// Kept outgoing edges per sender.
    out_kept: Vec<usize>,
}

#[allow(clippy::too_many_arguments)]
fn acdc_edges(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    metric: &MetricFn<'_>,
    cfg: &AcdcConfig,
    taus: &[f64],
    split_qkv: bool,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AcdcResult> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let gm = GraphModel::new(model, split_qkv)?;
    let g = &gm.graph;
    let ctx = gm.patch_context(clean, corrupt)?;
    let m = match cfg.metric {
        AcdcMetric::Kl => Metric::Kl(log_softmax(&ctx.clean.logits)?),
        AcdcMetric::Task => Metric::Task(metric),
    };
    let ne = g.n_edges();
    let mut forwards = 2usize;
    let run_mask = |mask: &[bool], start: usize| -> Result<f64> {
        let out = gm.run(
            clean,
            GraphRunOptions {
                mask: Some(mask),
                patch: Some(&ctx),
                start_layer: start,
                ..Default::default()
            },
        )?;
        m.eval(&out.logits)
    };
    let metric_full = m.eval(&ctx.clean.logits)?;
    let metric_all_cut = run_mask(&vec![false; ne], 0)?;
    forwards += 1;
    let mut out_kept = vec![0usize; g.senders.len()];
    for e in 0..ne {
        out_kept[g.edge(e).0] += 1;
    }
    let mut groups = vec![Group {
        lo: 0,
        hi: taus.len(),
        state: EdgeState {
            mask: vec![true; ne],
            out_kept,
        },
        cur: metric_full,
    }];
    let mut done = 0;
    for r in (0..g.receivers.len()).rev() {
        let node = g.sender_of_receiver(r);
        let start = g.receiver_layer(r);
        for s in (0..g.n_upstream(r)).rev() {
            let e = g.edges_of(r).start + s;
            lockstep_step(
                &mut groups,
                taus,
                |st: &EdgeState| node.is_some_and(|n| st.out_kept[n] == 0),
                |st: &mut EdgeState| {
                    st.mask[e] = false;
                    st.out_kept[s] -= 1;
                },
                |st: &mut EdgeState| {
                    st.mask[e] = true;
                    st.out_kept[s] += 1;
                },
                |st| {
                    forwards += 1;
                    run_mask(&st.mask, start)
                },
            )?;
            done += 1;
            progress(done, ne);
        }
    }
    let mut runs = Vec::with_capacity(taus.len());
    for gr in &groups {
        let recomputed = run_mask(&gr.state.mask, 0)?;
        forwards += 1;
        let heads: Vec<(usize, usize)> = (0..nl)
            .flat_map(|l| (0..nh).map(move |h| (l, h)))
            .filter(|&(l, h)| gr.state.out_kept[g.head_sender(l, h)] > 0)
            .collect();
        let kept: Vec<u32> = (0..ne)
            .filter(|&e| gr.state.mask[e])
            .map(|e| e as u32)
            .collect();
        for &threshold in &taus[gr.lo..gr.hi] {
            runs.push(AcdcRun {
                threshold,
                heads: heads.clone(),
                kept_edges: kept.clone(),
                metric: gr.cur,
                metric_recomputed: recomputed,
            });
        }
    }
    runs.sort_by(|a, b| a.threshold.total_cmp(&b.threshold));
    let head_scores = head_scores(nl, nh, &runs);
    let edge_scores = scores_from_runs(ne, &runs, |r| {
        r.kept_edges.iter().map(|&e| e as usize).collect()
    });
    Ok(AcdcResult {
        config: cfg.clone(),
        n_layers: nl,
        n_heads: nh,
        has_mlp: g.has_mlp,
        parallel: g.parallel,
        n_edges: ne,
        n_prompts: clean.len(),
        runs,
        head_scores,
        edge_scores,
        metric_full,
        metric_all_cut,
        forwards,
        seconds: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lockstep groups decide exactly as separate runs would, on a synthetic metric.
    #[test]
    fn lockstep_equals_separate_runs() {
        // Metric: sum of weights of removed units, squared (interactions between units).
        let w = [0.05, 0.001, 0.3, 0.02, 0.0005, 0.2, 0.01];
        let f = |s: &Vec<bool>| -> f64 {
            let x: f64 = s.iter().zip(&w).filter(|(r, _)| **r).map(|(_, w)| w).sum();
            x * x + x
        };
        let taus = vec![0.0, 0.001, 0.01, 0.05, 0.2, 1.0, f64::INFINITY];
        let mut groups = vec![Group {
            lo: 0,
            hi: taus.len(),
            state: vec![false; w.len()],
            cur: 0.0,
        }];
        let mut evals = 0;
        for u in (0..w.len()).rev() {
            lockstep_step(
                &mut groups,
                &taus,
                |_| false,
                |s: &mut Vec<bool>| s[u] = true,
                |s: &mut Vec<bool>| s[u] = false,
                |s| {
                    evals += 1;
                    Ok(f(s))
                },
            )
            .unwrap();
        }
        for (i, &tau) in taus.iter().enumerate() {
            let mut s = vec![false; w.len()];
            let mut cur = 0.0;
            for u in (0..w.len()).rev() {
                s[u] = true;
                let m = f(&s);
                if m - cur < tau {
                    cur = m;
                } else {
                    s[u] = false;
                }
            }
            let g = groups.iter().find(|g| g.lo <= i && i < g.hi).unwrap();
            assert_eq!(g.state, s, "τ = {tau}");
            assert!((g.cur - cur).abs() < 1e-12);
        }
        assert!(evals < taus.len() * w.len());
        assert!(groups[0].state.iter().all(|&r| !r), "τ = 0 removes nothing");
        assert!(
            groups.last().unwrap().state.iter().all(|&r| r),
            "τ = ∞ removes all"
        );
    }
}

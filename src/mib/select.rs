//! Top-n selection and pruning exactly as EAP-IG's `Graph.apply_topn` and `Graph.prune`
//! (src/eap/graph.py at 795f560), which MIB's evaluation calls at each percentage.
//!
//! EAP-IG keeps a dense `[n_forward, n_backward]` boolean matrix `in_graph`, in which
//! entries that are not edges (`m10 -> a2.h0<q>`) exist too. Node-level selection switches
//! on whole rows, fake entries included; they survive pruning and count in
//! `weighted_edge_count`. To reproduce its numbers this module runs on the same dense
//! matrix and reports the real edges in our edge-id order beside the full count.

use super::{MibLayout, MibScores};
use crate::error::{Error, Result};
use crate::model::graph::CircuitGraph;

/// What `apply_topn` ranks: edges, or nodes (a node keeps all its outgoing edges).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum MibLevel {
    Edge,
    Node,
}

/// One `apply_topn` + `prune` result.
#[derive(Debug, Clone, PartialEq)]
pub struct MibSelection {
    /// Per edge id (our order): the edge is in the circuit.
    pub edges: Vec<bool>,
    /// Per node but `logits` (sender index); `logits` is always in.
    pub nodes: Vec<bool>,
    /// EAP-IG's `weighted_edge_count()` (no neurons: `in_graph.sum()`), which counts the
    /// non-edge entries a node-level selection switches on; MIB's x axis for node-level
    /// curves. Equals the number of kept edges at the edge level.
    pub weighted_edge_count: f64,
}

impl MibSelection {
    /// Real edges kept.
    pub fn n_edges(&self) -> usize {
        self.edges.iter().filter(|&&x| x).count()
    }
}

/// How many items MIB's evaluation takes its percentages of (`n_scored_items` in
/// MIB-circuit-track's `evaluate_area_under_curve`): every edge at the edge level, the
/// nodes with a (non-NaN) score at the node level.
pub fn n_items(scores: &MibScores, level: MibLevel) -> Result<usize> {
    match level {
        MibLevel::Edge => Ok(scores.edges.len()),
        MibLevel::Node => Ok(node_scores(scores)?.iter().filter(|x| !x.is_nan()).count()),
    }
}

fn node_scores(scores: &MibScores) -> Result<&[f32]> {
    scores.nodes.as_deref().ok_or_else(|| {
        Error::InvalidInput("node-level selection needs node scores; these have none".into())
    })
}

/// Indices of `keys` sorted by value, largest first, ties by the second element (EAP-IG's
/// flat matrix index): a stable order, where torch's argsort is not stable.
fn argsort_desc(keys: &[(f32, usize)]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    // Keys are finite or -inf (no NaN), so partial_cmp is total here; -0.0 ties 0.0 as in torch.
    idx.sort_by(|&a, &b| {
        keys[b]
            .0
            .partial_cmp(&keys[a].0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(keys[a].1.cmp(&keys[b].1))
    });
    idx
}

/// EAP-IG's `apply_topn(n, absolute, level, reset=True, prune=True)`.
///
/// - Edge level: the `n` edges with the largest score (|score| when `absolute`) are in;
///   a node is in when it has an edge out and an edge in (`input` counts as having one);
///   then [`prune`]. `n` may not exceed the number of edges.
/// - Node level: the `n` scored nodes with the largest score are in, and every unscored
///   (NaN) node; every matrix entry out of a node that is in is switched on; then prune.
///   `n` may not exceed the number of scored nodes.
///
/// Ties rank by EAP-IG's matrix index (forward node, then backward port). torch's CPU
/// argsort is not stable, so where equal scores straddle the cut EAP-IG's choice among
/// them is arbitrary and may differ from this one (docs/mib.md).
pub fn apply_topn(
    graph: &CircuitGraph,
    scores: &MibScores,
    n: usize,
    absolute: bool,
    level: MibLevel,
) -> Result<MibSelection> {
    let cfg = super::MibConfig::for_graph(graph, 0)?;
    scores.check(graph)?;
    let layout = MibLayout::new(cfg);
    let (nf, nb) = (cfg.n_forward(), cfg.n_backward());
    let mut m = Dense {
        nf,
        nb,
        in_graph: vec![false; nf * nb],
        nodes: vec![false; nf],
        owner: owners(&layout),
    };
    let key = |x: f32| if absolute { x.abs() } else { x };
    match level {
        MibLevel::Edge => {
            let n_real = graph.n_edges();
            if n > n_real {
                return Err(Error::InvalidInput(format!(
                    "requested n ({n}) is greater than the number of edges ({n_real})"
                )));
            }
            // Non-edges are -inf in EAP-IG's ranking and n ≤ edges, so they never make
            // the cut: rank the real edges only, by their flat matrix index on ties.
            let flat: Vec<usize> = (0..n_real)
                .map(|e| {
                    let (f, b) = layout.matrix_index(e);
                    f * nb + b
                })
                .collect();
            let keys: Vec<(f32, usize)> = (0..n_real)
                .map(|e| (key(scores.edges[e]), flat[e]))
                .collect();
            for &e in argsort_desc(&keys).iter().take(n) {
                m.in_graph[flat[e]] = true;
            }
            let (outgoing, ingoing) = m.degrees();
            for f in 0..nf {
                m.nodes[f] |= outgoing[f] && ingoing[f];
            }
        }
        MibLevel::Node => {
            let ns = node_scores(scores)?;
            let scored: Vec<usize> = (0..nf).filter(|&f| !ns[f].is_nan()).collect();
            if n > scored.len() {
                return Err(Error::InvalidInput(format!(
                    "requested n ({n}) is greater than the number of scored nodes ({})",
                    scored.len()
                )));
            }
            // Unscored nodes rank at -inf, after every scored one (all finite), and are
            // switched back on below, so only the scored ones need ranking.
            let keys: Vec<(f32, usize)> = scored.iter().map(|&f| (key(ns[f]), f)).collect();
            for &k in argsort_desc(&keys).iter().take(n) {
                m.nodes[scored[k]] = true;
            }
            for (on, x) in m.nodes.iter_mut().zip(ns) {
                *on |= x.is_nan();
            }
            for (row, &on) in m.in_graph.chunks_mut(nb).zip(&m.nodes) {
                if on {
                    row.fill(true);
                }
            }
        }
    }
    m.prune();

    let edges = (0..graph.n_edges())
        .map(|e| {
            let (f, b) = layout.matrix_index(e);
            m.in_graph[f * nb + b]
        })
        .collect();
    let weighted_edge_count = m.in_graph.iter().filter(|&&x| x).count() as f64;
    Ok(MibSelection {
        edges,
        nodes: m.nodes,
        weighted_edge_count,
    })
}

/// Per backward index, the forward node it is an input of (EAP-IG's `forward_to_backward`,
/// transposed); `None` for `logits`.
fn owners(layout: &MibLayout) -> Vec<Option<usize>> {
    let mut owner = vec![None; layout.cfg.n_backward()];
    for r in 0..layout.graph.receivers.len() {
        owner[layout.backward_index(r)] = layout.graph.sender_of_receiver(r);
    }
    owner
}

/// EAP-IG's dense state: `in_graph` [n_forward × n_backward] row-major, `nodes_in_graph`.
struct Dense {
    nf: usize,
    nb: usize,
    in_graph: Vec<bool>,
    nodes: Vec<bool>,
    owner: Vec<Option<usize>>,
}

impl Dense {
    /// Per forward node: any entry out of it (`in_graph.any(dim=1)`), and any entry into
    /// one of its inputs (through `forward_to_backward`), `input` counting as having one.
    fn degrees(&self) -> (Vec<bool>, Vec<bool>) {
        let mut outgoing = vec![false; self.nf];
        let mut ingoing = vec![false; self.nf];
        for (out, row) in outgoing.iter_mut().zip(self.in_graph.chunks(self.nb)) {
            for (b, &on) in row.iter().enumerate() {
                if on {
                    *out = true;
                    if let Some(o) = self.owner[b] {
                        ingoing[o] = true;
                    }
                }
            }
        }
        if let Some(first) = ingoing.first_mut() {
            *first = true;
        }
        (outgoing, ingoing)
    }

    /// EAP-IG's `prune()`: until nothing changes, a node is in iff it has an entry out and
    /// one in (this assigns, as graph.py does, rather than only removing), and an entry
    /// stays only while its forward node and its backward port's node are in (`logits`
    /// always is).
    fn prune(&mut self) {
        loop {
            let (outgoing, ingoing) = self.degrees();
            let mut changed = false;
            for f in 0..self.nf {
                let on = outgoing[f] && ingoing[f];
                changed |= self.nodes[f] != on;
                self.nodes[f] = on;
            }
            let port_in: Vec<bool> = self
                .owner
                .iter()
                .map(|o| o.is_none_or(|f| self.nodes[f]))
                .collect();
            for f in 0..self.nf {
                let row = &mut self.in_graph[f * self.nb..(f + 1) * self.nb];
                for (b, x) in row.iter_mut().enumerate() {
                    if *x && !(self.nodes[f] && port_in[b]) {
                        *x = false;
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
    }
}

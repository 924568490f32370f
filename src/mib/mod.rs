//! MIB circuit files: the graph JSON of EAP-IG (hannamw/EAP-IG `src/eap/graph.py`, read at
//! commit 795f560; MIT), which the MIB circuit track (Mueller et al. 2025, arXiv
//! 2504.13151) takes as a submission. See docs/mib.md.
//!
//! ```text
//! {"cfg": {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": false, "d_model": 768},
//!  "nodes": {"input": {"in_graph": true}, "a0.h0": {..}, …, "m0": {..}, …, "logits": {..}},
//!  "edges": {"input->a0.h0<q>": {"score": -0.0003, "in_graph": false}, …}}
//! ```
//!
//! Nodes are EAP-IG's forward (sender) nodes, `input`, per layer `a{l}.h{h}` then `m{l}`,
//! and last `logits`: the same order and indices as [`CircuitGraph`]'s senders, so a node's
//! index here *is* its sender index, and `logits` is index `senders.len()`. An edge into a
//! head names the head's input port after the head (`a0.h0->a1.h2<k>`). Edges are keyed in
//! the order `Graph.from_model` inserts them (see [`MibLayout::edge_order`]), which differs
//! from our edge ids (receiver-major); everything here is held in our edge-id order and
//! permuted only when written.
//!
//! Scores are f32, as EAP-IG holds them (a torch float32 tensor), so a file read here ranks
//! as it does there (ties at a cut aside: see [`apply_topn`]). Signs follow MIB: see
//! [`MibScores`].
//!
//! Neuron-level graphs (`neurons`, `neurons_scores`) are not supported.

mod json;
mod select;

use std::path::Path;

use crate::error::{read_text, Error, Result};
use crate::model::graph::{CircuitGraph, Port, Receiver, Sender};
use json::{quote, J};

pub use select::{apply_topn, n_items, MibLevel, MibSelection};

/// The `cfg` of a MIB file: what EAP-IG's `Graph.from_model` copies from a
/// `HookedTransformer`'s config, in the order `to_json` writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MibConfig {
    pub n_layers: usize,
    pub n_heads: usize,
    /// GPT-NeoX's parallel block: a layer's MLP reads the layer's input, not its heads.
    pub parallel_attn_mlp: bool,
    pub d_model: usize,
}

impl MibConfig {
    /// The config of `graph`, which must be EAP-IG's shape: q/k/v split and an MLP per layer.
    pub fn for_graph(graph: &CircuitGraph, d_model: usize) -> Result<Self> {
        if !graph.split_qkv {
            return Err(Error::InvalidInput(
                "MIB circuit files need the graph with split q/k/v inputs (EAP-IG's); \
                 this graph has one input per head"
                    .into(),
            ));
        }
        if !graph.has_mlp && graph.n_layers > 0 {
            return Err(Error::InvalidInput(
                "MIB circuit files have an MLP node per layer; this model has none \
                 (attention-only), so it has no MIB graph"
                    .into(),
            ));
        }
        Ok(MibConfig {
            n_layers: graph.n_layers,
            n_heads: graph.n_heads,
            parallel_attn_mlp: graph.parallel,
            d_model,
        })
    }

    /// Our computational graph of this shape.
    pub fn graph(&self) -> CircuitGraph {
        CircuitGraph::new(
            self.n_layers,
            self.n_heads,
            true,
            true,
            self.parallel_attn_mlp,
        )
    }

    /// EAP-IG's `n_forward`: the sender nodes (every node but `logits`).
    pub fn n_forward(&self) -> usize {
        1 + self.n_layers * (self.n_heads + 1)
    }

    /// EAP-IG's `n_backward`: q, k, v of every head, every MLP, and `logits`.
    pub fn n_backward(&self) -> usize {
        self.n_layers * (3 * self.n_heads + 1) + 1
    }

    /// Nodes and edges of this shape, computed without building the graph and `None` on
    /// overflow (a reader checks a file's counts against these before it allocates).
    pub fn counts(&self) -> Option<(usize, usize)> {
        let (l, h) = (self.n_layers as u128, self.n_heads as u128);
        let nodes = l.checked_mul(h + 1)?.checked_add(2)?;
        // Edges into layer i: 3h heads' inputs read 1 + i(h+1) senders, the MLP reads
        // h more (none more when parallel); the logits read every sender.
        let mut edges: u128 = 0;
        let mlp_extra = if self.parallel_attn_mlp { 0 } else { h };
        // Σ_i (3h + 1)(1 + i(h+1)) = (3h+1)(l + (h+1) l(l-1)/2), plus l·mlp_extra.
        let tri = l.checked_mul(l.saturating_sub(1))? / 2;
        let up_sum = l.checked_add((h + 1).checked_mul(tri)?)?;
        edges = edges.checked_add((3 * h + 1).checked_mul(up_sum)?)?;
        edges = edges.checked_add(l.checked_mul(mlp_extra)?)?;
        edges = edges.checked_add(nodes - 1)?;
        Some((usize::try_from(nodes).ok()?, usize::try_from(edges).ok()?))
    }
}

/// The name mapping of one graph shape, both ways: MIB node names ↔ sender indices
/// (`logits` = `senders.len()`), MIB edge names ↔ our edge ids, and EAP-IG's
/// (forward, backward) matrix index of each edge.
#[derive(Debug, Clone)]
pub struct MibLayout {
    pub cfg: MibConfig,
    pub graph: CircuitGraph,
    /// Our edge ids in the order EAP-IG's `Graph.from_model` inserts its edges (and
    /// `to_json` writes them).
    pub edge_order: Vec<usize>,
}

impl MibLayout {
    pub fn new(cfg: MibConfig) -> Self {
        let graph = cfg.graph();
        let edge_order = edge_order(&graph);
        MibLayout {
            cfg,
            graph,
            edge_order,
        }
    }

    /// Number of nodes, `logits` included.
    pub fn n_nodes(&self) -> usize {
        self.graph.senders.len() + 1
    }

    /// The MIB name of node `i` (a sender index, or `senders.len()` for `logits`).
    pub fn node_name(&self, i: usize) -> String {
        match self.graph.senders.get(i) {
            None => "logits".into(),
            Some(Sender::Input) => "input".into(),
            Some(Sender::Head { layer, head }) => format!("a{layer}.h{head}"),
            Some(Sender::Mlp { layer }) => format!("m{layer}"),
        }
    }

    /// The node index of a MIB node name, exactly as EAP-IG spells it.
    pub fn node_index(&self, name: &str) -> Option<usize> {
        let (l, h) = (self.cfg.n_layers, self.cfg.n_heads);
        if name == "input" {
            return Some(0);
        }
        if name == "logits" {
            return Some(self.graph.senders.len());
        }
        if let Some(layer) = name.strip_prefix('m').and_then(canonical_usize) {
            return (layer < l).then(|| self.graph.mlp_sender(layer)).flatten();
        }
        let (a, b) = name.strip_prefix('a')?.split_once(".h")?;
        let (layer, head) = (canonical_usize(a)?, canonical_usize(b)?);
        (layer < l && head < h).then(|| self.graph.head_sender(layer, head))
    }

    /// The MIB name of receiver `r`'s node and its port suffix (`<q>`…, or "").
    fn receiver_name(&self, r: usize) -> String {
        match self.graph.receivers[r] {
            Receiver::Head { layer, head, port } => {
                let p = match port {
                    Port::Q => "q",
                    Port::K => "k",
                    Port::V => "v",
                    // A MIB layout is built from the split graph only.
                    Port::Qkv => "qkv",
                };
                format!("a{layer}.h{head}<{p}>")
            }
            Receiver::Mlp { layer } => format!("m{layer}"),
            Receiver::Output => "logits".into(),
        }
    }

    /// The MIB name of our edge `e`: `"{sender}->{receiver}"`, `<q|k|v>` after a head.
    pub fn edge_name(&self, e: usize) -> String {
        let (s, r) = self.graph.edge(e);
        format!("{}->{}", self.node_name(s), self.receiver_name(r))
    }

    /// Our edge id of a MIB edge name, exactly as EAP-IG spells it; `None` for a name that
    /// is not an edge of this graph (an unknown node, a missing or stray port, a sender
    /// that is not upstream of the receiver).
    pub fn edge_id(&self, name: &str) -> Option<usize> {
        let (src, dst) = name.split_once("->")?;
        let s = self
            .node_index(src)
            .filter(|&s| s < self.graph.senders.len())?;
        let (node, port) = match dst.strip_suffix('>').and_then(|d| d.rsplit_once('<')) {
            Some((node, "q")) => (node, Some(0)),
            Some((node, "k")) => (node, Some(1)),
            Some((node, "v")) => (node, Some(2)),
            Some(_) => return None,
            None => (dst, None),
        };
        let d = self.node_index(node)?;
        let r = match (self.graph.senders.get(d), port) {
            (None, None) => self.graph.output_receiver(),
            (Some(Sender::Mlp { layer }), None) => self.graph.mlp_receiver(*layer)?,
            (Some(Sender::Head { layer, head }), Some(p)) => {
                self.graph.attn_receivers(*layer).start + head * 3 + p
            }
            _ => return None,
        };
        // Only the exact spelling: the parse above accepts nothing else, and this keeps
        // it so (two names must never reach one edge).
        self.graph
            .edge_id(s, r)
            .filter(|&e| self.edge_name(e) == name)
    }

    /// EAP-IG's backward index of our receiver `r`: per layer q of every head, then k,
    /// then v, then the MLP; `logits` last.
    pub fn backward_index(&self, r: usize) -> usize {
        let h = self.cfg.n_heads;
        match self.graph.receivers[r] {
            Receiver::Head { layer, head, port } => {
                let p = match port {
                    Port::Q | Port::Qkv => 0,
                    Port::K => 1,
                    Port::V => 2,
                };
                layer * (3 * h + 1) + p * h + head
            }
            Receiver::Mlp { layer } => layer * (3 * h + 1) + 3 * h,
            Receiver::Output => self.cfg.n_backward() - 1,
        }
    }

    /// EAP-IG's (forward, backward) index of our edge `e` in its score matrix.
    pub fn matrix_index(&self, e: usize) -> (usize, usize) {
        let (s, r) = self.graph.edge(e);
        (s, self.backward_index(r))
    }
}

/// `"12"` → 12; refuses signs, spaces and leading zeros, which EAP-IG's names never have
/// (its dictionaries match names exactly).
fn canonical_usize(s: &str) -> Option<usize> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse().ok()).flatten()
}

/// Our edge ids in `Graph.from_model`'s insertion order: per layer, for each sender
/// upstream of the heads, its edges into every head's q, k, v (head-major); then every
/// sender upstream of the MLP into it (parallel blocks interleave the two per sender);
/// finally every sender into `logits`.
fn edge_order(g: &CircuitGraph) -> Vec<usize> {
    let mut order = Vec::with_capacity(g.n_edges());
    let mut push = |s: usize, r: usize| {
        if let Some(e) = g.edge_id(s, r) {
            order.push(e);
        }
    };
    for layer in 0..g.n_layers {
        let attn = g.attn_receivers(layer);
        let up = g.head_sender(layer, 0);
        let mlp = g.mlp_receiver(layer);
        for s in 0..up {
            for r in attn.clone() {
                push(s, r);
            }
            if g.parallel {
                if let Some(m) = mlp {
                    push(s, m);
                }
            }
        }
        if !g.parallel {
            if let Some(m) = mlp {
                for s in 0..up + g.n_heads {
                    push(s, m);
                }
            }
        }
    }
    for s in 0..g.senders.len() {
        push(s, g.output_receiver());
    }
    order
}

/// Scores in MIB's sign and in our edge-id order.
///
/// **Sign.** MIB and EAP-IG attribute with `loss=True`: the metric is negated (a loss), and
/// a score is the predicted change of that loss when the component is patched to its
/// corrupted value. A positive score therefore means "cutting this hurts the task".
/// headcode's EAP and ACDC ([`crate::baselines::eap::EapResult::edge_scores`]) store the
/// predicted change of the task *metric* when cut, negative for important edges:
/// [`MibScores::from_metric_change`] negates them, and is the one place that does.
/// Importance scores that are already "higher = more important" (the SAE scores, class
/// means, |patching effect|) go through [`MibScores::from_importance`] unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct MibScores {
    /// Per edge id; finite.
    pub edges: Vec<f32>,
    /// Per node (sender index; `logits` has none), NaN for an unscored node, which
    /// node-level selection always keeps; `None` when the file has no node scores.
    pub nodes: Option<Vec<f32>>,
}

impl MibScores {
    /// From the predicted change of the task metric when each edge (and node) is cut, as
    /// headcode's EAP and ACDC give it: negated into MIB's loss convention.
    pub fn from_metric_change(edges: &[f64], nodes: Option<&[f64]>) -> Self {
        MibScores {
            edges: edges.iter().map(|&x| -x as f32).collect(),
            nodes: nodes.map(|n| n.iter().map(|&x| -x as f32).collect()),
        }
    }

    /// From scores where higher means more important (MIB's sign already).
    pub fn from_importance(edges: &[f64], nodes: Option<&[f64]>) -> Self {
        MibScores {
            edges: edges.iter().map(|&x| x as f32).collect(),
            nodes: nodes.map(|n| n.iter().map(|&x| x as f32).collect()),
        }
    }

    /// A head-only method's scores (per head, layer-major, higher = more important): node
    /// scores from [`MibScores::head_nodes`], every edge score 0. Such a file is meant for
    /// node-level evaluation, with every edge `in_graph` ([`MibGraph::include_all`]), as
    /// MIB's node-level examples are.
    pub fn for_heads(graph: &CircuitGraph, head_scores: &[f64]) -> Result<Self> {
        let heads: Vec<f32> = head_scores.iter().map(|&x| x as f32).collect();
        Ok(MibScores {
            edges: vec![0.0; graph.n_edges()],
            nodes: Some(Self::head_nodes(graph, &heads)?),
        })
    }

    /// Node scores from per-head scores (layer-major, `l * n_heads + h`): `input` and the
    /// MLPs are unscored (NaN), so node-level selection keeps them, as MIB's head-only
    /// examples do.
    pub fn head_nodes(graph: &CircuitGraph, head_scores: &[f32]) -> Result<Vec<f32>> {
        let n = graph.n_layers * graph.n_heads;
        if head_scores.len() != n {
            return Err(Error::shape("MIB head scores", n, head_scores.len()));
        }
        let mut nodes = vec![f32::NAN; graph.senders.len()];
        for l in 0..graph.n_layers {
            for h in 0..graph.n_heads {
                nodes[graph.head_sender(l, h)] = head_scores[l * graph.n_heads + h];
            }
        }
        Ok(nodes)
    }

    /// Lengths against `graph`; edge scores finite; node scores finite or NaN.
    pub fn check(&self, graph: &CircuitGraph) -> Result<()> {
        if self.edges.len() != graph.n_edges() {
            return Err(Error::shape(
                "MIB edge scores",
                graph.n_edges(),
                self.edges.len(),
            ));
        }
        if let Some(e) = self.edges.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "MIB edge score {e} ({}) is not finite",
                graph.edge_label(e)
            )));
        }
        if let Some(nodes) = &self.nodes {
            if nodes.len() != graph.senders.len() {
                return Err(Error::shape(
                    "MIB node scores",
                    graph.senders.len(),
                    nodes.len(),
                ));
            }
            if let Some(i) = nodes.iter().position(|x| x.is_infinite()) {
                return Err(Error::InvalidInput(format!(
                    "MIB node score of {} is infinite",
                    graph.sender_label(i)
                )));
            }
        }
        Ok(())
    }
}

/// One MIB graph file, held in our edge-id order.
#[derive(Debug, Clone, PartialEq)]
pub struct MibGraph {
    pub cfg: MibConfig,
    pub scores: MibScores,
    /// Per edge id.
    pub edges_in_graph: Vec<bool>,
    /// Per node but `logits` (sender index); `logits` is always in the graph.
    pub nodes_in_graph: Vec<bool>,
}

impl MibGraph {
    /// A graph of `graph`'s shape with these scores, nothing `in_graph` (as EAP-IG's
    /// `attribute` leaves it); see [`MibGraph::select`] and [`MibGraph::include_all`].
    pub fn new(graph: &CircuitGraph, d_model: usize, scores: MibScores) -> Result<Self> {
        let cfg = MibConfig::for_graph(graph, d_model)?;
        scores.check(graph)?;
        Ok(MibGraph {
            cfg,
            edges_in_graph: vec![false; graph.n_edges()],
            nodes_in_graph: vec![false; graph.senders.len()],
            scores,
        })
    }

    /// Set `in_graph` to a selection (from [`MibGraph::apply_topn`]).
    pub fn select(&mut self, sel: &MibSelection) -> Result<()> {
        if sel.edges.len() != self.edges_in_graph.len()
            || sel.nodes.len() != self.nodes_in_graph.len()
        {
            return Err(Error::shape(
                "MIB selection (edges, nodes)",
                format!(
                    "({}, {})",
                    self.edges_in_graph.len(),
                    self.nodes_in_graph.len()
                ),
                format!("({}, {})", sel.edges.len(), sel.nodes.len()),
            ));
        }
        self.edges_in_graph.clone_from(&sel.edges);
        self.nodes_in_graph.clone_from(&sel.nodes);
        Ok(())
    }

    /// Every node and edge `in_graph` (what a head-only method's node-level file holds).
    pub fn include_all(&mut self) {
        self.edges_in_graph.iter_mut().for_each(|x| *x = true);
        self.nodes_in_graph.iter_mut().for_each(|x| *x = true);
    }

    pub fn layout(&self) -> MibLayout {
        MibLayout::new(self.cfg)
    }

    /// EAP-IG's `apply_topn(n, absolute, level)` with its defaults `reset=True`,
    /// `prune=True`, on this graph's scores (its `in_graph` is not read).
    pub fn apply_topn(&self, n: usize, absolute: bool, level: MibLevel) -> Result<MibSelection> {
        apply_topn(&self.cfg.graph(), &self.scores, n, absolute, level)
    }

    /// How many items MIB's evaluation takes its percentages of: every edge at the edge
    /// level, the scored (non-NaN) nodes at the node level.
    pub fn n_items(&self, level: MibLevel) -> Result<usize> {
        select::n_items(&self.scores, level)
    }

    /// Error unless this file's `cfg` is `graph`'s shape with `d_model`.
    pub fn check_model(&self, graph: &CircuitGraph, d_model: usize, source: &Path) -> Result<()> {
        let want = MibConfig::for_graph(graph, d_model)
            .map_err(|e| Error::format(source, e.to_string()))?;
        let c = &self.cfg;
        let mismatch = |key: &str, got: String, want: String| {
            Error::format(
                source,
                format!("`cfg.{key}` is {got} but the model has {want}"),
            )
        };
        if c.n_layers != want.n_layers {
            return Err(mismatch(
                "n_layers",
                c.n_layers.to_string(),
                want.n_layers.to_string(),
            ));
        }
        if c.n_heads != want.n_heads {
            return Err(mismatch(
                "n_heads",
                c.n_heads.to_string(),
                want.n_heads.to_string(),
            ));
        }
        if c.parallel_attn_mlp != want.parallel_attn_mlp {
            return Err(mismatch(
                "parallel_attn_mlp",
                c.parallel_attn_mlp.to_string(),
                want.parallel_attn_mlp.to_string(),
            ));
        }
        if c.d_model != want.d_model {
            return Err(mismatch(
                "d_model",
                c.d_model.to_string(),
                want.d_model.to_string(),
            ));
        }
        Ok(())
    }

    /// The file EAP-IG's `Graph.to_json` writes for this graph, byte for byte: `json.dump`'s
    /// separators, keys in `from_model`'s order, floats as Python's `repr` of the f32
    /// value, a NaN node score as `NaN`. With node scores, `logits` gets `"score": NaN`:
    /// EAP-IG holds no score for it, and its own `to_json` fails on such a graph (it reads
    /// one past the end of `nodes_scores` at `logits`); padding that tensor with one NaN is
    /// the smallest fix, and its readers skip the `logits` entry anyway.
    pub fn to_json(&self) -> String {
        let layout = self.layout();
        let c = &self.cfg;
        let mut s = String::with_capacity(64 * (layout.edge_order.len() + layout.n_nodes()));
        s.push_str(&format!(
            "{{\"cfg\": {{\"n_layers\": {}, \"n_heads\": {}, \"parallel_attn_mlp\": {}, \"d_model\": {}}}, \"nodes\": {{",
            c.n_layers, c.n_heads, c.parallel_attn_mlp, c.d_model
        ));
        let n_senders = layout.graph.senders.len();
        for i in 0..=n_senders {
            if i > 0 {
                s.push_str(", ");
            }
            let in_graph = self.nodes_in_graph.get(i).copied().unwrap_or(true);
            s.push_str(&format!(
                "\"{}\": {{\"in_graph\": {in_graph}",
                layout.node_name(i)
            ));
            if let Some(nodes) = &self.scores.nodes {
                s.push_str(", \"score\": ");
                let x = nodes.get(i).copied().unwrap_or(f32::NAN);
                json::push_py_float(&mut s, f64::from(x));
            }
            s.push('}');
        }
        s.push_str("}, \"edges\": {");
        for (k, &e) in layout.edge_order.iter().enumerate() {
            if k > 0 {
                s.push_str(", ");
            }
            s.push('"');
            s.push_str(&layout.edge_name(e));
            s.push_str("\": {\"score\": ");
            json::push_py_float(&mut s, f64::from(self.scores.edges[e]));
            s.push_str(&format!(", \"in_graph\": {}}}", self.edges_in_graph[e]));
        }
        s.push_str("}}");
        s
    }

    /// Write [`MibGraph::to_json`] to `path` (atomically).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::error::write_file(path, self.to_json())
    }

    /// Read a MIB file.
    pub fn read(path: &Path) -> Result<Self> {
        Self::from_json(&read_text(path)?, path)
    }

    /// Parse a MIB graph file; every error is one line naming `source` and the key. The
    /// file must list every node and every edge of its `cfg`'s graph (as EAP-IG writes
    /// it), each edge with a finite `score` and a boolean `in_graph`, each node with a
    /// boolean `in_graph` and optionally a `score` (NaN = unscored). Extra `cfg` keys
    /// are ignored; check the shape against a model with [`MibGraph::check_model`].
    pub fn from_json(text: &str, source: &Path) -> Result<Self> {
        let err = |msg: String| Error::format(source, msg);
        let root = json::parse(text).map_err(|e| err(format!("not JSON: {e}")))?;
        let J::Obj(top) = root else {
            return Err(err(format!(
                "expected an object with `cfg`, `nodes` and `edges`, found {}",
                root.kind()
            )));
        };
        let get = |key: &str| -> Result<&J> {
            top.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v)
                .ok_or_else(|| err(format!("key `{key}` is missing")))
        };
        let cfg = read_cfg(get("cfg")?, &err)?;
        let nodes = as_obj(get("nodes")?, "nodes", &err)?;
        let edges = as_obj(get("edges")?, "edges", &err)?;

        // Each node or edge entry takes more than one byte of the file, so a `cfg` whose
        // graph is larger than the file cannot be complete: refuse it before allocating.
        let (n_nodes, n_edges) = cfg
            .counts()
            .filter(|&(n, e)| n <= text.len() && e <= text.len())
            .ok_or_else(|| {
                err(format!(
                    "`cfg` ({} layers × {} heads) describes more nodes or edges than a file of \
                     {} bytes can list",
                    cfg.n_layers,
                    cfg.n_heads,
                    text.len()
                ))
            })?;
        let layout = MibLayout::new(cfg);
        let n_senders = layout.graph.senders.len();

        let mut nodes_in_graph = vec![false; n_senders];
        let mut node_scores = vec![f32::NAN; n_senders];
        let mut any_score = false;
        let mut seen = vec![false; n_nodes];
        for (name, v) in nodes {
            let at = format!("nodes[{}]", quote(name));
            let i = layout
                .node_index(name)
                .ok_or_else(|| err(format!("{at}: no such node in a graph of this `cfg`")))?;
            seen[i] = true;
            let fields = as_obj(v, &at, &err)?;
            let mut in_graph = None;
            let mut score = None;
            for (k, x) in fields {
                match k.as_str() {
                    "in_graph" => in_graph = Some(as_bool(x, &format!("{at}.in_graph"), &err)?),
                    "score" => score = Some(as_score(x, &format!("{at}.score"), true, &err)?),
                    "neurons" | "neurons_scores" => {
                        return Err(err(format!(
                            "{at}.{k}: neuron-level graphs are not supported"
                        )))
                    }
                    other => return Err(err(format!("{at}: unknown key {}", quote(other)))),
                }
            }
            let in_graph =
                in_graph.ok_or_else(|| err(format!("{at}: key `in_graph` is missing")))?;
            // EAP-IG's readers skip `logits` (always in the graph, never scored).
            if i < n_senders {
                nodes_in_graph[i] = in_graph;
                if let Some(x) = score {
                    any_score = true;
                    node_scores[i] = x;
                }
            }
        }

        if let Some(i) = seen.iter().position(|&s| !s) {
            return Err(err(format!(
                "nodes: {} is missing",
                quote(&layout.node_name(i))
            )));
        }

        let mut edge_scores = vec![0f32; n_edges];
        let mut seen = vec![false; n_edges];
        let mut edges_in_graph = vec![false; n_edges];
        for (name, v) in edges {
            let at = format!("edges[{}]", quote(name));
            let e = layout
                .edge_id(name)
                .ok_or_else(|| err(format!("{at}: no such edge in a graph of this `cfg`")))?;
            seen[e] = true;
            let fields = as_obj(v, &at, &err)?;
            let (mut score, mut in_graph) = (None, None);
            for (k, x) in fields {
                match k.as_str() {
                    "score" => score = Some(as_score(x, &format!("{at}.score"), false, &err)?),
                    "in_graph" => in_graph = Some(as_bool(x, &format!("{at}.in_graph"), &err)?),
                    other => return Err(err(format!("{at}: unknown key {}", quote(other)))),
                }
            }
            edge_scores[e] = score.ok_or_else(|| err(format!("{at}: key `score` is missing")))?;
            edges_in_graph[e] =
                in_graph.ok_or_else(|| err(format!("{at}: key `in_graph` is missing")))?;
        }
        // EAP-IG's reader would leave a missing edge at score 0, out of the graph; a file
        // without every edge is more likely cut short or made for another model.
        let missing = seen.iter().filter(|&&s| !s).count();
        if let Some(&e) = layout.edge_order.iter().find(|&&e| !seen[e]) {
            return Err(err(format!(
                "edges: {} is missing{}",
                quote(&layout.edge_name(e)),
                if missing > 1 {
                    format!(" (and {} more)", missing - 1)
                } else {
                    String::new()
                }
            )));
        }
        Ok(MibGraph {
            cfg,
            scores: MibScores {
                edges: edge_scores,
                nodes: any_score.then_some(node_scores),
            },
            edges_in_graph,
            nodes_in_graph,
        })
    }

    /// The heads whose node is `in_graph`, as `(layer, head)`, sorted.
    pub fn heads_in_graph(&self) -> Vec<(usize, usize)> {
        let g = self.cfg.graph();
        g.senders
            .iter()
            .zip(&self.nodes_in_graph)
            .filter_map(|(s, &on)| match s {
                Sender::Head { layer, head } if on => Some((*layer, *head)),
                _ => None,
            })
            .collect()
    }

    /// The `in_graph` edges in headcode's label format
    /// ([`CircuitGraph::edge_label`]: `"L0H1->L2H3.q"`), sorted.
    pub fn edge_labels_in_graph(&self) -> Vec<String> {
        let g = self.cfg.graph();
        let mut v: Vec<String> = (0..g.n_edges())
            .filter(|&e| self.edges_in_graph[e])
            .map(|e| g.edge_label(e))
            .collect();
        v.sort();
        v
    }
}

/// Where a MIB submission keeps one method's file for one task and model:
/// `DIR/<method>/<task>_<model>/importances.json`, with `_` in the task spelled `-`, as
/// MIB-circuit-track's `run_attribution.py` names it.
pub fn submission_file(dir: &Path, method: &str, task: &str, model: &str) -> std::path::PathBuf {
    dir.join(method)
        .join(format!("{}_{model}", task.replace('_', "-")))
        .join("importances.json")
}

/// Whether `text` is a MIB graph file: an object with `cfg`, `nodes` and `edges` objects
/// (Python's JSON dialect, `NaN` included). Lets a reader of several circuit formats pick
/// this one.
pub fn is_mib_json(text: &str) -> bool {
    let Ok(J::Obj(top)) = json::parse(text) else {
        return false;
    };
    let is_obj = |key: &str| top.iter().any(|(k, v)| k == key && matches!(v, J::Obj(_)));
    is_obj("cfg") && is_obj("nodes") && is_obj("edges")
}

fn as_obj<'a>(v: &'a J, at: &str, err: &impl Fn(String) -> Error) -> Result<&'a [(String, J)]> {
    match v {
        J::Obj(items) => Ok(items),
        other => Err(err(format!(
            "`{at}`: expected an object, found {}",
            other.kind()
        ))),
    }
}

fn as_bool(v: &J, at: &str, err: &impl Fn(String) -> Error) -> Result<bool> {
    match v {
        J::Bool(b) => Ok(*b),
        other => Err(err(format!(
            "{at}: expected true or false, found {}",
            other.kind()
        ))),
    }
}

fn as_usize(v: &J, at: &str, err: &impl Fn(String) -> Error) -> Result<usize> {
    match v {
        J::Num { int: Some(i), .. } if *i >= 0 => {
            usize::try_from(*i).map_err(|_| err(format!("{at}: {i} is too large")))
        }
        other => Err(err(format!(
            "{at}: expected a non-negative integer, found {}",
            other.kind()
        ))),
    }
}

/// A score as EAP-IG holds it (f32). NaN is allowed only where it means "unscored" (node
/// scores); infinities never (no attribution gives them, and they break the ranking).
fn as_score(v: &J, at: &str, nan_ok: bool, err: &impl Fn(String) -> Error) -> Result<f32> {
    match v {
        J::Num { f, .. } if f.is_nan() && nan_ok => Ok(f32::NAN),
        J::Num { f, .. } if f.is_nan() => Err(err(format!("{at}: NaN is not a score"))),
        J::Num { f, .. } => {
            let x = *f as f32;
            if x.is_finite() {
                Ok(x)
            } else {
                Err(err(format!("{at}: {f} is not a finite f32 score")))
            }
        }
        other => Err(err(format!(
            "{at}: expected a number, found {}",
            other.kind()
        ))),
    }
}

fn read_cfg(v: &J, err: &impl Fn(String) -> Error) -> Result<MibConfig> {
    let items = as_obj(v, "cfg", err)?;
    let get = |key: &str| -> Result<&J> {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| err(format!("`cfg.{key}` is missing")))
    };
    Ok(MibConfig {
        n_layers: as_usize(get("n_layers")?, "`cfg.n_layers`", err)?,
        n_heads: as_usize(get("n_heads")?, "`cfg.n_heads`", err)?,
        parallel_attn_mlp: as_bool(get("parallel_attn_mlp")?, "`cfg.parallel_attn_mlp`", err)?,
        d_model: as_usize(get("d_model")?, "`cfg.d_model`", err)?,
    })
}

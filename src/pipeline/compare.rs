//! `compare`: the SAE method, its simple baselines, activation patching, ACDC and edge
//! attribution patching on one model, task, device and forward code, scored against one
//! circuit, with each method's wall time.
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::discover::{discover, CircuitSpec, DiscoverConfig, Progress, ScorerKind};
use super::prompts::prepare;
use crate::baselines::acdc::{acdc, AcdcConfig, AcdcResult, Granularity};
use crate::baselines::eap::{eap, EapResult};
use crate::error::{Error, Result};
use crate::eval::patching::{patch_heads, PatchingResult};
use crate::eval::roc::{auc, roc_curve, RocCurve};
use crate::model::graph::CircuitGraph;
use crate::model::Model;
use crate::tasks::Circuit;
use crate::tokenize::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// The SAE method (with the class-mean and random baselines from the same run).
    Sae,
    /// Activation patching of each head alone.
    Patching,
    Acdc,
    /// Edge attribution patching.
    Eap,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareConfig {
    /// The SAE method's settings; its task, seed and circuit are everyone's.
    pub discover: DiscoverConfig,
    pub methods: Vec<Method>,
    /// Prompt pairs for patching, ACDC and EAP: the first `pairs` of the task.
    pub pairs: usize,
    pub acdc: AcdcConfig,
    /// EAP's graph: q/k/v inputs split or one input per head.
    pub eap_split_qkv: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RocPoints {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodRow {
    pub method: String,
    /// ROC AUC over heads against the circuit.
    pub node_auc: f64,
    /// ROC AUC over graph edges, where the circuit lists edges and the method scores them.
    pub edge_auc: Option<f64>,
    pub seconds: f64,
    /// This method's time over the SAE method's.
    pub time_vs_sae: Option<f64>,
    /// Prompt pairs the method used.
    pub pairs: usize,
    pub notes: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareResult {
    pub model: String,
    pub task: String,
    pub device: String,
    pub circuit: Circuit,
    pub n_layers: usize,
    pub n_heads: usize,
    pub labels: Vec<String>,
    pub rows: Vec<MethodRow>,
    /// Per row (by method name): head scores, layer-major.
    pub head_scores: BTreeMap<String, Vec<f64>>,
    /// Per row: the ROC curve's points.
    pub roc: BTreeMap<String, RocPoints>,
    pub acdc: Option<AcdcResult>,
    pub eap: Option<EapResult>,
    pub patching: Option<PatchingResult>,
    /// The SAE run's AUCs for every scorer it computes.
    pub sae_auc: BTreeMap<String, f64>,
    /// Peak host and device memory, whole and per method.
    #[serde(default)]
    pub memory: crate::memory::PeakMemory,
}

/// Edge AUC of `scores` (ids of `graph`) against the circuit's edge labels.
fn edge_auc(circuit: &Circuit, graph: &CircuitGraph, scores: &[f64]) -> Result<Option<f64>> {
    if circuit.edges.is_empty() || scores.is_empty() {
        return Ok(None);
    }
    let ids: HashMap<String, usize> = (0..graph.n_edges())
        .map(|e| (graph.edge_label(e), e))
        .collect();
    let mut labels = vec![false; graph.n_edges()];
    for e in &circuit.edges {
        let id = ids.get(e).ok_or_else(|| {
            Error::Circuit(format!(
                "{}: edge `{e}` is not in the {} graph (labels look like `{}`)",
                circuit.name,
                if graph.split_qkv {
                    "q/k/v-split"
                } else {
                    "unsplit"
                },
                graph.edge_label(graph.n_edges() - 1)
            ))
        })?;
        labels[*id] = true;
    }
    Ok(Some(auc(scores, &labels)?))
}

pub fn compare(
    model: &Model,
    tok: &dyn Tokenizer,
    cfg: &CompareConfig,
    device: &str,
    progress: &mut Progress<'_>,
) -> Result<CompareResult> {
    if cfg.methods.is_empty() {
        return Err(Error::InvalidInput(
            "compare needs at least one method".into(),
        ));
    }
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let circuit = match &cfg.discover.circuit {
        CircuitSpec::Named(s) => Circuit::load(s)?,
        _ => {
            return Err(Error::InvalidInput(
                "compare needs a ground-truth circuit: a built-in name or a JSON file".into(),
            ))
        }
    };
    circuit.validate(nl, nh)?;
    let mask = circuit.mask(nl, nh);
    let k = mask.iter().filter(|&&x| x).count();
    if k == 0 || k == mask.len() {
        return Err(Error::Circuit(format!(
            "the circuit has {k} of {} heads: ROC needs both classes",
            mask.len()
        )));
    }
    let d = &cfg.discover;
    let task = prepare(&d.task, tok, d.n.max(cfg.pairs), d.seed, d.bos)?;
    let np = cfg.pairs.min(task.clean.len());
    if np == 0 {
        return Err(Error::InvalidInput("--pairs must be at least 1".into()));
    }
    let (clean, corrupt) = (&task.clean[..np], &task.corrupt[..np]);
    let metric = |i: usize, l: &[f32]| task.metric(i, l);

    let mut rows: Vec<MethodRow> = Vec::new();
    let mut head_scores = BTreeMap::new();
    let mut sae_auc = BTreeMap::new();
    let mut add = |rows: &mut Vec<MethodRow>,
                   name: String,
                   scores: Vec<f64>,
                   edge: Option<f64>,
                   seconds: f64,
                   pairs: usize,
                   notes: String|
     -> Result<()> {
        rows.push(MethodRow {
            method: name.clone(),
            node_auc: auc(&scores, &mask)?,
            edge_auc: edge,
            seconds,
            time_vs_sae: None,
            pairs,
            notes,
        });
        head_scores.insert(name, scores);
        Ok(())
    };

    let (mut acdc_res, mut eap_res, mut patch_res) = (None, None, None);
    let mut meter = crate::memory::MemoryMeter::new(Some(model.device()));
    // The SAE method's own peaks (its discover resets the high-water mark per stage).
    let mut inner = crate::memory::PeakMemory::default();
    for &m in &cfg.methods {
        crate::interrupt::check()?;
        match m {
            Method::Sae => {
                let mut dc = d.clone();
                dc.faithfulness = None;
                dc.circuit = CircuitSpec::Named(circuit_spec(&d.circuit));
                let t0 = Instant::now();
                let r = discover(model, tok, &dc, progress)?;
                let wall = t0.elapsed().as_secs_f64();
                inner = r.memory.clone();
                let ms = |k: &str| r.timings_ms.get(k).copied().unwrap_or(0.0) / 1e3;
                let shared = ms("tokenize") + ms("forward_hooks");
                let sae_s = shared + ms("baselines") + ms("sae_train") + ms("codes") + ms("scores");
                for (name, ms_) in &r.auc {
                    sae_auc.insert(name.clone(), ms_.mean);
                }
                let setting = format!(
                    "{} SAE on {}, {} trial(s), λ {}",
                    match d.sae_mode {
                        super::SaeMode::Shared => "shared",
                        super::SaeMode::PerHead => "per-head",
                    },
                    match d.on {
                        crate::hooks::HookPoint::Z => "z",
                        crate::hooks::HookPoint::Result => "result",
                    },
                    d.trials,
                    d.sae.lambda
                );
                let primary = r.primary().to_vec();
                add(
                    &mut rows,
                    format!("sae ({})", d.scorer.name()),
                    primary,
                    None,
                    sae_s,
                    r.task.pairs,
                    format!("{setting}; whole discover call {wall:.1} s"),
                )?;
                for (kind, note) in [
                    (
                        ScorerKind::ClassMeansZ,
                        "‖mean_pos − mean_neg‖ of z, same vectors",
                    ),
                    (
                        ScorerKind::ClassMeans,
                        "‖mean_pos − mean_neg‖ of result, same vectors",
                    ),
                    (ScorerKind::Random, "seeded random scores"),
                ] {
                    if let Some(s) = r.scores.get(kind.name()) {
                        let secs = if kind == ScorerKind::Random {
                            0.0
                        } else {
                            shared + ms("baselines")
                        };
                        add(
                            &mut rows,
                            kind.name().into(),
                            s.clone(),
                            None,
                            secs,
                            r.task.pairs,
                            note.into(),
                        )?;
                    }
                }
            }
            Method::Patching => {
                let t0 = Instant::now();
                let p = patch_heads(model, clean, corrupt, &metric, d.batch_size, |x| {
                    progress("patching", x, nl * nh)
                })?;
                let s = t0.elapsed().as_secs_f64();
                // Ranked by the size of the shift: a head that works against the task is
                // as much part of the circuit as one that works for it.
                let scores = p.effect.iter().map(|&x| x.abs() as f64).collect();
                add(
                    &mut rows,
                    "patching".into(),
                    scores,
                    None,
                    s,
                    np,
                    "each head's z patched from the corrupted run; score = the metric shift's size (absolute value)".into(),
                )?;
                patch_res = Some(p);
            }
            Method::Acdc => {
                let r = acdc(model, clean, corrupt, &metric, &cfg.acdc, |x, t| {
                    progress("acdc", x, t)
                })?;
                let edge = if r.edge_scores.is_empty() {
                    None
                } else {
                    let g = CircuitGraph::for_model(
                        model,
                        cfg.acdc.granularity == Granularity::EdgesQkv,
                    );
                    edge_auc(&circuit, &g, &r.edge_scores)?
                };
                let notes = format!(
                    "{} graph, {} metric, {} thresholds, {} forward passes",
                    cfg.acdc.granularity.name(),
                    match cfg.acdc.metric {
                        crate::baselines::AcdcMetric::Kl => "KL",
                        crate::baselines::AcdcMetric::Task => "task",
                    },
                    r.runs.len(),
                    r.forwards
                );
                add(
                    &mut rows,
                    format!("acdc ({})", cfg.acdc.granularity.name()),
                    r.head_scores.clone(),
                    edge,
                    r.seconds,
                    np,
                    notes,
                )?;
                acdc_res = Some(r);
            }
            Method::Eap => {
                let r = eap(
                    model,
                    clean,
                    corrupt,
                    &task.tokens[..np],
                    cfg.eap_split_qkv,
                    d.batch_size,
                    |x, t| progress("eap", x, t),
                )?;
                let g = CircuitGraph::for_model(model, cfg.eap_split_qkv);
                let abs: Vec<f64> = r.edge_scores.iter().map(|x| x.abs()).collect();
                let edge = edge_auc(&circuit, &g, &abs)?;
                add(
                    &mut rows,
                    "eap".into(),
                    r.head_scores.clone(),
                    edge,
                    r.seconds,
                    np,
                    format!(
                        "{} graph, task metric; head score = sum of abs(edge score) over its outgoing edges",
                        if cfg.eap_split_qkv {
                            "q/k/v-split"
                        } else {
                            "unsplit"
                        }
                    ),
                )?;
                eap_res = Some(r);
            }
        }
        meter.stage_end_with(&format!("{m:?}").to_lowercase(), &inner);
        inner = Default::default();
    }
    let sae_time = rows
        .iter()
        .find(|r| r.method.starts_with("sae"))
        .map(|r| r.seconds);
    for r in &mut rows {
        r.time_vs_sae = sae_time.filter(|&t| t > 0.0).map(|t| r.seconds / t);
    }
    let mut roc = BTreeMap::new();
    for (name, s) in &head_scores {
        let RocCurve { fpr, tpr, .. } = roc_curve(s, &mask, true)?;
        roc.insert(name.clone(), RocPoints { fpr, tpr });
    }
    Ok(CompareResult {
        model: model.source.clone(),
        task: task.name.clone(),
        device: device.to_string(),
        circuit,
        n_layers: nl,
        n_heads: nh,
        labels: model.cfg.head_labels(),
        rows,
        head_scores,
        roc,
        acdc: acdc_res,
        eap: eap_res,
        patching: patch_res,
        sae_auc,
        memory: meter.peaks(),
    })
}

fn circuit_spec(c: &CircuitSpec) -> String {
    match c {
        CircuitSpec::Named(s) => s.clone(),
        _ => String::new(),
    }
}

impl CompareResult {
    /// A saved `compare.json` (`path` names it in errors), checked whole before use: every
    /// per-head list has one value per head, and every head and edge id a saved circuit
    /// names lies inside the model and graph the file describes.
    pub fn from_json(text: &str, path: &std::path::Path) -> Result<CompareResult> {
        let r: CompareResult = serde_json::from_str(text)
            .map_err(|e| Error::format(path, format!("not a headcode compare.json: {e}")))?;
        r.check().map_err(|why| Error::format(path, why))?;
        Ok(r)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let (nl, nh) = (self.n_layers, self.n_heads);
        let heads = nl
            .checked_mul(nh)
            .filter(|&h| h > 0)
            .ok_or_else(|| format!("n_layers {nl} × n_heads {nh} is not a head count"))?;
        let per_head = |what: &str, n: usize| {
            if n == heads {
                Ok(())
            } else {
                Err(format!("{what} has {n} values for {heads} heads"))
            }
        };
        per_head("labels", self.labels.len())?;
        for (m, s) in &self.head_scores {
            per_head(&format!("head_scores.{m}"), s.len())?;
        }
        self.circuit
            .validate(nl, nh)
            .map_err(|e| format!("circuit: {e}"))?;
        let same_model = |what: &str, l: usize, h: usize| {
            if (l, h) == (nl, nh) {
                Ok(())
            } else {
                Err(format!(
                    "{what} is for {l} × {h} heads, the run {nl} × {nh}"
                ))
            }
        };
        if let Some(a) = &self.acdc {
            same_model("acdc", a.n_layers, a.n_heads)?;
            per_head("acdc.head_scores", a.head_scores.len())?;
            let edges = a.graph().map_or(0, |g| g.n_edges());
            if a.edge_scores.len() != edges {
                return Err(format!(
                    "acdc.edge_scores has {} values for a graph of {edges} edges",
                    a.edge_scores.len()
                ));
            }
            for (i, run) in a.runs.iter().enumerate() {
                if let Some((l, h)) = run.heads.iter().find(|&&(l, h)| l >= nl || h >= nh) {
                    return Err(format!(
                        "acdc.runs[{i}] names head L{l}H{h}, outside the model"
                    ));
                }
                if let Some(e) = run.kept_edges.iter().find(|&&e| e as usize >= edges) {
                    return Err(format!(
                        "acdc.runs[{i}] keeps edge {e} of a graph of {edges} edges"
                    ));
                }
            }
        }
        if let Some(e) = &self.eap {
            same_model("eap", e.n_layers, e.n_heads)?;
            per_head("eap.head_scores", e.head_scores.len())?;
            let g = CircuitGraph::new(e.n_layers, e.n_heads, e.has_mlp, e.split_qkv, e.parallel);
            if e.edge_scores.len() != g.n_edges() {
                return Err(format!(
                    "eap.edge_scores has {} values for a graph of {} edges",
                    e.edge_scores.len(),
                    g.n_edges()
                ));
            }
        }
        if let Some(p) = &self.patching {
            same_model("patching", p.n_layers, p.n_heads)?;
            per_head("patching.effect", p.effect.len())?;
            per_head("patching.labels", p.labels.len())?;
        }
        Ok(())
    }

    /// The same scores and times evaluated against another circuit (`headcode compare
    /// --rescore DIR`): node AUCs, ROC curves and edge AUCs are recomputed.
    pub fn rescore(&self, circuit: Circuit) -> Result<CompareResult> {
        circuit.validate(self.n_layers, self.n_heads)?;
        let mask = circuit.mask(self.n_layers, self.n_heads);
        let k = mask.iter().filter(|&&x| x).count();
        if k == 0 || k == mask.len() {
            return Err(Error::Circuit(format!(
                "the circuit has {k} of {} heads: ROC needs both classes",
                mask.len()
            )));
        }
        let mut out = self.clone();
        out.roc.clear();
        for row in &mut out.rows {
            let s = self.head_scores.get(&row.method).ok_or_else(|| {
                Error::InvalidInput(format!("no saved scores for `{}`", row.method))
            })?;
            row.node_auc = auc(s, &mask)?;
            let RocCurve { fpr, tpr, .. } = roc_curve(s, &mask, true)?;
            out.roc.insert(row.method.clone(), RocPoints { fpr, tpr });
            row.edge_auc = if row.method.starts_with("acdc") {
                match (&self.acdc, self.acdc.as_ref().and_then(|a| a.graph())) {
                    (Some(a), Some(g)) => edge_auc(&circuit, &g, &a.edge_scores)?,
                    _ => None,
                }
            } else if row.method == "eap" {
                match &self.eap {
                    Some(e) => {
                        let g = CircuitGraph::new(
                            e.n_layers,
                            e.n_heads,
                            e.has_mlp,
                            e.split_qkv,
                            e.parallel,
                        );
                        let abs: Vec<f64> = e.edge_scores.iter().map(|x| x.abs()).collect();
                        edge_auc(&circuit, &g, &abs)?
                    }
                    None => None,
                }
            } else {
                None
            };
        }
        out.circuit = circuit;
        Ok(out)
    }

    /// The table as Markdown.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Model `{}`, task `{}`, device {}, circuit `{}` ({} of {} heads{}).\n\n",
            self.model,
            self.task,
            self.device,
            self.circuit.name,
            self.circuit.heads.len(),
            self.n_layers * self.n_heads,
            if self.circuit.edges.is_empty() {
                String::new()
            } else {
                format!(", {} edges", self.circuit.edges.len())
            }
        );
        s.push_str("| method | node AUC | edge AUC | time (s) | time / SAE | pairs | notes |\n");
        s.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.3} | {} | {:.2} | {} | {} | {} |\n",
                r.method,
                r.node_auc,
                r.edge_auc.map_or("—".into(), |a| format!("{a:.3}")),
                r.seconds,
                r.time_vs_sae.map_or("—".into(), |x| format!("{x:.2}×")),
                r.pairs,
                r.notes.replace('|', "/")
            ));
        }
        s
    }
}

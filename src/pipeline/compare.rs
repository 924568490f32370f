//! `compare`: the SAE method, its simple baselines, activation patching, ACDC, edge
//! attribution patching and EAP-IG on one model, task, device and forward code, with each
//! method's
//! - ROC AUC against one reference circuit and wall time;
//! - CPR and CMD, MIB's faithfulness areas, on pairs of a held-out split
//!   ([`super::evaluate::circuit_curves`]);
//! - bootstrap stability: the mean Jaccard overlap of its top-k heads between resamples of
//!   the pairs (k = 10 % of the heads by default), computed from per-pair scores where a
//!   method has them and by rerunning the SAE training where it has not.
use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use rand::{Rng, SeedableRng};

use super::discover::{
    discover, resample_scores, Activations, CircuitSpec, DiscoverConfig, Progress, ScorerKind,
};
use super::evaluate::{circuit_curves, MethodCurves};
use super::prompts::{prepare, Split};
use crate::baselines::acdc::{acdc, AcdcConfig, AcdcResult, Granularity};
use crate::baselines::eap::{attribute, Attribution, EapResult};
use crate::error::{Error, Result};
use crate::eval::mib_curve::{CircuitAblation, PERCENTAGES};
use crate::eval::patching::{patch_heads, PatchingResult};
use crate::eval::roc::{auc, roc_curve, RocCurve};
use crate::mib::{MibLevel, MibScores};
use crate::model::graph::{CircuitGraph, GraphModel, Receiver};
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
    /// EAP with integrated gradients over the input embeddings (`--ig-steps`).
    EapIg,
}

impl Method {
    /// The name `--methods` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Sae => "sae",
            Method::Patching => "patching",
            Method::Acdc => "acdc",
            Method::Eap => "eap",
            Method::EapIg => "eap-ig",
        }
    }
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
    /// EAP-IG's interpolation steps.
    pub ig_steps: usize,
    /// Pairs per EAP / EAP-IG backward pass (memory only; the scores are sums over pairs).
    pub eap_batch: usize,
    /// Pairs of `eval_split` on which CPR and CMD are measured (0: no faithfulness curves).
    pub eval_pairs: usize,
    pub eval_split: Split,
    pub ablation: CircuitAblation,
    /// Bootstrap resamples of the pairs for each method's stability (0: none).
    pub resamples: usize,
    /// The k of stability's top-k heads (default: 10 % of the heads, rounded up).
    pub stability_k: Option<usize>,
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
    /// MIB's CPR (area under the faithfulness curve; higher is better), on the held-out pairs.
    #[serde(default)]
    pub cpr: Option<f64>,
    /// MIB's CMD (area between the curve and 1; lower is better).
    #[serde(default)]
    pub cmd: Option<f64>,
    /// Mean Jaccard overlap of the top-k heads between bootstrap resamples of the pairs.
    #[serde(default)]
    pub stability: Option<f64>,
}

/// How CPR and CMD were measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaithfulnessSetup {
    pub split: Split,
    pub pairs: usize,
    pub ablation: CircuitAblation,
    /// m(N) and m(∅) on those pairs.
    pub metric_full: f64,
    pub metric_empty: f64,
    pub n_edges: usize,
    pub seconds: f64,
    /// Where the pairs overlap the discovery pairs (a split of `all`, or the same split).
    pub note: String,
}

/// How stability was measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StabilitySetup {
    /// Top-k heads compared.
    pub k: usize,
    pub resamples: usize,
    pub seconds: f64,
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
    #[serde(default)]
    pub eap_ig: Option<EapResult>,
    pub patching: Option<PatchingResult>,
    /// Whether the model's graph has MLP nodes and GPT-NeoX's parallel block (the MIB graph
    /// every method's scores are placed on).
    /// The residual width (MIB files name it).
    #[serde(default)]
    pub d_model: usize,
    #[serde(default)]
    pub graph_mlp: bool,
    #[serde(default)]
    pub graph_parallel: bool,
    /// Per row with a curve: both faithfulness curves.
    #[serde(default)]
    pub curves: BTreeMap<String, MethodCurves>,
    #[serde(default)]
    pub faithfulness: Option<FaithfulnessSetup>,
    #[serde(default)]
    pub stability: Option<StabilitySetup>,
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
    let sk = cfg.stability_k.unwrap_or((nl * nh).div_ceil(10));
    if sk == 0 || sk >= nl * nh {
        return Err(Error::InvalidInput(format!(
            "--stability-k {sk}: use 1 to {} heads",
            nl * nh - 1
        )));
    }
    let k = mask.iter().filter(|&&x| x).count();
    if k == 0 || k == mask.len() {
        return Err(Error::Circuit(format!(
            "the circuit has {k} of {} heads: ROC needs both classes",
            mask.len()
        )));
    }
    let d = &cfg.discover;
    let task = prepare(&d.task, tok, d.n.max(cfg.pairs), d.seed, d.bos, d.split)?;
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
            cpr: None,
            cmd: None,
            stability: None,
        });
        head_scores.insert(name, scores);
        Ok(())
    };

    let (mut acdc_res, mut eap_res, mut eap_ig_res, mut patch_res) = (None, None, None, None);
    let mut sae_acts: Option<(Activations, DiscoverConfig)> = None;
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
                dc.keep_activations = cfg.resamples > 0;
                let t0 = Instant::now();
                let mut r = discover(model, tok, &dc, progress)?;
                if let Some(a) = r.activations.take() {
                    sae_acts = Some((a, dc.clone()));
                }
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
                // The SAE method's other scorers, from the same codes.
                for (kind, note) in SAE_SCORERS {
                    if kind == d.scorer {
                        continue;
                    }
                    if let Some(s) = r.scores.get(kind.name()) {
                        add(
                            &mut rows,
                            kind.name().into(),
                            s.clone(),
                            None,
                            sae_s,
                            r.task.pairs,
                            format!("{note}; the same SAEs as sae ({})", d.scorer.name()),
                        )?;
                    }
                }
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
            Method::Eap | Method::EapIg => {
                let how = if m == Method::Eap {
                    Attribution::Eap
                } else {
                    Attribution::IgInputs {
                        steps: cfg.ig_steps,
                    }
                };
                let r = attribute(
                    model,
                    clean,
                    corrupt,
                    &task.tokens[..np],
                    cfg.eap_split_qkv,
                    how,
                    cfg.eap_batch,
                    |x, t| progress(how.name(), x, t),
                )?;
                let g = CircuitGraph::for_model(model, cfg.eap_split_qkv);
                let abs: Vec<f64> = r.edge_scores.iter().map(|x| x.abs()).collect();
                let edge = edge_auc(&circuit, &g, &abs)?;
                add(
                    &mut rows,
                    how.name().into(),
                    r.head_scores.clone(),
                    edge,
                    r.seconds,
                    np,
                    format!(
                        "{} graph, task metric{}; head score = sum of abs(edge score) over its outgoing edges",
                        if cfg.eap_split_qkv {
                            "q/k/v-split"
                        } else {
                            "unsplit"
                        },
                        match how {
                            Attribution::IgInputs { steps } => format!(", {steps} IG steps on the input embeddings"),
                            _ => String::new(),
                        }
                    ),
                )?;
                if m == Method::Eap {
                    eap_res = Some(r);
                } else {
                    eap_ig_res = Some(r);
                }
            }
        }
        meter.stage_end_with(m.name(), &inner);
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
    let graph = CircuitGraph::for_model(model, true);
    let mut out = CompareResult {
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
        eap_ig: eap_ig_res,
        patching: patch_res,
        d_model: model.cfg.d_model,
        graph_mlp: graph.has_mlp,
        graph_parallel: graph.parallel,
        curves: BTreeMap::new(),
        faithfulness: None,
        stability: None,
        sae_auc,
        memory: Default::default(),
    };
    if cfg.resamples > 0 {
        crate::interrupt::check()?;
        stability(&mut out, cfg, sk, np, sae_acts.as_ref(), progress)?;
        meter.stage_end("stability");
    }
    if cfg.eval_pairs > 0 {
        crate::interrupt::check()?;
        let t0 = Instant::now();
        let eval = prepare(&d.task, tok, cfg.eval_pairs, d.seed, d.bos, cfg.eval_split)?;
        let note = if d.split == Split::All {
            format!(
                "discovery used every pair (--split all), so these {} pairs were seen by it",
                cfg.eval_split.name()
            )
        } else if d.split == cfg.eval_split {
            format!("discovery used the same split ({})", d.split.name())
        } else {
            String::new()
        };
        let gm = GraphModel::new(model, true)?;
        let methods = out
            .rows
            .iter()
            .map(|r| Ok((r.method.clone(), out.mib_scores(&r.method)?)))
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter_map(|(name, s)| s.map(|(s, level)| (name, s, level)))
            .collect::<Vec<_>>();
        let (m, curves) = circuit_curves(
            &gm,
            &eval.clean,
            &eval.corrupt,
            &eval.tokens,
            &methods,
            &PERCENTAGES,
            cfg.ablation,
            d.batch_size,
            progress,
        )?;
        for r in &mut out.rows {
            if let Some(c) = curves.get(&r.method) {
                r.cpr = Some(c.cpr);
                r.cmd = Some(c.cmd);
            }
        }
        out.curves = curves;
        out.faithfulness = Some(FaithfulnessSetup {
            split: cfg.eval_split,
            pairs: eval.clean.len(),
            ablation: cfg.ablation,
            metric_full: m.full,
            metric_empty: m.empty,
            n_edges: gm.graph.n_edges(),
            seconds: t0.elapsed().as_secs_f64(),
            note,
        });
        meter.stage_end("faithfulness");
    }
    out.memory = meter.peaks();
    Ok(out)
}

/// Mean Jaccard overlap |A ∩ B| / |A ∪ B| of the top-`k` sets over every pair of runs
/// (ties go to the lower head index).
pub fn mean_jaccard(runs: &[Vec<f64>], k: usize) -> Option<f64> {
    if runs.len() < 2 || k == 0 {
        return None;
    }
    let tops: Vec<std::collections::BTreeSet<usize>> = runs
        .iter()
        .map(|s| {
            let mut idx: Vec<usize> = (0..s.len()).collect();
            idx.sort_by(|&a, &b| s[b].total_cmp(&s[a]).then(a.cmp(&b)));
            idx.into_iter().take(k).collect()
        })
        .collect();
    let (mut sum, mut n) = (0f64, 0usize);
    for i in 0..tops.len() {
        for j in i + 1..tops.len() {
            let inter = tops[i].intersection(&tops[j]).count() as f64;
            let union = tops[i].union(&tops[j]).count() as f64;
            sum += if union > 0.0 { inter / union } else { 1.0 };
            n += 1;
        }
    }
    Some(sum / n as f64)
}

/// The SAE method's scorers, each a row of its own beside the primary `sae (SCORER)`.
const SAE_SCORERS: [(ScorerKind, &str); 4] = [
    (
        ScorerKind::Sae,
        "the paper's count: SAE codes seen on positives only",
    ),
    (
        ScorerKind::SaeNormalised,
        "that count over all codes seen (P∖N over P∪N)",
    ),
    (
        ScorerKind::SaeMi,
        "mutual information of SAE code and class",
    ),
    (
        ScorerKind::SaeEdge,
        "the paper's edge variant, counted per head",
    ),
];

/// Whether a row named `method` is scored by the SAE run under its own name: an SAE
/// scorer's row or one of its baselines.
fn scored_by_sae_run(method: &str) -> bool {
    SAE_SCORERS
        .iter()
        .map(|(k, _)| *k)
        .chain([
            ScorerKind::ClassMeans,
            ScorerKind::ClassMeansZ,
            ScorerKind::Random,
        ])
        .any(|k| k.name() == method)
}

/// Each row's stability over `cfg.resamples` bootstrap resamples of its pairs: per-pair
/// scores are resampled for patching, EAP and EAP-IG; the SAE method and its baselines are
/// retrained and rescored on each resample of their pairs. ACDC is not resampled (each run
/// is a whole threshold sweep).
fn stability(
    out: &mut CompareResult,
    cfg: &CompareConfig,
    k: usize,
    np: usize,
    sae: Option<&(Activations, DiscoverConfig)>,
    progress: &mut Progress<'_>,
) -> Result<()> {
    let t0 = Instant::now();
    let seed = cfg.discover.seed;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_b007);
    let mut runs: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    // Rows scored from the SAE run's vectors, with the scorer each resample reads: the
    // primary row `sae (SCORER)` reads `--scorer`, the others their own name.
    let sae_rows: Vec<(String, String)> = match sae {
        Some((_, dc)) => {
            let primary = format!("sae ({})", dc.scorer.name());
            out.rows
                .iter()
                .filter_map(|r| {
                    if r.method == primary {
                        Some((r.method.clone(), dc.scorer.name().to_string()))
                    } else {
                        scored_by_sae_run(&r.method).then(|| (r.method.clone(), r.method.clone()))
                    }
                })
                .collect()
        }
        None => Vec::new(),
    };
    for b in 0..cfg.resamples {
        crate::interrupt::check()?;
        progress("stability", b, cfg.resamples);
        let sample: Vec<usize> = (0..np).map(|_| rng.random_range(0..np)).collect();
        if let Some(p) = &out.patching {
            let e = p.effect_of(&sample)?;
            runs.entry("patching".into())
                .or_default()
                .push(e.iter().map(|x| x.abs()).collect());
        }
        for r in [&out.eap, &out.eap_ig].into_iter().flatten() {
            runs.entry(r.attribution.name().into())
                .or_default()
                .push(r.head_scores_of(&sample)?);
        }
        if let Some((acts, dc)) = sae {
            let n_pairs = acts.pair.iter().copied().max().map_or(0, |m| m + 1);
            let pairs: Vec<usize> = (0..n_pairs).map(|_| rng.random_range(0..n_pairs)).collect();
            let s = resample_scores(acts, &pairs, dc, dc.seed.wrapping_add(1 + b as u64))?;
            for (row, scorer) in &sae_rows {
                if let Some(v) = s.get(scorer) {
                    runs.entry(row.clone()).or_default().push(v.clone());
                }
            }
        }
    }
    progress("stability", cfg.resamples, cfg.resamples);
    for r in &mut out.rows {
        r.stability = runs.get(&r.method).and_then(|v| mean_jaccard(v, k));
    }
    out.stability = Some(StabilitySetup {
        k,
        resamples: cfg.resamples,
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(())
}

fn circuit_spec(c: &CircuitSpec) -> String {
    match c {
        CircuitSpec::Named(s) => s.clone(),
        _ => String::new(),
    }
}

/// Edge scores of a graph moved onto the q/k/v-split graph of the same shape: an unsplit
/// graph's edge into a head gives its score to the edges into the head's q, k and v.
pub fn edges_on_split(scores: &[f64], from: &CircuitGraph, to: &CircuitGraph) -> Result<Vec<f64>> {
    if scores.len() != from.n_edges() {
        return Err(Error::shape("edge scores", from.n_edges(), scores.len()));
    }
    if from.split_qkv {
        return Ok(scores.to_vec());
    }
    let at: HashMap<Receiver, usize> = from
        .receivers
        .iter()
        .enumerate()
        .map(|(i, &r)| (r, i))
        .collect();
    (0..to.n_edges())
        .map(|e| {
            let (s, r) = to.edge(e);
            let r = match to.receivers[r] {
                Receiver::Head { layer, head, .. } => Receiver::Head {
                    layer,
                    head,
                    port: crate::model::graph::Port::Qkv,
                },
                other => other,
            };
            at.get(&r)
                .and_then(|&r| from.edge_id(s, r))
                .map(|i| scores[i])
                .ok_or_else(|| {
                    Error::InvalidInput(format!("edge {} has no unsplit twin", to.edge_label(e)))
                })
        })
        .collect()
}

impl CompareResult {
    /// The model's q/k/v-split graph, on which MIB places every method's scores.
    pub fn mib_graph(&self) -> CircuitGraph {
        CircuitGraph::new(
            self.n_layers,
            self.n_heads,
            self.graph_mlp,
            true,
            self.graph_parallel,
        )
    }

    /// A row's scores in MIB's convention (higher = more important) on [`Self::mib_graph`],
    /// and the level they are evaluated at: edges for EAP, EAP-IG and ACDC's edge modes,
    /// nodes (heads; `input` and MLPs unscored) for the head-only methods. Patching gives
    /// its signed effect, so CPR's signed ranking puts heads that work against the task last.
    pub fn mib_scores(&self, method: &str) -> Result<Option<(MibScores, MibLevel)>> {
        let g = self.mib_graph();
        let heads = |s: &[f64]| Ok::<_, Error>((MibScores::for_heads(&g, s)?, MibLevel::Node));
        let edges_of = |r: &EapResult| -> Result<(MibScores, MibLevel)> {
            let from = CircuitGraph::new(r.n_layers, r.n_heads, r.has_mlp, r.split_qkv, r.parallel);
            let e = edges_on_split(&r.edge_scores, &from, &g)?;
            let nodes =
                (r.node_scores.len() == g.senders.len()).then_some(r.node_scores.as_slice());
            Ok((MibScores::from_metric_change(&e, nodes), MibLevel::Edge))
        };
        Ok(Some(match method {
            "eap" => match &self.eap {
                Some(r) => edges_of(r)?,
                None => return Ok(None),
            },
            "eap-ig" => match &self.eap_ig {
                Some(r) => edges_of(r)?,
                None => return Ok(None),
            },
            "patching" => match &self.patching {
                Some(p) => heads(&p.effect.iter().map(|&x| x as f64).collect::<Vec<_>>())?,
                None => return Ok(None),
            },
            m if m.starts_with("acdc") => {
                match (&self.acdc, self.acdc.as_ref().and_then(|a| a.graph())) {
                    (Some(a), Some(from)) => {
                        let e = edges_on_split(&a.edge_scores, &from, &g)?;
                        (MibScores::from_importance(&e, None), MibLevel::Edge)
                    }
                    (Some(a), None) => heads(&a.head_scores)?,
                    _ => return Ok(None),
                }
            }
            m => match self.head_scores.get(m) {
                Some(s) => heads(s)?,
                None => return Ok(None),
            },
        }))
    }

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
        for (what, e) in [("eap", &self.eap), ("eap_ig", &self.eap_ig)] {
            let Some(e) = e else { continue };
            same_model(what, e.n_layers, e.n_heads)?;
            per_head(&format!("{what}.head_scores"), e.head_scores.len())?;
            let g = CircuitGraph::new(e.n_layers, e.n_heads, e.has_mlp, e.split_qkv, e.parallel);
            if e.edge_scores.len() != g.n_edges() {
                return Err(format!(
                    "{what}.edge_scores has {} values for a graph of {} edges",
                    e.edge_scores.len(),
                    g.n_edges()
                ));
            }
            if !e.node_scores.is_empty() && e.node_scores.len() != g.senders.len() {
                return Err(format!(
                    "{what}.node_scores has {} values for a graph of {} nodes",
                    e.node_scores.len(),
                    g.senders.len()
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
            } else if row.method == "eap" || row.method == "eap-ig" {
                match if row.method == "eap" {
                    &self.eap
                } else {
                    &self.eap_ig
                } {
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
        let num = |x: Option<f64>| x.map_or("—".into(), |a| format!("{a:.3}"));
        s.push_str(
            "| method | node AUC | edge AUC | CPR ↑ | CMD ↓ | stability | time (s) | time / SAE | pairs | notes |\n",
        );
        s.push_str("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {:.3} | {} | {} | {} | {} | {:.2} | {} | {} | {} |\n",
                r.method,
                r.node_auc,
                num(r.edge_auc),
                num(r.cpr),
                num(r.cmd),
                num(r.stability),
                r.seconds,
                r.time_vs_sae.map_or("—".into(), |x| format!("{x:.2}×")),
                r.pairs,
                r.notes.replace('|', "/")
            ));
        }
        if let Some(f) = &self.faithfulness {
            s.push_str(&format!(
                "\nCPR and CMD: MIB's faithfulness curves (11 circuit sizes, edges outside the \
                 circuit ablated by {}) on {} pairs of the {} split; m(whole model) {:.3}, \
                 m(all ablated) {:.3}; {:.1} s.{}\n",
                f.ablation.name(),
                f.pairs,
                f.split.name(),
                f.metric_full,
                f.metric_empty,
                f.seconds,
                if f.note.is_empty() {
                    String::new()
                } else {
                    format!(" Note: {}.", f.note)
                }
            ));
        }
        if let Some(st) = &self.stability {
            s.push_str(&format!(
                "\nStability: mean Jaccard overlap of the top {} heads between {} bootstrap \
                 resamples of the pairs (ACDC not resampled); {:.1} s.\n",
                st.k, st.resamples, st.seconds
            ));
        }
        s
    }
}

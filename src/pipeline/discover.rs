//! The discovery run. Scores of every scorer come from the same hooked vectors, so the
//! SAE method is always reported beside the simple baselines.
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::prompts::{prepare, TaskSource};
use crate::codes::{CodeOptions, CodeTable};
use crate::error::{Error, Result};
use crate::eval::faithfulness::{faithfulness, Ablation, FaithfulnessCurve};
use crate::eval::patching::{patch_heads, PatchingResult};
use crate::eval::roc::{evaluate, mean_std, CircuitEval, MeanStd};
use crate::hooks::{collect_on_device, HookPoint, Reduce};
use crate::model::Model;
use crate::sae::{train_per_head, train_shared, Sae, SaeConfig};
use crate::score::{
    baseline, edge_scores, edge_scores_from_u, mutual_information, node_scores, EdgeScores,
    NodeScores,
};
use crate::tasks::{self, Circuit, FilterReport, FilterRule};
use crate::tokenize::Tokenizer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SaeMode {
    /// One SAE over all heads' vectors (the paper's code).
    Shared,
    /// One tiny SAE per head, trained together.
    PerHead,
}

/// Scorers; all are computed every run, `--scorer` picks the one the circuit and the
/// heatmap use.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum, PartialOrd, Ord,
)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerKind {
    /// |P_h \ N_h| of SAE codes (the paper).
    Sae,
    /// |P\N| / |P∪N|.
    SaeNormalised,
    /// The paper's edge variant (head pairs), counted per head.
    SaeEdge,
    /// Mutual information between the SAE code and the class (ours).
    SaeMi,
    /// ‖mean_pos − mean_neg‖ of `result`.
    ClassMeans,
    /// ‖mean_pos − mean_neg‖ of `z`.
    ClassMeansZ,
    /// ‖μ_pos − μ_neg‖² over pooled within-class variance, of `result`.
    Fisher,
    /// The same on `z`.
    FisherZ,
    /// Mean ‖result‖ over all examples.
    MeanNorm,
    /// Seeded random scores.
    Random,
}

impl ScorerKind {
    pub fn name(self) -> &'static str {
        match self {
            ScorerKind::Sae => "sae",
            ScorerKind::SaeNormalised => "sae-normalised",
            ScorerKind::SaeEdge => "sae-edge",
            ScorerKind::SaeMi => "sae-mi",
            ScorerKind::ClassMeans => "class-means",
            ScorerKind::ClassMeansZ => "class-means-z",
            ScorerKind::Fisher => "fisher",
            ScorerKind::FisherZ => "fisher-z",
            ScorerKind::MeanNorm => "mean-norm",
            ScorerKind::Random => "random",
        }
    }
}

/// Where the ground-truth circuit comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CircuitSpec {
    None,
    /// A built-in name (`ioi`, `ioi-sae-repo`, `gt`, `docstring`, …) or a JSON file.
    Named(String),
    /// Heads found by activation patching: the top `top`, or effect ≥ `threshold`.
    Patching {
        top: Option<usize>,
        threshold: Option<f32>,
    },
}

impl CircuitSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "none" {
            return Ok(CircuitSpec::None);
        }
        if let Some(rest) = s.strip_prefix("patching") {
            let rest = rest.trim_start_matches(':');
            let (mut top, mut threshold) = (None, None);
            for part in rest.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = part.split_once('=').ok_or_else(|| {
                    Error::InvalidInput(format!("circuit `{s}`: expected key=value, got `{part}`"))
                })?;
                match k {
                    "top" => {
                        top = Some(v.parse().map_err(|_| {
                            Error::InvalidInput(format!("circuit `{s}`: bad top `{v}`"))
                        })?)
                    }
                    "threshold" => {
                        threshold = Some(v.parse().map_err(|_| {
                            Error::InvalidInput(format!("circuit `{s}`: bad threshold `{v}`"))
                        })?)
                    }
                    _ => {
                        return Err(Error::InvalidInput(format!(
                            "circuit `{s}`: unknown key `{k}` (top, threshold)"
                        )))
                    }
                }
            }
            return Ok(CircuitSpec::Patching { top, threshold });
        }
        Ok(CircuitSpec::Named(s.to_string()))
    }
}

/// Prompts per forward chunk on the CPU: bounds the activations held at once.
pub const CPU_BATCH_SIZE: usize = 32;
/// Prompts per forward chunk on CUDA. On an H200 (2026-11-27), forward + hooks over 500
/// GPT-2-small-shape prompts took 135.6 ms in 32-prompt chunks (`discover`'s stage clock)
/// and 78.1 ms in one chunk (`bench`).
pub const GPU_BATCH_SIZE: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoverConfig {
    pub task: TaskSource,
    /// Pairs (positives = clean, negatives = corrupt); the paper uses 250.
    pub n: usize,
    pub seed: u64,
    pub trials: usize,
    pub sae_mode: SaeMode,
    /// The vectors the SAEs see: `result` (d_model, the paper) or `z` (d_head).
    pub on: HookPoint,
    pub sae: SaeConfig,
    pub n_sae_examples: usize,
    pub balanced: bool,
    pub reduce: Reduce,
    /// Prompts per forward chunk ([`CPU_BATCH_SIZE`] by default; [`GPU_BATCH_SIZE`] is the
    /// CLI's default on CUDA).
    pub batch_size: usize,
    pub bos: bool,
    pub filter: Option<FilterRule>,
    pub min_survivors: usize,
    pub circuit: CircuitSpec,
    pub scorer: ScorerKind,
    /// Also compute the edge variant (cost grows with heads²).
    pub edge: bool,
    pub top_k_codes: usize,
    /// Prompt pairs used for patching and faithfulness (each costs forwards per head).
    pub patch_pairs: usize,
    pub faithfulness: Option<Ablation>,
    /// Train SAEs and discretise on the GPU (the forward runs where the model lives).
    pub gpu: bool,
    /// Keep the hooked vectors in [`DiscoverResult::activations`] (for
    /// `--save-activations`; `result` alone is examples × heads × d_model floats).
    #[serde(default)]
    pub keep_activations: bool,
}

impl DiscoverConfig {
    /// The paper's settings for a task.
    pub fn paper(task: TaskSource) -> Self {
        let sae = SaeConfig {
            lambda: task.default_lambda(),
            ..Default::default()
        };
        DiscoverConfig {
            task,
            n: 250,
            seed: 0,
            trials: 1,
            sae_mode: SaeMode::Shared,
            on: HookPoint::Result,
            sae,
            n_sae_examples: tasks::DEFAULT_SAE_EXAMPLES,
            balanced: false,
            reduce: Reduce::Mean,
            batch_size: CPU_BATCH_SIZE,
            bos: true,
            filter: None,
            min_survivors: 10,
            circuit: CircuitSpec::None,
            scorer: ScorerKind::Sae,
            edge: true,
            top_k_codes: 1,
            patch_pairs: 32,
            faithfulness: Some(Ablation::Mean),
            gpu: false,
            keep_activations: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialResult {
    pub seed: u64,
    /// Indices (into the example pool, positives first) the SAE trained on.
    pub sae_train: Vec<usize>,
    pub loss_first: f32,
    pub loss_last: f32,
    pub codes: CodeTable,
    pub node: NodeScores,
    pub edge: Option<EdgeScores>,
    /// Per scorer: AUC etc. against the circuit.
    pub evals: BTreeMap<String, CircuitEval>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskCounts {
    pub pairs: usize,
    pub positives: usize,
    pub negatives: usize,
    /// Top-1 accuracy (answer ranked first) on clean and corrupt prompts, before filtering.
    pub clean_top1_acc: f32,
    pub corrupt_top1_acc: f32,
    pub clean_metric_mean: f32,
    pub corrupt_metric_mean: f32,
    pub filter: Option<FilterReport>,
    pub generation: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiscoverResult {
    pub config: DiscoverConfig,
    pub n_layers: usize,
    pub n_heads: usize,
    pub labels: Vec<String>,
    pub task: TaskCounts,
    pub circuit: Option<Circuit>,
    /// Per scorer: per-head scores (mean over trials for per-trial scorers).
    pub scores: BTreeMap<String, Vec<f64>>,
    pub trials: Vec<TrialResult>,
    /// Per scorer: AUC mean ± population std over trials.
    pub auc: BTreeMap<String, MeanStd>,
    pub patching: Option<PatchingResult>,
    pub faithfulness: Option<FaithfulnessCurve>,
    /// Milliseconds per stage.
    pub timings_ms: BTreeMap<String, f64>,
    #[serde(skip)]
    pub saes: Vec<Sae>,
    /// The vectors every scorer read, with `keep_activations`.
    #[serde(skip)]
    pub activations: Option<Activations>,
}

/// The pooled hooked vectors of a run, in example order (the kept positives, then the
/// kept negatives): what the baselines, the SAE training rows and the codes came from.
#[derive(Debug, Clone)]
pub struct Activations {
    /// `z` [examples, heads, d_head].
    pub z: Vec<f32>,
    /// `result` [examples, heads, d_model].
    pub result: Vec<f32>,
    pub examples: usize,
    pub heads: usize,
    pub d_head: usize,
    pub d_model: usize,
    pub is_pos: Vec<bool>,
    /// The prompt pair each example came from (a positive and its negative share one).
    pub pair: Vec<usize>,
}

impl DiscoverResult {
    pub fn primary(&self) -> &[f64] {
        self.scores
            .get(self.config.scorer.name())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }
}

/// Progress callback: (stage, done, total).
pub type Progress<'a> = dyn FnMut(&str, usize, usize) + 'a;

/// Pooled activations [examples, heads, d]. The CPU path copies them to the host once;
/// the GPU path leaves them on the model's device, where the baselines, the SAE training
/// rows and the codes are computed, so only scores and codes come back.
enum Pooled {
    Host(Vec<f32>),
    Device(Tensor),
}

/// Rows `idx` (in that order) of `x` [n, …], where `x` lies.
fn select_rows(x: &Tensor, idx: &[usize]) -> Result<Tensor> {
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::from_vec(ids, idx.len(), x.device())?;
    Ok(x.index_select(&ids, 0)?)
}

impl Pooled {
    /// Rows `idx` (in that order) of `x` [n, heads, d].
    fn gather(x: &Tensor, idx: &[usize], on_device: bool) -> Result<Pooled> {
        let rows = select_rows(x, idx)?;
        Ok(if on_device {
            Pooled::Device(rows)
        } else {
            Pooled::Host(rows.flatten_all()?.to_vec1::<f32>()?)
        })
    }

    /// The rows as a host slice (a copy only on the GPU path).
    fn host(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        Ok(match self {
            Pooled::Host(v) => std::borrow::Cow::Borrowed(v.as_slice()),
            Pooled::Device(t) => std::borrow::Cow::Owned(t.flatten_all()?.to_vec1::<f32>()?),
        })
    }

    fn baselines(
        &self,
        examples: usize,
        heads: usize,
        d: usize,
        is_pos: &[bool],
    ) -> Result<baseline::TensorBaselines> {
        match self {
            Pooled::Device(t) => baseline::baselines_on_device(t, is_pos),
            Pooled::Host(x) => Ok(baseline::TensorBaselines {
                class_mean_distance: baseline::class_mean_distance(x, examples, heads, d, is_pos)?,
                fisher_ratio: baseline::fisher_ratio(x, examples, heads, d, is_pos)?,
                mean_norm: baseline::mean_norm(x, examples, heads, d, is_pos)?,
            }),
        }
    }
}

/// The paper's SAE training subset: `k` examples drawn at random from the mixed pool, or
/// half from each class with `balanced`.
pub fn sae_subset(is_pos: &[bool], k: usize, balanced: bool, seed: u64) -> Result<Vec<usize>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n = is_pos.len();
    if k == 0 || k > n {
        return Err(Error::InvalidInput(format!(
            "cannot draw {k} SAE training examples from {n}"
        )));
    }
    if !balanced {
        let mut idx: Vec<usize> = (0..n).collect();
        idx.shuffle(&mut rng);
        idx.truncate(k);
        return Ok(idx);
    }
    let mut pos: Vec<usize> = (0..n).filter(|&i| is_pos[i]).collect();
    let mut neg: Vec<usize> = (0..n).filter(|&i| !is_pos[i]).collect();
    pos.shuffle(&mut rng);
    neg.shuffle(&mut rng);
    let (kp, kn) = (k.div_ceil(2), k / 2);
    if kp > pos.len() || kn > neg.len() {
        return Err(Error::InvalidInput(format!(
            "cannot draw a balanced {k} from {} positives and {} negatives",
            pos.len(),
            neg.len()
        )));
    }
    let mut idx: Vec<usize> = pos[..kp].to_vec();
    idx.extend_from_slice(&neg[..kn]);
    Ok(idx)
}

pub fn discover(
    model: &Model,
    tok: &dyn Tokenizer,
    cfg: &DiscoverConfig,
    progress: &mut Progress<'_>,
) -> Result<DiscoverResult> {
    if cfg.trials == 0 {
        return Err(Error::InvalidInput("--trials must be at least 1".into()));
    }
    if cfg.reduce == Reduce::All {
        return Err(Error::InvalidInput(
            "discover needs one vector per (prompt, head): use --reduce mean or last".into(),
        ));
    }
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let heads = nl * nh;
    let mut timings = BTreeMap::new();
    let mut tick = |name: &str, t: Instant| {
        timings.insert(name.to_string(), t.elapsed().as_secs_f64() * 1e3);
    };

    // Task and circuit first: a bad circuit should fail before any compute.
    let t0 = Instant::now();
    let task = prepare(&cfg.task, tok, cfg.n, cfg.seed, cfg.bos)?;
    let named_circuit = match &cfg.circuit {
        CircuitSpec::Named(s) => {
            let c = Circuit::load(s)?;
            c.validate(nl, nh)?;
            Some(c)
        }
        _ => None,
    };
    tick("tokenize", t0);

    // Forward + hooks on positives (clean) then negatives (corrupt).
    let t0 = Instant::now();
    let n_pairs = task.pairs.len();
    let mut all_tokens = task.clean.clone();
    all_tokens.extend(task.corrupt.iter().cloned());
    let total = all_tokens.len();
    let col = collect_on_device(model, &all_tokens, cfg.reduce, cfg.batch_size, |d| {
        progress("forward + hooks", d, total)
    })?;
    // Accuracies, metric means and the optional filter. The GPU path copies back only what
    // the metrics read of each row; the CPU path keeps the full rows (f64 sums, as before).
    let summary = if cfg.gpu {
        let keep: Vec<Vec<u32>> = (0..total)
            .map(|i| task.tokens[i % n_pairs].metric_ids())
            .collect();
        super::prompts::logit_summary(
            &tasks::compact_logits(&col.last_logits, &keep)?,
            &task,
            cfg.filter,
            cfg.min_survivors,
        )?
    } else {
        super::prompts::logit_summary(
            &col.last_logits.to_vec2::<f32>()?,
            &task,
            cfg.filter,
            cfg.min_survivors,
        )?
    };
    tick("forward_hooks", t0);
    let filter = summary.filter;
    let (pos_idx, neg_idx): (Vec<usize>, Vec<usize>) = match &filter {
        Some(f) => (
            f.kept_pos.clone(),
            f.kept_neg.iter().map(|&i| n_pairs + i).collect(),
        ),
        None => ((0..n_pairs).collect(), (n_pairs..2 * n_pairs).collect()),
    };
    // Reachable with --min-survivors 0. Said here: on a GPU the empty row gather below
    // would otherwise fail as a zero-byte allocation.
    if pos_idx.is_empty() || neg_idx.is_empty() {
        return Err(Error::InvalidInput(format!(
            "the correctness filter kept {} positive and {} negative prompts: scoring needs both",
            pos_idx.len(),
            neg_idx.len()
        )));
    }
    let mut pool = pos_idx.clone();
    pool.extend(&neg_idx);
    let is_pos: Vec<bool> = pool.iter().map(|&i| i < n_pairs).collect();
    let examples = pool.len();
    let counts = TaskCounts {
        pairs: n_pairs,
        positives: pos_idx.len(),
        negatives: neg_idx.len(),
        clean_top1_acc: summary.clean_acc,
        corrupt_top1_acc: summary.corrupt_acc,
        clean_metric_mean: summary.clean_metric,
        corrupt_metric_mean: summary.corrupt_metric,
        filter,
        generation: task.notes.clone(),
    };
    let x_result = Pooled::gather(&col.result, &pool, cfg.gpu)?;
    let x_z = Pooled::gather(&col.z, &pool, cfg.gpu)?;
    drop(col);
    let d_model = model.cfg.d_model;
    let d_head = model.cfg.d_head;
    let (x_sae, d_sae) = match cfg.on {
        HookPoint::Result => (&x_result, d_model),
        HookPoint::Z => (&x_z, d_head),
    };

    // Reference circuit by patching when asked.
    let t0 = Instant::now();
    let patch_n = cfg.patch_pairs.min(n_pairs);
    let needs_patching = matches!(cfg.circuit, CircuitSpec::Patching { .. });
    let patching = if needs_patching {
        let metric = |i: usize, l: &[f32]| task.metric(i, l);
        Some(patch_heads(
            model,
            &task.clean[..patch_n],
            &task.corrupt[..patch_n],
            &metric,
            cfg.batch_size,
            |d| progress("patching", d, heads),
        )?)
    } else {
        None
    };
    if needs_patching {
        tick("patching", t0);
    }
    let circuit = match (&cfg.circuit, &patching) {
        (CircuitSpec::Patching { top, threshold }, Some(p)) => {
            let top = if top.is_none() && threshold.is_none() {
                Some(heads.div_ceil(10))
            } else {
                *top
            };
            let name = format!(
                "patching:{}",
                match (top, threshold) {
                    (Some(k), None) => format!("top={k}"),
                    (None, Some(t)) => format!("threshold={t}"),
                    (Some(k), Some(t)) => format!("top={k},threshold={t}"),
                    _ => String::new(),
                }
            );
            Some(Circuit::new(name, p.circuit(top, *threshold)))
        }
        _ => named_circuit,
    };
    let labels_mask = circuit.as_ref().map(|c| c.mask(nl, nh));
    if let Some(m) = &labels_mask {
        let k = m.iter().filter(|&&x| x).count();
        if k == 0 || k == heads {
            return Err(Error::Circuit(format!(
                "the circuit has {k} of {heads} heads: ROC needs both classes"
            )));
        }
    }

    // Baselines: once, from the same vectors.
    let t0 = Instant::now();
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let br = x_result.baselines(examples, heads, d_model, &is_pos)?;
    let bz = x_z.baselines(examples, heads, d_head, &is_pos)?;
    scores.insert(ScorerKind::ClassMeans.name().into(), br.class_mean_distance);
    scores.insert(
        ScorerKind::ClassMeansZ.name().into(),
        bz.class_mean_distance,
    );
    scores.insert(ScorerKind::Fisher.name().into(), br.fisher_ratio);
    scores.insert(ScorerKind::FisherZ.name().into(), bz.fisher_ratio);
    scores.insert(ScorerKind::MeanNorm.name().into(), br.mean_norm);
    tick("baselines", t0);

    // SAE trials.
    let gpu = if cfg.gpu {
        Some(crate::gpu::GpuContext::new()?)
    } else {
        None
    };
    let mut trials = Vec::with_capacity(cfg.trials);
    let mut per_trial: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let activations = if cfg.keep_activations {
        Some(Activations {
            z: x_z.host()?.into_owned(),
            result: x_result.host()?.into_owned(),
            examples,
            heads,
            d_head,
            d_model,
            is_pos: is_pos.clone(),
            pair: pool.iter().map(|&i| i % n_pairs).collect(),
        })
    } else {
        None
    };
    let mut saes_out = Vec::new();
    let (mut t_sae, mut t_codes, mut t_score) = (0f64, 0f64, 0f64);
    for trial in 0..cfg.trials {
        let seed = cfg.seed.wrapping_add(trial as u64);
        let train_idx = sae_subset(
            &is_pos,
            cfg.n_sae_examples.min(examples),
            cfg.balanced,
            seed,
        )?;
        let t0 = Instant::now();
        let mut sae_cfg = cfg.sae.clone();
        sae_cfg.seed = seed;
        progress("sae", trial, cfg.trials);
        // The GPU path keeps the trained SAEs on the device for the codes below.
        let mut kept = None;
        let (saes, log) = match (&gpu, x_sae) {
            (Some(g), Pooled::Device(x)) => {
                let (s, l, k) = gpu_train(g, &select_rows(x, &train_idx)?, cfg.sae_mode, &sae_cfg)?;
                kept = Some(k);
                (s, l)
            }
            _ => {
                let xs = x_sae.host()?;
                let w = heads * d_sae;
                let mut xtrain = Vec::with_capacity(train_idx.len() * w);
                for &i in &train_idx {
                    xtrain.extend_from_slice(&xs[i * w..(i + 1) * w]);
                }
                match cfg.sae_mode {
                    SaeMode::Shared => {
                        let (s, log) =
                            train_shared(&xtrain, train_idx.len() * heads, d_sae, &sae_cfg)?;
                        (vec![s], log)
                    }
                    SaeMode::PerHead => {
                        train_per_head(&xtrain, train_idx.len(), heads, d_sae, &sae_cfg)?
                    }
                }
            }
        };
        t_sae += t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let opts = CodeOptions {
            top_k: cfg.top_k_codes.max(1),
        };
        let codes = match (&gpu, &kept, x_sae, cfg.sae_mode) {
            (Some(g), Some(k), Pooled::Device(x), _) if opts.top_k == 1 => {
                let c = g.encode_argmax_kept(k, x, examples)?;
                CodeTable::new(c, examples, heads, cfg.sae.n_features, is_pos.clone())?
            }
            (_, _, _, SaeMode::Shared) => CodeTable::from_shared(
                &saes[0],
                &x_sae.host()?,
                examples,
                heads,
                is_pos.clone(),
                opts,
            )?,
            (_, _, _, SaeMode::PerHead) => {
                CodeTable::from_per_head(&saes, &x_sae.host()?, examples, is_pos.clone(), opts)?
            }
        };
        t_codes += t0.elapsed().as_secs_f64() * 1e3;
        let t0 = Instant::now();
        let node = node_scores(&codes, false)?;
        let node_norm = node_scores(&codes, true)?;
        let edge = match (cfg.edge, &gpu) {
            (false, _) => None,
            // O(heads² · examples) on the host; the GPU's pair counts are exact.
            (true, Some(g)) => {
                let u = g.edge_overlap_counts(&codes.codes, &codes.is_pos, heads, codes.n_codes)?;
                Some(edge_scores_from_u(
                    u.into_iter().map(|c| c as usize).collect(),
                    heads,
                    None,
                )?)
            }
            (true, None) => Some(edge_scores(&codes, None)?),
        };
        let mut this: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        this.insert(ScorerKind::Sae.name().into(), node.score.clone());
        this.insert(
            ScorerKind::SaeNormalised.name().into(),
            node_norm.score.clone(),
        );
        this.insert(ScorerKind::SaeMi.name().into(), mutual_information(&codes)?);
        if let Some(e) = &edge {
            this.insert(ScorerKind::SaeEdge.name().into(), e.score.clone());
        }
        this.insert(
            ScorerKind::Random.name().into(),
            baseline::random_scores(heads, seed),
        );
        t_score += t0.elapsed().as_secs_f64() * 1e3;
        let mut evals = BTreeMap::new();
        if let Some(m) = &labels_mask {
            for (k, v) in this.iter().chain(scores.iter()) {
                evals.insert(k.clone(), evaluate(v, m)?);
            }
        }
        for (k, v) in this {
            per_trial.entry(k).or_default().push(v);
        }
        trials.push(TrialResult {
            seed,
            sae_train: train_idx,
            loss_first: log.loss.first().copied().unwrap_or(f32::NAN),
            loss_last: log.loss.last().copied().unwrap_or(f32::NAN),
            codes,
            node,
            edge,
            evals,
        });
        if trial == 0 {
            saes_out = saes;
        }
    }
    progress("sae", cfg.trials, cfg.trials);
    timings.insert("sae_train".into(), t_sae);
    timings.insert("codes".into(), t_codes);
    timings.insert("scores".into(), t_score);
    for (k, runs) in &per_trial {
        let mean: Vec<f64> = (0..heads)
            .map(|h| runs.iter().map(|r| r[h]).sum::<f64>() / runs.len() as f64)
            .collect();
        scores.insert(k.clone(), mean);
    }
    let mut auc = BTreeMap::new();
    if labels_mask.is_some() {
        let names: Vec<String> = scores.keys().cloned().collect();
        for name in names {
            let v: Vec<f64> = trials
                .iter()
                .filter_map(|t| t.evals.get(&name).map(|e| e.auc))
                .collect();
            if !v.is_empty() {
                auc.insert(name, mean_std(&v)?);
            }
        }
    }

    // Faithfulness of the primary scorer's ranking.
    let faith = match cfg.faithfulness {
        Some(ab) if patch_n > 0 => {
            let t0 = Instant::now();
            let primary = scores.get(cfg.scorer.name()).ok_or_else(|| {
                Error::InvalidInput(format!("scorer `{}` was not computed", cfg.scorer.name()))
            })?;
            let sc: Vec<f32> = primary.iter().map(|&x| x as f32).collect();
            let ks = faithfulness_grid(heads);
            progress("faithfulness", 0, 1);
            let metric = |i: usize, l: &[f32]| task.metric(i, l);
            let f = faithfulness(
                model,
                &task.clean[..patch_n],
                &task.corrupt[..patch_n],
                &sc,
                &ks,
                ab,
                &metric,
                cfg.batch_size,
                cfg.seed,
            )?;
            progress("faithfulness", 1, 1);
            timings.insert("faithfulness".into(), t0.elapsed().as_secs_f64() * 1e3);
            Some(f)
        }
        _ => None,
    };
    Ok(DiscoverResult {
        config: cfg.clone(),
        n_layers: nl,
        n_heads: nh,
        labels: model.cfg.head_labels(),
        task: counts,
        circuit,
        scores,
        trials,
        auc,
        patching,
        faithfulness: faith,
        timings_ms: timings,
        saes: saes_out,
        activations,
    })
}

/// The same SAEs as the CPU path (same initialisation), trained by the CUDA trainer on
/// `xtrain` [k, heads, d] where it lies (device to device from a CUDA tensor).
fn gpu_train(
    g: &crate::gpu::GpuContext,
    xtrain: &Tensor,
    mode: SaeMode,
    cfg: &SaeConfig,
) -> Result<(Vec<Sae>, crate::sae::TrainLog, crate::gpu::DeviceSaes)> {
    let (k, heads, d) = xtrain.dims3()?;
    let tc = crate::gpu::TrainConfig {
        steps: cfg.steps as u32,
        lr: cfg.lr,
        lambda: cfg.lambda,
        beta1: cfg.beta1,
        beta2: cfg.beta2,
        eps: cfg.eps,
        record_loss: true,
        path: crate::gpu::TrainPath::Auto,
        tf32: false,
    };
    let (init, x, rows) = match mode {
        SaeMode::Shared => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
            (
                vec![Sae::init(d, cfg.n_features, &mut rng)?],
                xtrain.clone(),
                k * heads,
            )
        }
        SaeMode::PerHead => {
            let init = crate::sae::init_per_head_saes(heads, d, cfg)?;
            // [k, heads, d] → [heads, k, d]: one SAE's rows contiguous.
            (init, xtrain.transpose(0, 1)?.contiguous()?, k)
        }
    };
    let (out, kept) = g.train_saes_tensor_kept(&x, rows, &init, &tc)?;
    let loss = out.loss.map(|l| {
        let steps = l.first().map_or(0, Vec::len);
        (0..steps)
            .map(|s| l.iter().map(|v| v[s]).sum::<f32>() / l.len() as f32)
            .collect()
    });
    Ok((
        out.params,
        crate::sae::TrainLog {
            loss: loss.unwrap_or_default(),
            ..Default::default()
        },
        kept,
    ))
}

/// k = 0, 1, 2, 5, 10, 20 % … 100 % of the heads.
pub fn faithfulness_grid(heads: usize) -> Vec<usize> {
    let mut ks: Vec<usize> = [0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
        .iter()
        .map(|f| ((heads as f64) * f).round() as usize)
        .collect();
    ks.dedup();
    ks
}

//! The discovery run. Scores of every scorer come from the same hooked vectors, so the
//! SAE method is always reported beside the simple baselines.
use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::prompts::{prepare, PreparedTask, Split, TaskSource};
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
    /// Heads found by activation patching: the top `top` by |effect|, or |effect| ≥
    /// `threshold`; by the signed effect with `signed` (`patching:top=27,signed`).
    Patching {
        top: Option<usize>,
        threshold: Option<f32>,
        signed: bool,
    },
}

impl CircuitSpec {
    pub fn parse(s: &str) -> Result<Self> {
        if s == "none" {
            return Ok(CircuitSpec::None);
        }
        if let Some(rest) = s.strip_prefix("patching") {
            let rest = rest.trim_start_matches(':');
            let (mut top, mut threshold, mut signed) = (None, None, false);
            for part in rest.split(',').filter(|p| !p.is_empty()) {
                if part == "signed" {
                    signed = true;
                    continue;
                }
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
                            "circuit `{s}`: unknown key `{k}` (top, threshold, signed)"
                        )))
                    }
                }
            }
            super::patch::check_cut(top, threshold)
                .map_err(|e| Error::InvalidInput(format!("circuit `{s}`: {e}")))?;
            return Ok(CircuitSpec::Patching {
                top,
                threshold,
                signed,
            });
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
    /// Features, λ, Adam, steps and training examples.
    pub sae: SaeConfig,
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
    /// Which fixed part of the task's pairs to use ([`Split`]).
    #[serde(default)]
    pub split: Split,
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
            split: Split::All,
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
    /// What makes the run's numbers doubtful though still computable (printed with the
    /// summary and kept in scores.json).
    #[serde(default)]
    pub warnings: Vec<String>,
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
    /// Peak host and device memory, whole and per stage.
    pub memory: crate::memory::PeakMemory,
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

/// `discover`, stage by stage, each a function of plain values from the stages before:
/// [`prepare_task`] → [`forward_and_hooks`] → [`reference_circuit`] → [`baselines`] →
/// per trial [`train_saes`] → [`encode`] → [`score_codes`] → [`evaluate_trials`] →
/// [`faithfulness_of`]. Files are the report stage's (`report::run::write_discover`).
pub fn discover(
    model: &Model,
    tok: &dyn Tokenizer,
    cfg: &DiscoverConfig,
    progress: &mut Progress<'_>,
) -> Result<DiscoverResult> {
    check_config(cfg)?;
    if let TaskSource::Builtin(_) = cfg.task {
        check_memory(&model.cfg, cfg, cfg.n)?;
    }
    let mut clock = StageClock::default();
    clock.mem.set_device(model.device());
    let t0 = Instant::now();
    let prepared = prepare_task(model, tok, cfg)?;
    check_memory(&model.cfg, cfg, prepared.task.clean.len())?;
    clock.set("tokenize", t0);
    let t0 = Instant::now();
    let hooked = forward_and_hooks(model, &prepared.task, cfg, progress)?;
    clock.set("forward_hooks", t0);
    let hooked = hooked.pooled(cfg.gpu)?;
    crate::interrupt::check()?;
    let t0 = Instant::now();
    let (patching, circuit) = reference_circuit(model, &prepared, cfg, progress)?;
    if patching.is_some() {
        clock.set("patching", t0);
    }
    let t0 = Instant::now();
    let mut scores = baselines(&hooked)?;
    clock.set("baselines", t0);

    let gpu = if cfg.gpu {
        Some(crate::gpu::GpuContext::new()?)
    } else {
        None
    };
    let activations = if cfg.keep_activations {
        Some(hooked.activations()?)
    } else {
        None
    };
    let mask = circuit
        .as_ref()
        .map(|c| c.mask(model.cfg.n_layers, model.cfg.n_heads));
    let mut trials = Vec::with_capacity(cfg.trials);
    let mut saes_out = Vec::new();
    for trial in 0..cfg.trials {
        let seed = cfg.seed.wrapping_add(trial as u64);
        crate::interrupt::check()?;
        let t0 = Instant::now();
        progress("sae", trial, cfg.trials);
        let trained = train_saes(&hooked, cfg, seed, gpu.as_ref())?;
        clock.add("sae_train", t0);
        let t0 = Instant::now();
        let codes = encode(&hooked, &trained, cfg, gpu.as_ref())?;
        clock.add("codes", t0);
        let t0 = Instant::now();
        let scored = score_codes(&codes, cfg, seed, gpu.as_ref())?;
        clock.add("scores", t0);
        let evals = match &mask {
            Some(m) => evaluate_scores(scored.scores.iter().chain(scores.iter()), m)?,
            None => BTreeMap::new(),
        };
        trials.push((
            TrialResult {
                seed,
                sae_train: trained.train_idx,
                loss_first: trained.log.loss.first().copied().unwrap_or(f32::NAN),
                loss_last: trained.log.loss.last().copied().unwrap_or(f32::NAN),
                codes,
                node: scored.node,
                edge: scored.edge,
                evals,
            },
            scored.scores,
        ));
        if trial == 0 {
            saes_out = trained.saes;
        }
    }
    progress("sae", cfg.trials, cfg.trials);
    let (trials, auc) = evaluate_trials(trials, &mut scores, hooked.heads)?;
    crate::interrupt::check()?;
    let faith = faithfulness_of(model, &prepared, &scores, cfg, progress, &mut clock)?;
    Ok(DiscoverResult {
        config: cfg.clone(),
        n_layers: model.cfg.n_layers,
        n_heads: model.cfg.n_heads,
        labels: model.cfg.head_labels(),
        task: hooked.counts,
        circuit,
        scores,
        trials,
        auc,
        patching,
        faithfulness: faith,
        timings_ms: clock.ms,
        memory: clock.mem.peaks(),
        saes: saes_out,
        activations,
    })
}

/// Wall time of each stage, in milliseconds (`DiscoverResult::timings_ms`), and its peak
/// memory (`DiscoverResult::memory`).
#[derive(Default)]
struct StageClock {
    ms: BTreeMap<String, f64>,
    mem: crate::memory::MemoryMeter,
}

impl StageClock {
    fn set(&mut self, stage: &str, t0: Instant) {
        self.ms
            .insert(stage.to_string(), t0.elapsed().as_secs_f64() * 1e3);
        self.mem.stage_end(stage);
    }
    fn add(&mut self, stage: &str, t0: Instant) {
        *self.ms.entry(stage.to_string()).or_default() += t0.elapsed().as_secs_f64() * 1e3;
        self.mem.stage_end(stage);
    }
}

/// Settings that no stage can run with, refused before any work.
pub fn check_config(cfg: &DiscoverConfig) -> Result<()> {
    cfg.sae.validate()?;
    if cfg.trials == 0 {
        return Err(Error::InvalidInput("--trials must be at least 1".into()));
    }
    if cfg.reduce == Reduce::All {
        return Err(Error::InvalidInput(
            "discover needs one vector per (prompt, head): use --reduce mean or last".into(),
        ));
    }
    Ok(())
}

/// Refuse a run whose hooked activations or SAEs cannot fit in this machine's memory,
/// before they are allocated: `pairs` prompt pairs give 2·pairs hooked prompts, each
/// holding `z` and `result` for every head; every SAE holds its weights, their gradients
/// and Adam's two moments.
pub fn check_memory(
    m: &crate::model::ModelConfig,
    cfg: &DiscoverConfig,
    pairs: usize,
) -> Result<()> {
    use crate::memory::{check, product};
    let heads = m.n_heads_total();
    let acts = product(&[2, pairs, heads, m.d_head + m.d_model, 4]);
    check(
        &format!(
            "--n {pairs}: the hooked activations of {} prompts",
            2 * pairs as u128
        ),
        acts,
    )?;
    let d_in = match cfg.on {
        HookPoint::Z => m.d_head,
        HookPoint::Result => m.d_model,
    };
    let saes = match cfg.sae_mode {
        SaeMode::PerHead => heads,
        SaeMode::Shared => 1,
    };
    let sae = product(&[saes, cfg.sae.n_features, 2 * d_in + 1, 4, 4]);
    check(
        &format!("--features {}: {saes} SAEs", cfg.sae.n_features),
        sae,
    )
}

/// The prepare stage's output: the tokenised task and the named circuit, if any.
pub struct Prepared {
    pub task: PreparedTask,
    /// A built-in or file circuit, loaded and checked against the model.
    pub named_circuit: Option<Circuit>,
}

/// Stage 1, prepare: tokenise the task and load the circuit, so a bad circuit fails
/// before any compute.
pub fn prepare_task(model: &Model, tok: &dyn Tokenizer, cfg: &DiscoverConfig) -> Result<Prepared> {
    let task = prepare(&cfg.task, tok, cfg.n, cfg.seed, cfg.bos, cfg.split)?;
    let named_circuit = match &cfg.circuit {
        CircuitSpec::Named(s) => {
            let c = Circuit::load(s)?;
            c.validate(model.cfg.n_layers, model.cfg.n_heads)?;
            Some(c)
        }
        _ => None,
    };
    Ok(Prepared {
        task,
        named_circuit,
    })
}

/// The forward stage's output: every prompt's hooked vectors (positives, then negatives)
/// where the model lives, and which examples the scorers see.
pub struct Hooked {
    /// `z` [prompts, heads, d_head] and `result` [prompts, heads, d_model].
    pub z: Tensor,
    pub result: Tensor,
    /// The examples kept (indices into the prompts: kept positives, then kept negatives).
    pub pool: Vec<usize>,
    pub n_pairs: usize,
    pub counts: TaskCounts,
}

/// Stage 2, forward and hooks: run the model on the positives (clean) then the negatives
/// (corrupt), hook every head, and read the task metric and the optional filter from the
/// last-position logits.
pub fn forward_and_hooks(
    model: &Model,
    task: &PreparedTask,
    cfg: &DiscoverConfig,
    progress: &mut Progress<'_>,
) -> Result<Hooked> {
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
            task,
            cfg.filter,
            cfg.min_survivors,
        )?
    } else {
        super::prompts::logit_summary(
            &col.last_logits.to_vec2::<f32>()?,
            task,
            cfg.filter,
            cfg.min_survivors,
        )?
    };
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
    for (what, t) in [("z", &col.z), ("result", &col.result)] {
        if !crate::model::weights::all_finite(t)? {
            return Err(Error::Failed(format!(
                "the forward produced NaN or Inf in the hooked `{what}` vectors; \
                 the model's numbers overflow on these prompts"
            )));
        }
    }
    let mut warnings = Vec::new();
    if summary.clean_acc == 0.0 {
        warnings.push(format!(
            "the model answers none of the {n_pairs} clean prompts correctly (top-1 accuracy 0): \
             the positives are not prompts it solves, so the scores do not measure a circuit for this task"
        ));
    }
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
        warnings,
    };
    let mut pool = pos_idx;
    pool.extend(&neg_idx);
    Ok(Hooked {
        z: col.z,
        result: col.result,
        pool,
        n_pairs,
        counts,
    })
}

/// The kept examples' vectors, on the host (CPU path) or on the device (GPU path).
pub struct PooledActs {
    x_result: Pooled,
    x_z: Pooled,
    pub is_pos: Vec<bool>,
    /// The prompt pair of each example.
    pub pair: Vec<usize>,
    pub examples: usize,
    pub heads: usize,
    pub d_head: usize,
    pub d_model: usize,
    pub counts: TaskCounts,
}

impl Hooked {
    /// The kept examples' rows, gathered where the scorers will read them (on the device
    /// for the GPU path).
    pub fn pooled(self, on_device: bool) -> Result<PooledActs> {
        let (_, heads, d_model) = self.result.dims3()?;
        let d_head = self.z.dim(2)?;
        let n_pairs = self.n_pairs;
        Ok(PooledActs {
            x_result: Pooled::gather(&self.result, &self.pool, on_device)?,
            x_z: Pooled::gather(&self.z, &self.pool, on_device)?,
            is_pos: self.pool.iter().map(|&i| i < n_pairs).collect(),
            pair: self.pool.iter().map(|&i| i % n_pairs).collect(),
            examples: self.pool.len(),
            heads,
            d_head,
            d_model,
            counts: self.counts,
        })
    }
}

impl PooledActs {
    /// The vectors the SAEs train on and encode (`on`), and their width.
    fn sae_input(&self, on: HookPoint) -> (&Pooled, usize) {
        match on {
            HookPoint::Result => (&self.x_result, self.d_model),
            HookPoint::Z => (&self.x_z, self.d_head),
        }
    }

    /// A host copy of everything the scorers read (`--save-activations`).
    fn activations(&self) -> Result<Activations> {
        Ok(Activations {
            z: self.x_z.host()?.into_owned(),
            result: self.x_result.host()?.into_owned(),
            examples: self.examples,
            heads: self.heads,
            d_head: self.d_head,
            d_model: self.d_model,
            is_pos: self.is_pos.clone(),
            pair: self.pair.clone(),
        })
    }
}

/// The SAE method and its baselines rerun on a resample of the pairs, from a run's kept
/// activations (`keep_activations`): `pairs` are pair indices (repeats allowed), each
/// bringing its kept positive and negative examples; then baselines, SAE training (seeded
/// by `seed`), codes and scores, on the CPU. What `compare`'s bootstrap stability reruns.
pub fn resample_scores(
    acts: &Activations,
    pairs: &[usize],
    cfg: &DiscoverConfig,
    seed: u64,
) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut by_pair: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &p) in acts.pair.iter().enumerate() {
        by_pair.entry(p).or_default().push(i);
    }
    let rows: Vec<usize> = pairs
        .iter()
        .flat_map(|p| by_pair.get(p).into_iter().flatten().copied())
        .collect();
    if rows.is_empty() {
        return Err(Error::InvalidInput(
            "a resample of the pairs holds no kept example".into(),
        ));
    }
    let gather = |x: &[f32], d: usize| -> Result<Vec<f32>> {
        let w = acts.heads * d;
        if x.len() != acts.examples * w {
            return Err(Error::shape("kept activations", acts.examples * w, x.len()));
        }
        Ok(rows
            .iter()
            .flat_map(|&i| x[i * w..(i + 1) * w].iter().copied())
            .collect())
    };
    let is_pos: Vec<bool> = rows.iter().map(|&i| acts.is_pos[i]).collect();
    let pooled = PooledActs {
        x_result: Pooled::Host(gather(&acts.result, acts.d_model)?),
        x_z: Pooled::Host(gather(&acts.z, acts.d_head)?),
        pair: rows.iter().map(|&i| acts.pair[i]).collect(),
        examples: rows.len(),
        heads: acts.heads,
        d_head: acts.d_head,
        d_model: acts.d_model,
        counts: TaskCounts {
            pairs: pairs.len(),
            positives: is_pos.iter().filter(|&&x| x).count(),
            negatives: is_pos.iter().filter(|&&x| !x).count(),
            clean_top1_acc: f32::NAN,
            corrupt_top1_acc: f32::NAN,
            clean_metric_mean: f32::NAN,
            corrupt_metric_mean: f32::NAN,
            filter: None,
            generation: serde_json::Value::Null,
            warnings: Vec::new(),
        },
        is_pos,
    };
    let mut scores = baselines(&pooled)?;
    let trained = train_saes(&pooled, cfg, seed, None)?;
    let codes = encode(&pooled, &trained, cfg, None)?;
    scores.extend(score_codes(&codes, cfg, seed, None)?.scores);
    Ok(scores)
}

/// Stage 3, the evaluation's reference: the named circuit, or the heads activation
/// patching finds (on the first `patch_pairs` pairs) when the config asks for that.
/// A circuit that holds no head or every head is refused: ROC needs both classes.
pub fn reference_circuit(
    model: &Model,
    prepared: &Prepared,
    cfg: &DiscoverConfig,
    progress: &mut Progress<'_>,
) -> Result<(Option<PatchingResult>, Option<Circuit>)> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let heads = nl * nh;
    let task = &prepared.task;
    let patch_n = cfg.patch_pairs.min(task.pairs.len());
    let (patching, circuit) = match &cfg.circuit {
        CircuitSpec::Patching {
            top,
            threshold,
            signed,
        } => {
            let metric = |i: usize, l: &[f32]| task.metric(i, l);
            let p = patch_heads(
                model,
                &task.clean[..patch_n],
                &task.corrupt[..patch_n],
                &metric,
                cfg.batch_size,
                |d| progress("patching", d, heads),
            )?;
            let top = if top.is_none() && threshold.is_none() {
                Some(heads.div_ceil(10))
            } else {
                *top
            };
            let name = format!(
                "patching:{}{}",
                match (top, threshold) {
                    (Some(k), None) => format!("top={k}"),
                    (None, Some(t)) => format!("threshold={t}"),
                    (Some(k), Some(t)) => format!("top={k},threshold={t}"),
                    _ => String::new(),
                },
                if *signed { ",signed" } else { "" }
            );
            let c = Circuit::new(name, p.circuit(top, *threshold, *signed));
            (Some(p), Some(c))
        }
        _ => (None, prepared.named_circuit.clone()),
    };
    if let Some(c) = &circuit {
        let k = c.mask(nl, nh).iter().filter(|&&x| x).count();
        if k == 0 || k == heads {
            return Err(Error::Circuit(format!(
                "the circuit has {k} of {heads} heads: ROC needs both classes"
            )));
        }
    }
    Ok((patching, circuit))
}

/// Stage 4, baselines: the class-mean distance, Fisher ratio and mean norm of every head,
/// once, from the same vectors the SAEs see.
pub fn baselines(acts: &PooledActs) -> Result<BTreeMap<String, Vec<f64>>> {
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let (n, heads) = (acts.examples, acts.heads);
    let br = acts
        .x_result
        .baselines(n, heads, acts.d_model, &acts.is_pos)?;
    let bz = acts.x_z.baselines(n, heads, acts.d_head, &acts.is_pos)?;
    scores.insert(ScorerKind::ClassMeans.name().into(), br.class_mean_distance);
    scores.insert(
        ScorerKind::ClassMeansZ.name().into(),
        bz.class_mean_distance,
    );
    scores.insert(ScorerKind::Fisher.name().into(), br.fisher_ratio);
    scores.insert(ScorerKind::FisherZ.name().into(), bz.fisher_ratio);
    scores.insert(ScorerKind::MeanNorm.name().into(), br.mean_norm);
    Ok(scores)
}

/// One trial's trained SAEs.
pub struct TrainedSaes {
    /// The examples they trained on.
    pub train_idx: Vec<usize>,
    pub saes: Vec<Sae>,
    pub log: crate::sae::TrainLog,
    /// The GPU path keeps them on the device for the codes.
    kept: Option<crate::gpu::DeviceSaes>,
}

/// Stage 5, SAE training: draw the trial's training examples (seeded) and train one
/// shared SAE or one per head on them, on the GPU when there is one.
pub fn train_saes(
    acts: &PooledActs,
    cfg: &DiscoverConfig,
    seed: u64,
    gpu: Option<&crate::gpu::GpuContext>,
) -> Result<TrainedSaes> {
    let train_idx = sae_subset(
        &acts.is_pos,
        cfg.sae.examples.min(acts.examples),
        cfg.balanced,
        seed,
    )?;
    let mut sae_cfg = cfg.sae;
    sae_cfg.seed = seed;
    let (x_sae, d_sae) = acts.sae_input(cfg.on);
    let heads = acts.heads;
    let (saes, log, kept) = match (gpu, x_sae) {
        (Some(g), Pooled::Device(x)) => {
            let (s, l, k) = gpu_train(g, &select_rows(x, &train_idx)?, cfg.sae_mode, &sae_cfg)?;
            (s, l, Some(k))
        }
        _ => {
            let xs = x_sae.host()?;
            let w = heads * d_sae;
            let mut xtrain = Vec::with_capacity(train_idx.len() * w);
            for &i in &train_idx {
                xtrain.extend_from_slice(&xs[i * w..(i + 1) * w]);
            }
            let (s, l) = match cfg.sae_mode {
                SaeMode::Shared => {
                    let (s, log) = train_shared(&xtrain, train_idx.len() * heads, d_sae, &sae_cfg)?;
                    (vec![s], log)
                }
                SaeMode::PerHead => {
                    train_per_head(&xtrain, train_idx.len(), heads, d_sae, &sae_cfg)?
                }
            };
            (s, l, None)
        }
    };
    Ok(TrainedSaes {
        train_idx,
        saes,
        log,
        kept,
    })
}

/// Stage 6, codes: every example's argmax feature per head, from the trained SAEs.
pub fn encode(
    acts: &PooledActs,
    trained: &TrainedSaes,
    cfg: &DiscoverConfig,
    gpu: Option<&crate::gpu::GpuContext>,
) -> Result<CodeTable> {
    let opts = CodeOptions {
        top_k: cfg.top_k_codes.max(1),
    };
    let (x_sae, _) = acts.sae_input(cfg.on);
    let (examples, heads) = (acts.examples, acts.heads);
    let is_pos = acts.is_pos.clone();
    match (gpu, &trained.kept, x_sae, cfg.sae_mode) {
        (Some(g), Some(k), Pooled::Device(x), _) if opts.top_k == 1 => {
            let c = g.encode_argmax_kept(k, x, examples)?;
            CodeTable::new(c, examples, heads, cfg.sae.n_features, is_pos)
        }
        (_, _, _, SaeMode::Shared) => CodeTable::from_shared(
            &trained.saes[0],
            &x_sae.host()?,
            examples,
            heads,
            is_pos,
            opts,
        ),
        (_, _, _, SaeMode::PerHead) => {
            CodeTable::from_per_head(&trained.saes, &x_sae.host()?, examples, is_pos, opts)
        }
    }
}

/// One trial's code scores.
pub struct TrialScores {
    pub node: NodeScores,
    pub edge: Option<EdgeScores>,
    /// Per scorer (the SAE scores and the trial's random draw): a score per head.
    pub scores: BTreeMap<String, Vec<f64>>,
}

/// Stage 7, scores: the paper's node score (and its normalised form), the edge variant,
/// the mutual information, and the trial's seeded random scores.
pub fn score_codes(
    codes: &CodeTable,
    cfg: &DiscoverConfig,
    seed: u64,
    gpu: Option<&crate::gpu::GpuContext>,
) -> Result<TrialScores> {
    let heads = codes.heads;
    let node = node_scores(codes, false)?;
    let node_norm = node_scores(codes, true)?;
    let edge = match (cfg.edge, gpu) {
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
        (true, None) => Some(edge_scores(codes, None)?),
    };
    let mut scores: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    scores.insert(ScorerKind::Sae.name().into(), node.score.clone());
    scores.insert(
        ScorerKind::SaeNormalised.name().into(),
        node_norm.score.clone(),
    );
    scores.insert(ScorerKind::SaeMi.name().into(), mutual_information(codes)?);
    if let Some(e) = &edge {
        scores.insert(ScorerKind::SaeEdge.name().into(), e.score.clone());
    }
    scores.insert(
        ScorerKind::Random.name().into(),
        baseline::random_scores(heads, seed),
    );
    Ok(TrialScores { node, edge, scores })
}

/// ROC of each named score against the circuit's head mask.
fn evaluate_scores<'a>(
    scores: impl Iterator<Item = (&'a String, &'a Vec<f64>)>,
    mask: &[bool],
) -> Result<BTreeMap<String, CircuitEval>> {
    scores
        .map(|(k, v)| Ok((k.clone(), evaluate(v, mask)?)))
        .collect()
}

/// Stage 8, evaluation over trials: each per-trial scorer's mean over trials joins
/// `scores`, and every scorer's AUC is averaged over the trials (mean ± std).
pub fn evaluate_trials(
    trials: Vec<(TrialResult, BTreeMap<String, Vec<f64>>)>,
    scores: &mut BTreeMap<String, Vec<f64>>,
    heads: usize,
) -> Result<(Vec<TrialResult>, BTreeMap<String, MeanStd>)> {
    let mut per_trial: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let mut results = Vec::with_capacity(trials.len());
    for (t, s) in trials {
        for (k, v) in s {
            per_trial.entry(k).or_default().push(v);
        }
        results.push(t);
    }
    for (k, runs) in &per_trial {
        let mean: Vec<f64> = (0..heads)
            .map(|h| runs.iter().map(|r| r[h]).sum::<f64>() / runs.len() as f64)
            .collect();
        scores.insert(k.clone(), mean);
    }
    let mut auc = BTreeMap::new();
    for name in scores.keys() {
        let v: Vec<f64> = results
            .iter()
            .filter_map(|t| t.evals.get(name).map(|e| e.auc))
            .collect();
        if !v.is_empty() {
            auc.insert(name.clone(), mean_std(&v)?);
        }
    }
    Ok((results, auc))
}

/// Stage 9, faithfulness of the primary scorer's ranking: keep the top-k heads, ablate
/// the rest, on the first `patch_pairs` pairs (skipped when not asked for).
fn faithfulness_of(
    model: &Model,
    prepared: &Prepared,
    scores: &BTreeMap<String, Vec<f64>>,
    cfg: &DiscoverConfig,
    progress: &mut Progress<'_>,
    clock: &mut StageClock,
) -> Result<Option<FaithfulnessCurve>> {
    let task = &prepared.task;
    let patch_n = cfg.patch_pairs.min(task.pairs.len());
    let Some(ab) = cfg.faithfulness.filter(|_| patch_n > 0) else {
        return Ok(None);
    };
    let t0 = Instant::now();
    let primary = scores.get(cfg.scorer.name()).ok_or_else(|| {
        Error::InvalidInput(format!("scorer `{}` was not computed", cfg.scorer.name()))
    })?;
    let sc: Vec<f32> = primary.iter().map(|&x| x as f32).collect();
    let ks = faithfulness_grid(model.cfg.n_heads_total());
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
    clock.set("faithfulness", t0);
    Ok(Some(f))
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
        sae: *cfg,
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

//! `headcode patch`: activation patching of every head on a task's pairs, and the circuit
//! it implies (top-k by |effect|, or a threshold on |effect|).
use serde::{Deserialize, Serialize};

use super::prompts::{prepare, Split, TaskSource};
use crate::error::{Error, Result};
use crate::eval::patching::{patch_heads, PatchingResult};
use crate::model::Model;
use crate::tokenize::Tokenizer;

/// What to patch and which heads to keep as a circuit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchConfig {
    pub task: TaskSource,
    /// Prompt pairs to patch over.
    pub n: usize,
    pub seed: u64,
    pub batch_size: usize,
    pub bos: bool,
    /// Keep the top `top` heads by |effect| as the circuit.
    pub top: Option<usize>,
    /// Keep the heads with |effect| ≥ `threshold`.
    pub threshold: Option<f32>,
    /// Rank by the signed effect instead of its size.
    pub signed: bool,
}

/// A finished patching run.
#[derive(Debug, Clone)]
pub struct PatchRun {
    pub task: String,
    pub seconds: f64,
    pub result: PatchingResult,
    /// (layer, head) of the kept heads, when `top` or `threshold` was given.
    pub circuit: Option<Vec<(usize, usize)>>,
}

/// Refuse a cut that cannot select heads: `top` 0, or a threshold that is not a finite
/// number ≥ 0 (NaN would silently keep no head).
pub fn check_cut(top: Option<usize>, threshold: Option<f32>) -> std::result::Result<(), String> {
    if top == Some(0) {
        return Err("top must be at least 1".into());
    }
    match threshold {
        Some(t) if !(t.is_finite() && t >= 0.0) => Err(format!(
            "threshold must be a finite number ≥ 0 (|effect| is compared with it), got {t}"
        )),
        _ => Ok(()),
    }
}

/// Patch every head of `model` on the task's first `cfg.n` pairs; `progress(heads done,
/// heads)`.
pub fn patch(
    model: &Model,
    tok: &dyn Tokenizer,
    cfg: &PatchConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<PatchRun> {
    check_cut(cfg.top, cfg.threshold).map_err(|e| Error::InvalidInput(format!("--{e}")))?;
    let prep = prepare(&cfg.task, tok, cfg.n, cfg.seed, cfg.bos, Split::All)?;
    let heads = model.cfg.n_heads_total();
    let metric = |i: usize, l: &[f32]| prep.metric(i, l);
    let t0 = std::time::Instant::now();
    let result = patch_heads(
        model,
        &prep.clean,
        &prep.corrupt,
        &metric,
        cfg.batch_size,
        |d| progress(d, heads),
    )?;
    let seconds = t0.elapsed().as_secs_f64();
    let circuit = (cfg.top.is_some() || cfg.threshold.is_some())
        .then(|| result.circuit(cfg.top, cfg.threshold, cfg.signed));
    Ok(PatchRun {
        task: prep.name,
        seconds,
        result,
        circuit,
    })
}

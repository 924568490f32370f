//! End-to-end agreement of two `discover` runs that differ only in where they run: the
//! whole pipeline (tokenised IOI pairs, forward + hooks, pooled activations, baselines, SAE
//! training, codes, node and edge scores, AUCs) on a random GPT-2-small-shape model with the
//! GPT-2 tokenizer. The self-test runs it CPU against CUDA (candle's CUDA forward, the
//! device-resident activations, the GPU trainers and encoders), with the criterion:
//! codes equal on ≥ 99 % of (example, head) pairs and AUCs within 0.01.
use candle_core::Device;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::model::random::random_model;
use crate::model::Model;
use crate::pipeline::discover::{discover, CircuitSpec, DiscoverConfig, DiscoverResult, SaeMode};
use crate::pipeline::TaskSource;
use crate::tokenize::{Gpt2Tokenizer, Tokenizer};

/// How two runs of the same configuration compare.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Fraction of (example, head) codes that are equal, over all trials.
    pub code_agreement: f64,
    /// (example, head) pairs compared.
    pub codes: usize,
    /// Largest |AUC difference| over every scorer both runs report.
    pub max_auc_diff: f64,
    /// The scorer where it occurs.
    pub worst_scorer: String,
    /// Largest difference in the task's top-1 accuracies and (relative) metric means, clean
    /// and corrupt: the GPU path reads them from compact logit rows.
    pub max_task_diff: f64,
}

impl Agreement {
    /// The end-to-end criterion.
    pub fn passes(&self) -> bool {
        self.code_agreement >= 0.99 && self.max_auc_diff <= 0.01 && self.max_task_diff <= 0.01
    }
}

/// Compare two finished runs (same configuration, same task).
pub fn agreement(a: &DiscoverResult, b: &DiscoverResult) -> Result<Agreement> {
    if a.trials.len() != b.trials.len() {
        return Err(Error::InvalidInput(format!(
            "runs have {} and {} trials",
            a.trials.len(),
            b.trials.len()
        )));
    }
    let (mut same, mut total) = (0usize, 0usize);
    for (ta, tb) in a.trials.iter().zip(&b.trials) {
        if ta.codes.codes.len() != tb.codes.codes.len() {
            return Err(Error::shape(
                "code table",
                ta.codes.codes.len(),
                tb.codes.codes.len(),
            ));
        }
        same += ta
            .codes
            .codes
            .iter()
            .zip(&tb.codes.codes)
            .filter(|(x, y)| x == y)
            .count();
        total += ta.codes.codes.len();
    }
    let mut worst = (0f64, String::new());
    for (name, ma) in &a.auc {
        if let Some(mb) = b.auc.get(name) {
            let d = (ma.mean - mb.mean).abs();
            if d > worst.0 || worst.1.is_empty() {
                worst = (d, name.clone());
            }
        }
    }
    if worst.1.is_empty() {
        return Err(Error::InvalidInput(
            "the runs share no scored AUC (no circuit?)".into(),
        ));
    }
    let (ta, tb) = (&a.task, &b.task);
    let rel = |x: f32, y: f32| (x as f64 - y as f64).abs() / (x.abs() as f64).max(1.0);
    let max_task_diff = [
        rel(ta.clean_top1_acc, tb.clean_top1_acc),
        rel(ta.corrupt_top1_acc, tb.corrupt_top1_acc),
        rel(ta.clean_metric_mean, tb.clean_metric_mean),
        rel(ta.corrupt_metric_mean, tb.corrupt_metric_mean),
    ]
    .into_iter()
    .fold(
        0f64,
        |m, d| if d.is_nan() { f64::INFINITY } else { m.max(d) },
    );
    Ok(Agreement {
        max_task_diff,
        code_agreement: same as f64 / total.max(1) as f64,
        codes: total,
        max_auc_diff: worst.0,
        worst_scorer: worst.1,
    })
}

/// A random GPT-2-small-shape model (weights seeded, so the same on every device).
pub fn random_gpt2_small(dev: &Device) -> Result<Model> {
    random_model("gpt2-small-shape", 7, dev, None)
}

/// `discover` on `model` for `n` IOI pairs (GPT-2 tokenizer) against the built-in IOI
/// circuit, without faithfulness; `gpu`: the CUDA trainers and encoders.
pub fn discover_ioi(
    model: &Model,
    tok: &dyn Tokenizer,
    gpu: bool,
    mode: SaeMode,
    on: HookPoint,
    n: usize,
    steps: usize,
) -> Result<DiscoverResult> {
    let mut cfg = DiscoverConfig::paper(TaskSource::parse("ioi")?);
    cfg.n = n;
    cfg.sae_mode = mode;
    cfg.on = on;
    cfg.sae.steps = steps;
    cfg.faithfulness = None;
    cfg.circuit = CircuitSpec::Named("ioi".into());
    cfg.gpu = gpu;
    // As the CLI: one chunk per 500 prompts on CUDA.
    if gpu {
        cfg.batch_size = crate::pipeline::discover::GPU_BATCH_SIZE;
    }
    discover(model, tok, &cfg, &mut |_, _, _| {})
}

/// The agreements [`discover_agreement`] reports.
pub struct EndToEnd {
    /// The candidate in f32.
    pub f32: Agreement,
    /// The candidate with TF32 forward GEMMs.
    pub tf32: Option<Agreement>,
    /// The candidate's model in bf16 (weights and forward; `model::dtype`), or why it
    /// could not run (a device without bf16 kernels, such as headcode-emu).
    pub bf16: Option<std::result::Result<Agreement, String>>,
}

/// [`discover_ioi`] on [`random_gpt2_small`], on `reference` (CPU trainers) and on
/// `candidate`, and their agreement. With `extras`, the candidate runs twice more, each
/// compared with the same reference: with candle's forward GEMMs on TF32 tensor cores
/// (`gpu::set_tf32`, reset afterwards even on an error), whether TF32, which a 10 ms
/// forward needs (`bench::floor::forward_floor`), keeps the end-to-end criterion;
/// and with the model in bf16 (`--dtype bf16`), what bf16 does to the method.
#[allow(clippy::too_many_arguments)]
pub fn discover_agreement(
    reference: &Device,
    candidate: &Device,
    candidate_gpu: bool,
    mode: SaeMode,
    on: HookPoint,
    n: usize,
    steps: usize,
    extras: bool,
) -> Result<EndToEnd> {
    let tok = Gpt2Tokenizer::new()?;
    let a = discover_ioi(
        &random_gpt2_small(reference)?,
        &tok,
        false,
        mode,
        on,
        n,
        steps,
    )?;
    let model = random_gpt2_small(candidate)?;
    let b = discover_ioi(&model, &tok, candidate_gpu, mode, on, n, steps)?;
    let f32_agreement = agreement(&a, &b)?;
    if !extras {
        return Ok(EndToEnd {
            f32: f32_agreement,
            tf32: None,
            bf16: None,
        });
    }
    crate::gpu::set_tf32(true)?;
    let c = discover_ioi(&model, &tok, candidate_gpu, mode, on, n, steps);
    crate::gpu::set_tf32(false)?;
    let tf32 = agreement(&a, &c?)?;
    let bf16 = (|| {
        let half = model.to_dtype(crate::model::WeightDtype::Bf16)?;
        agreement(
            &a,
            &discover_ioi(&half, &tok, candidate_gpu, mode, on, n, steps)?,
        )
    })()
    .map_err(|e| e.to_string());
    Ok(EndToEnd {
        f32: f32_agreement,
        tf32: Some(tf32),
        bf16: Some(bf16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness itself, CPU against CPU: the pipeline runs on the random model with the
    /// GPT-2 tokenizer, two identical runs agree exactly, and changed codes or AUCs show.
    #[test]
    fn cpu_runs_agree_and_differences_show() {
        let model = random_gpt2_small(&Device::Cpu).unwrap();
        let tok = Gpt2Tokenizer::new().unwrap();
        let run =
            || discover_ioi(&model, &tok, false, SaeMode::PerHead, HookPoint::Z, 6, 20).unwrap();
        let (a, b) = (run(), run());
        let g = agreement(&a, &b).unwrap();
        assert_eq!(
            (g.code_agreement, g.codes, g.max_auc_diff),
            (1.0, 12 * 144, 0.0)
        );
        assert_eq!(g.max_task_diff, 0.0);
        assert!(g.passes());

        let mut c = b.clone();
        for code in c.trials[0].codes.codes.iter_mut().take(40) {
            *code += 1; // 40 of 1728 = 2.3 % changed
        }
        let g = agreement(&a, &c).unwrap();
        assert!((g.code_agreement - (1.0 - 40.0 / 1728.0)).abs() < 1e-12);
        assert!(!g.passes());

        let mut d = b.clone();
        d.auc.get_mut("class-means").unwrap().mean += 0.02;
        let g = agreement(&a, &d).unwrap();
        assert_eq!(g.worst_scorer, "class-means");
        assert!((g.max_auc_diff - 0.02).abs() < 1e-9 && !g.passes());

        let mut m = b.clone();
        m.task.clean_metric_mean += 0.5;
        assert!(!agreement(&a, &m).unwrap().passes());

        let mut e = b;
        e.trials.clear();
        assert!(agreement(&a, &e).is_err());
    }
}

//! Faithfulness: keep the top-k heads by a score, ablate every other head (mean over the
//! negative set, or patched from the paired corrupted run) and report the task metric as a
//! fraction of the full model's, on a grid of k; a random ranking is the baseline.
use candle_core::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::patching::{logits_rows, MetricFn};
use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Intervention, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// Each ablated head's z is its mean over the negative prompts (all real positions).
    Mean,
    /// Each ablated head's z comes from the paired corrupted prompt.
    Corrupt,
}

impl Ablation {
    /// What happens to the heads outside the circuit, for titles.
    pub fn describe(self) -> &'static str {
        match self {
            Ablation::Mean => "mean-ablated",
            Ablation::Corrupt => "patched from the corrupted prompt",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaithfulnessCurve {
    pub ablation: Ablation,
    pub ks: Vec<usize>,
    /// metric(kept top-k) / metric(full model), mean metrics over prompts.
    pub ours: Vec<f32>,
    pub random: Vec<f32>,
    pub metric_full: f32,
}

/// Replaces every head not in `keep` ([layer][head]) by `src` (per-layer tensors
/// broadcastable to [B, T, H, dh]).
struct Ablate<'a> {
    keep: &'a [Vec<bool>],
    src: &'a [Tensor],
}

impl Intervention for Ablate<'_> {
    fn on_z(&mut self, layer: usize, z: &Tensor, _l: &[usize]) -> Result<Option<Tensor>> {
        let keep: Vec<f32> = self.keep[layer]
            .iter()
            .map(|&k| if k { 1.0 } else { 0.0 })
            .collect();
        let nh = keep.len();
        let m = Tensor::from_vec(keep, (1, 1, nh, 1), z.device())?;
        let drop = (1.0 - &m)?;
        Ok(Some(
            z.broadcast_mul(&m)?
                .broadcast_add(&self.src[layer].broadcast_mul(&drop)?)?,
        ))
    }
}

/// Mean z per layer over negatives' real positions: [1, 1, H, dh] per layer.
fn mean_z(model: &Model, negatives: &[Vec<u32>], batch: usize) -> Result<Vec<Tensor>> {
    let mut sums: Option<Vec<Tensor>> = None;
    let mut count = 0usize;
    for chunk in negatives.chunks(batch.max(1)) {
        let out = model.forward(
            chunk,
            ForwardOptions {
                capture_z: true,
                ..Default::default()
            },
        )?;
        let t = out.z[0].dim(1)?;
        let mut m = vec![0f32; chunk.len() * t];
        for (i, &len) in out.lengths.iter().enumerate() {
            m[i * t..i * t + len].iter_mut().for_each(|x| *x = 1.0);
            count += len;
        }
        let m = Tensor::from_vec(m, (chunk.len(), t, 1, 1), model.device())?;
        let s: Vec<Tensor> = out
            .z
            .iter()
            .map(|z| z.broadcast_mul(&m)?.sum(1)?.sum_keepdim(0)?.unsqueeze(0))
            .collect::<candle_core::Result<_>>()?;
        sums = Some(match sums {
            None => s,
            Some(prev) => prev
                .iter()
                .zip(&s)
                .map(|(a, b)| a + b)
                .collect::<candle_core::Result<_>>()?,
        });
    }
    let sums = sums.ok_or_else(|| Error::InvalidInput("no negative prompts".into()))?;
    Ok(sums
        .into_iter()
        .map(|s| s / count as f64)
        .collect::<candle_core::Result<_>>()?)
}

fn metric_with(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    mean: Option<&[Tensor]>,
    keep: Option<&[Vec<bool>]>,
    metric: &MetricFn<'_>,
    batch: usize,
) -> Result<f32> {
    let mut total = 0f64;
    let mut offset = 0;
    for (cl, co) in clean.chunks(batch.max(1)).zip(corrupt.chunks(batch.max(1))) {
        crate::interrupt::check()?;
        let out = match keep {
            None => model.forward(cl, ForwardOptions::default())?,
            Some(keep) => {
                let src: Vec<Tensor> = match mean {
                    Some(m) => m.to_vec(),
                    None => {
                        model
                            .forward(
                                co,
                                ForwardOptions {
                                    capture_z: true,
                                    ..Default::default()
                                },
                            )?
                            .z
                    }
                };
                let mut iv = Ablate { keep, src: &src };
                model.forward(
                    cl,
                    ForwardOptions {
                        intervention: Some(&mut iv),
                        ..Default::default()
                    },
                )?
            }
        };
        for (i, row) in logits_rows(&out.logits)?.iter().enumerate() {
            total += metric(offset + i, row) as f64;
        }
        offset += cl.len();
    }
    Ok((total / clean.len() as f64) as f32)
}

fn keep_mask(order: &[usize], k: usize, nl: usize, nh: usize) -> Vec<Vec<bool>> {
    let mut keep = vec![vec![false; nh]; nl];
    for &i in order.iter().take(k) {
        keep[i / nh][i % nh] = true;
    }
    keep
}

/// `scores` layer-major, one per head; `ks` the numbers of heads to keep.
#[allow(clippy::too_many_arguments)]
pub fn faithfulness(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    scores: &[f32],
    ks: &[usize],
    ablation: Ablation,
    metric: &MetricFn<'_>,
    batch: usize,
    seed: u64,
) -> Result<FaithfulnessCurve> {
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    if scores.len() != nl * nh {
        return Err(Error::shape("faithfulness scores", nl * nh, scores.len()));
    }
    if clean.is_empty() || clean.len() != corrupt.len() {
        return Err(Error::InvalidInput(
            "faithfulness needs equal, non-empty clean/corrupt sets".into(),
        ));
    }
    let mean = match ablation {
        Ablation::Mean => Some(mean_z(model, corrupt, batch)?),
        Ablation::Corrupt => None,
    };
    let full = metric_with(model, clean, corrupt, None, None, metric, batch)?;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    // Shuffled from head order, not from `order`: the random baseline must not depend on
    // the scores, so rankings compared under one seed share the same random curve.
    let mut rnd: Vec<usize> = (0..scores.len()).collect();
    rnd.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let denom = if full.abs() > 1e-9 { full } else { 1.0 };
    let mut ours = Vec::new();
    let mut random = Vec::new();
    for &k in ks {
        let k = k.min(scores.len());
        for (ord, outv) in [(&order, &mut ours), (&rnd, &mut random)] {
            let keep = keep_mask(ord, k, nl, nh);
            let m = metric_with(
                model,
                clean,
                corrupt,
                mean.as_deref(),
                Some(&keep),
                metric,
                batch,
            )?;
            outv.push(m / denom);
        }
    }
    Ok(FaithfulnessCurve {
        ablation,
        ks: ks.to_vec(),
        ours,
        random,
        metric_full: full,
    })
}

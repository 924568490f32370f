//! Activation patching per head: replace one head's `z` (all positions) in the clean run
//! by its value in the paired corrupted run and measure how far the task metric moves
//! toward the corrupted value. A reference circuit where no published one exists, and the
//! machinery faithfulness uses.
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ForwardOptions, Intervention, LogitsAt, Model};

/// Metric of prompt `i` from its last-position logits.
pub type MetricFn<'a> = dyn Fn(usize, &[f32]) -> f32 + 'a;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchingResult {
    pub n_layers: usize,
    pub n_heads: usize,
    /// Layer-major, one value per head: mean over prompts of
    /// (m_patched − m_clean) / (m_corrupt − m_clean); 1 = patching this head alone
    /// reproduces the whole corruption, 0 = no effect.
    pub effect: Vec<f32>,
    pub labels: Vec<String>,
    pub metric_clean: f32,
    pub metric_corrupt: f32,
    pub n_prompts: usize,
    /// Per prompt pair, its own effect per head (pair-major, `n_prompts × heads`): what a
    /// bootstrap over pairs resamples. Kept in memory only.
    #[serde(skip)]
    pub per_pair: Vec<f32>,
}

/// Replaces head `head` of layer `layer` by `src` ([B, T, H, dh]).
struct PatchHead<'a> {
    layer: usize,
    heads: &'a [usize],
    src: &'a Tensor,
}

impl Intervention for PatchHead<'_> {
    fn on_z(&mut self, layer: usize, z: &Tensor, _lengths: &[usize]) -> Result<Option<Tensor>> {
        if layer != self.layer {
            return Ok(None);
        }
        Ok(Some(replace_heads(z, self.src, self.heads)?))
    }
}

/// z with heads `heads` (dim 2) taken from `src`.
pub fn replace_heads(z: &Tensor, src: &Tensor, heads: &[usize]) -> Result<Tensor> {
    let nh = z.dim(2)?;
    let mut mask = vec![0f32; nh];
    for &h in heads {
        if h >= nh {
            return Err(Error::InvalidInput(format!("head {h} out of range ({nh})")));
        }
        mask[h] = 1.0;
    }
    let m = Tensor::from_vec(mask, (1, 1, nh, 1), z.device())?;
    let keep = (1.0 - &m)?;
    Ok((z.broadcast_mul(&keep)? + src.broadcast_mul(&m)?)?)
}

/// Pairs must exist, match in number and have equal token lengths pair by pair (patching
/// replaces activations position by position). `who` names the method in the errors.
pub(crate) fn check_pairs(clean: &[Vec<u32>], corrupt: &[Vec<u32>], who: &str) -> Result<()> {
    if clean.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{who} needs at least one prompt pair"
        )));
    }
    if clean.len() != corrupt.len() {
        return Err(Error::shape(
            format!("{who} prompt pairs"),
            clean.len(),
            corrupt.len(),
        ));
    }
    for (i, (a, b)) in clean.iter().zip(corrupt).enumerate() {
        if a.len() != b.len() {
            return Err(Error::InvalidInput(format!(
                "pair {i}: clean has {} tokens, corrupt {}: {who} needs equal lengths",
                a.len(),
                b.len()
            )));
        }
    }
    Ok(())
}

/// Patch every head in turn (`progress` is called with heads done).
pub fn patch_heads(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    metric: &MetricFn<'_>,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<PatchingResult> {
    check_pairs(clean, corrupt, "patching")?;
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let mut sum_effect = vec![0f64; nl * nh];
    let mut per_pair = vec![0f32; clean.len() * nl * nh];
    let (mut mc_sum, mut mx_sum) = (0f64, 0f64);
    let mut offset = 0;
    type Pair<'a> = (&'a [Vec<u32>], &'a [Vec<u32>]);
    let chunks: Vec<Pair<'_>> = clean
        .chunks(batch_size.max(1))
        .zip(corrupt.chunks(batch_size.max(1)))
        .collect();
    let mut done_heads = 0;
    let n_chunks = chunks.len();
    for (ci, (cl, co)) in chunks.into_iter().enumerate() {
        let base = model.forward(
            cl,
            ForwardOptions {
                capture_resid: true,
                ..Default::default()
            },
        )?;
        let corr = model.forward(
            co,
            ForwardOptions {
                capture_z: true,
                ..Default::default()
            },
        )?;
        let lc = logits_rows(&base.logits)?;
        let lx = logits_rows(&corr.logits)?;
        let mc: Vec<f32> = lc
            .iter()
            .enumerate()
            .map(|(i, l)| metric(offset + i, l))
            .collect();
        let mx: Vec<f32> = lx
            .iter()
            .enumerate()
            .map(|(i, l)| metric(offset + i, l))
            .collect();
        mc_sum += mc.iter().map(|&x| x as f64).sum::<f64>();
        mx_sum += mx.iter().map(|&x| x as f64).sum::<f64>();
        for l in 0..nl {
            for h in 0..nh {
                crate::interrupt::check()?;
                let heads = [h];
                let mut iv = PatchHead {
                    layer: l,
                    heads: &heads,
                    src: &corr.z[l],
                };
                let out = model.forward(
                    cl,
                    ForwardOptions {
                        start: Some((l, base.resid[l].clone())),
                        intervention: Some(&mut iv),
                        logits: LogitsAt::Last,
                        ..Default::default()
                    },
                )?;
                let lp = logits_rows(&out.logits)?;
                for (i, row) in lp.iter().enumerate() {
                    let denom = mx[i] - mc[i];
                    let e = if denom.abs() > 1e-6 {
                        (metric(offset + i, row) - mc[i]) / denom
                    } else {
                        0.0
                    };
                    sum_effect[l * nh + h] += e as f64;
                    per_pair[(offset + i) * nl * nh + l * nh + h] = e;
                }
                if ci + 1 == n_chunks {
                    done_heads += 1;
                    progress(done_heads);
                }
            }
        }
        offset += cl.len();
    }
    let n = clean.len() as f64;
    Ok(PatchingResult {
        n_layers: nl,
        n_heads: nh,
        effect: sum_effect.iter().map(|&s| (s / n) as f32).collect(),
        labels: model.cfg.head_labels(),
        metric_clean: (mc_sum / n) as f32,
        metric_corrupt: (mx_sum / n) as f32,
        n_prompts: clean.len(),
        per_pair,
    })
}

pub(crate) fn logits_rows(t: &Option<Tensor>) -> Result<Vec<Vec<f32>>> {
    Ok(t.as_ref()
        .ok_or_else(|| Error::InvalidInput("forward computed no logits".into()))?
        .to_vec2::<f32>()?)
}

impl PatchingResult {
    /// Mean effects over the pairs `sample` (indices into the pairs, repeats allowed).
    pub fn effect_of(&self, sample: &[usize]) -> Result<Vec<f64>> {
        let heads = self.n_layers * self.n_heads;
        if self.per_pair.len() != self.n_prompts * heads || sample.is_empty() {
            return Err(Error::InvalidInput(
                "per-pair patching effects are not available for resampling".into(),
            ));
        }
        let mut s = vec![0f64; heads];
        for &p in sample {
            let row = self
                .per_pair
                .get(p * heads..(p + 1) * heads)
                .ok_or_else(|| {
                    Error::InvalidInput(format!("resampled pair {p} of {}", self.n_prompts))
                })?;
            for (a, &x) in s.iter_mut().zip(row) {
                *a += x as f64;
            }
        }
        s.iter_mut().for_each(|a| *a /= sample.len() as f64);
        Ok(s)
    }

    /// Heads as a circuit: the top `top` by |effect|, or those with |effect| ≥ `threshold`
    /// (both when both are given). A head that works against the task (IOI's negative name
    /// movers) belongs to the circuit as much as one that works for it, so the size of the
    /// effect ranks, not its sign; `signed` ranks by the signed effect instead (the order
    /// before 2026-12-06). Ties go to the lower head index.
    pub fn circuit(
        &self,
        top: Option<usize>,
        threshold: Option<f32>,
        signed: bool,
    ) -> Vec<(usize, usize)> {
        let key = |i: usize| rank_key(self.effect[i], signed);
        self.ranking(signed)
            .into_iter()
            .enumerate()
            .filter(|&(rank, i)| {
                top.is_none_or(|k| rank < k) && threshold.is_none_or(|t| key(i) >= t)
            })
            .map(|(_, i)| (i / self.n_heads, i % self.n_heads))
            .collect()
    }

    /// Head indices (layer-major) in circuit order: |effect| descending unless `signed`.
    pub fn ranking(&self, signed: bool) -> Vec<usize> {
        let key = |i: usize| rank_key(self.effect[i], signed);
        let mut order: Vec<usize> = (0..self.effect.len()).collect();
        order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
        order
    }
}

/// What a head is ranked by: the size of its effect, or the effect itself if `signed`.
pub fn rank_key(effect: f32, signed: bool) -> f32 {
    if signed {
        effect
    } else {
        effect.abs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(effect: Vec<f32>) -> PatchingResult {
        PatchingResult {
            n_layers: 2,
            n_heads: 2,
            labels: vec!["L0H0".into(), "L0H1".into(), "L1H0".into(), "L1H1".into()],
            effect,
            metric_clean: 1.0,
            metric_corrupt: 0.0,
            n_prompts: 1,
            per_pair: Vec::new(),
        }
    }

    #[test]
    fn a_negative_head_ranks_by_its_size() {
        let r = result(vec![0.1, -0.6, 0.4, 0.02]);
        assert_eq!(r.circuit(Some(2), None, false), vec![(0, 1), (1, 0)]);
        assert_eq!(r.circuit(Some(2), None, true), vec![(1, 0), (0, 0)]);
        assert_eq!(
            r.circuit(None, Some(0.05), false),
            vec![(0, 1), (1, 0), (0, 0)]
        );
        assert_eq!(r.circuit(None, Some(0.05), true), vec![(1, 0), (0, 0)]);
        assert_eq!(r.ranking(false), vec![1, 2, 0, 3]);
    }
}

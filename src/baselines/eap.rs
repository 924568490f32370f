//! Edge attribution patching (Syed, Rager & Conmy 2023, arXiv 2310.10348): the effect of
//! cutting edge s→r is approximated to first order by
//! `(a_s(corrupt) − a_s(clean)) · ∂M/∂(input of r)`, summed over positions and averaged
//! over prompts, from one clean forward, one corrupted forward and one backward pass
//! (candle's autograd). M is the task metric (the KL divergence has zero gradient at the
//! clean model, so EAP uses task metrics). Edges are ranked by |score|; a head's node score
//! is the sum of |score| over its outgoing edges.
use std::time::Instant;

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::patching::check_pairs;
use crate::model::graph::{GraphModel, GraphRunOptions};
use crate::model::Model;
use crate::tasks::{metric_value, MetricKind, PairTokens};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EapResult {
    pub split_qkv: bool,
    pub n_layers: usize,
    pub n_heads: usize,
    pub has_mlp: bool,
    /// GPT-NeoX's parallel attention and MLP (the graph differs).
    #[serde(default)]
    pub parallel: bool,
    pub n_edges: usize,
    pub n_prompts: usize,
    /// Per edge id ([`crate::model::graph::CircuitGraph`] order), signed: the predicted
    /// change of the mean metric when the edge is cut.
    pub edge_scores: Vec<f64>,
    /// Per head (layer-major): Σ |edge score| over the head's outgoing edges.
    pub head_scores: Vec<f64>,
    /// Mean task metric on the clean and corrupted prompts.
    pub metric_clean: f64,
    pub metric_corrupt: f64,
    pub seconds: f64,
}

/// Σ over the batch of each prompt's task metric, as a differentiable function of the
/// last-position logits [B, V]. Logit differences are linear in the logits; the
/// max-wrong difference takes its maximum at the current logits (the same value and
/// gradient); the year probability difference goes through a softmax.
pub fn metric_tensor(logits: &Tensor, tokens: &[PairTokens]) -> Result<Tensor> {
    let (b, v) = logits.dims2()?;
    if b != tokens.len() {
        return Err(Error::shape("metric prompts", b, tokens.len()));
    }
    let rows = logits.to_vec2::<f32>()?;
    let mut lin = vec![0f32; b * v];
    let mut prob = vec![0f32; b * v];
    let (mut any_lin, mut any_prob) = (false, false);
    let set = |buf: &mut Vec<f32>, i: usize, id: u32, x: f32| -> Result<()> {
        let j = id as usize;
        if j >= v {
            return Err(Error::shape("metric token id", format!("< {v}"), id));
        }
        buf[i * v + j] += x;
        Ok(())
    };
    for (i, t) in tokens.iter().enumerate() {
        match t.metric {
            MetricKind::LogitDiff => {
                any_lin = true;
                set(&mut lin, i, t.answer, 1.0)?;
                let k = t.wrong.len().max(1) as f32;
                for &w in &t.wrong {
                    set(&mut lin, i, w, -1.0 / k)?;
                }
            }
            MetricKind::MaxWrongDiff => {
                any_lin = true;
                set(&mut lin, i, t.answer, 1.0)?;
                let worst = t
                    .wrong
                    .iter()
                    .copied()
                    .filter(|&w| (w as usize) < v)
                    .max_by(|&a, &c| rows[i][a as usize].total_cmp(&rows[i][c as usize]))
                    .ok_or_else(|| Error::Task("max-wrong metric without wrong answers".into()))?;
                set(&mut lin, i, worst, -1.0)?;
            }
            MetricKind::YearProbDiff { .. } => {
                any_prob = true;
                for &g in &t.greater {
                    set(&mut prob, i, g, 1.0)?;
                }
                for &g in &t.not_greater {
                    set(&mut prob, i, g, -1.0)?;
                }
            }
        }
    }
    let dev = logits.device();
    let mut m = Tensor::zeros((), logits.dtype(), dev)?;
    if any_lin {
        let w = Tensor::from_vec(lin, (b, v), dev)?;
        m = (m + (logits * w)?.sum_all()?)?;
    }
    if any_prob {
        let c = Tensor::from_vec(prob, (b, v), dev)?;
        let mx = logits.max_keepdim(D::Minus1)?.detach();
        let e = logits.broadcast_sub(&mx)?.exp()?;
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?;
        m = (m + (p * c)?.sum_all()?)?;
    }
    Ok(m)
}

fn mean_metric(logits: &Tensor, tokens: &[PairTokens]) -> Result<f64> {
    let rows = logits.to_vec2::<f32>()?;
    let mut s = 0f64;
    for (r, t) in rows.iter().zip(tokens) {
        s += metric_value(t.metric, r, t)? as f64;
    }
    Ok(s / rows.len().max(1) as f64)
}

/// EAP over `clean`/`corrupt` pairs (equal lengths pair by pair), in batches.
pub fn eap(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    tokens: &[PairTokens],
    split_qkv: bool,
    batch_size: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<EapResult> {
    check_pairs(clean, corrupt, "EAP")?;
    if clean.len() != tokens.len() {
        return Err(Error::shape("EAP metric tokens", clean.len(), tokens.len()));
    }
    let t0 = Instant::now();
    let gm = GraphModel::new(model, split_qkv)?;
    let g = &gm.graph;
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let ne = g.n_edges();
    let mut scores = vec![0f64; ne];
    let (mut mc, mut mx) = (0f64, 0f64);
    let bs = batch_size.max(1);
    let n_batches = clean.len().div_ceil(bs);
    for (bi, ((cl, co), tk)) in clean
        .chunks(bs)
        .zip(corrupt.chunks(bs))
        .zip(tokens.chunks(bs))
        .enumerate()
    {
        crate::interrupt::check()?;
        let corr = gm
            .run(
                co,
                GraphRunOptions {
                    capture: true,
                    ..Default::default()
                },
            )?
            .cache
            .ok_or_else(|| Error::InvalidInput("corrupted run captured nothing".into()))?;
        let out = gm.run(
            cl,
            GraphRunOptions {
                capture: true,
                track: true,
                ..Default::default()
            },
        )?;
        let cache = out
            .cache
            .ok_or_else(|| Error::InvalidInput("clean run captured nothing".into()))?;
        mc += mean_metric(&out.logits, tk)? * cl.len() as f64;
        mx += mean_metric(&corr.logits, tk)? * cl.len() as f64;
        let grads = metric_tensor(&out.logits, tk)?.backward()?;
        // δ = corrupt − clean for every sender, as rows [S, N·d].
        let rows: Vec<Tensor> = cache
            .blocks
            .iter()
            .zip(&corr.blocks)
            .map(|(c, x)| {
                let (n, k, d) = c.dims3()?;
                Ok((x - c.detach())?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((k, n * d))?)
            })
            .collect::<Result<Vec<_>>>()?;
        let delta = Tensor::cat(&rows, 0)?;
        // Receiver groups in `inputs` order: per layer heads (and MLP), then the output.
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        for l in 0..nl {
            groups.push(g.attn_receivers(l));
            if let Some(r) = g.mlp_receiver(l) {
                groups.push(r..r + 1);
            }
        }
        let o = g.output_receiver();
        groups.push(o..o + 1);
        if groups.len() != out.inputs.len() {
            return Err(Error::InvalidInput(format!(
                "graph forward returned {} receiver inputs for {} groups",
                out.inputs.len(),
                groups.len()
            )));
        }
        for (rows_r, x) in groups.into_iter().zip(&out.inputs) {
            let Some(gr) = grads.get(x) else {
                continue; // no path to the metric: every score is 0
            };
            let gr = if gr.rank() == 2 {
                gr.unsqueeze(1)?
            } else {
                gr.clone()
            };
            let (n, r, d) = gr.dims3()?;
            let gt = gr.transpose(1, 2)?.contiguous()?.reshape((n * d, r))?;
            let up = g.n_upstream(rows_r.start);
            let p = delta.narrow(0, 0, up)?.matmul(&gt)?.to_vec2::<f32>()?; // [up, r]
            for (j, rec) in rows_r.enumerate() {
                let e0 = g.edges_of(rec).start;
                for (s, row) in p.iter().enumerate() {
                    scores[e0 + s] += row[j] as f64;
                }
            }
        }
        progress(bi + 1, n_batches);
    }
    let n = clean.len() as f64;
    for s in &mut scores {
        *s /= n;
    }
    let mut head_scores = vec![0f64; nl * nh];
    for (e, s) in scores.iter().enumerate() {
        let (snd, _) = g.edge(e);
        if let crate::model::graph::Sender::Head { layer, head } = g.senders[snd] {
            head_scores[layer * nh + head] += s.abs();
        }
    }
    Ok(EapResult {
        split_qkv,
        n_layers: nl,
        n_heads: nh,
        has_mlp: g.has_mlp,
        parallel: g.parallel,
        n_edges: ne,
        n_prompts: clean.len(),
        edge_scores: scores,
        head_scores,
        metric_clean: mc / n,
        metric_corrupt: mx / n,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

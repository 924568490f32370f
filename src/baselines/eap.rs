//! Edge attribution patching (Syed, Rager & Conmy 2023, arXiv 2310.10348) and its
//! integrated-gradients form EAP-IG (Hanna, Pezzelle & Belinkov 2024, arXiv 2403.17806).
//!
//! The effect of cutting edge s→r is approximated to first order by
//! `(a_s(corrupt) − a_s(clean)) · ∂M/∂(input of r)`, summed over positions and averaged
//! over prompts (candle's autograd gives the gradients). M is the task metric (the KL
//! divergence has zero gradient at the clean model, so EAP uses task metrics). The
//! [`Attribution`] says where the gradient is taken:
//! - EAP: at the clean input;
//! - EAP-IG-inputs: the mean over `steps` points on the straight line from the corrupted to
//!   the clean input embeddings, α = k/steps for k = 0..steps−1, exactly as EAP-IG's
//!   `get_scores_eap_ig` (the corrupted end is included, the clean end is not);
//! - clean–corrupted: the mean of the gradients at the two ends (EAP-IG's
//!   `get_scores_clean_corrupted`).
//!
//! Scores here are the predicted *change* of the metric when the edge is cut (negative for
//! an edge the task needs); MIB files store the negation ([`crate::mib`]). A head's node
//! score for ROC is the sum of |score| over its outgoing edges; the signed node score of any
//! sender is the sum of its outgoing edge scores, the first-order effect of patching the
//! sender's output everywhere (what EAP-IG's node-level attribution computes).
use std::time::Instant;

use candle_core::{Tensor, D};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::eval::patching::check_pairs;
use crate::model::graph::{GraphModel, GraphOutput, GraphRunOptions};
use crate::model::Model;
use crate::tasks::{metric_value, MetricKind, PairTokens};

/// Where on the line from the corrupted to the clean input the gradients are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Attribution {
    /// At the clean input (EAP).
    #[default]
    Eap,
    /// EAP-IG-inputs: the mean over α = k/steps, k = 0..steps−1.
    IgInputs { steps: usize },
    /// The mean of the corrupted (α = 0) and the clean (α = 1) end.
    CleanCorrupted,
}

impl Attribution {
    /// EAP-IG's default step count in MIB's runs is 5 (`--ig-steps`).
    pub const DEFAULT_IG_STEPS: usize = 5;

    /// Pairs per backward pass (`--eap-batch`) by default. The autograd graph keeps every
    /// receiver's input for each pair: on SmolLM2's q/k/v-split graph 16 Docstring pairs in
    /// one pass peaked at 18.3 GB and 32 Greater-Than pairs were killed for memory on a
    /// 24 GB machine, so the CPU takes 4 at a time (the scores are sums over pairs, so the
    /// batch changes nothing but memory). A GPU has the memory for a whole 32-pair run.
    pub fn default_batch(gpu: bool) -> usize {
        if gpu {
            32
        } else {
            4
        }
    }

    /// The points α (0 = corrupted input, 1 = clean input) whose gradients are averaged.
    pub fn alphas(&self) -> Result<Vec<f64>> {
        match *self {
            Attribution::Eap => Ok(vec![1.0]),
            Attribution::CleanCorrupted => Ok(vec![0.0, 1.0]),
            Attribution::IgInputs { steps } => {
                if steps == 0 || steps > 1000 {
                    return Err(Error::InvalidInput(format!(
                        "--ig-steps {steps}: use 1 to 1000 interpolation steps"
                    )));
                }
                Ok((0..steps).map(|k| k as f64 / steps as f64).collect())
            }
        }
    }

    /// The name `compare --methods` uses.
    pub fn name(&self) -> &'static str {
        match self {
            Attribution::Eap => "eap",
            Attribution::IgInputs { .. } => "eap-ig",
            Attribution::CleanCorrupted => "eap-ig-cc",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EapResult {
    /// How the gradients were taken (absent in files from before EAP-IG: EAP).
    #[serde(default)]
    pub attribution: Attribution,
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
    /// Per sender ([`crate::model::graph::CircuitGraph`] order: input, then per layer its
    /// heads and MLP), signed: Σ of its outgoing edge scores.
    #[serde(default)]
    pub node_scores: Vec<f64>,
    /// Mean task metric on the clean and corrupted prompts.
    pub metric_clean: f64,
    pub metric_corrupt: f64,
    pub seconds: f64,
    /// Per prompt pair, its own edge scores (pair-major, `n_prompts × n_edges`): what a
    /// bootstrap over pairs resamples. Kept in memory only.
    #[serde(skip)]
    pub per_pair: Vec<f32>,
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
    progress: impl FnMut(usize, usize),
) -> Result<EapResult> {
    attribute(
        model,
        clean,
        corrupt,
        tokens,
        split_qkv,
        Attribution::Eap,
        batch_size,
        progress,
    )
}

/// Edge attribution scores by `how` over `clean`/`corrupt` pairs (equal lengths pair by
/// pair), in batches of `batch_size` pairs; `progress(done, total)` counts backward passes.
#[allow(clippy::too_many_arguments)]
pub fn attribute(
    model: &Model,
    clean: &[Vec<u32>],
    corrupt: &[Vec<u32>],
    tokens: &[PairTokens],
    split_qkv: bool,
    how: Attribution,
    batch_size: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<EapResult> {
    check_pairs(clean, corrupt, how.name())?;
    if clean.len() != tokens.len() {
        return Err(Error::shape("EAP metric tokens", clean.len(), tokens.len()));
    }
    let alphas = how.alphas()?;
    let t0 = Instant::now();
    let gm = GraphModel::new(model, split_qkv)?;
    let g = &gm.graph;
    let (nl, nh) = (model.cfg.n_layers, model.cfg.n_heads);
    let ne = g.n_edges();
    let mut per_pair = vec![0f32; clean.len() * ne];
    let (mut mc, mut mx) = (0f64, 0f64);
    let bs = batch_size.max(1);
    let n_batches = clean.len().div_ceil(bs);
    let total = n_batches * alphas.len();
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
    let capture = GraphRunOptions {
        capture: true,
        ..Default::default()
    };
    for (bi, ((cl, co), tk)) in clean
        .chunks(bs)
        .zip(corrupt.chunks(bs))
        .zip(tokens.chunks(bs))
        .enumerate()
    {
        crate::interrupt::check()?;
        let nb = cl.len();
        let first_pair = bi * bs;
        let corr = gm
            .run(co, capture)?
            .cache
            .ok_or_else(|| Error::InvalidInput("corrupted run captured nothing".into()))?;
        // The clean run: its cache gives δ, and its gradients are the α = 1 point.
        let clean_out = gm.run(
            cl,
            GraphRunOptions {
                capture: true,
                track: alphas.contains(&1.0),
                ..Default::default()
            },
        )?;
        let cache = clean_out
            .cache
            .clone()
            .ok_or_else(|| Error::InvalidInput("clean run captured nothing".into()))?;
        mc += mean_metric(&cache.logits, tk)? * nb as f64;
        mx += mean_metric(&corr.logits, tk)? * nb as f64;
        // Σ over the α points of ∂M/∂(receiver input), per receiver group [N, r, d].
        let mut grad_sum: Vec<Option<Tensor>> = vec![None; groups.len()];
        let (x_clean, x_corr) = (
            cache.blocks[0].squeeze(1)?.detach(),
            corr.blocks[0].squeeze(1)?.detach(),
        );
        for (ai, &a) in alphas.iter().enumerate() {
            crate::interrupt::check()?;
            let out = if a == 1.0 {
                GraphOutput {
                    logits: clean_out.logits.clone(),
                    cache: None,
                    inputs: clean_out.inputs.clone(),
                }
            } else {
                let input = (&x_corr + ((&x_clean - &x_corr)? * a)?)?;
                gm.run(
                    cl,
                    GraphRunOptions {
                        track: true,
                        input: Some(&input),
                        ..Default::default()
                    },
                )?
            };
            if groups.len() != out.inputs.len() {
                return Err(Error::InvalidInput(format!(
                    "graph forward returned {} receiver inputs for {} groups",
                    out.inputs.len(),
                    groups.len()
                )));
            }
            let grads = metric_tensor(&out.logits, tk)?.backward()?;
            for (gi, x) in out.inputs.iter().enumerate() {
                let Some(gr) = grads.get(x) else {
                    continue; // no path to the metric: every score is 0
                };
                let gr = if gr.rank() == 2 {
                    gr.unsqueeze(1)?
                } else {
                    gr.clone()
                };
                grad_sum[gi] = Some(match grad_sum[gi].take() {
                    Some(s) => (s + gr)?,
                    None => gr,
                });
            }
            progress(bi * alphas.len() + ai + 1, total);
        }
        // δ = corrupt − clean for every sender, per pair: [B, S, T·d].
        let rows: Vec<Tensor> = cache
            .blocks
            .iter()
            .zip(&corr.blocks)
            .map(|(c, x)| {
                let (n, k, d) = c.dims3()?;
                Ok((x - c.detach())?
                    .reshape((nb, n / nb, k, d))?
                    .transpose(1, 2)?
                    .contiguous()?
                    .reshape((nb, k, n / nb * d))?)
            })
            .collect::<Result<Vec<_>>>()?;
        let delta = Tensor::cat(&rows, 1)?;
        let scale = 1.0 / alphas.len() as f64;
        for (rows_r, gs) in groups.iter().zip(&grad_sum) {
            let Some(gr) = gs else { continue };
            let (n, r, d) = gr.dims3()?;
            // [N, r, d] → per pair [B, T·d, r], the mean over the α points.
            let gt = (gr
                .transpose(1, 2)?
                .contiguous()?
                .reshape((nb, n / nb * d, r))?
                * scale)?;
            let up = g.n_upstream(rows_r.start);
            let p = delta.narrow(1, 0, up)?.contiguous()?.matmul(&gt)?; // [B, up, r]
            let p = p.to_vec3::<f32>()?;
            for (pi, pair) in p.iter().enumerate() {
                let row = &mut per_pair[(first_pair + pi) * ne..(first_pair + pi + 1) * ne];
                for (s, vals) in pair.iter().enumerate() {
                    for (j, rec) in rows_r.clone().enumerate() {
                        row[g.edges_of(rec).start + s] += vals[j];
                    }
                }
            }
        }
    }
    let n = clean.len() as f64;
    let mut scores = vec![0f64; ne];
    for pair in per_pair.chunks(ne) {
        for (s, &x) in scores.iter_mut().zip(pair) {
            *s += x as f64;
        }
    }
    for s in &mut scores {
        *s /= n;
    }
    let (head_scores, node_scores) = node_sums(g, nh, &scores);
    Ok(EapResult {
        attribution: how,
        split_qkv,
        n_layers: nl,
        n_heads: nh,
        has_mlp: g.has_mlp,
        parallel: g.parallel,
        n_edges: ne,
        n_prompts: clean.len(),
        edge_scores: scores,
        head_scores,
        node_scores,
        metric_clean: mc / n,
        metric_corrupt: mx / n,
        seconds: t0.elapsed().as_secs_f64(),
        per_pair,
    })
}

/// Per head Σ |edge score| over its outgoing edges (layer-major), and per sender the
/// signed Σ of its outgoing edge scores.
pub fn node_sums(
    g: &crate::model::graph::CircuitGraph,
    n_heads: usize,
    edge_scores: &[f64],
) -> (Vec<f64>, Vec<f64>) {
    let mut head_scores = vec![0f64; g.n_layers * n_heads];
    let mut node_scores = vec![0f64; g.senders.len()];
    for (e, s) in edge_scores.iter().enumerate() {
        let (snd, _) = g.edge(e);
        node_scores[snd] += s;
        if let crate::model::graph::Sender::Head { layer, head } = g.senders[snd] {
            head_scores[layer * n_heads + head] += s.abs();
        }
    }
    (head_scores, node_scores)
}

impl EapResult {
    /// Head scores (Σ |edge| per head, layer-major) from the pairs `sample` (indices into
    /// the pairs, repeats allowed): the same score on a resample of the pairs.
    pub fn head_scores_of(&self, sample: &[usize]) -> Result<Vec<f64>> {
        let ne = self.n_edges;
        if self.per_pair.len() != self.n_prompts * ne || sample.is_empty() {
            return Err(Error::InvalidInput(
                "per-pair attribution scores are not available for resampling".into(),
            ));
        }
        let mut scores = vec![0f64; ne];
        for &p in sample {
            let row = self.per_pair.get(p * ne..(p + 1) * ne).ok_or_else(|| {
                Error::InvalidInput(format!("resampled pair {p} of {}", self.n_prompts))
            })?;
            for (s, &x) in scores.iter_mut().zip(row) {
                *s += x as f64;
            }
        }
        let k = sample.len() as f64;
        scores.iter_mut().for_each(|s| *s /= k);
        let g = crate::model::graph::CircuitGraph::new(
            self.n_layers,
            self.n_heads,
            self.has_mlp,
            self.split_qkv,
            self.parallel,
        );
        Ok(node_sums(&g, self.n_heads, &scores).0)
    }
}

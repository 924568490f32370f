//! The forward pass over a right-padded batch, with a hook on every head's `z`
//! ([batch, pos, head, d_head], TransformerLens `hook_z`) that can read or replace it.
//! Padding never changes a real position: attention is causal and pads sit after every
//! real token, so no real query attends to them.
use candle_core::{DType, Device, Tensor, D};

use super::config::{Activation, ModelConfig, Norm, PosEmbedding, RopeScaling};
use super::process::repeat_kv;
use super::weights::{NormWeights, Weights};
use crate::error::{Error, Result};

/// Per-layer matrices flattened for batched matmuls.
#[derive(Debug, Clone)]
pub(crate) struct LayerRt {
    pub(super) ln1: NormWeights,
    pub(super) wq: Tensor, // [d, H*dh]
    pub(super) bq: Tensor, // [H*dh]
    pub(super) wk: Tensor, // [d, KV*dh]
    pub(super) bk: Tensor,
    pub(super) wv: Tensor,
    pub(super) bv: Tensor,
    pub(super) wo: Tensor, // [H*dh, d]
    pub(super) bo: Tensor, // [d]
    pub(super) ln2: NormWeights,
    pub(super) mlp: Option<MlpRt>,
    pub(super) ln1_post: Option<NormWeights>,
    pub(super) ln2_post: Option<NormWeights>,
    pub(super) q_norm: Option<NormWeights>,
    pub(super) k_norm: Option<NormWeights>,
}

#[derive(Debug, Clone)]
pub(super) struct MlpRt {
    pub(super) w_in: Tensor,
    pub(super) b_in: Tensor,
    pub(super) w_gate: Option<Tensor>,
    pub(super) w_out: Tensor,
    pub(super) b_out: Tensor,
}

#[derive(Debug, Clone)]
pub(crate) struct Runtime {
    pub(super) layers: Vec<LayerRt>,
}

fn heads_to_flat(w: &Tensor) -> Result<Tensor> {
    // [H, d, dh] → [d, H*dh]
    let (h, d, dh) = w.dims3()?;
    Ok(w.transpose(0, 1)?.contiguous()?.reshape((d, h * dh))?)
}

impl Runtime {
    pub(crate) fn new(w: &Weights) -> Result<Self> {
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in &w.layers {
            let (h, dh, d) = l.w_o.dims3()?;
            layers.push(LayerRt {
                ln1: l.ln1.clone(),
                wq: heads_to_flat(&l.w_q)?,
                bq: l.b_q.flatten_all()?,
                wk: heads_to_flat(&l.w_k)?,
                bk: l.b_k.flatten_all()?,
                wv: heads_to_flat(&l.w_v)?,
                bv: l.b_v.flatten_all()?,
                wo: l.w_o.reshape((h * dh, d))?,
                bo: l.b_o.clone(),
                ln2: l.ln2.clone(),
                mlp: l.mlp.as_ref().map(|m| MlpRt {
                    w_in: m.w_in.clone(),
                    b_in: m.b_in.clone(),
                    w_gate: m.w_gate.clone(),
                    w_out: m.w_out.clone(),
                    b_out: m.b_out.clone(),
                }),
                ln1_post: l.ln1_post.clone(),
                ln2_post: l.ln2_post.clone(),
                q_norm: l.q_norm.clone(),
                k_norm: l.k_norm.clone(),
            });
        }
        Ok(Self { layers })
    }
}

/// Reads or replaces each layer's `z` during a forward pass (activation patching,
/// mean ablation). Return `Some(new_z)` to replace it.
pub trait Intervention {
    fn on_z(&mut self, layer: usize, z: &Tensor, lengths: &[usize]) -> Result<Option<Tensor>>;
}

/// Which logits to compute: unembedding every position costs d_model·vocab per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsAt {
    None,
    /// [batch, vocab] at each prompt's last real position.
    Last,
    /// [batch, pos, vocab].
    All,
}

pub struct ForwardOptions<'a> {
    pub logits: LogitsAt,
    /// Keep every layer's z ([batch, pos, heads, d_head]).
    pub capture_z: bool,
    /// Keep every layer's attention output (Σ_h result_h + b_O) [batch, pos, d_model].
    pub capture_attn_out: bool,
    /// Keep the residual stream entering every layer ([batch, pos, d_model]).
    pub capture_resid: bool,
    /// Resume at layer `l` from a residual stream captured earlier (the layers below are
    /// skipped): patching one head re-runs only the layers from its own upward.
    pub start: Option<(usize, Tensor)>,
    pub intervention: Option<&'a mut dyn Intervention>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        Self {
            logits: LogitsAt::Last,
            capture_z: false,
            capture_attn_out: false,
            capture_resid: false,
            start: None,
            intervention: None,
        }
    }
}

pub struct ForwardOutput {
    pub logits: Option<Tensor>,
    pub z: Vec<Tensor>,
    pub attn_out: Vec<Tensor>,
    pub resid: Vec<Tensor>,
    pub lengths: Vec<usize>,
}

impl ForwardOutput {
    /// Nothing computed yet, for a batch of these lengths.
    pub(super) fn new(lengths: Vec<usize>) -> Self {
        Self {
            logits: None,
            z: Vec::new(),
            attn_out: Vec::new(),
            resid: Vec::new(),
            lengths,
        }
    }
}

/// Checks [`ForwardOptions::start`]: a layer the model has and a stream of [b, t, d].
pub(super) fn check_resume(
    l0: usize,
    r: &Tensor,
    n_layers: usize,
    (b, t, d): (usize, usize, usize),
) -> Result<()> {
    if r.dims() != [b, t, d] || l0 >= n_layers {
        return Err(Error::shape(
            "resumed residual stream",
            format!("layer < {n_layers} and [{b}, {t}, {d}]"),
            format!("layer {l0}, {:?}", r.dims()),
        ));
    }
    Ok(())
}

/// Each prompt's length and the longest; refuses an empty batch or an empty prompt.
fn lengths_of(tokens: &[Vec<u32>]) -> Result<(Vec<usize>, usize)> {
    if tokens.is_empty() {
        return Err(Error::InvalidInput("empty batch of prompts".into()));
    }
    let lengths: Vec<usize> = tokens.iter().map(Vec::len).collect();
    if let Some(i) = lengths.iter().position(|&l| l == 0) {
        return Err(Error::InvalidInput(format!("prompt {i} has no tokens")));
    }
    let t = lengths.iter().copied().max().unwrap_or(0);
    Ok((lengths, t))
}

/// Right-pads a batch of token sequences; returns ([batch, max_len] u32, lengths).
pub fn pad_batch(tokens: &[Vec<u32>], dev: &Device) -> Result<(Tensor, Vec<usize>)> {
    let (lengths, t) = lengths_of(tokens)?;
    let mut flat = Vec::with_capacity(tokens.len() * t);
    for s in tokens {
        flat.extend_from_slice(s);
        flat.extend(std::iter::repeat_n(0u32, t - s.len()));
    }
    Ok((Tensor::from_vec(flat, (tokens.len(), t), dev)?, lengths))
}

/// LayerNorm or RMSNorm over the last axis, computed in f32 and rounded back to `x`'s
/// dtype (a no-op for f32 models): a half-precision sum over d_model loses too much.
pub(super) fn norm(x: &Tensor, nw: &NormWeights, kind: Norm, eps: f64) -> Result<Tensor> {
    let dtype = x.dtype();
    let x = &x.to_dtype(DType::F32)?;
    let x = match kind {
        Norm::LayerNorm => {
            let xc = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
        }
        Norm::RmsNorm => {
            let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
            x.broadcast_div(&(ms + eps)?.sqrt()?)?
        }
    };
    let x = match &nw.w {
        Some(w) => x.broadcast_mul(&w.to_dtype(DType::F32)?)?,
        None => x,
    };
    let x = match &nw.b {
        Some(b) => x.broadcast_add(&b.to_dtype(DType::F32)?)?,
        None => x,
    };
    Ok(x.to_dtype(dtype)?)
}

/// x [n, d_in] @ w [d_in, d_out] + b
pub(super) fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.matmul(w)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// Inverse frequencies of the rotary embedding over `dim` rotated dimensions, as
/// Transformers computes them (f32), with the frequency scaling applied.
pub(super) fn rope_inv_freq(dim: usize, base: f32, scaling: RopeScaling) -> Vec<f32> {
    let inv = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32));
    match scaling {
        RopeScaling::None => inv.collect(),
        RopeScaling::Linear { factor } => inv.map(|f| f / factor).collect(),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings: old_ctx,
        } => {
            // Long wavelengths are slowed by `factor`, short ones kept, and the band
            // between interpolated (Transformers' `_compute_llama3_parameters`).
            let low_wavelen = old_ctx / low_freq_factor;
            let high_wavelen = old_ctx / high_freq_factor;
            inv.map(|f| {
                let wavelen = 2.0 * std::f32::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / factor
                } else {
                    let smooth = (old_ctx / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    (1.0 - smooth) * f / factor + smooth * f
                }
            })
            .collect()
        }
    }
}

/// cos, sin tables [T, dim/2] for rotary position embeddings over `dim` dimensions.
pub(super) fn rope_tables(
    t: usize,
    dim: usize,
    base: f32,
    scaling: RopeScaling,
    dev: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv = rope_inv_freq(dim, base, scaling);
    let half = inv.len();
    let mut ang = Vec::with_capacity(t * half);
    for p in 0..t {
        for f in &inv {
            ang.push(p as f32 * f);
        }
    }
    let ang = Tensor::from_vec(ang, (t, half), dev)?;
    Ok((ang.cos()?, ang.sin()?))
}

/// x [B, H, T, dh]; rotates the first 2·(cos's width) dimensions, keeps the rest
/// (partial rotary, GPT-NeoX).
pub(super) fn apply_rope(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    interleaved: bool,
) -> Result<Tensor> {
    let (b, h, t, dh) = x.dims4()?;
    let half = cos.dim(1)?;
    let rot = 2 * half;
    if rot < dh {
        let head = apply_rope(&x.narrow(3, 0, rot)?.contiguous()?, cos, sin, interleaved)?;
        return Ok(Tensor::cat(&[head, x.narrow(3, rot, dh - rot)?], 3)?);
    }
    if interleaved {
        let xr = x.reshape((b, h, t, half, 2))?;
        let x0 = xr.narrow(4, 0, 1)?.squeeze(4)?;
        let x1 = xr.narrow(4, 1, 1)?.squeeze(4)?;
        let o0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
        let o1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
        Ok(Tensor::stack(&[o0, o1], 4)?.reshape((b, h, t, dh))?)
    } else {
        let x1 = x.narrow(3, 0, half)?;
        let x2 = x.narrow(3, half, half)?;
        let o1 = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let o2 = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Ok(Tensor::cat(&[o1, o2], 3)?)
    }
}

pub(super) fn softmax_last(x: &Tensor) -> Result<Tensor> {
    // The shift is a constant for autograd (softmax does not depend on it).
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// Additive mask [t, t]: −∞ where key j is after query i or, with a window, `window`
/// or more positions before it.
pub(super) fn causal_mask(t: usize, window: Option<usize>, dev: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j > i || window.is_some_and(|w| i - j >= w) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(v, (t, t), dev)?)
}

/// cap·tanh(x/cap), Gemma 2's soft-cap on attention and final logits.
pub(super) fn softcap(x: Tensor, cap: Option<f64>) -> Result<Tensor> {
    Ok(match cap {
        Some(c) => ((x / c)?.tanh()? * c)?,
        None => x,
    })
}

/// Attention of layer `li` from its projected queries [B, H, T, dh] and keys and values
/// [B, KV, T, dh] (KV divides H): per-head q/k norms, rotary embeddings, scaled and
/// soft-capped logits, the layer's mask, softmax. Returns z [B, H, T, dh]. The forward
/// pass and the computational graph share it, so the two cannot drift apart.
pub(super) fn attend(
    cfg: &ModelConfig,
    l: &LayerRt,
    tables: &Tables,
    li: usize,
    q: Tensor,
    k: Tensor,
    v: Tensor,
) -> Result<Tensor> {
    let mut q = match &l.q_norm {
        Some(n) => norm(&q, n, Norm::RmsNorm, cfg.eps)?,
        None => q,
    };
    let mut k = match &l.k_norm {
        Some(n) => norm(&k, n, Norm::RmsNorm, cfg.eps)?,
        None => k,
    };
    let local = cfg.is_local(li);
    if let Some((c, s)) = tables.rope(local) {
        q = apply_rope(&q, c, s, tables.interleaved)?;
        k = apply_rope(&k, c, s, tables.interleaved)?;
    }
    let (h, kv) = (q.dim(1)?, k.dim(1)?);
    let rep = h / kv;
    let (k, v) = if rep > 1 {
        // [B, KV, T, dh] → [B, H, T, dh] (query head i uses kv head i / rep)
        let r = |x: Tensor| -> Result<Tensor> {
            let x = x.transpose(0, 1)?.contiguous()?;
            Ok(repeat_kv(&x, rep)?.transpose(0, 1)?.contiguous()?)
        };
        (r(k)?, r(v)?)
    } else {
        (k, v)
    };
    // q·kᵀ in the model's dtype (f32 accumulation), then scale, soft-cap, mask and
    // softmax in f32, as Transformers' eager attention does.
    let dtype = q.dtype();
    let scores = q.matmul(&k.t()?.contiguous()?)?.to_dtype(DType::F32)?;
    let scores = (scores * cfg.attn_scale())?;
    let scores = softcap(scores, cfg.details.attn_softcap)?;
    let scores = scores.broadcast_add(tables.mask(local))?;
    Ok(softmax_last(&scores)?.to_dtype(dtype)?.matmul(&v)?)
}

/// The MLP's output (with b_out, and through the post-MLP norm where the family has
/// one) for residual stream `x` [n, d].
pub(super) fn mlp(cfg: &ModelConfig, l: &LayerRt, m: &MlpRt, x: &Tensor) -> Result<Tensor> {
    let xn = norm(x, &l.ln2, cfg.norm, cfg.eps)?;
    let pre = linear(&xn, &m.w_in, Some(&m.b_in))?;
    let gate = || {
        m.w_gate
            .as_ref()
            .ok_or_else(|| Error::UnsupportedModel("gated MLP without a gate matrix".into()))
    };
    let act = match cfg.act {
        Activation::GeluNew => pre.gelu()?,
        Activation::Gelu => pre.gelu_erf()?,
        Activation::Relu => pre.relu()?,
        Activation::SwiGlu => (linear(&xn, gate()?, None)?.silu()? * pre)?,
        // candle's `gelu` is the tanh form, Gemma's gelu_pytorch_tanh.
        Activation::GeGlu => (linear(&xn, gate()?, None)?.gelu()? * pre)?,
    };
    let out = linear(&act, &m.w_out, Some(&m.b_out))?;
    match &l.ln2_post {
        Some(p) => norm(&out, p, cfg.norm, cfg.eps),
        None => Ok(out),
    }
}

/// The attention output z·W_O + b_O [n, d] joining the residual stream, through the
/// post-attention norm where the family has one.
pub(super) fn attn_out(cfg: &ModelConfig, l: &LayerRt, z_flat: &Tensor) -> Result<Tensor> {
    let a = linear(z_flat, &l.wo, Some(&l.bo))?;
    match &l.ln1_post {
        Some(p) => norm(&a, p, cfg.norm, cfg.eps),
        None => Ok(a),
    }
}

/// Per-batch masks and rotary tables, global and (where the model has local layers)
/// local.
pub(super) struct Tables {
    mask: Tensor,
    local_mask: Option<Tensor>,
    rope: Option<(Tensor, Tensor)>,
    local_rope: Option<(Tensor, Tensor)>,
    pub interleaved: bool,
}

impl Tables {
    /// Masks in f32 (they are added to f32 scores); rotary tables computed in f32 and
    /// rounded to `dtype`, the queries' and keys' (as Transformers does).
    fn new(cfg: &ModelConfig, t: usize, dev: &Device, dtype: DType) -> Result<Self> {
        let rope = |base: f32, scaling: RopeScaling| -> Result<(Tensor, Tensor)> {
            let (c, s) = rope_tables(t, cfg.rotary_dim(), base, scaling, dev)?;
            Ok((c.to_dtype(dtype)?, s.to_dtype(dtype)?))
        };
        let has_local = cfg.details.local_layers.iter().any(|&x| x);
        let (rope, local_rope, interleaved) = match cfg.pos {
            PosEmbedding::Rotary { base, interleaved } => {
                let global = rope(base, cfg.details.rope_scaling)?;
                // Local layers use their own base where one is given, never the scaling.
                let local = match (has_local, cfg.details.rope_local_base) {
                    (true, Some(lb)) => Some(rope(lb, RopeScaling::None)?),
                    _ => None,
                };
                (Some(global), local, interleaved)
            }
            _ => (None, None, false),
        };
        Ok(Self {
            mask: causal_mask(t, None, dev)?,
            local_mask: if has_local {
                Some(causal_mask(t, cfg.details.sliding_window, dev)?)
            } else {
                None
            },
            rope,
            local_rope,
            interleaved,
        })
    }
    pub(super) fn mask(&self, local: bool) -> &Tensor {
        match (&self.local_mask, local) {
            (Some(m), true) => m,
            _ => &self.mask,
        }
    }
    pub(super) fn rope(&self, local: bool) -> Option<(&Tensor, &Tensor)> {
        match (&self.local_rope, local) {
            (Some((c, s)), true) => Some((c, s)),
            _ => self.rope.as_ref().map(|(c, s)| (c, s)),
        }
    }
}

/// A padded batch's embeddings and the per-batch tables every forward needs.
pub(super) struct Embedded {
    /// Token (+ standard positional) embeddings [b·t, d].
    pub x: Tensor,
    /// Shortformer positions [b·t, d], added to the query/key inputs only.
    pub short_pos: Option<Tensor>,
    /// Masks and rotary tables.
    pub tables: Tables,
    pub lengths: Vec<usize>,
    pub b: usize,
    pub t: usize,
}

/// Checks a batch against the model: prompts present and non-empty, within the context,
/// every id inside the vocabulary. Returns each prompt's length and the padded length.
pub(super) fn check_tokens(cfg: &ModelConfig, tokens: &[Vec<u32>]) -> Result<(Vec<usize>, usize)> {
    let (lengths, t) = lengths_of(tokens)?;
    if t > cfg.n_ctx {
        return Err(Error::InvalidInput(format!(
            "prompt of {t} tokens exceeds the model's context of {}",
            cfg.n_ctx
        )));
    }
    if let Some((i, bad)) = tokens.iter().enumerate().find_map(|(i, s)| {
        s.iter()
            .find(|&&x| x as usize >= cfg.d_vocab)
            .map(|x| (i, *x))
    }) {
        return Err(Error::InvalidInput(format!(
            "prompt {i}: token id {bad} is outside the vocabulary ({})",
            cfg.d_vocab
        )));
    }
    Ok((lengths, t))
}

/// Pads, checks the context length and the vocabulary, and embeds.
pub(super) fn embed(cfg: &ModelConfig, w: &Weights, tokens: &[Vec<u32>]) -> Result<Embedded> {
    let dev = w.w_e.device().clone();
    check_tokens(cfg, tokens)?;
    let (ids, lengths) = pad_batch(tokens, &dev)?;
    let (b, t) = ids.dims2()?;
    let d = cfg.d_model;
    let n = b * t;
    let mut x = w.w_e.index_select(&ids.flatten_all()?, 0)?; // [n, d]
    let mut short_pos = None;
    match cfg.pos {
        PosEmbedding::Standard | PosEmbedding::Shortformer => {
            let wp = w
                .w_pos
                .as_ref()
                .ok_or_else(|| Error::UnsupportedModel("missing positional embedding".into()))?;
            let p = wp
                .narrow(0, 0, t)?
                .unsqueeze(0)?
                .broadcast_as((b, t, d))?
                .reshape((n, d))?;
            if cfg.pos == PosEmbedding::Standard {
                x = (x + p)?;
            } else {
                short_pos = Some(p);
            }
        }
        PosEmbedding::Rotary { .. } => {}
    }
    let tables = Tables::new(cfg, t, &dev, w.w_e.dtype())?;
    Ok(Embedded {
        x,
        short_pos,
        tables,
        lengths,
        b,
        t,
    })
}

/// Logits [batch, vocab] at each prompt's last real position of the residual stream
/// `x` [batch·t, d].
pub(super) fn last_logits(
    cfg: &ModelConfig,
    w: &Weights,
    x: &Tensor,
    lengths: &[usize],
    t: usize,
) -> Result<Tensor> {
    let idx: Vec<u32> = lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| (i * t + len - 1) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, lengths.len(), x.device())?;
    unembed(cfg, w, &x.index_select(&idx, 0)?)
}

/// Logits [n, vocab] of residual-stream rows `x` [n, d]: final norm, W_U, soft-cap; f32
/// whatever the model's dtype (the soft-cap runs in f32).
fn unembed(cfg: &ModelConfig, w: &Weights, x: &Tensor) -> Result<Tensor> {
    let xn = norm(x, &w.ln_final, cfg.norm, cfg.eps)?;
    softcap(
        linear(&xn, &w.w_u, Some(&w.b_u))?.to_dtype(DType::F32)?,
        cfg.details.final_softcap,
    )
}

pub(crate) fn forward(
    cfg: &ModelConfig,
    w: &Weights,
    rt: &Runtime,
    tokens: &[Vec<u32>],
    mut opts: ForwardOptions<'_>,
) -> Result<ForwardOutput> {
    let Embedded {
        mut x,
        short_pos,
        tables,
        lengths,
        b,
        t,
    } = embed(cfg, w, tokens)?;
    let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
    let n = b * t;
    let mut out = ForwardOutput::new(lengths.clone());
    let first = match opts.start.take() {
        Some((l0, r)) => {
            check_resume(l0, &r, rt.layers.len(), (b, t, d))?;
            x = r.reshape((n, d))?.to_dtype(w.w_e.dtype())?;
            l0
        }
        None => 0,
    };
    for (li, l) in rt.layers.iter().enumerate().skip(first) {
        // Everything handed out or taken in is f32 (see `model::dtype`).
        if opts.capture_resid {
            out.resid.push(x.reshape((b, t, d))?.to_dtype(DType::F32)?);
        }
        let xn = norm(&x, &l.ln1, cfg.norm, cfg.eps)?;
        let qk_in = match &short_pos {
            Some(p) => (&xn + p)?,
            None => xn.clone(),
        };
        // [n, H*dh] → [B, H, T, dh]
        let split = |y: Tensor, heads: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, heads, dh))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let q = split(linear(&qk_in, &l.wq, Some(&l.bq))?, h)?;
        let k = split(linear(&qk_in, &l.wk, Some(&l.bk))?, kv)?;
        let v = split(linear(&xn, &l.wv, Some(&l.bv))?, kv)?;
        let mut z = attend(cfg, l, &tables, li, q, k, v)?
            .transpose(1, 2)?
            .contiguous()?; // [B, T, H, dh]
        if let Some(iv) = opts.intervention.as_deref_mut() {
            if let Some(nz) = iv.on_z(li, &z.to_dtype(DType::F32)?, &lengths)? {
                if nz.dims() != z.dims() {
                    return Err(Error::shape(
                        format!("intervention on layer {li} z"),
                        format!("{:?}", z.dims()),
                        format!("{:?}", nz.dims()),
                    ));
                }
                z = nz.to_dtype(z.dtype())?;
            }
        }
        let attn = attn_out(cfg, l, &z.reshape((n, h * dh))?)?;
        if opts.capture_z {
            out.z.push(z.to_dtype(DType::F32)?);
        }
        if opts.capture_attn_out {
            out.attn_out
                .push(attn.reshape((b, t, d))?.to_dtype(DType::F32)?);
        }
        let mid = (&x + attn)?;
        x = match &l.mlp {
            // GPT-NeoX's parallel block: the MLP reads the block's input, not x + attn.
            Some(m) => {
                let input = if cfg.details.parallel_attn_mlp {
                    &x
                } else {
                    &mid
                };
                (&mid + mlp(cfg, l, m, input)?)?
            }
            None => mid,
        };
    }
    out.logits = match opts.logits {
        LogitsAt::None => None,
        LogitsAt::Last => Some(last_logits(cfg, w, &x, &lengths, t)?),
        LogitsAt::All => Some(unembed(cfg, w, &x)?.reshape((b, t, cfg.d_vocab))?),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * w.abs(), "frequency {i}: {g} vs {w}");
        }
    }

    /// Inverse frequencies equal transformers 4.57.6's `ROPE_INIT_FUNCTIONS` (d_head 32).
    #[test]
    #[allow(clippy::excessive_precision)] // the values as transformers printed them
    fn rope_scalings_equal_transformers() {
        // "llama3", θ 5e5, factor 8, low 1, high 4, original context 8192 (Llama 3.1).
        let llama3 = rope_inv_freq(
            32,
            500000.0,
            RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192.0,
            },
        );
        close(
            &llama3,
            &[
                1.0,
                4.403666258e-1,
                1.939227581e-1,
                8.539710194e-2,
                3.760603070e-2,
                1.656044088e-2,
                7.292665076e-3,
                3.211446106e-3,
                5.248460220e-4,
                7.784655463e-5,
                3.428102355e-5,
                1.509621779e-5,
                6.647869668e-6,
                2.927499736e-6,
                1.289173156e-6,
                5.677088097e-7,
            ],
        );
        // "linear", θ 1e4, factor 4.
        let linear = rope_inv_freq(32, 10000.0, RopeScaling::Linear { factor: 4.0 });
        close(
            &linear,
            &[
                2.5e-1,
                1.405853331e-1,
                7.905694097e-2,
                4.445698485e-2,
                2.500000037e-2,
                1.405853219e-2,
                7.905694656e-3,
                4.445698578e-3,
                2.499999944e-3,
                1.405853312e-3,
                7.905694656e-4,
                4.445698578e-4,
                2.500000119e-4,
                1.405853254e-4,
                7.905694656e-5,
                4.445698505e-5,
            ],
        );
    }
}

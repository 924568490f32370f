//! TransformerLens weight processing (`HookedTransformer.load_and_process_state_dict`),
//! reproduced operation for operation so per-head outputs match TL's `hook_z` and
//! `hook_result` at float32 precision. Order as TL: fold LN, centre writing weights,
//! centre unembed, fold value biases.
use candle_core::{DType, Tensor, D};

use super::config::{ModelConfig, Norm, PosEmbedding, Processing};
use super::weights::{LayerWeights, NormWeights, Weights};
use crate::error::Result;

/// What was actually applied (flags that do not apply to a model are reported off).
///
/// The arithmetic runs in f32 whatever the weights' dtype: a half-precision model is
/// widened one layer at a time (then W_E and W_U), processed, and rounded back once, so
/// memory grows by one layer in f32 and each weight is rounded once. Each step touches
/// one layer or the embeddings only, so going layer by layer gives TL's results.
pub fn process(cfg: &ModelConfig, w: &mut Weights, p: Processing) -> Result<Processing> {
    let ln = cfg.norm == Norm::LayerNorm;
    let mut p = p;
    if cfg.pos == PosEmbedding::Shortformer {
        // The positional embedding enters after ln1, so LN cannot be folded; TL's
        // `from_pretrained` turns these off for shortformer models, and so do we.
        p.fold_ln = false;
        p.center_writing_weights = false;
        p.center_unembed = false;
    }
    let applied = Processing {
        fold_ln: p.fold_ln,
        // Centring is only valid when a LayerNorm removes the mean downstream.
        center_writing_weights: p.center_writing_weights && ln,
        // Soft-capped logits are not shift-invariant, so W_U cannot be centred (Gemma 2).
        center_unembed: p.center_unembed && cfg.details.final_softcap.is_none(),
        fold_value_biases: p.fold_value_biases,
    };
    let dtype = w.dtype();
    let f32 = DType::F32;
    for layer in w.layers.iter_mut() {
        let mut l = layer.to_dtype(f32)?;
        if applied.fold_ln {
            fold_layer_norms(cfg, &mut l, ln)?;
        }
        if applied.center_writing_weights {
            center_layer(&mut l)?;
        }
        if applied.fold_value_biases {
            fold_value_biases(cfg, &mut l)?;
        }
        *layer = l.to_dtype(dtype)?;
    }
    if applied.fold_ln || applied.center_unembed {
        let (mut w_u, mut b_u) = (w.w_u.to_dtype(f32)?, w.b_u.to_dtype(f32)?);
        if applied.fold_ln {
            let nw = std::mem::replace(&mut w.ln_final, NormWeights { w: None, b: None });
            fold_final_norm(cfg, &nw, &mut w_u, &mut b_u, ln)?;
        }
        if applied.center_unembed {
            w_u = w_u.broadcast_sub(&w_u.mean_keepdim(D::Minus1)?)?;
            b_u = b_u.broadcast_sub(&b_u.mean_keepdim(0)?)?;
        }
        (w.w_u, w.b_u) = (w_u.to_dtype(dtype)?, b_u.to_dtype(dtype)?);
    }
    if applied.center_writing_weights {
        w.w_e = center_last(&w.w_e.to_dtype(f32)?)?.to_dtype(dtype)?;
        if let Some(p) = w.w_pos.as_mut() {
            *p = center_last(&p.to_dtype(f32)?)?.to_dtype(dtype)?;
        }
    }
    Ok(applied)
}

/// W [heads, d_model, d_head] scaled along d_model.
fn scale_rows3(wm: &Tensor, s: &Tensor) -> Result<Tensor> {
    Ok(wm.broadcast_mul(&s.reshape((1, s.dim(0)?, 1))?)?)
}

fn fold_layer_norms(cfg: &ModelConfig, layer: &mut LayerWeights, ln: bool) -> Result<()> {
    let NormWeights { w: nw, b: nb } =
        std::mem::replace(&mut layer.ln1, NormWeights { w: None, b: None });
    // Biases first: they are mapped through the unscaled weights.
    if let (true, Some(b)) = (ln, &nb) {
        let bb = b.reshape((1, cfg.d_model, 1))?;
        layer.b_q = (&layer.b_q + layer.w_q.broadcast_mul(&bb)?.sum(1)?)?;
        layer.b_k = (&layer.b_k + layer.w_k.broadcast_mul(&bb)?.sum(1)?)?;
        layer.b_v = (&layer.b_v + layer.w_v.broadcast_mul(&bb)?.sum(1)?)?;
    }
    if let Some(s) = &nw {
        layer.w_q = scale_rows3(&layer.w_q, s)?;
        layer.w_k = scale_rows3(&layer.w_k, s)?;
        layer.w_v = scale_rows3(&layer.w_v, s)?;
    }
    if ln {
        layer.w_q = layer.w_q.broadcast_sub(&layer.w_q.mean_keepdim(1)?)?;
        layer.w_k = layer.w_k.broadcast_sub(&layer.w_k.mean_keepdim(1)?)?;
        layer.w_v = layer.w_v.broadcast_sub(&layer.w_v.mean_keepdim(1)?)?;
    }
    if let Some(m) = layer.mlp.as_mut() {
        let NormWeights { w: nw, b: nb } =
            std::mem::replace(&mut layer.ln2, NormWeights { w: None, b: None });
        if let (true, Some(b)) = (ln, &nb) {
            let bb = b.reshape((cfg.d_model, 1))?;
            m.b_in = (&m.b_in + m.w_in.broadcast_mul(&bb)?.sum(0)?)?;
            // TL folds ln2.b into b_in only; a gated MLP with LN bias is not supported there either.
        }
        if let Some(s) = &nw {
            let ss = s.reshape((cfg.d_model, 1))?;
            m.w_in = m.w_in.broadcast_mul(&ss)?;
            if let Some(g) = m.w_gate.as_mut() {
                *g = g.broadcast_mul(&ss)?;
            }
        }
        if ln {
            m.w_in = m.w_in.broadcast_sub(&m.w_in.mean_keepdim(0)?)?;
        }
    }
    Ok(())
}

fn fold_final_norm(
    cfg: &ModelConfig,
    nw: &NormWeights,
    w_u: &mut Tensor,
    b_u: &mut Tensor,
    ln: bool,
) -> Result<()> {
    if let (true, Some(b)) = (ln, &nw.b) {
        let bb = b.reshape((cfg.d_model, 1))?;
        *b_u = (&*b_u + w_u.broadcast_mul(&bb)?.sum(0)?)?;
    }
    if let Some(s) = &nw.w {
        *w_u = w_u.broadcast_mul(&s.reshape((cfg.d_model, 1))?)?;
    }
    if ln {
        *w_u = w_u.broadcast_sub(&w_u.mean_keepdim(0)?)?;
    }
    Ok(())
}

fn center_last(t: &Tensor) -> Result<Tensor> {
    Ok(t.broadcast_sub(&t.mean_keepdim(D::Minus1)?)?)
}

fn center_all(t: &Tensor) -> Result<Tensor> {
    let m = t.mean_all()?;
    Ok(t.broadcast_sub(&m)?)
}

fn center_layer(layer: &mut LayerWeights) -> Result<()> {
    layer.w_o = center_last(&layer.w_o)?;
    layer.b_o = center_all(&layer.b_o)?;
    if let Some(m) = layer.mlp.as_mut() {
        m.w_out = center_last(&m.w_out)?;
        m.b_out = center_all(&m.b_out)?;
    }
    Ok(())
}

fn fold_value_biases(cfg: &ModelConfig, layer: &mut LayerWeights) -> Result<()> {
    let rep = cfg.n_heads / cfg.n_kv_heads;
    // b_V per kv head, repeated to query heads: [H, dh]
    let b_v = repeat_kv(&layer.b_v, rep)?;
    // Σ_h Σ_e b_V[h,e] W_O[h,e,:]
    let contrib = layer
        .w_o
        .broadcast_mul(&b_v.unsqueeze(2)?)?
        .sum(0)?
        .sum(0)?;
    layer.b_o = (&layer.b_o + contrib)?;
    layer.b_v = layer.b_v.zeros_like()?;
    Ok(())
}

/// [kv, ...] → [kv*rep, ...], each kv head repeated `rep` times consecutively
/// (query head h uses kv head h / rep, as `repeat_interleave`).
pub(crate) fn repeat_kv(t: &Tensor, rep: usize) -> Result<Tensor> {
    if rep == 1 {
        return Ok(t.clone());
    }
    let mut dims = t.dims().to_vec();
    let kv = dims[0];
    let rest: Vec<usize> = dims[1..].to_vec();
    let mut exp = vec![kv, rep];
    exp.extend(&rest);
    let t = t.unsqueeze(1)?.broadcast_as(exp)?.contiguous()?;
    dims[0] = kv * rep;
    Ok(t.reshape(dims)?)
}

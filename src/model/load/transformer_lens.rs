//! TransformerLens state dicts.
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{json_f64, json_usize, read_json, zeros};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ModelConfig, Norm, PosEmbedding};
use crate::model::dtype::LoadTarget;
use crate::model::weights::{LayerWeights, MlpWeights, NormWeights, TensorSource, Weights};

/// A TransformerLens state dict (`embed.W_E`, `blocks.{l}.attn.W_Q` [heads, d_model,
/// d_head], …) from safetensors or a PyTorch `.pth`/`.pt`, with a `config.json` holding
/// `HookedTransformerConfig` fields (n_layers, n_heads, d_model, d_head, d_vocab, n_ctx,
/// d_mlp, attn_only, normalization_type, positional_embedding_type, act_fn, eps).
pub fn load_transformer_lens(
    cfg_path: &Path,
    weights_path: &Path,
    dev: &Device,
    target: LoadTarget,
) -> Result<(ModelConfig, Weights)> {
    let c = read_json(cfg_path)?;
    let attn_only = c.get("attn_only").and_then(Value::as_bool).unwrap_or(false);
    let norm = match c.get("normalization_type").and_then(Value::as_str) {
        Some("LN") | Some("LNPre") | None => Norm::LayerNorm,
        Some("RMS") | Some("RMSPre") => Norm::RmsNorm,
        Some(o) => {
            return Err(Error::format(
                cfg_path,
                format!("unsupported normalization_type {o:?}"),
            ))
        }
    };
    let pos = match c.get("positional_embedding_type").and_then(Value::as_str) {
        Some("standard") | None => PosEmbedding::Standard,
        Some("shortformer") => PosEmbedding::Shortformer,
        Some("rotary") => PosEmbedding::Rotary {
            base: json_f64(&c, &["rotary_base"], 10000.0) as f32,
            interleaved: c
                .get("rotary_adjacent_pairs")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        },
        Some(o) => {
            return Err(Error::format(
                cfg_path,
                format!("unsupported positional_embedding_type {o:?}"),
            ))
        }
    };
    let act = match c.get("act_fn").and_then(Value::as_str) {
        Some("gelu_new") | Some("gelu_fast") | Some("gelu_pytorch_tanh") => Activation::GeluNew,
        Some("gelu") => Activation::Gelu,
        Some("relu") => Activation::Relu,
        Some("silu") => Activation::SwiGlu,
        None if attn_only => Activation::GeluNew,
        other => {
            return Err(Error::format(
                cfg_path,
                format!("unsupported act_fn {other:?}"),
            ))
        }
    };
    let n_heads = json_usize(&c, cfg_path, &["n_heads"])?;
    let cfg = ModelConfig {
        architecture: "transformer-lens".into(),
        n_layers: json_usize(&c, cfg_path, &["n_layers"])?,
        n_heads,
        n_kv_heads: c
            .get("n_key_value_heads")
            .and_then(Value::as_u64)
            .map_or(n_heads, |v| v as usize),
        d_model: json_usize(&c, cfg_path, &["d_model"])?,
        d_head: json_usize(&c, cfg_path, &["d_head"])?,
        d_mlp: if attn_only {
            0
        } else {
            json_usize(&c, cfg_path, &["d_mlp"])?
        },
        d_vocab: json_usize(&c, cfg_path, &["d_vocab"])?,
        n_ctx: json_usize(&c, cfg_path, &["n_ctx"])?,
        norm,
        eps: json_f64(&c, &["eps"], 1e-5),
        pos,
        act,
        attn_only,
        details: Default::default(),
    };
    cfg.validate(cfg_path)?;
    let ext = weights_path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("");
    let src = match ext {
        "safetensors" => TensorSource::safetensors(&[weights_path.to_owned()])?,
        "pth" | "pt" | "bin" => TensorSource::pth(weights_path)?,
        _ => {
            return Err(Error::format(
                weights_path,
                "unknown checkpoint extension (expected .safetensors, .pth or .pt)",
            ))
        }
    };
    let src = src.with_target(target, dev)?;
    src.check_fits(&cfg, cfg_path)?;
    let (d, h, kv, hd, v, dm) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.d_head,
        cfg.d_vocab,
        cfg.d_mlp,
    );
    let gqa = if kv != h { "_" } else { "" };
    let g = |n: &str, shape: &[usize]| src.get(n, shape, dev);
    let norm_w = |p: &str| -> Result<NormWeights> {
        Ok(NormWeights {
            w: src.get_opt(&format!("{p}.w"), dev)?,
            b: src.get_opt(&format!("{p}.b"), dev)?,
        })
    };
    let opt_or_zero = |n: &str, shape: &[usize]| -> Result<Tensor> {
        match src.get_opt(n, dev)? {
            Some(t) => {
                crate::model::weights::check_shape(src.path(), n, &t, shape)?;
                Ok(t)
            }
            None => zeros(shape, dev),
        }
    };
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let p = |n: &str| format!("blocks.{l}.{n}");
        let mlp = if attn_only {
            None
        } else {
            Some(MlpWeights {
                w_in: g(&p("mlp.W_in"), &[d, dm])?,
                b_in: opt_or_zero(&p("mlp.b_in"), &[dm])?,
                w_gate: src.get_opt(&p("mlp.W_gate"), dev)?,
                w_out: g(&p("mlp.W_out"), &[dm, d])?,
                b_out: opt_or_zero(&p("mlp.b_out"), &[d])?,
            })
        };
        layers.push(LayerWeights {
            ln1: norm_w(&p("ln1"))?,
            w_q: g(&p("attn.W_Q"), &[h, d, hd])?,
            b_q: opt_or_zero(&p("attn.b_Q"), &[h, hd])?,
            w_k: g(&p(&format!("attn.{gqa}W_K")), &[kv, d, hd])?,
            b_k: opt_or_zero(&p(&format!("attn.{gqa}b_K")), &[kv, hd])?,
            w_v: g(&p(&format!("attn.{gqa}W_V")), &[kv, d, hd])?,
            b_v: opt_or_zero(&p(&format!("attn.{gqa}b_V")), &[kv, hd])?,
            w_o: g(&p("attn.W_O"), &[h, hd, d])?,
            b_o: opt_or_zero(&p("attn.b_O"), &[d])?,
            ln2: norm_w(&p("ln2"))?,
            mlp,
            ln1_post: None,
            ln2_post: None,
            q_norm: None,
            k_norm: None,
        });
    }
    let w_pos = match cfg.pos {
        PosEmbedding::Rotary { .. } => None,
        _ => Some(g("pos_embed.W_pos", &[cfg.n_ctx, d])?),
    };
    let w = Weights {
        w_e: g("embed.W_E", &[v, d])?,
        w_pos,
        layers,
        ln_final: norm_w("ln_final")?,
        w_u: g("unembed.W_U", &[d, v])?,
        b_u: opt_or_zero("unembed.b_U", &[v])?,
        synthesized: 0,
    };
    Ok((cfg, w))
}

//! GPT-NeoX and Pythia: attention and MLP in parallel off the same residual stream,
//! rotary embeddings on the first `rotary_pct` of each head, LayerNorm with biases, and a
//! fused QKV matrix. Hugging Face interleaves the fused rows per head ([heads, 3, d_head]);
//! llama.cpp's converter regroups them as [3, heads, d_head].
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::llama::safetensors_files;
use super::{json_f64, json_usize, read_json};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ArchDetails, ModelConfig, Norm, PosEmbedding};
use crate::model::dtype::LoadTarget;
use crate::model::weights::{LayerWeights, MlpWeights, NormWeights, TensorSource, Weights};

/// Row order of the fused QKV matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QkvLayout {
    /// Hugging Face: row = (head·3 + j)·d_head + e, j = q, k, v.
    PerHead,
    /// llama.cpp: row = (j·heads + head)·d_head + e.
    Grouped,
}

/// Tensor names of one checkpoint format.
pub(super) struct NeoxNames {
    pub embed: &'static str,
    /// (layer, part) → name; parts: ln1, ln2, qkv, o, up, down; `.weight`/`.bias` appended.
    pub layer: fn(usize, &str) -> String,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
}

impl NeoxNames {
    fn hf() -> Self {
        NeoxNames {
            embed: "gpt_neox.embed_in.weight",
            layer: |l, p| {
                let n = match p {
                    "ln1" => "input_layernorm",
                    "ln2" => "post_attention_layernorm",
                    "qkv" => "attention.query_key_value",
                    "o" => "attention.dense",
                    "up" => "mlp.dense_h_to_4h",
                    _ => "mlp.dense_4h_to_h",
                };
                format!("gpt_neox.layers.{l}.{n}")
            },
            final_norm: "gpt_neox.final_layer_norm",
            lm_head: "embed_out.weight",
        }
    }
    pub(super) fn gguf() -> Self {
        NeoxNames {
            embed: "token_embd.weight",
            layer: |l, p| {
                let n = match p {
                    "ln1" => "attn_norm",
                    "ln2" => "ffn_norm",
                    "qkv" => "attn_qkv",
                    "o" => "attn_output",
                    "up" => "ffn_up",
                    _ => "ffn_down",
                };
                format!("blk.{l}.{n}")
            },
            final_norm: "output_norm",
            lm_head: "output.weight",
        }
    }
}

/// A Hugging Face GPT-NeoX folder (model_type `gpt_neox`, e.g. Pythia).
pub fn load_neox_hf(
    dir: &Path,
    dev: &Device,
    target: LoadTarget,
) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let c = read_json(&cfg_path)?;
    let d = json_usize(&c, &cfg_path, &["hidden_size"])?;
    let h = json_usize(&c, &cfg_path, &["num_attention_heads"])?;
    let hd = d.checked_div(h).unwrap_or(0);
    let pct = json_f64(&c, &["rotary_pct", "partial_rotary_factor"], 1.0);
    if !(pct > 0.0 && pct <= 1.0) {
        return Err(Error::format(
            &cfg_path,
            format!("rotary_pct {pct} is not in (0, 1]"),
        ));
    }
    let act = match c.get("hidden_act").and_then(Value::as_str) {
        Some("gelu") | None => Activation::Gelu,
        Some("gelu_new") | Some("gelu_fast") | Some("gelu_pytorch_tanh") => Activation::GeluNew,
        Some("relu") => Activation::Relu,
        Some(o) => {
            return Err(Error::format(
                &cfg_path,
                format!("hidden_act {o:?} is not supported"),
            ))
        }
    };
    let cfg = ModelConfig {
        architecture: "gpt-neox".into(),
        n_layers: json_usize(&c, &cfg_path, &["num_hidden_layers"])?,
        n_heads: h,
        n_kv_heads: h,
        d_model: d,
        d_head: hd,
        d_mlp: json_usize(&c, &cfg_path, &["intermediate_size"])?,
        d_vocab: json_usize(&c, &cfg_path, &["vocab_size"])?,
        n_ctx: json_usize(&c, &cfg_path, &["max_position_embeddings"])?,
        norm: Norm::LayerNorm,
        eps: json_f64(&c, &["layer_norm_eps"], 1e-5),
        pos: PosEmbedding::Rotary {
            base: json_f64(&c, &["rotary_emb_base", "rope_theta"], 10000.0) as f32,
            interleaved: false,
        },
        act,
        attn_only: false,
        details: ArchDetails {
            parallel_attn_mlp: c
                .get("use_parallel_residual")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            // Transformers: int(head_size · rotary_pct).
            rotary_dim: Some((hd as f64 * pct) as usize),
            ..ArchDetails::default()
        },
    };
    cfg.validate(&cfg_path)?;
    if c.get("attention_bias").and_then(Value::as_bool) == Some(false) {
        return Err(Error::UnsupportedModel(format!(
            "{}: GPT-NeoX without attention biases is not supported",
            cfg_path.display()
        )));
    }
    let src = TensorSource::safetensors(&safetensors_files(dir)?)?.with_target(target, dev)?;
    src.check_fits(&cfg, &cfg_path)?;
    neox_weights(&cfg, &src, &NeoxNames::hf(), QkvLayout::PerHead, dev)
}

pub(super) fn neox_weights(
    cfg: &ModelConfig,
    src: &TensorSource,
    names: &NeoxNames,
    layout: QkvLayout,
    dev: &Device,
) -> Result<(ModelConfig, Weights)> {
    let (d, h, hd, v, dm) = (cfg.d_model, cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_mlp);
    let g = |n: &str, shape: &[usize]| src.get(n, shape, dev);
    let ln = |p: &str| -> Result<NormWeights> {
        Ok(NormWeights {
            w: Some(g(&format!("{p}.weight"), &[d])?),
            b: Some(g(&format!("{p}.bias"), &[d])?),
        })
    };
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |p: &str| (names.layer)(l, p);
        let qkv = g(&format!("{}.weight", n("qkv")), &[3 * d, d])?;
        let qkv_b = g(&format!("{}.bias", n("qkv")), &[3 * d])?;
        // → [3, heads, d_head, d] and [3, heads, d_head] whatever the row order.
        let (w3, b3) = match layout {
            QkvLayout::PerHead => (
                qkv.reshape((h, 3, hd, d))?.transpose(0, 1)?.contiguous()?,
                qkv_b.reshape((h, 3, hd))?.transpose(0, 1)?.contiguous()?,
            ),
            QkvLayout::Grouped => (qkv.reshape((3, h, hd, d))?, qkv_b.reshape((3, h, hd))?),
        };
        // [heads, d_head, d] → [heads, d, d_head]
        let part_w = |j: usize| -> Result<Tensor> { Ok(w3.get(j)?.transpose(1, 2)?.contiguous()?) };
        let o = g(&format!("{}.weight", n("o")), &[d, d])?;
        layers.push(LayerWeights {
            ln1: ln(&n("ln1"))?,
            w_q: part_w(0)?,
            b_q: b3.get(0)?,
            w_k: part_w(1)?,
            b_k: b3.get(1)?,
            w_v: part_w(2)?,
            b_v: b3.get(2)?,
            w_o: o.t()?.contiguous()?.reshape((h, hd, d))?,
            b_o: g(&format!("{}.bias", n("o")), &[d])?,
            ln2: ln(&n("ln2"))?,
            mlp: Some(MlpWeights {
                w_in: g(&format!("{}.weight", n("up")), &[dm, d])?
                    .t()?
                    .contiguous()?,
                b_in: g(&format!("{}.bias", n("up")), &[dm])?,
                w_gate: None,
                w_out: g(&format!("{}.weight", n("down")), &[d, dm])?
                    .t()?
                    .contiguous()?,
                b_out: g(&format!("{}.bias", n("down")), &[d])?,
            }),
            ln1_post: None,
            ln2_post: None,
            q_norm: None,
            k_norm: None,
        });
    }
    let w_e = g(names.embed, &[v, d])?;
    let tied = !src.contains(names.lm_head);
    let w_u = if tied {
        w_e.t()?.contiguous()?
    } else {
        g(names.lm_head, &[v, d])?.t()?.contiguous()?
    };
    let w = Weights {
        w_e,
        w_pos: None,
        layers,
        ln_final: ln(names.final_norm)?,
        w_u,
        b_u: super::zeros(&[v], dev)?,
        synthesized: v + if tied { v * d } else { 0 },
    };
    Ok((cfg.clone(), w))
}

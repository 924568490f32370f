//! Hugging Face GPT-2 checkpoints.
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{json_f64, json_usize, read_json, zeros};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ModelConfig, Norm, PosEmbedding};
use crate::model::dtype::LoadTarget;
use crate::model::weights::{LayerWeights, MlpWeights, NormWeights, TensorSource, Weights};

/// A Hugging Face GPT-2 folder: `config.json` + `model.safetensors` (Conv1D layout,
/// y = x·W + b; unembedding tied to `wte`). gpt2 … gpt2-xl differ only in config.
pub fn load_gpt2_hf(
    dir: &Path,
    dev: &Device,
    target: LoadTarget,
) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let c = read_json(&cfg_path)?;
    let d = json_usize(&c, &cfg_path, &["n_embd", "hidden_size"])?;
    let n_heads = json_usize(&c, &cfg_path, &["n_head", "num_attention_heads"])?;
    if n_heads == 0 || d % n_heads != 0 {
        return Err(Error::format(
            &cfg_path,
            format!("n_embd {d} is not divisible by n_head {n_heads}"),
        ));
    }
    let act = match c.get("activation_function").and_then(Value::as_str) {
        None | Some("gelu_new") | Some("gelu_pytorch_tanh") => Activation::GeluNew,
        Some("gelu") => Activation::Gelu,
        Some("relu") => Activation::Relu,
        Some(other) => {
            return Err(Error::format(
                &cfg_path,
                format!("unsupported activation_function {other:?}"),
            ))
        }
    };
    let cfg = ModelConfig {
        architecture: "gpt2".into(),
        n_layers: json_usize(&c, &cfg_path, &["n_layer", "num_hidden_layers"])?,
        n_heads,
        n_kv_heads: n_heads,
        d_model: d,
        d_head: d / n_heads,
        d_mlp: c
            .get("n_inner")
            .and_then(Value::as_u64)
            .map_or(d.saturating_mul(4), |v| v as usize),
        d_vocab: json_usize(&c, &cfg_path, &["vocab_size"])?,
        n_ctx: json_usize(&c, &cfg_path, &["n_positions", "n_ctx"])?,
        norm: Norm::LayerNorm,
        eps: json_f64(&c, &["layer_norm_epsilon"], 1e-5),
        pos: PosEmbedding::Standard,
        act,
        attn_only: false,
        details: Default::default(),
    };
    cfg.validate(&cfg_path)?;
    let st_path = dir.join("model.safetensors");
    let src = TensorSource::safetensors(&[st_path])?.with_target(target, dev)?;
    src.check_fits(&cfg, &cfg_path)?;
    // Some exports prefix every name with `transformer.`.
    let prefix = if src.contains("transformer.wte.weight") {
        "transformer."
    } else {
        ""
    };
    let g = |n: &str, shape: &[usize]| src.get(&format!("{prefix}{n}"), shape, dev);
    let (dm, v, hd, h) = (cfg.d_mlp, cfg.d_vocab, cfg.d_head, cfg.n_heads);
    let w_e = g("wte.weight", &[v, d])?;
    let w_pos = g("wpe.weight", &[cfg.n_ctx, d])?;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let p = |n: &str| format!("h.{l}.{n}");
        let c_attn = g(&p("attn.c_attn.weight"), &[d, 3 * d])?;
        let c_attn_b = g(&p("attn.c_attn.bias"), &[3 * d])?;
        // Conv1D [d, H*dh] → [H, d, dh]
        let split_w = |i: usize| -> Result<Tensor> {
            Ok(c_attn
                .narrow(1, i * d, d)?
                .reshape((d, h, hd))?
                .transpose(0, 1)?
                .contiguous()?)
        };
        let split_b =
            |i: usize| -> Result<Tensor> { Ok(c_attn_b.narrow(0, i * d, d)?.reshape((h, hd))?) };
        let c_proj = g(&p("attn.c_proj.weight"), &[d, d])?;
        layers.push(LayerWeights {
            ln1: NormWeights {
                w: Some(g(&p("ln_1.weight"), &[d])?),
                b: Some(g(&p("ln_1.bias"), &[d])?),
            },
            w_q: split_w(0)?,
            b_q: split_b(0)?,
            w_k: split_w(1)?,
            b_k: split_b(1)?,
            w_v: split_w(2)?,
            b_v: split_b(2)?,
            w_o: c_proj.reshape((h, hd, d))?,
            b_o: g(&p("attn.c_proj.bias"), &[d])?,
            ln2: NormWeights {
                w: Some(g(&p("ln_2.weight"), &[d])?),
                b: Some(g(&p("ln_2.bias"), &[d])?),
            },
            mlp: Some(MlpWeights {
                w_in: g(&p("mlp.c_fc.weight"), &[d, dm])?,
                b_in: g(&p("mlp.c_fc.bias"), &[dm])?,
                w_gate: None,
                w_out: g(&p("mlp.c_proj.weight"), &[dm, d])?,
                b_out: g(&p("mlp.c_proj.bias"), &[d])?,
            }),
            ln1_post: None,
            ln2_post: None,
            q_norm: None,
            k_norm: None,
        });
    }
    let w = Weights {
        w_u: w_e.t()?.contiguous()?,
        w_e,
        w_pos: Some(w_pos),
        layers,
        ln_final: NormWeights {
            w: Some(g("ln_f.weight", &[d])?),
            b: Some(g("ln_f.bias", &[d])?),
        },
        b_u: zeros(&[v], dev)?,
        synthesized: v * d + v, // tied W_U, zero b_U
    };
    Ok((cfg, w))
}

//! Checkpoint families → ([`ModelConfig`], [`Weights`]) in the internal layout.
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::config::{Activation, ModelConfig, Norm, PosEmbedding};
use super::weights::{LayerWeights, MlpWeights, NormWeights, TensorSource, Weights};
use crate::error::{Error, Result};

fn json_usize(cfg: &Value, path: &Path, keys: &[&str]) -> Result<usize> {
    for k in keys {
        if let Some(v) = cfg.get(*k) {
            if let Some(u) = v.as_u64() {
                return Ok(u as usize);
            }
        }
    }
    Err(Error::format(
        path,
        format!("config is missing an integer `{}`", keys[0]),
    ))
}

fn json_f64(cfg: &Value, keys: &[&str], default: f64) -> f64 {
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(Value::as_f64))
        .unwrap_or(default)
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = crate::error::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

fn zeros(shape: &[usize], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros(shape, candle_core::DType::F32, dev)?)
}

/// [out = H*dh, in = d] (torch Linear) → [H, d, dh].
fn linear_to_heads(w: &Tensor, heads: usize, d_head: usize) -> Result<Tensor> {
    let d = w.dim(1)?;
    Ok(w.reshape((heads, d_head, d))?
        .transpose(1, 2)?
        .contiguous()?)
}

// ---------------------------------------------------------------- GPT-2 (HF)

/// A Hugging Face GPT-2 folder: `config.json` + `model.safetensors` (Conv1D layout,
/// y = x·W + b; unembedding tied to `wte`). gpt2 … gpt2-xl differ only in config.
pub fn load_gpt2_hf(dir: &Path, dev: &Device) -> Result<(ModelConfig, Weights)> {
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
            .map_or(4 * d, |v| v as usize),
        d_vocab: json_usize(&c, &cfg_path, &["vocab_size"])?,
        n_ctx: json_usize(&c, &cfg_path, &["n_positions", "n_ctx"])?,
        norm: Norm::LayerNorm,
        eps: json_f64(&c, &["layer_norm_epsilon"], 1e-5),
        pos: PosEmbedding::Standard,
        act,
        attn_only: false,
    };
    cfg.validate(&cfg_path)?;
    let st_path = dir.join("model.safetensors");
    let src = TensorSource::safetensors(&[st_path])?;
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

// ------------------------------------------------------- TransformerLens layout

/// A TransformerLens state dict (`embed.W_E`, `blocks.{l}.attn.W_Q` [heads, d_model,
/// d_head], …) from safetensors or a PyTorch `.pth`/`.pt`, with a `config.json` holding
/// `HookedTransformerConfig` fields (n_layers, n_heads, d_model, d_head, d_vocab, n_ctx,
/// d_mlp, attn_only, normalization_type, positional_embedding_type, act_fn, eps).
pub fn load_transformer_lens(
    cfg_path: &Path,
    weights_path: &Path,
    dev: &Device,
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
                super::weights::check_shape(src.path(), n, &t, shape)?;
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

// ------------------------------------------------------------------ Llama (HF)

/// A Hugging Face Llama folder: `config.json` + `model.safetensors` or sharded
/// `model-0000x-of-0000y.safetensors` with `model.safetensors.index.json`.
pub fn load_llama_hf(dir: &Path, dev: &Device) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let c = read_json(&cfg_path)?;
    let d = json_usize(&c, &cfg_path, &["hidden_size"])?;
    let h = json_usize(&c, &cfg_path, &["num_attention_heads"])?;
    let kv = c
        .get("num_key_value_heads")
        .and_then(Value::as_u64)
        .map_or(h, |v| v as usize);
    let hd = c
        .get("head_dim")
        .and_then(Value::as_u64)
        .map_or(d.checked_div(h).unwrap_or(0), |v| v as usize);
    let tied = c
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let cfg = ModelConfig {
        architecture: "llama".into(),
        n_layers: json_usize(&c, &cfg_path, &["num_hidden_layers"])?,
        n_heads: h,
        n_kv_heads: kv,
        d_model: d,
        d_head: hd,
        d_mlp: json_usize(&c, &cfg_path, &["intermediate_size"])?,
        d_vocab: json_usize(&c, &cfg_path, &["vocab_size"])?,
        n_ctx: json_usize(&c, &cfg_path, &["max_position_embeddings"])?,
        norm: Norm::RmsNorm,
        eps: json_f64(&c, &["rms_norm_eps"], 1e-6),
        pos: PosEmbedding::Rotary {
            base: json_f64(&c, &["rope_theta"], 10000.0) as f32,
            interleaved: false,
        },
        act: Activation::SwiGlu,
        attn_only: false,
    };
    cfg.validate(&cfg_path)?;
    let index = dir.join("model.safetensors.index.json");
    let paths: Vec<PathBuf> = if index.is_file() {
        let j = read_json(&index)?;
        let map = j
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::format(&index, "missing `weight_map`"))?;
        let mut files: Vec<String> = map
            .values()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        files.sort();
        files.dedup();
        files.into_iter().map(|f| dir.join(f)).collect()
    } else {
        vec![dir.join("model.safetensors")]
    };
    let src = TensorSource::safetensors(&paths)?;
    let names = LlamaNames::hf();
    llama_weights(&cfg, &src, &names, tied, dev)
}

/// Tensor names of a Llama checkpoint family.
struct LlamaNames {
    embed: &'static str,
    layer: fn(usize, &str) -> String,
    final_norm: &'static str,
    lm_head: &'static str,
}

impl LlamaNames {
    fn hf() -> Self {
        LlamaNames {
            embed: "model.embed_tokens.weight",
            layer: |l, n| {
                let n = match n {
                    "q" => "self_attn.q_proj.weight",
                    "k" => "self_attn.k_proj.weight",
                    "v" => "self_attn.v_proj.weight",
                    "o" => "self_attn.o_proj.weight",
                    "gate" => "mlp.gate_proj.weight",
                    "up" => "mlp.up_proj.weight",
                    "down" => "mlp.down_proj.weight",
                    "norm1" => "input_layernorm.weight",
                    _ => "post_attention_layernorm.weight",
                };
                format!("model.layers.{l}.{n}")
            },
            final_norm: "model.norm.weight",
            lm_head: "lm_head.weight",
        }
    }
    fn gguf() -> Self {
        LlamaNames {
            embed: "token_embd.weight",
            layer: |l, n| {
                let n = match n {
                    "q" => "attn_q.weight",
                    "k" => "attn_k.weight",
                    "v" => "attn_v.weight",
                    "o" => "attn_output.weight",
                    "gate" => "ffn_gate.weight",
                    "up" => "ffn_up.weight",
                    "down" => "ffn_down.weight",
                    "norm1" => "attn_norm.weight",
                    _ => "ffn_norm.weight",
                };
                format!("blk.{l}.{n}")
            },
            final_norm: "output_norm.weight",
            lm_head: "output.weight",
        }
    }
}

fn llama_weights(
    cfg: &ModelConfig,
    src: &TensorSource,
    names: &LlamaNames,
    tied: bool,
    dev: &Device,
) -> Result<(ModelConfig, Weights)> {
    let (d, h, kv, hd, v, dm) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.d_head,
        cfg.d_vocab,
        cfg.d_mlp,
    );
    let g = |n: &str, shape: &[usize]| src.get(n, shape, dev);
    let mut layers = Vec::new();
    for l in 0..cfg.n_layers {
        let n = |k: &str| (names.layer)(l, k);
        let o = g(&n("o"), &[d, h * hd])?;
        layers.push(LayerWeights {
            ln1: NormWeights {
                w: Some(g(&n("norm1"), &[d])?),
                b: None,
            },
            w_q: linear_to_heads(&g(&n("q"), &[h * hd, d])?, h, hd)?,
            b_q: zeros(&[h, hd], dev)?,
            w_k: linear_to_heads(&g(&n("k"), &[kv * hd, d])?, kv, hd)?,
            b_k: zeros(&[kv, hd], dev)?,
            w_v: linear_to_heads(&g(&n("v"), &[kv * hd, d])?, kv, hd)?,
            b_v: zeros(&[kv, hd], dev)?,
            // [d, H*dh] → [H*dh, d] → [H, dh, d]
            w_o: o.t()?.contiguous()?.reshape((h, hd, d))?,
            b_o: zeros(&[d], dev)?,
            ln2: NormWeights {
                w: Some(g(&n("norm2"), &[d])?),
                b: None,
            },
            mlp: Some(MlpWeights {
                w_in: g(&n("up"), &[dm, d])?.t()?.contiguous()?,
                b_in: zeros(&[dm], dev)?,
                w_gate: Some(g(&n("gate"), &[dm, d])?.t()?.contiguous()?),
                w_out: g(&n("down"), &[d, dm])?.t()?.contiguous()?,
                b_out: zeros(&[d], dev)?,
            }),
        });
    }
    let w_e = g(names.embed, &[v, d])?;
    let tied = tied || !src.contains(names.lm_head);
    let w_u = if !tied {
        g(names.lm_head, &[v, d])?.t()?.contiguous()?
    } else {
        w_e.t()?.contiguous()?
    };
    let w = Weights {
        w_e,
        w_pos: None,
        layers,
        ln_final: NormWeights {
            w: Some(g(names.final_norm, &[d])?),
            b: None,
        },
        w_u,
        b_u: zeros(&[v], dev)?,
        // Llama has no biases: q,k,v,o, MLP and unembedding biases are ours.
        synthesized: v
            + if tied { v * d } else { 0 }
            + cfg.n_layers * (h * hd + 2 * kv * hd + d + dm + d),
    };
    Ok((cfg.clone(), w))
}

// ------------------------------------------------------------------------ GGUF

/// Tokenizer data carried inside a GGUF file.
pub struct GgufVocab {
    pub tokens: Vec<String>,
    pub merges: Vec<String>,
    pub pre: String,
    pub bos_id: Option<u32>,
}

/// A llama.cpp GGUF file of a Llama-family model; Q4_1/Q8_0/F16/F32 tensors are
/// dequantised to f32. llama.cpp permutes Q/K rows on conversion, so rotary embeddings
/// are applied to interleaved pairs on these weights.
pub fn load_gguf(path: &Path, dev: &Device) -> Result<(ModelConfig, Weights, GgufVocab)> {
    use candle_core::quantized::gguf_file::Value as GV;
    let src = TensorSource::gguf(path)?;
    let TensorSource::Gguf { content, .. } = &src else {
        unreachable!("TensorSource::gguf returns the Gguf variant")
    };
    let md = &content.metadata;
    let get = |k: &str| -> Result<&GV> {
        md.get(k)
            .ok_or_else(|| Error::format(path, format!("GGUF metadata `{k}` is missing")))
    };
    let arch = get("general.architecture")?
        .to_string()
        .map_err(|e| Error::format(path, e.to_string()))?
        .clone();
    if arch != "llama" {
        return Err(Error::UnsupportedModel(format!(
            "{}: GGUF architecture {arch:?} (supported: llama)",
            path.display()
        )));
    }
    let u = |k: &str| -> Result<usize> {
        get(&format!("llama.{k}"))?
            .to_u32()
            .map(|v| v as usize)
            .map_err(|e| Error::format(path, format!("llama.{k}: {e}")))
    };
    let f = |k: &str, default: f32| -> f32 {
        md.get(&format!("llama.{k}"))
            .and_then(|v| v.to_f32().ok())
            .unwrap_or(default)
    };
    let strings = |k: &str| -> Result<Vec<String>> {
        get(k)?
            .to_vec()
            .map_err(|e| Error::format(path, format!("{k}: {e}")))?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| Error::format(path, format!("{k}: {e}")))
            })
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let d = u("embedding_length")?;
    let h = u("attention.head_count")?;
    let cfg = ModelConfig {
        architecture: "llama".into(),
        n_layers: u("block_count")?,
        n_heads: h,
        n_kv_heads: u("attention.head_count_kv").unwrap_or(h),
        d_model: d,
        d_head: d.checked_div(h).unwrap_or(0),
        d_mlp: u("feed_forward_length")?,
        d_vocab: tokens.len(),
        n_ctx: u("context_length")?,
        norm: Norm::RmsNorm,
        eps: f("attention.layer_norm_rms_epsilon", 1e-5) as f64,
        pos: PosEmbedding::Rotary {
            base: f("rope.freq_base", 10000.0),
            interleaved: true,
        },
        act: Activation::SwiGlu,
        attn_only: false,
    };
    cfg.validate(path)?;
    let model_kind = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    if model_kind != "gpt2" {
        return Err(Error::Tokenizer(format!(
            "{}: GGUF tokenizer model {model_kind:?} (supported: gpt2 byte-level BPE)",
            path.display()
        )));
    }
    let vocab = GgufVocab {
        merges: strings("tokenizer.ggml.merges")?,
        pre: md
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.to_string().ok().cloned())
            .unwrap_or_else(|| "default".into()),
        bos_id: md
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok()),
        tokens,
    };
    let (cfg, w) = llama_weights(&cfg, &src, &LlamaNames::gguf(), false, dev)?;
    Ok((cfg, w, vocab))
}

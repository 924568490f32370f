//! The Llama family and its descendants in Hugging Face layout:
//! - Llama and Mistral;
//! - Qwen2 and Qwen2.5: biases on q, k and v;
//! - Gemma 2: embeddings scaled by √d_model, RMSNorm weights stored as w with the norm
//!   applying (1 + w), norms after attention and after the MLP as well as before, GeGLU,
//!   soft-capped attention and final logits, `query_pre_attn_scalar`, and sliding-window
//!   attention on alternate layers;
//! - Gemma 3: Gemma 2's block plus RMSNorm on each head's q and k, a rotary base of its
//!   own on the local layers, five local layers to a global one, no soft-caps.
//!
//! GGUF files of these families share [`llama_weights`] with their own tensor names.
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use super::{json_f64, json_usize, linear_to_heads, read_json, zeros};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ArchDetails, ModelConfig, Norm, PosEmbedding, RopeScaling};
use crate::model::dtype::LoadTarget;
use crate::model::weights::{LayerWeights, MlpWeights, NormWeights, TensorSource, Weights};

/// Which member of the family a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Llama,
    Qwen2,
    Gemma2,
    Gemma3,
}

impl Family {
    pub(super) fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Gemma2 => "gemma2",
            Family::Gemma3 => "gemma3",
        }
    }

    pub(super) fn is_gemma(self) -> bool {
        matches!(self, Family::Gemma2 | Family::Gemma3)
    }

    /// Local (sliding-window) layers when the checkpoint does not list them: Gemma 2
    /// alternates local and global starting local; Gemma 3 has `pattern − 1` local layers
    /// to each global one (6 by default). Transformers and llama.cpp agree on both.
    pub(super) fn default_local_layers(self, n_layers: usize, pattern: Option<usize>) -> Vec<bool> {
        match self {
            Family::Gemma2 => (0..n_layers).map(|l| l % 2 == 0).collect(),
            Family::Gemma3 => {
                let p = pattern.unwrap_or(6).max(1);
                (0..n_layers).map(|l| (l + 1) % p != 0).collect()
            }
            Family::Llama | Family::Qwen2 => Vec::new(),
        }
    }
}

/// The norm slots of a block, and the tensor names a checkpoint format gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    Q,
    K,
    V,
    O,
    QBias,
    KBias,
    VBias,
    Gate,
    Up,
    Down,
    /// Before attention.
    Norm1,
    /// Before the MLP.
    Norm2,
    /// After attention (Gemma).
    AttnPost,
    /// After the MLP (Gemma).
    MlpPost,
    QNorm,
    KNorm,
}

/// Tensor names of one checkpoint format.
pub(super) struct LlamaNames {
    pub embed: &'static str,
    pub layer: Box<dyn Fn(usize, Slot) -> String>,
    pub final_norm: &'static str,
    pub lm_head: &'static str,
}

impl LlamaNames {
    fn hf(family: Family) -> Self {
        let gemma = family.is_gemma();
        LlamaNames {
            embed: "model.embed_tokens.weight",
            layer: Box::new(move |l, s| {
                let n = match s {
                    Slot::Q => "self_attn.q_proj.weight",
                    Slot::K => "self_attn.k_proj.weight",
                    Slot::V => "self_attn.v_proj.weight",
                    Slot::O => "self_attn.o_proj.weight",
                    Slot::QBias => "self_attn.q_proj.bias",
                    Slot::KBias => "self_attn.k_proj.bias",
                    Slot::VBias => "self_attn.v_proj.bias",
                    Slot::Gate => "mlp.gate_proj.weight",
                    Slot::Up => "mlp.up_proj.weight",
                    Slot::Down => "mlp.down_proj.weight",
                    Slot::Norm1 => "input_layernorm.weight",
                    // Gemma's `post_attention_layernorm` normalises the attention output;
                    // Llama's is the norm before the MLP.
                    Slot::Norm2 if gemma => "pre_feedforward_layernorm.weight",
                    Slot::Norm2 => "post_attention_layernorm.weight",
                    Slot::AttnPost => "post_attention_layernorm.weight",
                    Slot::MlpPost => "post_feedforward_layernorm.weight",
                    Slot::QNorm => "self_attn.q_norm.weight",
                    Slot::KNorm => "self_attn.k_norm.weight",
                };
                format!("model.layers.{l}.{n}")
            }),
            final_norm: "model.norm.weight",
            lm_head: "lm_head.weight",
        }
    }

    pub(super) fn gguf() -> Self {
        LlamaNames {
            embed: "token_embd.weight",
            layer: Box::new(|l, s| {
                let n = match s {
                    Slot::Q => "attn_q.weight",
                    Slot::K => "attn_k.weight",
                    Slot::V => "attn_v.weight",
                    Slot::O => "attn_output.weight",
                    Slot::QBias => "attn_q.bias",
                    Slot::KBias => "attn_k.bias",
                    Slot::VBias => "attn_v.bias",
                    Slot::Gate => "ffn_gate.weight",
                    Slot::Up => "ffn_up.weight",
                    Slot::Down => "ffn_down.weight",
                    Slot::Norm1 => "attn_norm.weight",
                    Slot::Norm2 => "ffn_norm.weight",
                    Slot::AttnPost => "post_attention_norm.weight",
                    Slot::MlpPost => "post_ffw_norm.weight",
                    Slot::QNorm => "attn_q_norm.weight",
                    Slot::KNorm => "attn_k_norm.weight",
                };
                format!("blk.{l}.{n}")
            }),
            final_norm: "output_norm.weight",
            lm_head: "output.weight",
        }
    }
}

fn family_of(model_type: &str, cfg_path: &Path) -> Result<Family> {
    Ok(match model_type {
        "llama" | "mistral" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "gemma2" => Family::Gemma2,
        "gemma3_text" => Family::Gemma3,
        "gemma3" => {
            return Err(Error::UnsupportedModel(format!(
                "{}: model_type \"gemma3\" is the multimodal Gemma 3; use its text-only checkpoint (model_type \"gemma3_text\")",
                cfg_path.display()
            )))
        }
        other => {
            return Err(Error::UnsupportedModel(format!(
                "{}: model_type {other:?} is not a Llama-family model",
                cfg_path.display()
            )))
        }
    })
}

/// `rope_scaling` of a Hugging Face config.
fn rope_scaling(c: &Value, cfg_path: &Path) -> Result<RopeScaling> {
    let Some(rs) = c.get("rope_scaling").filter(|v| !v.is_null()) else {
        return Ok(RopeScaling::None);
    };
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let num = |k: &str| -> Result<f32> {
        rs.get(k)
            .and_then(Value::as_f64)
            .map(|v| v as f32)
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| {
                Error::format(
                    cfg_path,
                    format!("rope_scaling.{k} is missing or not a positive number"),
                )
            })
    };
    Ok(match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear {
            factor: num("factor")?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: num("factor")?,
            low_freq_factor: num("low_freq_factor")?,
            high_freq_factor: num("high_freq_factor")?,
            original_max_position_embeddings: num("original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::format(
                cfg_path,
                format!("rope_scaling type {other:?} is not supported (default, linear, llama3)"),
            ))
        }
    })
}

/// Local layers as the config lists them (`layer_types`), or the family's default.
fn local_layers(c: &Value, cfg_path: &Path, family: Family, n_layers: usize) -> Result<Vec<bool>> {
    crate::model::config::check_layer_count(cfg_path, "num_hidden_layers", n_layers)?;
    if let Some(types) = c.get("layer_types").and_then(Value::as_array) {
        return types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(Error::format(
                    cfg_path,
                    format!("layer_types holds {t}, expected \"sliding_attention\" or \"full_attention\""),
                )),
            })
            .collect();
    }
    let window = c.get("sliding_window").and_then(Value::as_u64);
    Ok(match family {
        Family::Gemma2 | Family::Gemma3 => family.default_local_layers(
            n_layers,
            c.get("sliding_window_pattern")
                .and_then(Value::as_u64)
                .map(|v| v as usize),
        ),
        Family::Qwen2 if c.get("use_sliding_window").and_then(Value::as_bool) == Some(true) => {
            let first = c
                .get("max_window_layers")
                .and_then(Value::as_u64)
                .map_or(n_layers, |v| v as usize);
            (0..n_layers).map(|l| l >= first).collect()
        }
        // Mistral's window covers every layer.
        Family::Llama if window.is_some() => vec![true; n_layers],
        _ => Vec::new(),
    })
}

/// A Hugging Face folder of the Llama family (model_type `llama`, `mistral`, `qwen2`,
/// `gemma2`, `gemma3_text`): `config.json` + `model.safetensors` or sharded
/// `model-0000x-of-0000y.safetensors` with `model.safetensors.index.json`.
pub fn load_llama_hf(
    dir: &Path,
    dev: &Device,
    target: LoadTarget,
) -> Result<(ModelConfig, Weights)> {
    let cfg_path = dir.join("config.json");
    let c = read_json(&cfg_path)?;
    let mt = c.get("model_type").and_then(Value::as_str).unwrap_or("");
    let family = family_of(mt, &cfg_path)?;
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
    let gemma = family.is_gemma();
    let tied = c
        .get("tie_word_embeddings")
        .and_then(Value::as_bool)
        .unwrap_or(gemma);
    let act_key = if gemma {
        "hidden_activation"
    } else {
        "hidden_act"
    };
    let act = match (gemma, c.get(act_key).and_then(Value::as_str)) {
        (false, Some("silu") | None) => Activation::SwiGlu,
        (true, Some("gelu_pytorch_tanh" | "gelu_new" | "gelu_fast") | None) => Activation::GeGlu,
        (_, Some(other)) => {
            return Err(Error::format(
                &cfg_path,
                format!("{act_key} {other:?} is not supported for {mt}"),
            ))
        }
    };
    let n_layers = json_usize(&c, &cfg_path, &["num_hidden_layers"])?;
    let opt_f64 = |k: &str| c.get(k).and_then(Value::as_f64);
    let local = local_layers(&c, &cfg_path, family, n_layers)?;
    let details = ArchDetails {
        rope_scaling: rope_scaling(&c, &cfg_path)?,
        rope_local_base: (family == Family::Gemma3)
            .then(|| json_f64(&c, &["rope_local_base_freq"], 10000.0) as f32),
        attn_scale: if gemma {
            Some(1.0 / opt_f64("query_pre_attn_scalar").unwrap_or(hd as f64).sqrt())
        } else {
            None
        },
        attn_softcap: if gemma {
            opt_f64("attn_logit_softcapping")
        } else {
            None
        },
        final_softcap: if gemma {
            opt_f64("final_logit_softcapping")
        } else {
            None
        },
        sliding_window: if local.iter().any(|&x| x) {
            Some(json_usize(&c, &cfg_path, &["sliding_window"])?)
        } else {
            None
        },
        local_layers: local,
        ..ArchDetails::default()
    };
    let cfg = ModelConfig {
        architecture: family.name().into(),
        n_layers,
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
        act,
        attn_only: false,
        details,
    };
    cfg.validate(&cfg_path)?;
    let src = TensorSource::safetensors(&safetensors_files(dir)?)?.with_target(target, dev)?;
    src.check_fits(&cfg, &cfg_path)?;
    // Transformers' Gemma norms compute x̂·(1 + w); llama.cpp's converter stores 1 + w.
    llama_weights(
        &cfg,
        family,
        &src,
        &LlamaNames::hf(family),
        tied,
        gemma,
        dev,
    )
}

/// `model.safetensors`, or the shards an index lists.
pub(super) fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Ok(vec![dir.join("model.safetensors")]);
    }
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
    if files.is_empty() {
        return Err(Error::format(&index, "`weight_map` lists no shard"));
    }
    // A shard is a file beside the index, never a path elsewhere on the machine.
    if let Some(f) = files
        .iter()
        .find(|f| Path::new(f.as_str()).file_name() != Some(std::ffi::OsStr::new(f.as_str())))
    {
        return Err(Error::format(
            &index,
            format!("`weight_map` names {f:?}, which is not a file name beside the index"),
        ));
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Weights of a Llama-family block from `src` under `names`. `norm_plus_one`: the
/// checkpoint stores Gemma's norm weights as w where the norm scales by 1 + w.
pub(super) fn llama_weights(
    cfg: &ModelConfig,
    family: Family,
    src: &TensorSource,
    names: &LlamaNames,
    tied: bool,
    norm_plus_one: bool,
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
    let gemma = family.is_gemma();
    let g = |n: &str, shape: &[usize]| src.get(n, shape, dev);
    let nw = |n: &str, dim: usize| -> Result<NormWeights> {
        // In f32, as Transformers' Gemma computes 1 + w (norms stay f32, `Weights::settle`).
        let w = g(n, &[dim])?.to_dtype(candle_core::DType::F32)?;
        let w = if norm_plus_one { (w + 1.0)? } else { w };
        Ok(NormWeights {
            w: Some(w),
            b: None,
        })
    };
    // Parameters our layout adds (zero biases, a tied W_U), so n_params counts the file's.
    let synthesized = std::cell::Cell::new(v);
    // Biases on q, k, v: Qwen2 always, Llama with `attention_bias`; zero where absent.
    let bias = |n: &str, heads: usize| -> Result<Tensor> {
        match src.get_opt(n, dev)? {
            Some(t) => {
                crate::model::weights::check_shape(src.path(), n, &t, &[heads * hd])?;
                Ok(t.reshape((heads, hd))?)
            }
            None if family == Family::Qwen2 => Err(Error::MissingTensor {
                path: src.path().to_owned(),
                name: n.into(),
            }),
            None => {
                synthesized.set(synthesized.get() + heads * hd);
                zeros(&[heads, hd], dev)
            }
        }
    };
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let n = |s: Slot| (names.layer)(l, s);
        let o = g(&n(Slot::O), &[d, h * hd])?;
        let (b_q, b_k, b_v) = (
            bias(&n(Slot::QBias), h)?,
            bias(&n(Slot::KBias), kv)?,
            bias(&n(Slot::VBias), kv)?,
        );
        layers.push(LayerWeights {
            ln1: nw(&n(Slot::Norm1), d)?,
            w_q: linear_to_heads(&g(&n(Slot::Q), &[h * hd, d])?, h, hd)?,
            b_q,
            w_k: linear_to_heads(&g(&n(Slot::K), &[kv * hd, d])?, kv, hd)?,
            b_k,
            w_v: linear_to_heads(&g(&n(Slot::V), &[kv * hd, d])?, kv, hd)?,
            b_v,
            // [d, H*dh] → [H*dh, d] → [H, dh, d]
            w_o: o.t()?.contiguous()?.reshape((h, hd, d))?,
            b_o: zeros(&[d], dev)?,
            ln2: nw(&n(Slot::Norm2), d)?,
            mlp: Some(MlpWeights {
                w_in: g(&n(Slot::Up), &[dm, d])?.t()?.contiguous()?,
                b_in: zeros(&[dm], dev)?,
                w_gate: Some(g(&n(Slot::Gate), &[dm, d])?.t()?.contiguous()?),
                w_out: g(&n(Slot::Down), &[d, dm])?.t()?.contiguous()?,
                b_out: zeros(&[d], dev)?,
            }),
            ln1_post: gemma.then(|| nw(&n(Slot::AttnPost), d)).transpose()?,
            ln2_post: gemma.then(|| nw(&n(Slot::MlpPost), d)).transpose()?,
            q_norm: (family == Family::Gemma3)
                .then(|| nw(&n(Slot::QNorm), hd))
                .transpose()?,
            k_norm: (family == Family::Gemma3)
                .then(|| nw(&n(Slot::KNorm), hd))
                .transpose()?,
        });
        synthesized.set(synthesized.get() + d + dm + d); // b_O, b_in, b_out
    }
    let w_e = g(names.embed, &[v, d])?;
    let tied = tied || !src.contains(names.lm_head);
    let w_u = if !tied {
        g(names.lm_head, &[v, d])?.t()?.contiguous()?
    } else {
        synthesized.set(synthesized.get() + v * d);
        w_e.t()?.contiguous()?
    };
    // Gemma scales the embeddings (not the tied unembedding) by √d_model, in the weights'
    // dtype: folding it into W_E gives the same products.
    let w_e = if gemma {
        (w_e * f64::from((d as f32).sqrt()))?
    } else {
        w_e
    };
    let w = Weights {
        w_e,
        w_pos: None,
        layers,
        ln_final: nw(names.final_norm, d)?,
        w_u,
        b_u: zeros(&[v], dev)?,
        synthesized: synthesized.get(),
    };
    Ok((cfg.clone(), w))
}

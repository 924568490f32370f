//! llama.cpp GGUF files of the `llama`, `qwen2`, `gemma2`, `gemma3` and `gptneox`
//! architectures. Tensors of any type candle's `quantized` module reads (F32, F16, Q4_0 …
//! Q8_0 and the K-quants Q2_K … Q8_K) are dequantised to f32 by candle.
//!
//! What llama.cpp's converter changed on the way, and what undoes it here:
//! - `llama`: Q and K rows are permuted, so rotary embeddings rotate interleaved pairs;
//!   the other families keep Hugging Face's rotate-half order.
//! - `gemma2`/`gemma3`: norm weights (q/k norms included) are stored as 1 + w already;
//!   the embedding scale, the attention scale (`query_pre_attn_scalar`), the local/global
//!   layer pattern and the local rotary base are not stored and follow llama.cpp's own
//!   defaults for these architectures (tests/gguf_families.rs).
//! - `gptneox`: the fused QKV rows are regrouped as [q; k; v].
use std::path::Path;

use candle_core::quantized::gguf_file::Value as GV;
use candle_core::Device;

use super::llama::{llama_weights, Family, LlamaNames};
use super::neox::{neox_weights, NeoxNames, QkvLayout};
use crate::error::{Error, Result};
use crate::model::config::{Activation, ArchDetails, ModelConfig, Norm, PosEmbedding, RopeScaling};
use crate::model::dtype::LoadTarget;
use crate::model::weights::{TensorSource, Weights};

/// Tokenizer data carried inside a GGUF file.
pub enum GgufVocab {
    /// `tokenizer.ggml.model = gpt2`: byte-level BPE with merges.
    Bpe {
        tokens: Vec<String>,
        merges: Vec<String>,
        pre: String,
        bos_id: Option<u32>,
    },
    /// `tokenizer.ggml.model = llama`: SentencePiece-style, merges ranked by score.
    Spm {
        tokens: Vec<String>,
        scores: Vec<f32>,
        token_types: Vec<i32>,
        bos_id: Option<u32>,
        add_space_prefix: bool,
    },
}

/// Metadata reads that name the file and key in their errors.
struct Meta<'a> {
    md: &'a std::collections::HashMap<String, GV>,
    path: &'a Path,
    arch: String,
}

impl Meta<'_> {
    fn get(&self, k: &str) -> Result<&GV> {
        self.md
            .get(k)
            .ok_or_else(|| Error::format(self.path, format!("GGUF metadata `{k}` is missing")))
    }
    fn int_of(&self, k: &str, v: &GV) -> Result<u64> {
        let n = match v {
            GV::U8(x) => Some(u64::from(*x)),
            GV::U16(x) => Some(u64::from(*x)),
            GV::U32(x) => Some(u64::from(*x)),
            GV::U64(x) => Some(*x),
            GV::I8(x) => u64::try_from(*x).ok(),
            GV::I16(x) => u64::try_from(*x).ok(),
            GV::I32(x) => u64::try_from(*x).ok(),
            GV::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.ok_or_else(|| {
            Error::format(
                self.path,
                format!("GGUF metadata `{k}` is not a non-negative integer"),
            )
        })
    }
    /// `{arch}.{k}` as an integer.
    fn arch_usize(&self, k: &str) -> Result<usize> {
        let key = format!("{}.{k}", self.arch);
        let v = self.int_of(&key, self.get(&key)?)?;
        usize::try_from(v).map_err(|_| Error::format(self.path, format!("`{key}` is too large")))
    }
    fn arch_usize_opt(&self, k: &str) -> Result<Option<usize>> {
        if self.md.contains_key(&format!("{}.{k}", self.arch)) {
            self.arch_usize(k).map(Some)
        } else {
            Ok(None)
        }
    }
    fn arch_f32_opt(&self, k: &str) -> Result<Option<f32>> {
        let key = format!("{}.{k}", self.arch);
        match self.md.get(&key) {
            None => Ok(None),
            Some(GV::F32(x)) => Ok(Some(*x)),
            Some(GV::F64(x)) => Ok(Some(*x as f32)),
            Some(_) => Err(Error::format(
                self.path,
                format!("GGUF metadata `{key}` is not a number"),
            )),
        }
    }
    fn arch_bool(&self, k: &str, default: bool) -> bool {
        self.md
            .get(&format!("{}.{k}", self.arch))
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(default)
    }
    fn string(&self, k: &str) -> Option<String> {
        self.md.get(k).and_then(|v| v.to_string().ok().cloned())
    }
    fn array(&self, k: &str) -> Result<&Vec<GV>> {
        self.get(k)?
            .to_vec()
            .map_err(|e| Error::format(self.path, format!("{k}: {e}")))
    }
    fn strings(&self, k: &str) -> Result<Vec<String>> {
        self.array(k)?
            .iter()
            .map(|v| {
                v.to_string()
                    .cloned()
                    .map_err(|e| Error::format(self.path, format!("{k}: {e}")))
            })
            .collect()
    }
}

/// A llama.cpp GGUF file of a supported architecture, its weights dequantised tensor by
/// tensor to the chosen dtype,
/// and the tokenizer it carries.
pub fn load_gguf(
    path: &Path,
    dev: &Device,
    target: LoadTarget,
) -> Result<(ModelConfig, Weights, GgufVocab)> {
    let src = TensorSource::gguf(path)?.with_target(target, dev)?;
    let content = src
        .gguf_content()
        .ok_or_else(|| Error::format(path, "not read as GGUF"))?;
    let mut m = Meta {
        md: &content.metadata,
        path,
        arch: String::new(),
    };
    m.arch = m
        .get("general.architecture")?
        .to_string()
        .map_err(|e| Error::format(path, format!("general.architecture: {e}")))?
        .clone();
    let family = match m.arch.as_str() {
        "llama" => Some(Family::Llama),
        "qwen2" => Some(Family::Qwen2),
        "gemma2" => Some(Family::Gemma2),
        "gemma3" => Some(Family::Gemma3),
        "gptneox" => None,
        other => {
            return Err(Error::UnsupportedModel(format!(
            "{}: GGUF architecture {other:?} (supported: llama, qwen2, gemma2, gemma3, gptneox)",
            path.display()
        )))
        }
    };
    let vocab = read_vocab(&m)?;
    let d_vocab = match &vocab {
        GgufVocab::Bpe { tokens, .. } | GgufVocab::Spm { tokens, .. } => tokens.len(),
    };
    let d = m.arch_usize("embedding_length")?;
    let h = m.arch_usize("attention.head_count")?;
    let n_layers = m.arch_usize("block_count")?;
    crate::model::config::check_layer_count(path, &format!("{}.block_count", m.arch), n_layers)?;
    let hd = match m.arch_usize_opt("attention.key_length")? {
        Some(k) => k,
        None => d.checked_div(h).unwrap_or(0),
    };
    let base = m.arch_f32_opt("rope.freq_base")?.unwrap_or(10000.0);
    let (cfg, w) = match family {
        Some(family) => {
            let gemma = family.is_gemma();
            // llama.cpp: Gemma 2 without the window key uses 4096; Gemma 3 without it
            // (the converter omits it when sliding_window_pattern is 1), or with 0, has no
            // local layer.
            let window = match (family, m.arch_usize_opt("attention.sliding_window")?) {
                (Family::Gemma2, None) => Some(4096),
                (_, Some(0)) => None,
                (_, w) => w,
            };
            let local = match family {
                Family::Gemma2 | Family::Gemma3 if window.is_some() => family.default_local_layers(
                    n_layers,
                    m.arch_usize_opt("attention.sliding_window_pattern")?,
                ),
                _ => Vec::new(),
            };
            let scaling = match m
                .string(&format!("{}.rope.scaling.type", m.arch))
                .as_deref()
            {
                None | Some("none") => RopeScaling::None,
                Some("linear") => RopeScaling::Linear {
                    factor: m.arch_f32_opt("rope.scaling.factor")?.unwrap_or(1.0),
                },
                Some(other) => {
                    return Err(Error::format(
                        path,
                        format!("{}.rope.scaling.type {other:?} is not supported", m.arch),
                    ))
                }
            };
            // llama.cpp: Gemma 2 27B (46 layers) and Gemma 3 27B (62 layers) scale by
            // 1/√(d_model / heads), the others by 1/√key_length.
            let attn_scale = gemma.then(|| {
                let big = matches!(
                    (family, n_layers),
                    (Family::Gemma2, 46) | (Family::Gemma3, 62)
                );
                let q = if big { d as f64 / h as f64 } else { hd as f64 };
                1.0 / q.sqrt()
            });
            let cfg = ModelConfig {
                architecture: family.name().into(),
                n_layers,
                n_heads: h,
                n_kv_heads: m.arch_usize_opt("attention.head_count_kv")?.unwrap_or(h),
                d_model: d,
                d_head: hd,
                d_mlp: m.arch_usize("feed_forward_length")?,
                d_vocab,
                n_ctx: m.arch_usize("context_length")?,
                norm: Norm::RmsNorm,
                eps: m
                    .arch_f32_opt("attention.layer_norm_rms_epsilon")?
                    .unwrap_or(1e-5) as f64,
                pos: PosEmbedding::Rotary {
                    base,
                    interleaved: family == Family::Llama,
                },
                act: if gemma {
                    Activation::GeGlu
                } else {
                    Activation::SwiGlu
                },
                attn_only: false,
                details: ArchDetails {
                    rope_scaling: scaling,
                    rope_local_base: (family == Family::Gemma3).then_some(10000.0),
                    attn_scale,
                    attn_softcap: m
                        .arch_f32_opt("attn_logit_softcapping")?
                        .filter(|_| family == Family::Gemma2)
                        .map(f64::from),
                    // llama.cpp soft-caps the final logits of Gemma 2, and of Gemma 3
                    // only without sliding-window layers, whatever else a file carries.
                    final_softcap: m
                        .arch_f32_opt("final_logit_softcapping")?
                        .filter(|_| {
                            family == Family::Gemma2
                                || (family == Family::Gemma3 && window.is_none())
                        })
                        .map(f64::from),
                    sliding_window: window.filter(|_| local.iter().any(|&x| x)),
                    local_layers: local,
                    ..ArchDetails::default()
                },
            };
            cfg.validate(path)?;
            src.check_fits(&cfg, path)?;
            llama_weights(&cfg, family, &src, &LlamaNames::gguf(), false, false, dev)?
        }
        None => {
            let rot = m.arch_usize_opt("rope.dimension_count")?;
            let cfg = ModelConfig {
                architecture: "gpt-neox".into(),
                n_layers,
                n_heads: h,
                n_kv_heads: h,
                d_model: d,
                d_head: hd,
                d_mlp: m.arch_usize("feed_forward_length")?,
                d_vocab,
                n_ctx: m.arch_usize("context_length")?,
                norm: Norm::LayerNorm,
                eps: m
                    .arch_f32_opt("attention.layer_norm_epsilon")?
                    .unwrap_or(1e-5) as f64,
                pos: PosEmbedding::Rotary {
                    base,
                    interleaved: false,
                },
                act: Activation::Gelu,
                attn_only: false,
                details: ArchDetails {
                    parallel_attn_mlp: m.arch_bool("use_parallel_residual", true),
                    rotary_dim: rot,
                    ..ArchDetails::default()
                },
            };
            cfg.validate(path)?;
            src.check_fits(&cfg, path)?;
            neox_weights(&cfg, &src, &NeoxNames::gguf(), QkvLayout::Grouped, dev)?
        }
    };
    Ok((cfg, w, vocab))
}

fn read_vocab(m: &Meta<'_>) -> Result<GgufVocab> {
    let tokens = m.strings("tokenizer.ggml.tokens")?;
    if tokens.is_empty() {
        return Err(Error::format(m.path, "tokenizer.ggml.tokens is empty"));
    }
    let bos_id =
        m.md.get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok());
    let kind = m.string("tokenizer.ggml.model").unwrap_or_default();
    match kind.as_str() {
        "gpt2" => Ok(GgufVocab::Bpe {
            merges: m.strings("tokenizer.ggml.merges")?,
            pre: m
                .string("tokenizer.ggml.pre")
                .unwrap_or_else(|| "default".into()),
            bos_id,
            tokens,
        }),
        "llama" => {
            let k = "tokenizer.ggml.scores";
            let scores = m
                .array(k)?
                .iter()
                .map(|v| {
                    v.to_f32()
                        .map_err(|e| Error::format(m.path, format!("{k}: {e}")))
                })
                .collect::<Result<Vec<f32>>>()?;
            let k = "tokenizer.ggml.token_type";
            let token_types = m
                .array(k)?
                .iter()
                .map(|v| {
                    v.to_i32()
                        .map_err(|e| Error::format(m.path, format!("{k}: {e}")))
                })
                .collect::<Result<Vec<i32>>>()?;
            if scores.len() != tokens.len() || token_types.len() != tokens.len() {
                return Err(Error::format(
                    m.path,
                    format!(
                        "{} tokens but {} scores and {} token types",
                        tokens.len(),
                        scores.len(),
                        token_types.len()
                    ),
                ));
            }
            Ok(GgufVocab::Spm {
                tokens,
                scores,
                token_types,
                bos_id,
                add_space_prefix: m
                    .md
                    .get("tokenizer.ggml.add_space_prefix")
                    .and_then(|v| v.to_bool().ok())
                    .unwrap_or(true),
            })
        }
        other => Err(Error::Tokenizer(format!(
            "{}: GGUF tokenizer model {other:?} (supported: gpt2 byte-level BPE, llama SentencePiece)",
            m.path.display()
        ))),
    }
}

//! Checkpoint families → ([`ModelConfig`], [`Weights`]) in the internal layout, one file
//! per checkpoint format: Hugging Face GPT-2 (`gpt2`), TransformerLens state dicts
//! (`transformer_lens`), the Llama family in Hugging Face layout with Qwen2 and Gemma 2/3
//! (`llama`), GPT-NeoX/Pythia (`neox`) and llama.cpp GGUF files of all of them (`gguf`).
mod gguf;
pub(crate) mod gguf_guard;
mod gpt2;
mod llama;
mod neox;
pub(crate) mod pth_guard;
mod transformer_lens;

pub use gguf::{load_gguf, GgufVocab};
pub use gpt2::load_gpt2_hf;
pub use llama::load_llama_hf;
pub use neox::load_neox_hf;
use std::path::Path;
pub use transformer_lens::load_transformer_lens;

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::error::{Error, Result};

pub(super) fn json_usize(cfg: &Value, path: &Path, keys: &[&str]) -> Result<usize> {
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

pub(super) fn json_f64(cfg: &Value, keys: &[&str], default: f64) -> f64 {
    keys.iter()
        .find_map(|k| cfg.get(*k).and_then(Value::as_f64))
        .unwrap_or(default)
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = crate::error::read_text(path)?;
    serde_json::from_str(&text).map_err(|e| Error::format(path, format!("invalid JSON: {e}")))
}

pub(super) fn zeros(shape: &[usize], dev: &Device) -> Result<Tensor> {
    Ok(Tensor::zeros(shape, candle_core::DType::F32, dev)?)
}

/// [out = H*dh, in = d] (torch Linear) → [H, d, dh].
pub(super) fn linear_to_heads(w: &Tensor, heads: usize, d_head: usize) -> Result<Tensor> {
    let d = w.dim(1)?;
    Ok(w.reshape((heads, d_head, d))?
        .transpose(1, 2)?
        .contiguous()?)
}

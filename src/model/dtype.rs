//! The precision a model's weights are kept in and its forward runs in (`--dtype`): the one
//! definition of the setting and its default.
//!
//! What each dtype means for the forward ([`super::forward`]):
//! * the weight matrices (embeddings, W_Q/K/V/O, the MLP, W_U) and biases are stored in it,
//!   and the residual stream between layers is kept in it, as Transformers does in bf16;
//! * norms (LayerNorm, RMSNorm) and the attention softmax are computed in f32 and their
//!   outputs rounded back, as Transformers' Llama and GPT-2 do; norm weights stay f32;
//! * matmuls take their inputs in the dtype and accumulate in f32: cuBLAS's bf16/f16
//!   GEMMs on CUDA; on the CPU, candle 0.11.1 widens both bf16 operands to f32, multiplies
//!   with the f32 `gemm` kernel and rounds the product back, and its f16 matmul (`gemm-f16`)
//!   packs f16 blocks into f32 and accumulates in f32. Every product is rounded once to
//!   the dtype;
//! * every tensor handed out (hooked z, result, residuals, logits) is f32, so the SAEs,
//!   scores and metrics never see a half type.
use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A floating-point dtype a model can run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDtype {
    F32,
    Bf16,
    F16,
}

impl WeightDtype {
    pub const ALL: [WeightDtype; 3] = [WeightDtype::F32, WeightDtype::Bf16, WeightDtype::F16];

    pub fn dtype(self) -> DType {
        match self {
            WeightDtype::F32 => DType::F32,
            WeightDtype::Bf16 => DType::BF16,
            WeightDtype::F16 => DType::F16,
        }
    }

    /// The dtype of a tensor, if it is one a model can run in.
    pub fn of(d: DType) -> Option<Self> {
        match d {
            DType::F32 => Some(WeightDtype::F32),
            DType::BF16 => Some(WeightDtype::Bf16),
            DType::F16 => Some(WeightDtype::F16),
            _ => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::Bf16 | WeightDtype::F16 => 2,
        }
    }

    /// The dtype a model on `dev` runs in: `requested` (`--dtype`) if given, else the
    /// checkpoint's own dtype on CUDA (`own`: `None` for random weights and quantized
    /// files, which take bf16 there) and f32 on the CPU, where half types gain no speed
    /// (candle widens them to f32 for every matmul) and only save memory. Refuses a dtype
    /// the device cannot run before anything is loaded.
    pub fn choose(requested: Option<Self>, own: Option<Self>, dev: &Device) -> Result<Self> {
        let chosen = match (requested, dev.is_cuda()) {
            (Some(d), _) => d,
            (None, true) => own.unwrap_or(WeightDtype::Bf16),
            (None, false) => WeightDtype::F32,
        };
        if chosen == WeightDtype::Bf16 {
            if let Some(cc) = crate::gpu::compute_capability(dev)? {
                check_bf16(cc)?;
            }
        }
        Ok(chosen)
    }
}

/// What a loader is asked for besides the device: the dtype (`--dtype`) and a memory
/// budget (`--max-memory`, bytes) the weights must fit, checked against the checkpoint's
/// tensor table before any tensor is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadTarget {
    pub dtype: Option<WeightDtype>,
    pub max_bytes: Option<u64>,
}

/// bf16 arithmetic (cuBLAS's bf16 GEMMs, candle's bf16 kernels) needs sm_80 or newer.
pub fn check_bf16((major, minor): (i32, i32)) -> Result<()> {
    if major < 8 {
        return Err(Error::InvalidInput(format!(
            "--dtype bf16 needs a GPU of compute capability 8.0 or newer (Ampere); this one \
             is {major}.{minor}: use --dtype f16 or f32"
        )));
    }
    Ok(())
}

impl fmt::Display for WeightDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WeightDtype::F32 => "f32",
            WeightDtype::Bf16 => "bf16",
            WeightDtype::F16 => "f16",
        })
    }
}

impl FromStr for WeightDtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(WeightDtype::F32),
            "bf16" | "bfloat16" => Ok(WeightDtype::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(WeightDtype::F16),
            other => Err(Error::InvalidInput(format!(
                "unknown dtype {other:?} (f32, bf16 or f16)"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_device_and_the_checkpoint() {
        let cpu = Device::Cpu;
        assert_eq!(
            WeightDtype::choose(None, Some(WeightDtype::Bf16), &cpu).unwrap(),
            WeightDtype::F32
        );
        assert_eq!(
            WeightDtype::choose(Some(WeightDtype::F16), Some(WeightDtype::Bf16), &cpu).unwrap(),
            WeightDtype::F16
        );
        assert_eq!(
            WeightDtype::choose(Some(WeightDtype::Bf16), None, &cpu).unwrap(),
            WeightDtype::Bf16
        );
    }

    #[test]
    fn bf16_needs_ampere() {
        assert!(check_bf16((8, 0)).is_ok());
        assert!(check_bf16((9, 0)).is_ok());
        let e = check_bf16((7, 5)).unwrap_err().to_string();
        assert!(e.contains("7.5") && e.contains("bf16"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn parses_and_prints() {
        for d in WeightDtype::ALL {
            assert_eq!(d.to_string().parse::<WeightDtype>().unwrap(), d);
            assert_eq!(WeightDtype::of(d.dtype()), Some(d));
        }
        assert_eq!("BF16".parse::<WeightDtype>().unwrap(), WeightDtype::Bf16);
        assert!("int8".parse::<WeightDtype>().is_err());
        assert_eq!(WeightDtype::of(DType::U8), None);
    }
}

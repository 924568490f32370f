//! Weights in one internal layout (TransformerLens's), whatever the checkpoint family:
//! W_Q/W_K/W_V [heads, d_model, d_head], W_O [heads, d_head, d_model], W_in [d_model,
//! d_mlp], W_out [d_mlp, d_model], W_E [vocab, d_model], W_U [d_model, vocab].
//! Biases are always present (zeros where the family has none) so processing and the
//! forward pass have one code path.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct NormWeights {
    pub w: Option<Tensor>,
    pub b: Option<Tensor>,
}

#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub ln1: NormWeights,
    pub w_q: Tensor,
    pub b_q: Tensor,
    pub w_k: Tensor,
    pub b_k: Tensor,
    pub w_v: Tensor,
    pub b_v: Tensor,
    pub w_o: Tensor,
    pub b_o: Tensor,
    pub ln2: NormWeights,
    pub mlp: Option<MlpWeights>,
    /// Norms on the attention and MLP outputs before they join the residual stream
    /// (Gemma 2 and 3; `None` elsewhere).
    pub ln1_post: Option<NormWeights>,
    pub ln2_post: Option<NormWeights>,
    /// RMSNorm over each head's query and key, before the rotary embedding (Gemma 3).
    pub q_norm: Option<NormWeights>,
    pub k_norm: Option<NormWeights>,
}

impl LayerWeights {
    /// The optional norms of the later families that this layer has.
    pub fn extra_norms(&self) -> impl Iterator<Item = &NormWeights> {
        [&self.ln1_post, &self.ln2_post, &self.q_norm, &self.k_norm]
            .into_iter()
            .flatten()
    }
}

#[derive(Debug, Clone)]
pub struct MlpWeights {
    pub w_in: Tensor,
    pub b_in: Tensor,
    /// Gated MLPs only (SwiGLU, GeGLU).
    pub w_gate: Option<Tensor>,
    pub w_out: Tensor,
    pub b_out: Tensor,
}

#[derive(Debug, Clone)]
pub struct Weights {
    pub w_e: Tensor,
    pub w_pos: Option<Tensor>,
    pub layers: Vec<LayerWeights>,
    pub ln_final: NormWeights,
    pub w_u: Tensor,
    pub b_u: Tensor,
    /// Parameters that exist only in our layout (a tied W_U, zero biases of bias-free
    /// families): subtracted from `n_params` so it counts the checkpoint's parameters.
    pub synthesized: usize,
}

impl Weights {
    pub fn n_params(&self) -> usize {
        let n = |t: &Tensor| t.elem_count();
        let on = |t: &Option<Tensor>| t.as_ref().map_or(0, n);
        let norm = |x: &NormWeights| on(&x.w) + on(&x.b);
        let mut total = n(&self.w_e) + on(&self.w_pos) + norm(&self.ln_final) + n(&self.w_u);
        total += n(&self.b_u);
        for l in &self.layers {
            total += norm(&l.ln1) + norm(&l.ln2);
            total += l.extra_norms().map(norm).sum::<usize>();
            total += [
                &l.w_q, &l.b_q, &l.w_k, &l.b_k, &l.w_v, &l.b_v, &l.w_o, &l.b_o,
            ]
            .iter()
            .map(|t| n(t))
            .sum::<usize>();
            if let Some(m) = &l.mlp {
                total += n(&m.w_in) + n(&m.b_in) + on(&m.w_gate) + n(&m.w_out) + n(&m.b_out);
            }
        }
        total - self.synthesized
    }
}

/// Where named tensors come from: safetensors (one file or shards), a PyTorch pickle,
/// or a GGUF file (dequantised to f32). Every error names the file and the tensor.
pub enum TensorSource {
    Safetensors {
        paths: Vec<PathBuf>,
        st: candle_core::safetensors::MmapedSafetensors,
        names: Vec<String>,
    },
    Pth {
        path: PathBuf,
        pth: candle_core::pickle::PthTensors,
    },
    Gguf {
        path: PathBuf,
        content: candle_core::quantized::gguf_file::Content,
    },
}

impl TensorSource {
    pub fn safetensors(paths: &[PathBuf]) -> Result<Self> {
        let first = paths.first().cloned().unwrap_or_default();
        for p in paths {
            if !p.is_file() {
                return Err(Error::io(
                    p,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                ));
            }
        }
        // SAFETY: the files are memory-mapped read-only; like every mmap reader we rely
        // on them not being truncated while the model is loading.
        let st = unsafe { candle_core::safetensors::MmapedSafetensors::multi(paths) }
            .map_err(|e| Error::format(&first, format!("not a valid safetensors file: {e}")))?;
        let names = st.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(TensorSource::Safetensors {
            paths: paths.to_vec(),
            st,
            names,
        })
    }

    pub fn pth(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            ));
        }
        crate::model::load::pth_guard::check_pickles(path)?;
        let pth = candle_core::pickle::PthTensors::new(path, None)
            .map_err(|e| Error::format(path, format!("not a readable PyTorch checkpoint: {e}")))?;
        crate::model::load::pth_guard::check_storages(path, &pth)?;
        Ok(TensorSource::Pth {
            path: path.to_owned(),
            pth,
        })
    }

    pub fn gguf(path: &Path) -> Result<Self> {
        crate::model::load::gguf_guard::check_metadata(path)?;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f)
            .map_err(|e| Error::format(path, format!("not a valid GGUF file: {e}")))?;
        crate::model::load::gguf_guard::check_tensors(path, &content, len)?;
        Ok(TensorSource::Gguf {
            path: path.to_owned(),
            content,
        })
    }

    pub fn path(&self) -> &Path {
        match self {
            TensorSource::Safetensors { paths, .. } => paths.first().map_or(Path::new(""), |p| p),
            TensorSource::Pth { path, .. } | TensorSource::Gguf { path, .. } => path,
        }
    }

    /// The number of weights the file's tensor table declares (saturating: a table that
    /// overflows it claims more than any config needs).
    pub fn elements(&self) -> u128 {
        let count = |dims: &[usize]| dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
        match self {
            TensorSource::Safetensors { st, .. } => st
                .tensors()
                .iter()
                .fold(0, |a, (_, v)| a.saturating_add(count(v.shape()))),
            TensorSource::Pth { pth, .. } => pth
                .tensor_infos()
                .values()
                .fold(0, |a, t| a.saturating_add(count(t.layout.dims()))),
            TensorSource::Gguf { content, .. } => content
                .tensor_infos
                .values()
                .fold(0, |a, t| a.saturating_add(count(t.shape.dims()))),
        }
    }

    /// Refuse `cfg` (read from `origin`) if this checkpoint cannot hold its sizes.
    pub fn check_fits(&self, cfg: &crate::model::ModelConfig, origin: &Path) -> Result<()> {
        let source = match self {
            TensorSource::Safetensors { paths, .. } if paths.len() > 1 => format!(
                "the checkpoint of {} shards ({}, …)",
                paths.len(),
                self.path().display()
            ),
            _ => self.path().display().to_string(),
        };
        cfg.check_fits(origin, &source, self.elements())
    }

    pub fn names(&self) -> Vec<String> {
        match self {
            TensorSource::Safetensors { names, .. } => names.clone(),
            TensorSource::Pth { pth, .. } => pth.tensor_infos().keys().cloned().collect(),
            TensorSource::Gguf { content, .. } => content.tensor_infos.keys().cloned().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match self {
            TensorSource::Safetensors { names, .. } => names.iter().any(|n| n == name),
            TensorSource::Pth { pth, .. } => pth.tensor_infos().contains_key(name),
            TensorSource::Gguf { content, .. } => content.tensor_infos.contains_key(name),
        }
    }

    /// Load a tensor as f32 on `dev`, or `None` if absent.
    pub fn get_opt(&self, name: &str, dev: &Device) -> Result<Option<Tensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        let path = self.path().to_owned();
        let ctx = |e: candle_core::Error| {
            Error::format(&path, format!("tensor `{name}` could not be read: {e}"))
        };
        let t = match self {
            TensorSource::Safetensors { st, .. } => st.load(name, dev).map_err(ctx)?,
            TensorSource::Pth { pth, .. } => {
                pth.get(name)
                    .map_err(ctx)?
                    .ok_or_else(|| Error::MissingTensor {
                        path: path.clone(),
                        name: name.into(),
                    })?
                    // candle's pickle reader builds CPU tensors whatever the model's device
                    .to_device(dev)
                    .map_err(ctx)?
            }
            TensorSource::Gguf { content, .. } => {
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let q = content.tensor(&mut f, name, dev).map_err(ctx)?;
                q.dequantize(dev).map_err(ctx)?
            }
        };
        let t = match t.dtype() {
            DType::F32 => t,
            DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(DType::F32)?,
            other => {
                return Err(Error::TensorDtype {
                    path,
                    name: name.into(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        // A NaN or Inf weight makes every probability NaN and every score 0 downstream,
        // with nothing to say why; refuse it here, where the file and tensor are known.
        if !all_finite(&t)? {
            return Err(Error::format(
                &path,
                format!("tensor `{name}` holds NaN or Inf values"),
            ));
        }
        Ok(Some(t))
    }

    /// Load a required tensor and check its shape.
    pub fn get(&self, name: &str, shape: &[usize], dev: &Device) -> Result<Tensor> {
        let t = self
            .get_opt(name, dev)?
            .ok_or_else(|| Error::MissingTensor {
                path: self.path().to_owned(),
                name: name.into(),
            })?;
        check_shape(self.path(), name, &t, shape)?;
        Ok(t)
    }

    /// The first of several candidate names present (checkpoints differ in prefixes).
    pub fn first_of(&self, names: &[String]) -> Option<String> {
        names.iter().find(|n| self.contains(n)).cloned()
    }
}

/// Whether every value of `t` is finite, on any device. A NaN or ±Inf makes the plain sum
/// non-finite, so a finite sum settles it with no temporary; only a non-finite sum (a
/// bad value, or finite values whose sum overflows) pays for the exact check: x·0 is 0
/// for finite x and NaN otherwise.
pub fn all_finite(t: &Tensor) -> Result<bool> {
    let sum =
        |t: &Tensor| -> Result<f32> { Ok(t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?) };
    if sum(t)?.is_finite() {
        return Ok(true);
    }
    Ok(!sum(&t.affine(0.0, 0.0)?)?.is_nan())
}

pub fn check_shape(path: &Path, name: &str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.dims() != shape {
        return Err(Error::TensorShape {
            path: path.to_owned(),
            name: name.into(),
            expected: shape.to_vec(),
            got: t.dims().to_vec(),
        });
    }
    Ok(())
}

/// A simple name → tensor map, for building weights in tests and benches.
pub type TensorMap = HashMap<String, Tensor>;

#[cfg(test)]
mod finite_tests {
    use super::*;

    #[test]
    fn all_finite_takes_the_sum_then_the_exact_check() {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        assert!(all_finite(&t(&[1.0, -2.0])).unwrap());
        // Finite values whose sum overflows: the exact check clears them.
        assert!(all_finite(&t(&[3e38, 3e38])).unwrap());
        for bad in [
            [1.0, f32::NAN],
            [1.0, f32::INFINITY],
            [f32::INFINITY, f32::NEG_INFINITY],
        ] {
            assert!(!all_finite(&t(&bad)).unwrap(), "{bad:?}");
        }
    }
}

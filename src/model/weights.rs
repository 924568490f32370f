//! Weights in one internal layout (TransformerLens's), whatever the checkpoint family:
//! W_Q/W_K/W_V [heads, d_model, d_head], W_O [heads, d_head, d_model], W_in [d_model,
//! d_mlp], W_out [d_mlp, d_model], W_E [vocab, d_model], W_U [d_model, vocab].
//! Biases are always present (zeros where the family has none) so processing and the
//! forward pass have one code path.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::dtype::{LoadTarget, WeightDtype};

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

impl NormWeights {
    /// Norm weights are kept in f32 whatever the model's dtype: the norm itself runs in
    /// f32 (see `model::dtype`), and Gemma's 1 + w would lose w's low bits in bf16.
    fn settle(&mut self) -> Result<()> {
        for t in [&mut self.w, &mut self.b].into_iter().flatten() {
            *t = t.to_dtype(DType::F32)?;
        }
        Ok(())
    }
}

impl LayerWeights {
    /// This layer's matrices and biases in `dtype` (norms stay f32).
    pub fn to_dtype(&self, dtype: DType) -> Result<LayerWeights> {
        let mut l = self.clone();
        for t in l.matrices_mut() {
            *t = t.to_dtype(dtype)?;
        }
        Ok(l)
    }

    /// The matrices and biases: everything but the norms.
    fn matrices_mut(&mut self) -> Vec<&mut Tensor> {
        let mut v = vec![
            &mut self.w_q,
            &mut self.b_q,
            &mut self.w_k,
            &mut self.b_k,
            &mut self.w_v,
            &mut self.b_v,
            &mut self.w_o,
            &mut self.b_o,
        ];
        if let Some(m) = self.mlp.as_mut() {
            v.extend([&mut m.w_in, &mut m.b_in, &mut m.w_out, &mut m.b_out]);
            v.extend(m.w_gate.as_mut());
        }
        v
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
    /// The dtype the model runs in: its embedding's.
    pub fn dtype(&self) -> DType {
        self.w_e.dtype()
    }

    /// Bytes the weights hold (every tensor at its own dtype).
    pub fn bytes(&self) -> usize {
        let n = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let on = |t: &Option<Tensor>| t.as_ref().map_or(0, n);
        let norm = |x: &NormWeights| on(&x.w) + on(&x.b);
        let mut total = n(&self.w_e) + on(&self.w_pos) + norm(&self.ln_final);
        total += n(&self.w_u) + n(&self.b_u);
        for l in &self.layers {
            total += norm(&l.ln1) + norm(&l.ln2) + l.extra_norms().map(norm).sum::<usize>();
            total += l
                .clone()
                .matrices_mut()
                .into_iter()
                .map(|t| n(t))
                .sum::<usize>();
        }
        total
    }

    /// Every matrix and bias in the embedding's dtype, norms in f32: the loaders read
    /// the checkpoint's tensors in the chosen dtype, but make their zero biases in f32.
    pub fn settle(&mut self) -> Result<()> {
        let d = self.dtype();
        for t in [&mut self.w_u, &mut self.b_u]
            .into_iter()
            .chain(self.w_pos.as_mut())
        {
            *t = t.to_dtype(d)?;
        }
        self.ln_final.settle()?;
        for l in self.layers.iter_mut() {
            for t in l.matrices_mut() {
                *t = t.to_dtype(d)?;
            }
            l.ln1.settle()?;
            l.ln2.settle()?;
            for n in [
                &mut l.ln1_post,
                &mut l.ln2_post,
                &mut l.q_norm,
                &mut l.k_norm,
            ]
            .into_iter()
            .flatten()
            {
                n.settle()?;
            }
        }
        Ok(())
    }

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
/// or a GGUF file (dequantised tensor by tensor). Every tensor is converted to [`dtype`]
/// as it is read, so a checkpoint is never held in two precisions at once. Every error
/// names the file and the tensor.
///
/// [`dtype`]: TensorSource::dtype
pub struct TensorSource {
    kind: SourceKind,
    dtype: DType,
}

enum SourceKind {
    Safetensors(Shards),
    Pth {
        path: PathBuf,
        pth: candle_core::pickle::PthTensors,
    },
    Gguf {
        path: PathBuf,
        content: candle_core::quantized::gguf_file::Content,
    },
}

/// Safetensors shards read tensor by tensor from a memory map, one shard mapped at a
/// time: a tensor is copied once out of the map (to host memory, or straight to the GPU),
/// and moving on to the next shard unmaps the one before, so the file's pages never all
/// count against the process at once. Loaders read in layer order, which is the order
/// Transformers writes shards in, so each shard is mapped about once.
struct Shards {
    paths: Vec<PathBuf>,
    /// Every tensor of every shard's header: name → (shard, dtype, shape).
    table: HashMap<String, (usize, Option<DType>, Vec<usize>)>,
    names: Vec<String>,
    open: std::cell::RefCell<Option<(usize, candle_core::safetensors::MmapedSafetensors)>>,
}

impl Shards {
    fn map(path: &Path) -> Result<candle_core::safetensors::MmapedSafetensors> {
        // SAFETY: the files are memory-mapped read-only; like every mmap reader we rely
        // on them not being truncated while the model is loading.
        unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
            .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))
    }

    fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut table = HashMap::new();
        let mut names = Vec::new();
        for (i, p) in paths.iter().enumerate() {
            let st = Self::map(p)?;
            for (n, v) in st.tensors() {
                let dtype = DType::try_from(v.dtype()).ok();
                // A name in several shards: the last wins, as candle's `multi` does.
                if table
                    .insert(n.clone(), (i, dtype, v.shape().to_vec()))
                    .is_none()
                {
                    names.push(n);
                }
            }
        }
        Ok(Shards {
            paths: paths.to_vec(),
            table,
            names,
            open: std::cell::RefCell::new(None),
        })
    }

    fn load(&self, name: &str, dev: &Device) -> Result<Tensor> {
        let shard = self.table.get(name).map_or(0, |e| e.0);
        let mut open = self.open.borrow_mut();
        if open.as_ref().map(|(i, _)| *i) != Some(shard) {
            // Unmap the previous shard before mapping the next.
            *open = None;
            *open = Some((shard, Self::map(&self.paths[shard])?));
        }
        let (_, st) = open
            .as_ref()
            .ok_or_else(|| Error::format(&self.paths[shard], "unmapped"))?;
        st.load(name, dev).map_err(|e| {
            Error::format(
                &self.paths[shard],
                format!("tensor `{name}` could not be read: {e}"),
            )
        })
    }
}

impl TensorSource {
    pub fn safetensors(paths: &[PathBuf]) -> Result<Self> {
        for p in paths {
            if !p.is_file() {
                return Err(Error::io(
                    p,
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                ));
            }
        }
        let src = Self::new(SourceKind::Safetensors(Shards::open(paths)?));
        src.check_dtypes()?;
        Ok(src)
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
        let src = Self::new(SourceKind::Pth {
            path: path.to_owned(),
            pth,
        });
        src.check_dtypes()?;
        Ok(src)
    }

    pub fn gguf(path: &Path) -> Result<Self> {
        crate::model::load::gguf_guard::check_metadata(path)?;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let content = candle_core::quantized::gguf_file::Content::read(&mut f)
            .map_err(|e| Error::format(path, format!("not a valid GGUF file: {e}")))?;
        crate::model::load::gguf_guard::check_tensors(path, &content, len)?;
        Ok(Self::new(SourceKind::Gguf {
            path: path.to_owned(),
            content,
        }))
    }

    fn new(kind: SourceKind) -> Self {
        TensorSource {
            kind,
            dtype: DType::F32,
        }
    }

    /// Read every tensor as the dtype [`WeightDtype::choose`] picks for the target on
    /// `dev` (the checkpoint's own dtype is the default on CUDA), and refuse a budget the
    /// weights alone exceed. Both are checked before any tensor is read.
    pub fn with_target(mut self, target: LoadTarget, dev: &Device) -> Result<Self> {
        let dtype = WeightDtype::choose(target.dtype, self.own_dtype(), dev)?;
        self.dtype = dtype.dtype();
        if let Some(budget) = target.max_bytes {
            let need = self.elements().saturating_mul(dtype.bytes() as u128);
            if need > budget as u128 {
                return Err(Error::InvalidInput(format!(
                    "--max-memory {}: the weights of {} alone need {} in {dtype}",
                    crate::memory::human(budget as u128),
                    self.path().display(),
                    crate::memory::human(need)
                )));
            }
        }
        Ok(self)
    }

    /// The dtype tensors are read as.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The GGUF file's metadata and tensor table (`None` for other formats).
    pub fn gguf_content(&self) -> Option<&candle_core::quantized::gguf_file::Content> {
        match &self.kind {
            SourceKind::Gguf { content, .. } => Some(content),
            _ => None,
        }
    }

    /// Every tensor's name, dtype (`None`: one candle cannot read, or a GGUF block
    /// quantization) and element count, from the file's table.
    fn table(&self) -> Vec<(&str, Option<DType>, u128)> {
        let count = |dims: &[usize]| dims.iter().fold(1u128, |a, &d| a.saturating_mul(d as u128));
        match &self.kind {
            SourceKind::Safetensors(s) => s
                .table
                .iter()
                .map(|(n, (_, d, shape))| (n.as_str(), *d, count(shape)))
                .collect(),
            SourceKind::Pth { pth, .. } => pth
                .tensor_infos()
                .iter()
                .map(|(n, t)| (n.as_str(), Some(t.dtype), count(t.layout.dims())))
                .collect(),
            SourceKind::Gguf { content, .. } => content
                .tensor_infos
                .iter()
                .map(|(n, t)| {
                    use candle_core::quantized::GgmlDType as G;
                    let d = match t.ggml_dtype {
                        G::F32 => Some(DType::F32),
                        G::F16 => Some(DType::F16),
                        G::BF16 => Some(DType::BF16),
                        _ => None,
                    };
                    (n.as_str(), d, count(t.shape.dims()))
                })
                .collect(),
        }
    }

    /// The checkpoint's own float dtype: the one most of its weights are stored in
    /// (`None` for a GGUF file of mostly quantized blocks).
    pub fn own_dtype(&self) -> Option<WeightDtype> {
        let mut by = [0u128; 3];
        let mut other = 0u128;
        for (_, d, n) in self.table() {
            match d.and_then(WeightDtype::of) {
                Some(w) => by[w as usize] = by[w as usize].saturating_add(n),
                None => other = other.saturating_add(n),
            }
        }
        let (i, most) = by.iter().enumerate().max_by_key(|(_, n)| **n)?;
        (*most > other).then(|| WeightDtype::ALL[i])
    }

    /// Refuse a float format no model dtype can be converted from (fp8, fp6, fp4 and the
    /// like) before any tensor is read. Integer and bool tensors are buffers (attention
    /// masks) that no loader reads, so they pass, as do types candle cannot name (bool).
    fn check_dtypes(&self) -> Result<()> {
        let bad = self.table().into_iter().find(|(_, d, _)| {
            matches!(
                d,
                Some(DType::F8E4M3 | DType::F6E2M3 | DType::F6E3M2 | DType::F4 | DType::F8E8M0)
            )
        });
        match bad {
            Some((name, d, _)) => Err(Error::TensorDtype {
                path: self.path().to_owned(),
                name: name.into(),
                dtype: d.map_or_else(String::new, |d| format!("{d:?}")),
            }),
            None => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        match &self.kind {
            SourceKind::Safetensors(s) => s.paths.first().map_or(Path::new(""), |p| p),
            SourceKind::Pth { path, .. } | SourceKind::Gguf { path, .. } => path,
        }
    }

    /// The number of weights the file's tensor table declares (saturating: a table that
    /// overflows it claims more than any config needs).
    pub fn elements(&self) -> u128 {
        self.table()
            .iter()
            .fold(0, |a, (_, _, n)| a.saturating_add(*n))
    }

    /// Refuse `cfg` (read from `origin`) if this checkpoint cannot hold its sizes.
    pub fn check_fits(&self, cfg: &crate::model::ModelConfig, origin: &Path) -> Result<()> {
        let source = match &self.kind {
            SourceKind::Safetensors(s) if s.paths.len() > 1 => format!(
                "the checkpoint of {} shards ({}, …)",
                s.paths.len(),
                self.path().display()
            ),
            _ => self.path().display().to_string(),
        };
        cfg.check_fits(origin, &source, self.elements())
    }

    pub fn names(&self) -> Vec<String> {
        match &self.kind {
            SourceKind::Safetensors(s) => s.names.clone(),
            SourceKind::Pth { pth, .. } => pth.tensor_infos().keys().cloned().collect(),
            SourceKind::Gguf { content, .. } => content.tensor_infos.keys().cloned().collect(),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.kind {
            SourceKind::Safetensors(s) => s.table.contains_key(name),
            SourceKind::Pth { pth, .. } => pth.tensor_infos().contains_key(name),
            SourceKind::Gguf { content, .. } => content.tensor_infos.contains_key(name),
        }
    }

    /// Load a tensor in [`Self::dtype`] on `dev`, or `None` if absent.
    pub fn get_opt(&self, name: &str, dev: &Device) -> Result<Option<Tensor>> {
        if !self.contains(name) {
            return Ok(None);
        }
        let path = self.path().to_owned();
        let ctx = |e: candle_core::Error| {
            Error::format(&path, format!("tensor `{name}` could not be read: {e}"))
        };
        let t = match &self.kind {
            SourceKind::Safetensors(s) => s.load(name, dev)?,
            SourceKind::Pth { pth, .. } => {
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
            SourceKind::Gguf { content, .. } => {
                let mut f = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                let q = content.tensor(&mut f, name, dev).map_err(ctx)?;
                // candle dequantizes to f32 (one tensor); it is narrowed below at once.
                q.dequantize(dev).map_err(ctx)?
            }
        };
        let t = match t.dtype() {
            d if d == self.dtype => t,
            DType::F32 | DType::F16 | DType::BF16 | DType::F64 => t.to_dtype(self.dtype)?,
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
        // Checked after narrowing: an f32 weight beyond f16's range becomes Inf there.
        if !all_finite(&t)? {
            return Err(Error::format(
                &path,
                format!(
                    "tensor `{name}` holds NaN or Inf values{}",
                    if self.dtype == DType::F32 {
                        String::new()
                    } else {
                        format!(" as {:?}", self.dtype)
                    }
                ),
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

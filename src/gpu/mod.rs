//! CUDA path of the pipeline stages: hook reduction, SAE training (many SAEs at once),
//! encode + argmax codes, and the node/edge overlap scores.
//!
//! Kernels live in `kernels/*.cu` (compiled to PTX by build.rs under `--features cuda`) and
//! are launched through cudarc. Without the `cuda` feature everything here still compiles,
//! and every entry point returns [`Error::NoCuda`].
//!
//! Semantics match the CPU path (`gpu::reference` holds the references the self-test
//! compares against; see ../shared/notes/paper.md §3–§4):
//! * SAE params in torch layouts: `w_enc` [n, d], `b_enc` [n], `w_dec` [d, n], tied `b` [d].
//! * Each step renormalises W_enc rows (over d) and W_dec rows (over n) in place, runs the
//!   forward/backward pass, removes the radial gradient per row, and takes an Adam step.
//! * Codes are `argmax_j relu(W_enc_normed (x - b) + b_enc)_j`, lowest index on ties.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod clocks;
pub mod device;
pub mod launch;
pub mod reference;

#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(feature = "cuda")]
pub use cuda::{DeviceSaes, GpuContext};

#[cfg(not(feature = "cuda"))]
mod nocuda;
#[cfg(not(feature = "cuda"))]
pub use nocuda::{DeviceSaes, GpuContext};

pub use launch::EdgeAlgo;

/// Parameters of one SAE: the CPU path's [`crate::sae::Sae`] (d, n, `w_enc` [n, d],
/// `b_enc` [n], `w_dec` [d, n], tied `b` [d]), so GPU and CPU results are interchangeable.
pub type SaeParams = crate::sae::Sae;

/// Which trainer implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrainPath {
    /// The register-tiled persistent kernel when one SAE's state fits in shared memory;
    /// else `Cublas` (FP32 unless `TrainConfig::tf32`) above 64 rows per SAE, `Batched` at
    /// most 64 (its fused outer-product Adam kernels).
    Auto,
    /// One launch for all steps, one block per SAE, params in shared memory.
    Persistent,
    /// As `Persistent`, with register tiling and fewer barriers a step: the same arithmetic
    /// per element, far fewer shared-memory loads (see `sae_train_tiled_f32` in sae.cu).
    PersistentTiled,
    /// One set of batched launches per step (tiled GEMMs); any size.
    Batched,
    /// As `Batched`, with cuBLAS GEMMs (FP32, or TF32 with `TrainConfig::tf32`).
    Cublas,
}

/// How the GPU trainer runs: the SAE's hyperparameters ([`crate::sae::SaeConfig`], the one
/// definition the CPU trainer uses too; the trainer reads steps, lr, λ and Adam's betas and
/// eps) and the choices that only the GPU has.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub sae: crate::sae::SaeConfig,
    /// Record the loss of every step (costs one small reduction per step).
    pub record_loss: bool,
    pub path: TrainPath,
    /// TF32 tensor cores in the `Cublas` path's GEMMs (ignored by the other paths).
    #[serde(default)]
    pub tf32: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            sae: crate::sae::SaeConfig::default(),
            record_loss: false,
            path: TrainPath::Auto,
            tf32: false,
        }
    }
}

impl TrainConfig {
    /// The default hyperparameters with `steps` steps.
    pub fn with_steps(steps: u32) -> Self {
        TrainConfig {
            sae: crate::sae::SaeConfig {
                steps: steps as usize,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// Steps as the kernels count them (saturating: no run takes 2³² steps).
    pub fn steps(&self) -> u32 {
        u32::try_from(self.sae.steps).unwrap_or(u32::MAX)
    }
}

/// Result of [`GpuContext::train_saes`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutput {
    /// Final parameters (after the last Adam step, not renormalised: like torch's state dict).
    pub params: Vec<SaeParams>,
    /// loss[sae][step] when `record_loss`.
    pub loss: Option<Vec<Vec<f32>>>,
    /// The implementation that ran (never `Auto`).
    pub path: TrainPath,
}

/// How the hook reduces over token positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HookReduce {
    /// Mean over the real (unmasked) positions, BOS included (the paper's setting).
    Mean,
    /// The last real position.
    Last,
}

/// Shape of a hook input z: [batch, pos, heads, d_head].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookDims {
    pub batch: usize,
    pub pos: usize,
    pub heads: usize,
    pub d_head: usize,
}

/// Per-head node counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverlapCounts {
    /// |P_h \ N_h|: codes seen on positives and never on negatives (the node score).
    pub p_not_n: Vec<u32>,
    /// |N_h \ P_h|.
    pub n_not_p: Vec<u32>,
}

/// Shape checks used by the CUDA wrappers (kept in every build so they are tested on the CPU).
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
pub(crate) mod checks {
    use super::*;

    pub fn codes_table(codes: &[u32], is_pos: &[bool], heads: usize) -> Result<()> {
        if heads == 0 {
            return Err(Error::InvalidInput("code table with 0 heads".into()));
        }
        if codes.len() != is_pos.len() * heads {
            return Err(Error::shape(
                "code table [examples, heads]",
                format!("{} x {heads} = {}", is_pos.len(), is_pos.len() * heads),
                codes.len(),
            ));
        }
        Ok(())
    }

    /// Returns (n_sae, d, n) for x [n_sae, rows, d] and per-SAE initial params.
    pub fn train_inputs(
        x_len: usize,
        rows: usize,
        init: &[SaeParams],
    ) -> Result<(usize, usize, usize)> {
        let first = init
            .first()
            .ok_or_else(|| Error::InvalidInput("train_saes: no SAEs".into()))?;
        let (d, n) = (first.d, first.n);
        if d == 0 || n == 0 {
            return Err(Error::InvalidInput(format!(
                "train_saes: SAE with d={d}, n={n}"
            )));
        }
        for p in init {
            p.check()?;
            if p.d != d || p.n != n {
                return Err(Error::shape(
                    "SAE dims (d, n)",
                    format!("({d}, {n})"),
                    format!("({}, {})", p.d, p.n),
                ));
            }
        }
        if rows == 0 {
            return Err(Error::InvalidInput("train_saes: 0 rows per SAE".into()));
        }
        let want = init.len() * rows * d;
        if x_len != want {
            return Err(Error::shape("train_saes x [n_sae, rows, d]", want, x_len));
        }
        Ok((init.len(), d, n))
    }

    /// Returns heads for x [examples, heads, d] with 1 shared SAE or one SAE per head.
    pub fn encode_inputs(params: &[SaeParams], x_len: usize, examples: usize) -> Result<usize> {
        let first = params
            .first()
            .ok_or_else(|| Error::InvalidInput("encode_argmax: no SAEs".into()))?;
        if first.d == 0 || first.n == 0 {
            return Err(Error::InvalidInput(
                "encode_argmax: SAE with d = 0 or n = 0".into(),
            ));
        }
        for p in params {
            p.check()?;
            if p.d != first.d || p.n != first.n {
                return Err(Error::InvalidInput(
                    "encode_argmax: SAEs of different sizes".into(),
                ));
            }
        }
        encode_heads(params.len(), first.d, x_len, examples)
    }

    /// Returns heads for x [examples, heads, d] (x_len floats) encoded by `count` SAEs of
    /// input size d: one shared SAE or one per head.
    pub fn encode_heads(count: usize, d: usize, x_len: usize, examples: usize) -> Result<usize> {
        let per_ex = examples * d;
        if per_ex == 0 || x_len % per_ex != 0 {
            return Err(Error::shape(
                "encode_argmax x [examples, heads, d]",
                format!("multiple of {per_ex}"),
                x_len,
            ));
        }
        let heads = x_len / per_ex;
        if count != 1 && count != heads {
            return Err(Error::shape(
                "encode_argmax SAE count (1 or heads)",
                heads,
                count,
            ));
        }
        Ok(heads)
    }

    pub fn hook_inputs(
        z: &[f32],
        mask: &[bool],
        dims: HookDims,
        w_o: Option<(&[f32], usize)>,
    ) -> Result<()> {
        let HookDims {
            batch,
            pos,
            heads,
            d_head,
        } = dims;
        if z.len() != batch * pos * heads * d_head {
            return Err(Error::shape(
                "hook z [batch, pos, heads, d_head]",
                batch * pos * heads * d_head,
                z.len(),
            ));
        }
        if mask.len() != batch * pos {
            return Err(Error::shape(
                "hook mask [batch, pos]",
                batch * pos,
                mask.len(),
            ));
        }
        if let Some((w, dm)) = w_o {
            if w.len() != heads * d_head * dm {
                return Err(Error::shape(
                    "hook W_O [heads, d_head, d_model]",
                    heads * d_head * dm,
                    w.len(),
                ));
            }
        }
        Ok(())
    }
}

/// Mask [batch, pos] from per-row lengths with right padding (real tokens first).
pub fn mask_from_lengths(lengths: &[usize], pos: usize) -> Vec<bool> {
    let mut m = vec![false; lengths.len() * pos];
    for (b, &len) in lengths.iter().enumerate() {
        m[b * pos..b * pos + len.min(pos)]
            .iter_mut()
            .for_each(|v| *v = true);
    }
    m
}

/// Ok when a CUDA device can be used: the build has the `cuda` feature and device 0 opens
/// with the embedded kernels loaded (`Err(NoCuda)` without the feature).
pub fn require_gpu() -> Result<()> {
    GpuContext::new().map(|_| ())
}

/// candle's CUDA device 0, where the model and its forward pass live on the GPU path.
pub fn cuda_device() -> Result<candle_core::Device> {
    candle_core::Device::new_cuda(0)
        .map_err(|e| Error::Cuda(format!("opening CUDA device 0 for the forward pass: {e}")))
}

/// The compute capability of `dev` when it is a CUDA device (`None` on the CPU), read
/// before a model is loaded so that a dtype the GPU cannot run is refused first.
pub fn compute_capability(dev: &candle_core::Device) -> Result<Option<(i32, i32)>> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(c) = dev {
        let cc = c
            .cuda_stream()
            .context()
            .compute_capability()
            .map_err(|e| Error::Cuda(format!("reading the compute capability: {e}")))?;
        return Ok(Some(cc));
    }
    let _ = dev;
    Ok(None)
}

/// Memory in use on `dev` (bytes: the driver's total − free, so candle's pool and other
/// processes count); `None` on the CPU or when the driver does not answer.
pub fn device_memory_used(dev: &candle_core::Device) -> Option<u64> {
    #[cfg(feature = "cuda")]
    if let candle_core::Device::Cuda(c) = dev {
        let (free, total) = c.cuda_stream().context().mem_get_info().ok()?;
        return Some((total - free) as u64);
    }
    let _ = dev;
    None
}

/// Let candle's f32 GEMMs (the forward pass on CUDA) use TF32 tensor cores. Off by default:
/// the self-test's forward parity (1e-4) is stated for full f32; `bench` reports the TF32
/// forward's error beside its time. Without the `cuda` feature this is an error.
pub fn set_tf32(on: bool) -> Result<()> {
    #[cfg(feature = "cuda")]
    {
        candle_core::cuda_backend::set_gemm_reduced_precision_f32(on);
        Ok(())
    }
    #[cfg(not(feature = "cuda"))]
    {
        let _ = on;
        Err(Error::NoCuda)
    }
}

/// One kernel's share of a batched training step (`bench`'s step breakdown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelTime {
    /// The launch's label in `enqueue_step` (e.g. `gemm_encode`, `adam_w_enc`).
    pub kernel: String,
    /// Median over the profiled steps of the time from the previous kernel's end event to
    /// this one's, in microseconds (launch gaps included: the steps run without a graph).
    pub median_us: f64,
    /// median_us over the sum of all kernels' medians.
    pub share: f64,
}

/// Per-kernel medians from per-step (label, ms) event intervals. The first step is dropped
/// when there are more (it carries one-time costs: cuBLAS set-up, first touches); a label
/// that occurs twice in a step counts as the sum. Labels keep their order in the step.
pub fn step_breakdown(steps: &[Vec<(&str, f64)>]) -> Vec<KernelTime> {
    let used = if steps.len() > 1 { &steps[1..] } else { steps };
    let mut labels: Vec<&str> = Vec::new();
    for step in used {
        for (l, _) in step {
            if !labels.contains(l) {
                labels.push(l);
            }
        }
    }
    let medians: Vec<f64> = labels
        .iter()
        .map(|l| {
            let per_step: Vec<f64> = used
                .iter()
                .map(|s| s.iter().filter(|(k, _)| k == l).map(|(_, ms)| ms).sum())
                .collect();
            clocks::median(&per_step) * 1e3
        })
        .collect();
    let total: f64 = medians.iter().sum();
    labels
        .iter()
        .zip(&medians)
        .map(|(l, &us)| KernelTime {
            kernel: (*l).to_string(),
            median_us: us,
            share: if total > 0.0 { us / total } else { 0.0 },
        })
        .collect()
}

/// True when this build has the CUDA path compiled in.
pub const fn compiled_with_cuda() -> bool {
    cfg!(feature = "cuda")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_breakdown_medians_and_shares() {
        let steps = vec![
            vec![("gemm", 9.0), ("adam", 9.0)], // the warm-up step, dropped
            vec![("gemm", 0.010), ("adam", 0.030), ("gemm", 0.010)],
            vec![("gemm", 0.030), ("adam", 0.030)],
            vec![("gemm", 0.020), ("adam", 0.090)],
        ];
        let b = step_breakdown(&steps);
        let names: Vec<&str> = b.iter().map(|k| k.kernel.as_str()).collect();
        assert_eq!(names, ["gemm", "adam"]);
        // gemm per step: 20, 30, 20 µs -> 20; adam: 30, 30, 90 -> 30
        assert!((b[0].median_us - 20.0).abs() < 1e-9, "{b:?}");
        assert!((b[1].median_us - 30.0).abs() < 1e-9, "{b:?}");
        assert!((b[0].share - 0.4).abs() < 1e-12 && (b[1].share - 0.6).abs() < 1e-12);
        // one step only: kept
        let one = step_breakdown(&steps[..1]);
        assert!((one[0].median_us - 9000.0).abs() < 1e-6);
        assert!(step_breakdown(&[]).is_empty());
    }

    #[test]
    fn without_cuda_every_entry_point_says_so() {
        if compiled_with_cuda() {
            return;
        }
        assert!(matches!(GpuContext::new(), Err(Error::NoCuda)));
    }

    #[test]
    fn shape_checks() {
        let p = reference::init_params(4, 6, 0);
        assert!(checks::train_inputs(2 * 3 * 4, 3, &[p.clone(), p.clone()]).is_ok());
        assert!(checks::train_inputs(5, 3, std::slice::from_ref(&p)).is_err());
        assert!(checks::train_inputs(0, 3, &[]).is_err());
        assert_eq!(
            checks::encode_inputs(std::slice::from_ref(&p), 5 * 3 * 4, 5).unwrap(),
            3
        );
        assert!(checks::encode_inputs(&[p.clone(), p.clone()], 5 * 3 * 4, 5).is_err());
        assert!(checks::codes_table(&[0; 6], &[true, false], 3).is_ok());
        assert!(checks::codes_table(&[0; 5], &[true, false], 3).is_err());
        let mut bad = p;
        bad.b.pop();
        assert!(checks::train_inputs(3 * 4, 3, &[bad]).is_err());
    }

    #[test]
    fn lengths_to_mask() {
        assert_eq!(
            mask_from_lengths(&[2, 0, 5], 3),
            vec![true, true, false, false, false, false, true, true, true]
        );
    }
}

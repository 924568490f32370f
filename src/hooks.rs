//! Which activations to take from a forward pass: per-head `z` [d_head] or `result`
//! = z·W_O^h [d_model] (no b_O, as TransformerLens `hook_result`), reduced over positions.
//! Mean and last are reduced on `z` first and then projected, which is exact by linearity
//! and spares the [batch, pos, heads, d_model] intermediate.
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{ForwardOptions, LogitsAt, Model};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum HookPoint {
    Z,
    Result,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reduce {
    /// Every position: [batch, pos, heads, dim], padded positions zero.
    All,
    /// Mean over real (unpadded) positions, BOS included: the paper's setting.
    Mean,
    /// The last real position.
    Last,
}

/// Hooked per-head vectors, row-major: [batch, heads, dim] (or [batch, pos, heads, dim]
/// for `Reduce::All`), heads layer-major with labels `L{l}H{h}`.
#[derive(Debug, Clone)]
pub struct HeadActs {
    pub data: Vec<f32>,
    pub shape: Vec<usize>,
    pub labels: Vec<String>,
    pub lengths: Vec<usize>,
    pub hook: HookPoint,
    pub reduce: Reduce,
}

impl HeadActs {
    pub fn batch(&self) -> usize {
        self.shape[0]
    }
    pub fn heads(&self) -> usize {
        self.shape[self.shape.len() - 2]
    }
    pub fn dim(&self) -> usize {
        self.shape[self.shape.len() - 1]
    }
    /// Vector of (example, head) for reduced activations.
    pub fn row(&self, example: usize, head: usize) -> &[f32] {
        let (h, d) = (self.heads(), self.dim());
        let o = (example * h + head) * d;
        &self.data[o..o + d]
    }
}

/// Everything `discover` needs from the model in one pass.
pub struct Collected {
    pub z: HeadActs,
    pub result: HeadActs,
    pub last_logits: Vec<Vec<f32>>,
}

/// Hooked activations still on the model's device (chunks concatenated there), so a GPU
/// pipeline can go on without a host round trip. Layouts as [`HeadActs`].
pub struct DeviceCollected {
    /// [n, heads, d_head] (or [n, max_t, heads, d_head] for `Reduce::All`).
    pub z: Tensor,
    /// [n, heads, d_model] (or [n, max_t, heads, d_model]).
    pub result: Tensor,
    /// [n, d_vocab]: logits at each prompt's last real position.
    pub last_logits: Tensor,
    pub lengths: Vec<usize>,
    pub labels: Vec<String>,
    pub reduce: Reduce,
}

impl DeviceCollected {
    /// One device→host copy per tensor.
    pub fn to_host(&self) -> Result<Collected> {
        let acts = |t: &Tensor, hook: HookPoint| -> Result<HeadActs> {
            Ok(HeadActs {
                data: t.flatten_all()?.to_vec1::<f32>()?,
                shape: t.dims().to_vec(),
                labels: self.labels.clone(),
                lengths: self.lengths.clone(),
                hook,
                reduce: self.reduce,
            })
        };
        Ok(Collected {
            z: acts(&self.z, HookPoint::Z)?,
            result: acts(&self.result, HookPoint::Result)?,
            last_logits: self.last_logits.to_vec2::<f32>()?,
        })
    }
}

/// Weights [B, T] for the position reduction: 1/len on real positions (mean), one-hot on
/// the last real one (last), 1 on real positions (all: a padding mask).
fn position_weights(lengths: &[usize], t: usize, reduce: Reduce, dev: &Device) -> Result<Tensor> {
    let mut m = vec![0f32; lengths.len() * t];
    for (i, &len) in lengths.iter().enumerate() {
        let row = &mut m[i * t..i * t + len];
        match reduce {
            Reduce::Mean => row.fill(1.0 / len as f32),
            Reduce::Last => {
                if let Some(x) = row.last_mut() {
                    *x = 1.0; // the forward refuses empty prompts, so every row has one
                }
            }
            Reduce::All => row.fill(1.0),
        }
    }
    Ok(Tensor::from_vec(m, (lengths.len(), t), dev)?)
}

/// Run `tokens` through the model in batches of `batch_size` and collect per-head z and
/// result on the model's device. Per chunk, each layer's z is reduced over positions with
/// the position weights and projected by W_O per head; the layers are stacked there and
/// nothing is copied to the host.
pub fn collect_on_device(
    model: &Model,
    tokens: &[Vec<u32>],
    reduce: Reduce,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<DeviceCollected> {
    if tokens.is_empty() {
        return Err(Error::InvalidInput("no prompts to hook".into()));
    }
    let cfg = &model.cfg;
    let (nl, nh, dh, d) = (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model);
    let heads = nl * nh;
    let max_t = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let dev = model.device();
    let (mut zs, mut rs, mut ls) = (Vec::new(), Vec::new(), Vec::new());
    let mut lengths_all = Vec::with_capacity(tokens.len());
    let mut done = 0;
    // Chunks of prompts of similar length: every chunk is padded to its longest prompt, so
    // mixing lengths computes pads. The outputs are put back in the callers' order below.
    let mut order: Vec<usize> = (0..tokens.len()).collect();
    order.sort_by_key(|&i| tokens[i].len());
    let sorted: Vec<Vec<u32>> = order.iter().map(|&i| tokens[i].clone()).collect();
    for chunk in sorted.chunks(batch_size.max(1)) {
        crate::interrupt::check()?;
        let out = model.forward(
            chunk,
            ForwardOptions {
                logits: LogitsAt::Last,
                capture_z: true,
                ..Default::default()
            },
        )?;
        let b = chunk.len();
        let t = out.z.first().map_or(0, |z| z.dim(1).unwrap_or(0));
        let pw = position_weights(&out.lengths, t, reduce, dev)?;
        let (mut zl, mut rl) = (Vec::with_capacity(nl), Vec::with_capacity(nl));
        for (l, z) in out.z.iter().enumerate() {
            // [H, dh, d]; z is f32 whatever the model's dtype, so result = z·W_O is
            // computed in f32 (W_O widened one layer at a time).
            let w_o = &model.weights.layers[l]
                .w_o
                .to_dtype(candle_core::DType::F32)?;
            if reduce == Reduce::All {
                // Padded positions zeroed; result = z_h W_O^h per position (zero where z is).
                let zm = z.broadcast_mul(&pw.reshape((b, t, 1, 1))?)?;
                let r = zm
                    .permute((2, 0, 1, 3))?
                    .reshape((nh, b * t, dh))?
                    .matmul(w_o)?
                    .reshape((nh, b, t, d))?
                    .permute((1, 2, 0, 3))?;
                zl.push(zm);
                rl.push(r);
            } else {
                // Σ_t w[b, t] z[b, t] → [B, H, dh]. A weighted sum in position order, not a
                // product: on the CPU the mean is then bit-identical to the earlier host-side
                // hooks (and so are the SAE codes and AUCs the README reports); one-hot `last`
                // is exact. candle's CUDA sum is sequential up to 32 positions and a tree
                // beyond, so there the mean agrees to rounding (the self-test's tolerance).
                let zr = z.broadcast_mul(&pw.reshape((b, t, 1, 1))?)?.sum(1)?;
                let r = zr
                    .transpose(0, 1)?
                    .contiguous()?
                    .matmul(w_o)?
                    .transpose(0, 1)?;
                zl.push(zr);
                rl.push(r);
            }
        }
        // Stack layers next to the head axis: heads are layer-major, `L{l}H{h}`.
        let (z, r) = if reduce == Reduce::All {
            let pad = |x: Tensor, w: usize| -> Result<Tensor> {
                Ok(x.reshape((b, t, heads, w))?
                    .pad_with_zeros(1, 0, max_t - t)?)
            };
            (
                pad(Tensor::stack(&zl, 2)?, dh)?,
                pad(Tensor::stack(&rl, 2)?, d)?,
            )
        } else {
            (
                Tensor::stack(&zl, 1)?.reshape((b, heads, dh))?,
                Tensor::stack(&rl, 1)?.reshape((b, heads, d))?,
            )
        };
        zs.push(z);
        rs.push(r);
        ls.push(
            out.logits
                .ok_or_else(|| Error::InvalidInput("the forward returned no logits".into()))?,
        );
        lengths_all.extend(out.lengths);
        done += b;
        crate::memory::sample_device(dev);
        progress(done);
    }
    let (mut z, mut result, mut last_logits) = (
        Tensor::cat(&zs, 0)?,
        Tensor::cat(&rs, 0)?,
        Tensor::cat(&ls, 0)?,
    );
    if order.iter().enumerate().any(|(k, &i)| k != i) {
        // Row k of the outputs is prompt order[k]; prompt i is row inverse[i].
        let mut inverse = vec![0u32; order.len()];
        for (k, &i) in order.iter().enumerate() {
            inverse[i] = k as u32;
        }
        let idx = Tensor::from_vec(inverse.clone(), order.len(), dev)?;
        z = z.index_select(&idx, 0)?;
        result = result.index_select(&idx, 0)?;
        last_logits = last_logits.index_select(&idx, 0)?;
        lengths_all = inverse.iter().map(|&k| lengths_all[k as usize]).collect();
    }
    Ok(DeviceCollected {
        z,
        result,
        last_logits,
        lengths: lengths_all,
        labels: cfg.head_labels(),
        reduce,
    })
}

/// Run `tokens` through the model in batches and collect per-head z and result on the host
/// ([`collect_on_device`] and one copy per tensor).
pub fn collect(
    model: &Model,
    tokens: &[Vec<u32>],
    reduce: Reduce,
    batch_size: usize,
    progress: impl FnMut(usize),
) -> Result<Collected> {
    collect_on_device(model, tokens, reduce, batch_size, progress)?.to_host()
}

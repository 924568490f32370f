//! Which activations to take from a forward pass: per-head `z` [d_head] or `result`
//! = z·W_O^h [d_model] (no b_O, as TransformerLens `hook_result`), reduced over positions.
//! Mean and last are reduced on `z` first and then projected, which is exact by linearity
//! and spares the [batch, pos, heads, d_model] intermediate.
use candle_core::Tensor;
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

/// Reduce one layer's z [B, T, H, dh] over positions → [B, H, dh].
fn reduce_z(z: &Tensor, lengths: &[usize], reduce: Reduce) -> Result<Tensor> {
    let (b, t, _h, _dh) = z.dims4()?;
    let dev = z.device();
    match reduce {
        Reduce::Mean => {
            let mut m = vec![0f32; b * t];
            for (i, &len) in lengths.iter().enumerate() {
                for p in 0..len {
                    m[i * t + p] = 1.0 / len as f32;
                }
            }
            let m = Tensor::from_vec(m, (b, t, 1, 1), dev)?;
            Ok(z.broadcast_mul(&m)?.sum(1)?)
        }
        Reduce::Last => {
            let rows: Vec<Tensor> = lengths
                .iter()
                .enumerate()
                .map(|(i, &len)| z.get(i)?.get(len - 1))
                .collect::<candle_core::Result<_>>()?;
            Ok(Tensor::stack(&rows, 0)?)
        }
        Reduce::All => Err(Error::InvalidInput(
            "reduce_z: All is not a reduction".into(),
        )),
    }
}

/// Run `tokens` through the model in batches and collect per-head z and result.
pub fn collect(
    model: &Model,
    tokens: &[Vec<u32>],
    reduce: Reduce,
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Collected> {
    if tokens.is_empty() {
        return Err(Error::InvalidInput("no prompts to hook".into()));
    }
    let cfg = &model.cfg;
    let (nl, nh, dh, d) = (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model);
    let heads = nl * nh;
    let max_t = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let n = tokens.len();
    let all = reduce == Reduce::All;
    let (zs, rs) = if all {
        (vec![n, max_t, heads, dh], vec![n, max_t, heads, d])
    } else {
        (vec![n, heads, dh], vec![n, heads, d])
    };
    let mut zdata = vec![0f32; zs.iter().product()];
    let mut rdata = vec![0f32; rs.iter().product()];
    let mut last_logits = Vec::with_capacity(n);
    let mut lengths_all = Vec::with_capacity(n);
    let mut done = 0;
    for chunk in tokens.chunks(batch_size.max(1)) {
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
        for (l, z) in out.z.iter().enumerate() {
            let w_o = &model.weights.layers[l].w_o; // [H, dh, d]
            if all {
                // [B, T, H, dh] → result [B, T, H, d] = per head z_h W_O^h
                let zt = z.permute((2, 0, 1, 3))?.reshape((nh, b * t, dh))?;
                let r = zt
                    .matmul(w_o)?
                    .reshape((nh, b, t, d))?
                    .permute((1, 2, 0, 3))?;
                let zv = z.flatten_all()?.to_vec1::<f32>()?;
                let rv = r.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                for bi in 0..b {
                    for p in 0..out.lengths[bi] {
                        for h in 0..nh {
                            let src = ((bi * t + p) * nh + h) * dh;
                            let dst = (((done + bi) * max_t + p) * heads + l * nh + h) * dh;
                            zdata[dst..dst + dh].copy_from_slice(&zv[src..src + dh]);
                            let src = ((bi * t + p) * nh + h) * d;
                            let dst = (((done + bi) * max_t + p) * heads + l * nh + h) * d;
                            rdata[dst..dst + d].copy_from_slice(&rv[src..src + d]);
                        }
                    }
                }
            } else {
                let zr = reduce_z(z, &out.lengths, reduce)?; // [B, H, dh]
                let r = zr
                    .transpose(0, 1)?
                    .contiguous()?
                    .matmul(w_o)?
                    .transpose(0, 1)?; // [B, H, d]
                let zv = zr.flatten_all()?.to_vec1::<f32>()?;
                let rv = r.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                for bi in 0..b {
                    for h in 0..nh {
                        let src = (bi * nh + h) * dh;
                        let dst = ((done + bi) * heads + l * nh + h) * dh;
                        zdata[dst..dst + dh].copy_from_slice(&zv[src..src + dh]);
                        let src = (bi * nh + h) * d;
                        let dst = ((done + bi) * heads + l * nh + h) * d;
                        rdata[dst..dst + d].copy_from_slice(&rv[src..src + d]);
                    }
                }
            }
        }
        if let Some(lg) = out.logits {
            last_logits.extend(lg.to_vec2::<f32>()?);
        }
        lengths_all.extend(out.lengths);
        done += b;
        progress(done);
    }
    let labels = cfg.head_labels();
    Ok(Collected {
        z: HeadActs {
            data: zdata,
            shape: zs,
            labels: labels.clone(),
            lengths: lengths_all.clone(),
            hook: HookPoint::Z,
            reduce,
        },
        result: HeadActs {
            data: rdata,
            shape: rs,
            labels,
            lengths: lengths_all,
            hook: HookPoint::Result,
            reduce,
        },
        last_logits,
    })
}

//! The forward pass for f32 weights on the CPU, on host buffers: what `discover`, patching
//! and the baselines' forwards run on the CPU. The candle forward ([`super::forward`])
//! stays the path for CUDA and half precision, and is this one's reference:
//! `tests/forward_cpu.rs` holds every family equal to it, option by option.
//!
//! Why a second forward: on a few cores candle's CPU ops run one after another, each
//! allocating its result; its batched attention calls `gemm` once per (prompt, head) on
//! 18 × 64 matrices after copying k and v for every query head; and the bias-free families
//! add zero biases. Here the products are the same `gemm` calls on the weights borrowed
//! from their tensors (no copy), q, k and v land side by side in one buffer, the last
//! layer's MLP runs on the rows the logits read, and the work between the products
//! (norms, rotary, attention for short prompts, activations) runs in fused passes over rows
//! split across threads.
use candle_core::op::{Gelu, GeluErf, UnaryOpT};
use candle_core::{Device, Storage, StorageRef, Tensor};
use rayon::prelude::*;

use super::config::{Activation, ModelConfig, Norm, PosEmbedding, RopeScaling};
use super::forward::{
    check_resume, check_tokens, rope_inv_freq, ForwardOptions, ForwardOutput, LayerRt, LogitsAt,
    Runtime,
};
use super::weights::{NormWeights, Weights};
use crate::error::{Error, Result};
use crate::linalg::gemm_into;

/// A contiguous f32 CPU tensor's elements, borrowed: the read guard keeps them alive.
struct Host<'a> {
    guard: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> Host<'a> {
    fn of(t: &'a Tensor, what: &str) -> Result<Self> {
        let (guard, layout) = t.storage_and_layout();
        let (start, end) = layout
            .contiguous_offsets()
            .ok_or_else(|| Error::InvalidInput(format!("CPU forward: {what} is not contiguous")))?;
        match &*guard {
            Storage::Cpu(c) => {
                c.as_slice::<f32>()?;
            }
            _ => {
                return Err(Error::InvalidInput(format!(
                    "CPU forward: {what} is not on the CPU"
                )))
            }
        }
        Ok(Self { guard, start, end })
    }

    /// The elements (checked to be f32 on the CPU in [`Host::of`]; were that ever not so,
    /// the empty slice fails the product's length check instead of panicking).
    fn get(&self) -> &[f32] {
        if let Storage::Cpu(c) = &*self.guard {
            if let Ok(s) = c.as_slice::<f32>() {
                return &s[self.start..self.end];
            }
        }
        &[]
    }
}

fn host_opt<'a>(t: &'a Option<Tensor>, what: &str) -> Result<Option<Host<'a>>> {
    t.as_ref().map(|t| Host::of(t, what)).transpose()
}

/// A norm's weight and bias, borrowed.
struct HostNorm<'a> {
    w: Option<Host<'a>>,
    b: Option<Host<'a>>,
}

impl<'a> HostNorm<'a> {
    fn of(n: &'a NormWeights, what: &str) -> Result<Self> {
        Ok(Self {
            w: host_opt(&n.w, what)?,
            b: host_opt(&n.b, what)?,
        })
    }
}

/// Whether [`forward`] runs `w` (f32 weights on the CPU); otherwise the candle forward.
pub(crate) fn applies(w: &Weights) -> bool {
    w.w_e.device().is_cpu() && w.dtype() == candle_core::DType::F32
}

/// Rows of `n` floats, split over the threads in blocks of about 16 kB.
fn rows_per_task(width: usize) -> usize {
    (4096 / width.max(1)).max(1)
}

/// LayerNorm or RMSNorm of each `d`-row of `x` into `out` (candle's order of operations:
/// centre, mean square, divide by √(· + eps), then weight and bias).
fn norm_rows(x: &[f32], out: &mut [f32], d: usize, n: &HostNorm, kind: Norm, eps: f64) {
    let (w, b) = (n.w.as_ref().map(Host::get), n.b.as_ref().map(Host::get));
    let eps = eps as f32;
    let per = rows_per_task(d) * d;
    out.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
                norm_row(x, o, w, b, kind, eps);
            }
        });
}

fn norm_row(x: &[f32], o: &mut [f32], w: Option<&[f32]>, b: Option<&[f32]>, kind: Norm, eps: f32) {
    let d = x.len() as f32;
    match kind {
        Norm::LayerNorm => {
            let mean = x.iter().sum::<f32>() / d;
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x - mean;
            }
            let var = o.iter().map(|v| v * v).sum::<f32>() / d;
            let s = (var + eps).sqrt();
            o.iter_mut().for_each(|v| *v /= s);
        }
        Norm::RmsNorm => {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / d;
            let s = (ms + eps).sqrt();
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x / s;
            }
        }
    }
    if let Some(w) = w {
        o.iter_mut().zip(w).for_each(|(o, w)| *o *= w);
    }
    if let Some(b) = b {
        o.iter_mut().zip(b).for_each(|(o, b)| *o += b);
    }
}

/// `x` rows (`d` wide) normed in place.
fn norm_in_place(x: &mut [f32], d: usize, n: &HostNorm, kind: Norm, eps: f64) {
    let (w, b) = (n.w.as_ref().map(Host::get), n.b.as_ref().map(Host::get));
    let eps = eps as f32;
    let per = rows_per_task(d) * d;
    x.par_chunks_mut(per).for_each(|x| {
        let mut tmp = vec![0f32; d];
        for x in x.chunks_exact_mut(d) {
            norm_row(x, &mut tmp, w, b, kind, eps);
            x.copy_from_slice(&tmp);
        }
    });
}

/// `y[rows, n] = x[rows, k] · w[k, n] (+ b)`, into a fresh buffer.
fn linear(
    x: &[f32],
    rows: usize,
    w: &Host,
    b: Option<&Host>,
    k: usize,
    n: usize,
) -> Result<Vec<f32>> {
    let mut y = vec![0f32; rows * n];
    gemm_into(&mut y, n, x, k, w.get(), n, (rows, k, n), false)?;
    if let Some(b) = b {
        add_rows(&mut y, b.get(), n);
    }
    Ok(y)
}

/// Adds `b` to every `n`-wide row of `y` (nothing to do for the zero biases of the
/// bias-free families, which would cost a pass over `y`).
fn add_rows(y: &mut [f32], b: &[f32], n: usize) {
    if b.iter().all(|&v| v == 0.0) {
        return;
    }
    let per = rows_per_task(n) * n;
    y.par_chunks_mut(per).for_each(|y| {
        for y in y.chunks_exact_mut(n) {
            y.iter_mut().zip(b).for_each(|(y, b)| *y += b);
        }
    });
}

/// `x += y`, element by element.
fn add_into(x: &mut [f32], y: &[f32]) {
    x.par_chunks_mut(4096)
        .zip(y.par_chunks(4096))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(x, y)| *x += y));
}

/// cos and sin [t, half] of the rotary angles, as [`super::forward::rope_tables`] computes
/// them (f32 angle p·f).
fn rope_tables(t: usize, dim: usize, base: f32, scaling: RopeScaling) -> (Vec<f32>, Vec<f32>) {
    let inv = rope_inv_freq(dim, base, scaling);
    let (mut c, mut s) = (
        Vec::with_capacity(t * inv.len()),
        Vec::with_capacity(t * inv.len()),
    );
    for p in 0..t {
        for f in &inv {
            let a = p as f32 * f;
            c.push(a.cos());
            s.push(a.sin());
        }
    }
    (c, s)
}

/// Rotates one head vector's first 2·`cos.len()` dimensions in place.
fn rope_head(v: &mut [f32], cos: &[f32], sin: &[f32], interleaved: bool) {
    let half = cos.len();
    if interleaved {
        for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
            let (x0, x1) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = x0 * c - x1 * s;
            v[2 * i + 1] = x0 * s + x1 * c;
        }
    } else {
        for (i, (c, s)) in cos.iter().zip(sin).enumerate() {
            let (x1, x2) = (v[i], v[i + half]);
            v[i] = x1 * c - x2 * s;
            v[i + half] = x2 * c + x1 * s;
        }
    }
}

/// What attention needs of the layer, fixed for the batch.
struct AttnSpec<'a> {
    t: usize,
    h: usize,
    kv: usize,
    dh: usize,
    scale: f32,
    softcap: Option<f32>,
    window: Option<usize>,
    /// cos, sin [t, half]; None: no rotary embedding.
    rope: Option<(&'a [f32], &'a [f32])>,
    interleaved: bool,
    q_norm: Option<&'a [f32]>,
    k_norm: Option<&'a [f32]>,
    eps: f32,
}

/// One prompt's attention: `qkv` [t, (h + 2kv)·dh] (q, k, v side by side, rotated and
/// normed in place) into `z` [t, h·dh]. Query head i reads key/value head i / (h / kv).
/// Scores and the weighted sum are accumulated along the key and the d_head axes, so the
/// inner loops are element-wise over contiguous rows and vectorise.
fn attend_prompt(spec: &AttnSpec, qkv: &mut [f32], z: &mut [f32]) {
    let AttnSpec { t, h, kv, dh, .. } = *spec;
    let w3 = (h + 2 * kv) * dh;
    // Per-head q/k norms (RMS over d_head), then rotary, on every q and k head vector.
    for p in 0..t {
        let row = &mut qkv[p * w3..p * w3 + (h + kv) * dh];
        for (i, v) in row.chunks_exact_mut(dh).enumerate() {
            let norm = if i < h { spec.q_norm } else { spec.k_norm };
            if let Some(w) = norm {
                let ms = v.iter().map(|x| x * x).sum::<f32>() / dh as f32;
                let s = (ms + spec.eps).sqrt();
                v.iter_mut().zip(w).for_each(|(x, w)| *x = *x / s * w);
            }
            if let Some((c, s)) = spec.rope {
                let half = c.len() / t;
                rope_head(
                    v,
                    &c[p * half..(p + 1) * half],
                    &s[p * half..(p + 1) * half],
                    spec.interleaved,
                );
            }
        }
    }
    let rep = h / kv;
    let mut kt = vec![0f32; dh * t]; // one key head transposed: [dh, t]
    let mut scores = vec![0f32; t];
    for g in 0..kv {
        let k_off = (h + g) * dh;
        let v_off = (h + kv + g) * dh;
        for p in 0..t {
            for c in 0..dh {
                kt[c * t + p] = qkv[p * w3 + k_off + c];
            }
        }
        for hq in g * rep..(g + 1) * rep {
            for i in 0..t {
                // Keys j ≤ i, and within the window on local layers.
                let j0 = spec.window.map_or(0, |w| (i + 1).saturating_sub(w));
                let keys = j0..i + 1;
                let q = &qkv[i * w3 + hq * dh..i * w3 + (hq + 1) * dh];
                let s = &mut scores[keys.clone()];
                s.fill(0.0);
                for (c, &qc) in q.iter().enumerate() {
                    let krow = &kt[c * t + j0..c * t + i + 1];
                    s.iter_mut().zip(krow).for_each(|(s, k)| *s += qc * k);
                }
                let mut m = f32::NEG_INFINITY;
                for x in s.iter_mut() {
                    *x *= spec.scale;
                    if let Some(cap) = spec.softcap {
                        *x = (*x / cap).tanh() * cap;
                    }
                    m = m.max(*x);
                }
                let mut sum = 0f32;
                for x in s.iter_mut() {
                    *x = (*x - m).exp();
                    sum += *x;
                }
                let zi = &mut z[i * h * dh + hq * dh..i * h * dh + (hq + 1) * dh];
                zi.fill(0.0);
                for (j, &e) in keys.zip(s.iter()) {
                    let p = e / sum;
                    let v = &qkv[j * w3 + v_off..j * w3 + v_off + dh];
                    zi.iter_mut().zip(v).for_each(|(z, v)| *z += p * v);
                }
            }
        }
    }
}

/// The same loop compiled for AVX2 (eight lanes instead of four); Rust fuses no multiply
/// and add, so both give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_prompt_avx2(spec: &AttnSpec, qkv: &mut [f32], z: &mut [f32]) {
    attend_prompt(spec, qkv, z)
}

/// Attention for every prompt of the batch, prompts split over the threads.
fn attend_batch(spec: &AttnSpec, qkv: &mut [f32], z: &mut [f32]) {
    let AttnSpec { t, h, kv, dh, .. } = *spec;
    let w3 = (h + 2 * kv) * dh;
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    qkv.par_chunks_mut(t * w3)
        .zip(z.par_chunks_mut(t * h * dh))
        .for_each(|(qkv, z)| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: this CPU has AVX2 (checked above), the only requirement of a
                // `target_feature(enable = "avx2")` function; its body is safe Rust.
                return unsafe { attend_prompt_avx2(spec, qkv, z) };
            }
            attend_prompt(spec, qkv, z)
        });
}

/// The MLP's activation of `pre` (x·W_in + b_in), gated by `gate` (x·W_gate) where the
/// family has one, in place in `pre`; candle's functions for GELU.
fn activate(act: Activation, pre: &mut [f32], gate: Option<&[f32]>) -> Result<()> {
    let f: fn(f32) -> f32 = match act {
        Activation::GeluNew | Activation::GeGlu => Gelu::f32,
        Activation::Gelu => GeluErf::f32,
        Activation::Relu => |v| v.max(0.0),
        Activation::SwiGlu => |v| v / (1.0 + (-v).exp()),
    };
    let gated = matches!(act, Activation::SwiGlu | Activation::GeGlu);
    match (gated, gate) {
        (false, _) => pre
            .par_chunks_mut(4096)
            .for_each(|p| p.iter_mut().for_each(|v| *v = f(*v))),
        (true, Some(g)) => pre
            .par_chunks_mut(4096)
            .zip(g.par_chunks(4096))
            .for_each(|(p, g)| p.iter_mut().zip(g).for_each(|(p, &g)| *p *= f(g))),
        (true, None) => {
            return Err(Error::UnsupportedModel(
                "gated MLP without a gate matrix".into(),
            ))
        }
    }
    Ok(())
}

/// The rows `idx` of `x` (`d` wide), gathered.
fn gather(x: &[f32], d: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&r| x[r * d..(r + 1) * d].iter().copied())
        .collect()
}

/// The forward pass over a right-padded batch on the CPU in f32: the same contract and
/// outputs as [`super::forward::forward`] (which see), to rounding.
pub(crate) fn forward(
    cfg: &ModelConfig,
    w: &Weights,
    rt: &Runtime,
    tokens: &[Vec<u32>],
    mut opts: ForwardOptions<'_>,
) -> Result<ForwardOutput> {
    let (lengths, t) = check_tokens(cfg, tokens)?;
    let b = tokens.len();
    let (d, h, kv, dh) = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head);
    let n = b * t;
    let cpu = Device::Cpu;
    let tensor =
        |v: Vec<f32>, shape: &[usize]| -> Result<Tensor> { Ok(Tensor::from_vec(v, shape, &cpu)?) };
    // Token (+ standard positional) embeddings; Shortformer positions go to q/k only.
    let w_e = Host::of(&w.w_e, "W_E")?;
    let w_pos = host_opt(&w.w_pos, "W_pos")?;
    let pos_rows = |x: &mut [f32], add: bool| -> Result<Vec<f32>> {
        let wp = w_pos
            .as_ref()
            .ok_or_else(|| Error::UnsupportedModel("missing positional embedding".into()))?
            .get();
        let mut p = Vec::new();
        for r in 0..n {
            let row = &wp[(r % t) * d..(r % t + 1) * d];
            if add {
                x[r * d..(r + 1) * d]
                    .iter_mut()
                    .zip(row)
                    .for_each(|(x, p)| *x += p);
            } else {
                p.extend_from_slice(row);
            }
        }
        Ok(p)
    };
    let mut x: Vec<f32> = Vec::with_capacity(n * d);
    for s in tokens {
        for &tok in s.iter().chain(std::iter::repeat_n(&0u32, t - s.len())) {
            let tok = tok as usize;
            x.extend_from_slice(
                w_e.get()
                    .get(tok * d..(tok + 1) * d)
                    .ok_or_else(|| Error::shape("W_E rows", cfg.d_vocab * d, w_e.get().len()))?,
            );
        }
    }
    let short_pos = match cfg.pos {
        PosEmbedding::Standard => {
            pos_rows(&mut x, true)?;
            None
        }
        PosEmbedding::Shortformer => Some(pos_rows(&mut x, false)?),
        PosEmbedding::Rotary { .. } => None,
    };
    let mut out = ForwardOutput::new(lengths.clone());
    let first = match opts.start.take() {
        Some((l0, r)) => {
            check_resume(l0, &r, rt.layers.len(), (b, t, d))?;
            x = r
                .to_dtype(candle_core::DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            l0
        }
        None => 0,
    };
    // Rotary tables, global and local.
    let (rope, local_rope, interleaved) = match cfg.pos {
        PosEmbedding::Rotary { base, interleaved } => {
            let global = rope_tables(t, cfg.rotary_dim(), base, cfg.details.rope_scaling);
            let has_local = cfg.details.local_layers.iter().any(|&x| x);
            let local = match (has_local, cfg.details.rope_local_base) {
                (true, Some(lb)) => Some(rope_tables(t, cfg.rotary_dim(), lb, RopeScaling::None)),
                _ => None,
            };
            (Some(global), local, interleaved)
        }
        _ => (None, None, false),
    };
    // The rows the logits read: after the last layer only they matter, so its MLP runs on
    // them alone (unless the caller keeps the residual stream or all positions' logits).
    let last_rows: Vec<usize> = lengths
        .iter()
        .enumerate()
        .map(|(i, &len)| i * t + len - 1)
        .collect();
    let n_layers = rt.layers.len();
    let w3 = (h + 2 * kv) * dh;
    for (li, l) in rt.layers.iter().enumerate().skip(first) {
        if opts.capture_resid {
            out.resid.push(tensor(x.clone(), &[b, t, d])?);
        }
        let lw = LayerHost::of(l)?;
        let mut xn = vec![0f32; n * d];
        norm_rows(&x, &mut xn, d, &lw.ln1, cfg.norm, cfg.eps);
        let qk_in: std::borrow::Cow<[f32]> = match &short_pos {
            Some(p) => {
                let mut v = xn.clone();
                add_into(&mut v, p);
                v.into()
            }
            None => (&xn[..]).into(),
        };
        let mut qkv = vec![0f32; n * w3];
        // q, k and v side by side in each row of `qkv`.
        for (off, input, wt, width) in [
            (0, &qk_in[..], &lw.wq, h * dh),
            (h * dh, &qk_in[..], &lw.wk, kv * dh),
            ((h + kv) * dh, &xn[..], &lw.wv, kv * dh),
        ] {
            gemm_into(
                &mut qkv[off..],
                w3,
                input,
                d,
                wt.get(),
                width,
                (n, d, width),
                false,
            )?;
        }
        drop(qk_in);
        let mut bias = Vec::with_capacity(w3);
        for bt in [&lw.bq, &lw.bk, &lw.bv] {
            bias.extend_from_slice(bt.get());
        }
        add_rows(&mut qkv, &bias, w3);
        let local = cfg.is_local(li);
        let tables = match (&local_rope, local) {
            (Some(lr), true) => Some(lr),
            _ => rope.as_ref(),
        };
        let spec = AttnSpec {
            t,
            h,
            kv,
            dh,
            scale: cfg.attn_scale() as f32,
            softcap: cfg.details.attn_softcap.map(|c| c as f32),
            window: if local {
                cfg.details.sliding_window
            } else {
                None
            },
            rope: tables.map(|(c, s)| (&c[..], &s[..])),
            interleaved,
            q_norm: lw.q_norm.as_ref().and_then(|n| n.w.as_ref()).map(Host::get),
            k_norm: lw.k_norm.as_ref().and_then(|n| n.w.as_ref()).map(Host::get),
            eps: cfg.eps as f32,
        };
        let mut z = vec![0f32; n * h * dh];
        attend_batch(&spec, &mut qkv, &mut z);
        drop(qkv);
        if let Some(iv) = opts.intervention.as_deref_mut() {
            let zt = tensor(z, &[b, t, h, dh])?;
            z = match iv.on_z(li, &zt, &lengths)? {
                Some(nz) => {
                    if nz.dims() != zt.dims() {
                        return Err(Error::shape(
                            format!("intervention on layer {li} z"),
                            format!("{:?}", zt.dims()),
                            format!("{:?}", nz.dims()),
                        ));
                    }
                    nz.to_dtype(candle_core::DType::F32)?
                        .flatten_all()?
                        .to_vec1::<f32>()?
                }
                None => zt.flatten_all()?.to_vec1::<f32>()?,
            };
        }
        let mut attn = linear(&z, n, &lw.wo, Some(&lw.bo), h * dh, d)?;
        if let Some(p) = &lw.ln1_post {
            norm_in_place(&mut attn, d, p, cfg.norm, cfg.eps);
        }
        if opts.capture_z {
            out.z.push(tensor(z, &[b, t, h, dh])?);
        }
        if opts.capture_attn_out {
            out.attn_out.push(tensor(attn.clone(), &[b, t, d])?);
        }
        let Some(m) = &lw.mlp else {
            add_into(&mut x, &attn);
            continue;
        };
        // The MLP reads x + attn, or the block's input in GPT-NeoX's parallel block.
        let only_last = li + 1 == n_layers && !opts.capture_resid && opts.logits != LogitsAt::All;
        // mid = x + attn; the MLP reads mid, or the block's input x in GPT-NeoX's parallel
        // block (then x is kept beside mid, else mid takes x's buffer).
        let (x_rows, attn_rows, rows) = if only_last {
            (gather(&x, d, &last_rows), gather(&attn, d, &last_rows), b)
        } else {
            (std::mem::take(&mut x), attn, n)
        };
        let (mid, block_input) = if cfg.details.parallel_attn_mlp {
            let mut mid = x_rows.clone();
            add_into(&mut mid, &attn_rows);
            (mid, Some(x_rows))
        } else {
            let mut mid = x_rows;
            add_into(&mut mid, &attn_rows);
            (mid, None)
        };
        let input = block_input.as_deref().unwrap_or(&mid);
        let dm = cfg.d_mlp;
        let mut xn2 = vec![0f32; rows * d];
        norm_rows(input, &mut xn2, d, &lw.ln2, cfg.norm, cfg.eps);
        let mut pre = linear(&xn2, rows, &m.w_in, Some(&m.b_in), d, dm)?;
        let gate = match &m.w_gate {
            Some(g) => Some(linear(&xn2, rows, g, None, d, dm)?),
            None => None,
        };
        activate(cfg.act, &mut pre, gate.as_deref())?;
        let mut mo = linear(&pre, rows, &m.w_out, Some(&m.b_out), dm, d)?;
        if let Some(p) = &lw.ln2_post {
            norm_in_place(&mut mo, d, p, cfg.norm, cfg.eps);
        }
        let mut next = mid;
        add_into(&mut next, &mo);
        if only_last {
            for (i, &r) in last_rows.iter().enumerate() {
                x[r * d..(r + 1) * d].copy_from_slice(&next[i * d..(i + 1) * d]);
            }
        } else {
            x = next;
        }
    }
    let unembed = |rows: &[f32], count: usize| -> Result<Vec<f32>> {
        let mut xn = vec![0f32; count * d];
        norm_rows(
            rows,
            &mut xn,
            d,
            &HostNorm::of(&w.ln_final, "ln_final")?,
            cfg.norm,
            cfg.eps,
        );
        let (w_u, b_u) = (Host::of(&w.w_u, "W_U")?, Host::of(&w.b_u, "b_U")?);
        let mut y = linear(&xn, count, &w_u, Some(&b_u), d, cfg.d_vocab)?;
        if let Some(cap) = cfg.details.final_softcap {
            let cap = cap as f32;
            y.par_chunks_mut(4096)
                .for_each(|y| y.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap));
        }
        Ok(y)
    };
    out.logits = match opts.logits {
        LogitsAt::None => None,
        LogitsAt::Last => Some(tensor(
            unembed(&gather(&x, d, &last_rows), b)?,
            &[b, cfg.d_vocab],
        )?),
        LogitsAt::All => Some(tensor(unembed(&x, n)?, &[b, t, cfg.d_vocab])?),
    };
    Ok(out)
}

/// One layer's weights, borrowed from its tensors.
struct LayerHost<'a> {
    ln1: HostNorm<'a>,
    wq: Host<'a>,
    bq: Host<'a>,
    wk: Host<'a>,
    bk: Host<'a>,
    wv: Host<'a>,
    bv: Host<'a>,
    wo: Host<'a>,
    bo: Host<'a>,
    ln2: HostNorm<'a>,
    mlp: Option<MlpHost<'a>>,
    ln1_post: Option<HostNorm<'a>>,
    ln2_post: Option<HostNorm<'a>>,
    q_norm: Option<HostNorm<'a>>,
    k_norm: Option<HostNorm<'a>>,
}

struct MlpHost<'a> {
    w_in: Host<'a>,
    b_in: Host<'a>,
    w_gate: Option<Host<'a>>,
    w_out: Host<'a>,
    b_out: Host<'a>,
}

impl<'a> LayerHost<'a> {
    fn of(l: &'a LayerRt) -> Result<Self> {
        let norm = |n: &'a Option<NormWeights>, what: &str| -> Result<Option<HostNorm<'a>>> {
            n.as_ref().map(|n| HostNorm::of(n, what)).transpose()
        };
        Ok(Self {
            ln1: HostNorm::of(&l.ln1, "ln1")?,
            wq: Host::of(&l.wq, "W_Q")?,
            bq: Host::of(&l.bq, "b_Q")?,
            wk: Host::of(&l.wk, "W_K")?,
            bk: Host::of(&l.bk, "b_K")?,
            wv: Host::of(&l.wv, "W_V")?,
            bv: Host::of(&l.bv, "b_V")?,
            wo: Host::of(&l.wo, "W_O")?,
            bo: Host::of(&l.bo, "b_O")?,
            ln2: HostNorm::of(&l.ln2, "ln2")?,
            mlp: l
                .mlp
                .as_ref()
                .map(|m| -> Result<MlpHost<'a>> {
                    Ok(MlpHost {
                        w_in: Host::of(&m.w_in, "W_in")?,
                        b_in: Host::of(&m.b_in, "b_in")?,
                        w_gate: host_opt(&m.w_gate, "W_gate")?,
                        w_out: Host::of(&m.w_out, "W_out")?,
                        b_out: Host::of(&m.b_out, "b_out")?,
                    })
                })
                .transpose()?,
            ln1_post: norm(&l.ln1_post, "ln1_post")?,
            ln2_post: norm(&l.ln2_post, "ln2_post")?,
            q_norm: norm(&l.q_norm, "q_norm")?,
            k_norm: norm(&l.k_norm, "k_norm")?,
        })
    }
}

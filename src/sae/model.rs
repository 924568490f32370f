//! One SAE (d → n → d) with the exact forward, loss and hand-written backward of the paper's
//! code (a vendored early `sparse_autoencoder` library; notes/paper.md §3.2–3.3).
//!
//! Layouts are PyTorch's `Linear` (out × in), row-major:
//! `w_enc` [n, d], `b_enc` [n], `w_dec` [d, n] (no bias), `b` [d] (the tied bias).
//!
//! Forward on rows `x` [m, d], with `Ŵ` the row-normalised weights (below):
//! ```text
//! xc  = x − b                      pre = xc · Ŵ_encᵀ + b_enc      f = ReLU(pre)     [m, n]
//! x̂   = f · Ŵ_decᵀ + b                                                             [m, d]
//! L   = Σ(x̂ − x)² / (m·d)  +  λ · Σ f / m                (f ≥ 0, so Σ|f| = Σ f)
//! ```
//! Row normalisation (`F.normalize(W, dim=-1)`: `w / max(‖w‖₂, 1e-12)`) is applied to every
//! row of `w_enc` (over d) and — the old library's quirk — to every row of `w_dec` (over the
//! n features, i.e. each of the d output rows is unit-norm, not each dictionary column).
//! In the paper's code it runs in place, without gradient, at every forward; the gradient is
//! then that of the loss with respect to the *normalised* weights taken as free leaves.
//!
//! Backward (what [`forward_backward`] returns, `g_x̂ = 2(x̂−x)/(m·d)`):
//! ```text
//! ∂b      = Σ_rows g_x̂  −  (Σ_rows g_pre) · Ŵ_enc
//! ∂Ŵ_dec  = g_x̂ᵀ · f                                    [d, n]
//! g_f     = g_x̂ · Ŵ_dec + (λ/m)·[f > 0]                  [m, n]
//! g_pre   = g_f ⊙ [pre > 0]     (ReLU'(0) = 0, d|f|/df at 0 = 0, as in torch)
//! ∂b_enc  = Σ_rows g_pre
//! ∂Ŵ_enc  = g_preᵀ · xc                                  [n, d]
//! ```
//! The training step then removes each weight row's radial component (the library's
//! backward hook): `g − (Σ g⊙W) · W/‖W‖` (see [`remove_radial`]).
//!
//! Numerics: all tensors and gradient reductions are f32; row sums and dot products are
//! accumulated sequentially in index order; the big products go through
//! [`crate::linalg::matmul`]. The reported loss is accumulated in f64 and rounded to f32.
use crate::error::{Error, Result};
use crate::linalg::matmul;
use rand::{Rng, RngCore};
use rand_distr::{Distribution, StandardNormal};

/// `F.normalize`'s floor on the norm.
pub const NORM_EPS: f32 = 1e-12;

/// SAE parameters. The weights are stored as the optimiser left them; every use
/// (forward, encode, loss) renormalises a copy first, as the paper's code does in place.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sae {
    /// Input width (d_model of the hooked head outputs).
    pub d: usize,
    /// Number of learned features.
    pub n: usize,
    /// Encoder weight [n, d].
    pub w_enc: Vec<f32>,
    /// Encoder bias [n].
    pub b_enc: Vec<f32>,
    /// Decoder weight [d, n] (no decoder bias).
    pub w_dec: Vec<f32>,
    /// Tied bias [d]: subtracted before the encoder, added after the decoder.
    pub b: Vec<f32>,
}

/// Gradients of the loss with respect to each parameter, same layouts as [`Sae`].
#[derive(Debug, Clone, PartialEq)]
pub struct Grads {
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    pub w_dec: Vec<f32>,
    pub b: Vec<f32>,
}

/// Rows summed side by side: each row's sum is still one sequential f32 chain in index
/// order (so the bits are those of a row-at-a-time loop), but `ROW_BLOCK` independent chains
/// are in flight at once instead of one add waiting on the previous. A per-head SAE's
/// weights are 264 rows of 64 or 200, and the one-chain loop was a third of its step.
const ROW_BLOCK: usize = 8;

/// For each row r of `a` and `b` ([rows, cols]): `Σ_j a[r,j]·b[r,j]` accumulated in f32 in
/// index order, written to `out[r]`.
fn row_dots(a: &[f32], b: &[f32], rows: usize, cols: usize, out: &mut [f32]) {
    let mut r0 = 0;
    while r0 + ROW_BLOCK <= rows {
        // Slices of exactly `cols` elements, so the loop below needs no bounds checks.
        let ra: [&[f32]; ROW_BLOCK] = std::array::from_fn(|i| &a[(r0 + i) * cols..][..cols]);
        let rb: [&[f32]; ROW_BLOCK] = std::array::from_fn(|i| &b[(r0 + i) * cols..][..cols]);
        let mut acc = [0.0f32; ROW_BLOCK];
        for j in 0..cols {
            for i in 0..ROW_BLOCK {
                acc[i] += ra[i][j] * rb[i][j];
            }
        }
        out[r0..r0 + ROW_BLOCK].copy_from_slice(&acc);
        r0 += ROW_BLOCK;
    }
    for (r, o) in out.iter_mut().enumerate().take(rows).skip(r0) {
        let mut s = 0.0f32;
        for (x, y) in a[r * cols..(r + 1) * cols]
            .iter()
            .zip(&b[r * cols..(r + 1) * cols])
        {
            s += x * y;
        }
        *o = s;
    }
}

/// Normalise each of the `rows` rows of `w` ([rows, cols]) to unit L2 norm in place:
/// `w / max(‖w‖, 1e-12)`, the norm accumulated in f32 in index order.
pub fn normalise_rows(w: &mut [f32], rows: usize, cols: usize) {
    let rows = rows.min(w.len() / cols.max(1));
    let mut ss = vec![0.0f32; rows];
    row_dots(w, w, rows, cols, &mut ss);
    for (row, &s) in w.chunks_exact_mut(cols.max(1)).zip(&ss) {
        let denom = s.sqrt().max(NORM_EPS);
        for v in row.iter_mut() {
            *v /= denom;
        }
    }
}

/// The library's weight-gradient hook, per row: `g − (Σ g⊙w) · w/‖w‖` (no floor on ‖w‖;
/// a zero row leaves its gradient unchanged). With unit-norm `w` this projects the gradient
/// onto the tangent space of the sphere, i.e. it equals the gradient of `L(w/‖w‖)` at `w`.
pub fn remove_radial(grad: &mut [f32], w: &[f32], rows: usize, cols: usize) {
    let rows = rows
        .min(w.len() / cols.max(1))
        .min(grad.len() / cols.max(1));
    let mut dot = vec![0.0f32; rows];
    let mut ss = vec![0.0f32; rows];
    row_dots(grad, w, rows, cols, &mut dot);
    row_dots(w, w, rows, cols, &mut ss);
    for r in 0..rows {
        let norm = ss[r].sqrt();
        if norm == 0.0 {
            continue;
        }
        let wr = &w[r * cols..(r + 1) * cols];
        let gr = &mut grad[r * cols..(r + 1) * cols];
        for (g, w) in gr.iter_mut().zip(wr) {
            *g -= dot[r] * (w / norm);
        }
    }
}

impl Sae {
    /// The library's initialisation, drawn from `rng` in this order: `w_enc` (n·d draws of
    /// N(0,1), row-major) then row-normalised; `b_enc` (n draws of U[−1/√d, 1/√d));
    /// `w_dec` (d·n draws of N(0,1)) then row-normalised; `b` = 0.
    pub fn init(d: usize, n: usize, rng: &mut impl RngCore) -> Result<Self> {
        if d == 0 || n == 0 {
            return Err(Error::InvalidInput(format!(
                "SAE needs d > 0 and n > 0 (got d={d}, n={n})"
            )));
        }
        let mut w_enc: Vec<f32> = (0..n * d).map(|_| StandardNormal.sample(rng)).collect();
        normalise_rows(&mut w_enc, n, d);
        let bound = 1.0 / (d as f32).sqrt();
        let b_enc: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
        let mut w_dec: Vec<f32> = (0..d * n).map(|_| StandardNormal.sample(rng)).collect();
        normalise_rows(&mut w_dec, d, n);
        Ok(Sae {
            d,
            n,
            w_enc,
            b_enc,
            w_dec,
            b: vec![0.0; d],
        })
    }

    /// Check that every parameter has the length its `d` and `n` say.
    pub fn check(&self) -> Result<()> {
        let (d, n) = (self.d, self.n);
        for (what, want, got) in [
            ("SAE w_enc", n * d, self.w_enc.len()),
            ("SAE b_enc", n, self.b_enc.len()),
            ("SAE w_dec", d * n, self.w_dec.len()),
            ("SAE b", d, self.b.len()),
        ] {
            if want != got {
                return Err(Error::shape(what, want, got));
            }
        }
        Ok(())
    }

    /// Renormalise both weights in place (what the paper's forward does first).
    pub fn renormalise(&mut self) {
        normalise_rows(&mut self.w_enc, self.n, self.d);
        normalise_rows(&mut self.w_dec, self.d, self.n);
    }

    /// A copy with both weights renormalised: the weights every forward actually uses.
    pub fn normalised(&self) -> Sae {
        let mut s = self.clone();
        s.renormalise();
        s
    }

    fn check_x(&self, x: &[f32], rows: usize) -> Result<()> {
        self.check()?;
        if rows == 0 {
            return Err(Error::InvalidInput("SAE input has no rows".into()));
        }
        if x.len() != rows * self.d {
            return Err(Error::shape(
                "SAE input",
                format!("{rows}×{}", self.d),
                x.len(),
            ));
        }
        Ok(())
    }

    /// Learned activations `f` [rows, n] of `x` [rows, d], with renormalised weights.
    pub fn encode(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.check_x(x, rows)?;
        let s = self.normalised();
        let xc = centre(x, &s.b, rows, s.d);
        let (f, _) = s.encode_normalised(&xc, rows)?;
        Ok(f)
    }

    /// Reconstructions `x̂` [rows, d] of `x` [rows, d], with renormalised weights.
    pub fn reconstruct(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        let f = self.encode(x, rows)?;
        let s = self.normalised();
        s.decode_normalised(&f, rows)
    }

    /// Loss and raw gradients at the renormalised weights: the values the paper's
    /// `loss.backward()` leaves in `.grad` before the radial hook. (The hook is applied by
    /// the training step, see [`remove_radial`].)
    pub fn loss_and_grads(&self, x: &[f32], rows: usize, lambda: f32) -> Result<(f32, Grads)> {
        self.check_x(x, rows)?;
        let s = self.normalised();
        let (loss, g) = s.forward_backward(x, rows, lambda)?;
        Ok((loss as f32, g))
    }

    /// `(xc · Wᵀ + b_enc, ReLU of it)`; uses the weights as they are (caller normalised).
    fn encode_normalised(&self, xc: &[f32], rows: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (d, n) = (self.d, self.n);
        let mut pre = matmul(xc, rows, d, false, &self.w_enc, n, d, true)?;
        for r in 0..rows {
            for (p, be) in pre[r * n..(r + 1) * n].iter_mut().zip(&self.b_enc) {
                *p += be;
            }
        }
        let f = pre.iter().map(|&p| p.max(0.0)).collect();
        Ok((f, pre))
    }

    fn decode_normalised(&self, f: &[f32], rows: usize) -> Result<Vec<f32>> {
        let (d, n) = (self.d, self.n);
        let mut xh = matmul(f, rows, n, false, &self.w_dec, d, n, true)?;
        for r in 0..rows {
            for (v, bb) in xh[r * d..(r + 1) * d].iter_mut().zip(&self.b) {
                *v += bb;
            }
        }
        Ok(xh)
    }

    /// Loss (f64) and gradients with respect to the parameters exactly as stored (no
    /// renormalisation here: the caller has normalised them, or is testing the raw map).
    pub fn forward_backward(&self, x: &[f32], rows: usize, lambda: f32) -> Result<(f64, Grads)> {
        self.check_x(x, rows)?;
        let (m, d, n) = (rows, self.d, self.n);
        let xc = centre(x, &self.b, m, d);
        let (f, pre) = self.encode_normalised(&xc, m)?;
        let xh = self.decode_normalised(&f, m)?;

        // Loss, accumulated in f64 (reporting only; gradients do not depend on it).
        let mut se = 0.0f64;
        for (a, b) in xh.iter().zip(x) {
            let e = (a - b) as f64;
            se += e * e;
        }
        let l1: f64 = f.iter().map(|&v| v as f64).sum();
        let loss = se / (m * d) as f64 + lambda as f64 * (l1 / m as f64);

        // g_x̂ = (2/(m·d))·(x̂ − x); torch's mse backward scale, a double rounded to f32.
        let scale = (2.0f64 / (m * d) as f64) as f32;
        let gxh: Vec<f32> = xh.iter().zip(x).map(|(a, b)| scale * (a - b)).collect();

        let g_w_dec = matmul(&gxh, m, d, true, &f, m, n, false)?;
        let mut gf = matmul(&gxh, m, d, false, &self.w_dec, d, n, false)?;
        let l1_scale = lambda / m as f32;
        for ((g, &fv), &p) in gf.iter_mut().zip(&f).zip(&pre) {
            // ReLU'(pre) with ReLU'(0) = 0; the L1 term's sign(f) is 1 wherever pre > 0.
            *g = if p > 0.0 && fv > 0.0 {
                *g + l1_scale
            } else {
                0.0
            };
        }
        let gpre = gf;
        let mut g_b_enc = vec![0.0f32; n];
        for r in 0..m {
            for (acc, g) in g_b_enc.iter_mut().zip(&gpre[r * n..(r + 1) * n]) {
                *acc += g;
            }
        }
        let g_w_enc = matmul(&gpre, m, n, true, &xc, m, d, false)?;

        // Tied bias: + from the decoder side, − (Σ_rows g_pre)·Ŵ_enc from the encoder side.
        let mut g_b = vec![0.0f32; d];
        for r in 0..m {
            for (acc, g) in g_b.iter_mut().zip(&gxh[r * d..(r + 1) * d]) {
                *acc += g;
            }
        }
        let mut enc_side = vec![0.0f32; d];
        for (j, &gb) in g_b_enc.iter().enumerate() {
            for (acc, w) in enc_side.iter_mut().zip(&self.w_enc[j * d..(j + 1) * d]) {
                *acc += gb * w;
            }
        }
        for (g, e) in g_b.iter_mut().zip(&enc_side) {
            *g -= e;
        }
        Ok((
            loss,
            Grads {
                w_enc: g_w_enc,
                b_enc: g_b_enc,
                w_dec: g_w_dec,
                b: g_b,
            },
        ))
    }

    /// One training step in the paper's order: (1) renormalise the weights in place,
    /// (2) loss and gradients at them, (3) remove each weight row's radial gradient,
    /// (4) Adam. Returns the loss of this step's forward (before the update).
    pub fn train_step(
        &mut self,
        adam: &mut super::Adam,
        x: &[f32],
        rows: usize,
        lambda: f32,
    ) -> Result<f32> {
        self.check_x(x, rows)?;
        self.renormalise();
        let (loss, mut g) = self.forward_backward(x, rows, lambda)?;
        remove_radial(&mut g.w_enc, &self.w_enc, self.n, self.d);
        remove_radial(&mut g.w_dec, &self.w_dec, self.d, self.n);
        adam.step(
            &mut [
                &mut self.w_enc,
                &mut self.b_enc,
                &mut self.w_dec,
                &mut self.b,
            ],
            &[&g.w_enc, &g.b_enc, &g.w_dec, &g.b],
        )?;
        Ok(loss as f32)
    }
}

/// `x − b` per row.
fn centre(x: &[f32], b: &[f32], rows: usize, d: usize) -> Vec<f32> {
    let mut xc = x.to_vec();
    for r in 0..rows {
        for (v, bb) in xc[r * d..(r + 1) * d].iter_mut().zip(b) {
            *v -= bb;
        }
    }
    xc
}

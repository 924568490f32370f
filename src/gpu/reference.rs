//! CPU references for every GPU kernel, written for clarity (f64 accumulation where it
//! matters). The GPU self-test compares against these; they follow the semantics in
//! ../shared/notes/paper.md §3–§4 (the same semantics as `crate::sae`, `crate::codes` and
//! `crate::score`). Pure Rust: tested without CUDA, including a finite-difference check of
//! the analytic SAE backward pass.
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

use super::{HookReduce, OverlapCounts, SaeParams, TrainConfig};

/// Argmax per row of a row-major [rows, k] matrix; lowest index on ties, all-zero -> 0,
/// the first NaN wins (numpy.argmax, as `crate::codes::argmax_rows`).
pub fn argmax_rows(x: &[f32], k: usize) -> Vec<u32> {
    if k == 0 {
        return vec![0; 0];
    }
    x.chunks(k)
        .map(|row| {
            if let Some(j) = row.iter().position(|v| v.is_nan()) {
                return j as u32;
            }
            let mut bi = 0usize;
            let mut bv = f32::NEG_INFINITY;
            for (j, &v) in row.iter().enumerate() {
                if v > bv {
                    bv = v;
                    bi = j;
                }
            }
            bi as u32
        })
        .collect()
}

/// Per-head |P\N| and |N\P| from a [examples, heads] code table.
pub fn node_overlap(codes: &[u32], is_pos: &[bool], heads: usize, n_codes: usize) -> OverlapCounts {
    let e = is_pos.len();
    let mut p = vec![vec![false; n_codes]; heads];
    let mut n = vec![vec![false; n_codes]; heads];
    for ex in 0..e {
        for h in 0..heads {
            let c = codes[ex * heads + h] as usize;
            if c < n_codes {
                if is_pos[ex] {
                    p[h][c] = true
                } else {
                    n[h][c] = true
                }
            }
        }
    }
    let count =
        |a: &[bool], b: &[bool]| a.iter().zip(b).filter(|(x, y)| **x && !**y).count() as u32;
    OverlapCounts {
        p_not_n: (0..heads).map(|h| count(&p[h], &n[h])).collect(),
        n_not_p: (0..heads).map(|h| count(&n[h], &p[h])).collect(),
    }
}

/// U[h1,h2] = number of code pairs (c1,c2) seen on positives and never on negatives;
/// symmetric, zero diagonal. Row-major [heads, heads].
pub fn edge_overlap(codes: &[u32], is_pos: &[bool], heads: usize, n_codes: usize) -> Vec<u32> {
    use std::collections::HashSet;
    let e = is_pos.len();
    let mut out = vec![0u32; heads * heads];
    for h1 in 0..heads {
        for h2 in h1 + 1..heads {
            let mut pos = HashSet::new();
            let mut neg = HashSet::new();
            for ex in 0..e {
                let (c1, c2) = (codes[ex * heads + h1], codes[ex * heads + h2]);
                if (c1 as usize) < n_codes && (c2 as usize) < n_codes {
                    if is_pos[ex] {
                        pos.insert((c1, c2));
                    } else {
                        neg.insert((c1, c2));
                    }
                }
            }
            let u = pos.difference(&neg).count() as u32;
            out[h1 * heads + h2] = u;
            out[h2 * heads + h1] = u;
        }
    }
    out
}

/// Hook reduction: z [b, p, h, dh], mask [b, p] -> [b, h, dh] or, with w_o [h, dh, dm], [b, h, dm].
#[allow(clippy::too_many_arguments)]
pub fn hook_reduce(
    z: &[f32],
    mask: &[bool],
    b: usize,
    p: usize,
    h: usize,
    dh: usize,
    mode: HookReduce,
    w_o: Option<(&[f32], usize)>,
) -> Vec<f32> {
    let mut red = vec![0f32; b * h * dh];
    for bi in 0..b {
        for hi in 0..h {
            for k in 0..dh {
                let at = |pi: usize| z[((bi * p + pi) * h + hi) * dh + k];
                let v = match mode {
                    HookReduce::Mean => {
                        let (mut s, mut c) = (0f32, 0u32);
                        for pi in 0..p {
                            if mask[bi * p + pi] {
                                s += at(pi);
                                c += 1;
                            }
                        }
                        if c > 0 {
                            s / c as f32
                        } else {
                            0.0
                        }
                    }
                    HookReduce::Last => (0..p).rev().find(|&pi| mask[bi * p + pi]).map_or(0.0, at),
                };
                red[(bi * h + hi) * dh + k] = v;
            }
        }
    }
    let Some((w, dm)) = w_o else { return red };
    let mut out = vec![0f32; b * h * dm];
    for bi in 0..b {
        for hi in 0..h {
            for j in 0..dm {
                let mut acc = 0f64;
                for k in 0..dh {
                    acc += red[(bi * h + hi) * dh + k] as f64 * w[(hi * dh + k) * dm + j] as f64;
                }
                out[(bi * h + hi) * dm + j] = acc as f32;
            }
        }
    }
    out
}

/// Seeded initialisation as in the paper (§3.2): weights N(0,1) then row-normalised
/// (W_enc rows over d, W_dec rows over n), b_enc ~ U(-1/sqrt(d), 1/sqrt(d)), b = 0.
pub fn init_params(d: usize, n: usize, seed: u64) -> SaeParams {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut w_enc: Vec<f32> = (0..n * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut w_dec: Vec<f32> = (0..d * n)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    renorm_rows_f32(&mut w_enc, d);
    renorm_rows_f32(&mut w_dec, n);
    let bound = 1.0 / (d as f32).sqrt();
    let b_enc = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    SaeParams {
        d,
        n,
        w_enc,
        b_enc,
        w_dec,
        b: vec![0.0; d],
    }
}

fn renorm_rows_f32(w: &mut [f32], len: usize) {
    for row in w.chunks_mut(len) {
        let nrm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= nrm);
    }
}

fn renorm_rows(w: &mut [f64], len: usize) {
    for row in w.chunks_mut(len) {
        let nrm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        row.iter_mut().for_each(|v| *v /= nrm);
    }
}

/// f64 parameter state of one SAE.
#[derive(Clone, Debug)]
pub struct State {
    pub d: usize,
    pub n: usize,
    pub w_enc: Vec<f64>,
    pub b_enc: Vec<f64>,
    pub w_dec: Vec<f64>,
    pub b: Vec<f64>,
}

impl State {
    pub fn from_params(p: &SaeParams) -> Self {
        let c = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        State {
            d: p.d,
            n: p.n,
            w_enc: c(&p.w_enc),
            b_enc: c(&p.b_enc),
            w_dec: c(&p.w_dec),
            b: c(&p.b),
        }
    }
    pub fn to_params(&self) -> SaeParams {
        let c = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        SaeParams {
            d: self.d,
            n: self.n,
            w_enc: c(&self.w_enc),
            b_enc: c(&self.b_enc),
            w_dec: c(&self.w_dec),
            b: c(&self.b),
        }
    }
}

/// Loss and analytic gradients at the given (already renormalised) parameters, for rows
/// x [rows, d]. Gradients are the raw ones (before radial removal).
pub fn loss_and_grads(s: &State, x: &[f32], lambda: f64) -> (f64, State) {
    let (d, n) = (s.d, s.n);
    let rows = x.len() / d;
    let xc: Vec<f64> = (0..rows * d).map(|i| x[i] as f64 - s.b[i % d]).collect();
    let mut f = vec![0f64; rows * n];
    for r in 0..rows {
        for j in 0..n {
            let mut acc = s.b_enc[j];
            for k in 0..d {
                acc += xc[r * d + k] * s.w_enc[j * d + k];
            }
            f[r * n + j] = acc.max(0.0);
        }
    }
    let mut diff = vec![0f64; rows * d];
    for r in 0..rows {
        for k in 0..d {
            let mut acc = s.b[k];
            for j in 0..n {
                acc += f[r * n + j] * s.w_dec[k * n + j];
            }
            diff[r * d + k] = acc - x[r * d + k] as f64;
        }
    }
    let rd = (rows * d) as f64;
    let loss =
        diff.iter().map(|v| v * v).sum::<f64>() / rd + lambda * f.iter().sum::<f64>() / rows as f64;
    let s1 = 2.0 / rd;
    let lam_r = lambda / rows as f64;
    let mut dpre = vec![0f64; rows * n];
    for r in 0..rows {
        for j in 0..n {
            if f[r * n + j] > 0.0 {
                let mut acc = 0.0;
                for k in 0..d {
                    acc += diff[r * d + k] * s.w_dec[k * n + j];
                }
                dpre[r * n + j] = s1 * acc + lam_r;
            }
        }
    }
    let mut g = State {
        d,
        n,
        w_enc: vec![0.0; n * d],
        b_enc: vec![0.0; n],
        w_dec: vec![0.0; d * n],
        b: vec![0.0; d],
    };
    for r in 0..rows {
        for j in 0..n {
            let dp = dpre[r * n + j];
            g.b_enc[j] += dp;
            for k in 0..d {
                g.w_enc[j * d + k] += dp * xc[r * d + k];
                g.w_dec[k * n + j] += s1 * diff[r * d + k] * f[r * n + j];
            }
        }
        for k in 0..d {
            g.b[k] += s1 * diff[r * d + k];
        }
    }
    for k in 0..d {
        let mut acc = 0.0;
        for j in 0..n {
            acc += g.b_enc[j] * s.w_enc[j * d + k];
        }
        g.b[k] -= acc;
    }
    (loss, g)
}

/// The library's hook per row: g - (sum g*w) * w/||w|| (a zero row keeps its gradient).
fn remove_radial(g: &mut [f64], w: &[f64], len: usize) {
    for (gr, wr) in g.chunks_mut(len).zip(w.chunks(len)) {
        let dot: f64 = gr.iter().zip(wr).map(|(a, b)| a * b).sum();
        let nrm = wr.iter().map(|v| v * v).sum::<f64>().sqrt();
        if nrm == 0.0 {
            continue;
        }
        gr.iter_mut()
            .zip(wr)
            .for_each(|(a, b)| *a -= dot * (b / nrm));
    }
}

fn adam(p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], cfg: &TrainConfig, t: u32) {
    let (b1, b2, eps) = (
        cfg.sae.beta1 as f64,
        cfg.sae.beta2 as f64,
        cfg.sae.eps as f64,
    );
    let step = cfg.sae.lr as f64 / (1.0 - b1.powi(t as i32));
    let bc2s = (1.0 - b2.powi(t as i32)).sqrt();
    for i in 0..p.len() {
        m[i] += (1.0 - b1) * (g[i] - m[i]);
        v[i] = v[i] * b2 + (1.0 - b2) * g[i] * g[i];
        p[i] -= step * m[i] / (v[i].sqrt() / bc2s + eps);
    }
}

/// Train one SAE on rows x [rows, d] (full batch): returns the final (un-normalised)
/// parameters and the loss of every step (computed after that step's renormalisation).
pub fn train_sae(x: &[f32], init: &SaeParams, cfg: &TrainConfig) -> (SaeParams, Vec<f32>) {
    let mut s = State::from_params(init);
    let zeros = |s: &State| State {
        d: s.d,
        n: s.n,
        w_enc: vec![0.0; s.w_enc.len()],
        b_enc: vec![0.0; s.b_enc.len()],
        w_dec: vec![0.0; s.w_dec.len()],
        b: vec![0.0; s.b.len()],
    };
    let mut m = zeros(&s);
    let mut v = zeros(&s);
    let mut losses = Vec::with_capacity(cfg.steps() as usize);
    for t in 1..=cfg.steps() {
        renorm_rows(&mut s.w_enc, s.d);
        renorm_rows(&mut s.w_dec, s.n);
        let (loss, mut g) = loss_and_grads(&s, x, cfg.sae.lambda as f64);
        losses.push(loss as f32);
        remove_radial(&mut g.w_enc, &s.w_enc, s.d);
        remove_radial(&mut g.w_dec, &s.w_dec, s.n);
        adam(&mut s.w_enc, &g.w_enc, &mut m.w_enc, &mut v.w_enc, cfg, t);
        adam(&mut s.b_enc, &g.b_enc, &mut m.b_enc, &mut v.b_enc, cfg, t);
        adam(&mut s.w_dec, &g.w_dec, &mut m.w_dec, &mut v.w_dec, cfg, t);
        adam(&mut s.b, &g.b, &mut m.b, &mut v.b, cfg, t);
    }
    (s.to_params(), losses)
}

/// Activations f [rows, n] = relu(W_enc_normed (x - b) + b_enc) (f64 accumulation).
pub fn encode_f(p: &SaeParams, x: &[f32]) -> Vec<f32> {
    let mut w = p.w_enc.clone();
    renorm_rows_f32(&mut w, p.d);
    let rows = x.len() / p.d;
    let mut f = vec![0f32; rows * p.n];
    for r in 0..rows {
        for j in 0..p.n {
            let mut acc = 0f64;
            for k in 0..p.d {
                acc += (x[r * p.d + k] - p.b[k]) as f64 * w[j * p.d + k] as f64;
            }
            f[r * p.n + j] = ((acc as f32) + p.b_enc[j]).max(0.0);
        }
    }
    f
}

/// Codes of rows x [rows, d]: argmax_j relu(W_enc_normed (x - b) + b_enc)_j, with W_enc rows
/// renormalised first (a forward call renormalises), lowest index on ties.
pub fn encode_argmax(p: &SaeParams, x: &[f32]) -> Vec<u32> {
    argmax_rows(&encode_f(p, x), p.n)
}

/// Seeded N(0, scale^2) data.
pub fn randn(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len)
        .map(|_| scale * <StandardNormal as Distribution<f32>>::sample(&StandardNormal, &mut rng))
        .collect()
}

/// Seeded uniform codes in [0, n_codes).
pub fn random_codes(len: usize, n_codes: u32, seed: u64) -> Vec<u32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(0..n_codes)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_and_zero_rows() {
        let x = [0.0, 0.0, 0.0, 1.0, 3.0, 3.0, -1.0, -2.0, -1.0];
        assert_eq!(argmax_rows(&x, 3), vec![0, 1, 0]);
        assert_eq!(argmax_rows(&[1.0, f32::NAN, 2.0, f32::NAN], 4), vec![1]);
    }

    #[test]
    fn node_and_edge_counts_small() {
        // 4 examples (2 pos, 2 neg), 2 heads, 3 codes
        let codes = [0, 1, 1, 1, 0, 2, 2, 2];
        let is_pos = [true, true, false, false];
        let c = node_overlap(&codes, &is_pos, 2, 3);
        assert_eq!(c.p_not_n, vec![1, 1]);
        assert_eq!(c.n_not_p, vec![1, 1]);
        assert_eq!(edge_overlap(&codes, &is_pos, 2, 3), vec![0, 2, 2, 0]);
    }

    #[test]
    fn finite_difference_gradients() {
        let (d, n, rows) = (5, 7, 6);
        let p = init_params(d, n, 3);
        let x = randn(rows * d, 1.0, 4);
        let mut s = State::from_params(&p);
        s.b = (0..d).map(|k| 0.1 * k as f64 - 0.2).collect();
        let lam = 0.05;
        let (_, g) = loss_and_grads(&s, &x, lam);
        let h = 1e-6;
        let check = |get: &dyn Fn(&mut State) -> &mut Vec<f64>, ga: &[f64]| {
            for (i, &gi) in ga.iter().enumerate() {
                let mut sp = s.clone();
                get(&mut sp)[i] += h;
                let mut sm = s.clone();
                get(&mut sm)[i] -= h;
                let num =
                    (loss_and_grads(&sp, &x, lam).0 - loss_and_grads(&sm, &x, lam).0) / (2.0 * h);
                assert!(
                    (num - gi).abs() < 1e-5 * (1.0 + num.abs()),
                    "i={i} num={num} ana={}",
                    gi
                );
            }
        };
        check(&|s| &mut s.w_enc, &g.w_enc);
        check(&|s| &mut s.b_enc, &g.b_enc);
        check(&|s| &mut s.w_dec, &g.w_dec);
        check(&|s| &mut s.b, &g.b);
    }

    #[test]
    fn training_reduces_loss() {
        let (d, n, rows) = (8, 16, 32);
        let p = init_params(d, n, 1);
        let x = randn(rows * d, 1.0, 2);
        let cfg = TrainConfig::with_steps(200);
        let (_, loss) = train_sae(&x, &p, &cfg);
        assert!(loss[199] < loss[0], "{} !< {}", loss[199], loss[0]);
    }

    #[test]
    fn hook_mean_last_and_projection() {
        // b=1, p=3, h=1, dh=2; mask hides the last position
        let z = [1.0, 2.0, 3.0, 4.0, 100.0, 100.0];
        let mask = [true, true, false];
        let m = hook_reduce(&z, &mask, 1, 3, 1, 2, HookReduce::Mean, None);
        assert_eq!(m, vec![2.0, 3.0]);
        let l = hook_reduce(&z, &mask, 1, 3, 1, 2, HookReduce::Last, None);
        assert_eq!(l, vec![3.0, 4.0]);
        let w = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]; // [1, 2, 3]
        let o = hook_reduce(&z, &mask, 1, 3, 1, 2, HookReduce::Mean, Some((&w, 3)));
        assert_eq!(o, vec![2.0, 3.0, 5.0]);
    }
}

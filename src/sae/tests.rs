//! SAE unit tests: gradients against central finite differences of an independent f64
//! implementation of the loss, training behaviour, determinism, per-head equivalence.
#![allow(clippy::needless_range_loop)] // index loops mirror the formulas in the f64 reference
use super::*;
use rand::Rng;

/// Loss in f64 with the weights used exactly as given (no renormalisation): the map whose
/// gradient `Sae::forward_backward` returns.
fn loss_raw_f64(s: &Sae, x: &[f32], m: usize, lambda: f64) -> f64 {
    let (d, n) = (s.d, s.n);
    let mut se = 0.0;
    let mut l1 = 0.0;
    for r in 0..m {
        let xc: Vec<f64> = (0..d)
            .map(|i| x[r * d + i] as f64 - s.b[i] as f64)
            .collect();
        let f: Vec<f64> = (0..n)
            .map(|j| {
                let mut p = s.b_enc[j] as f64;
                for i in 0..d {
                    p += s.w_enc[j * d + i] as f64 * xc[i];
                }
                p.max(0.0)
            })
            .collect();
        l1 += f.iter().sum::<f64>();
        for i in 0..d {
            let mut xh = s.b[i] as f64;
            for j in 0..n {
                xh += s.w_dec[i * n + j] as f64 * f[j];
            }
            let e = xh - x[r * d + i] as f64;
            se += e * e;
        }
    }
    se / (m * d) as f64 + lambda * l1 / m as f64
}

/// Loss in f64 after row-normalising both weights (in f64): what the training forward sees.
fn loss_renorm_f64(s: &Sae, x: &[f32], m: usize, lambda: f64) -> f64 {
    // Normalise in f64 and store back through f32 only at the end would lose precision, so
    // compute the normalised weights into an f64 copy and evaluate with them.
    fn norm_rows(w: &[f32], rows: usize, cols: usize) -> Vec<f64> {
        let mut out = vec![0.0; w.len()];
        for r in 0..rows {
            let ss: f64 = w[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| (v as f64).powi(2))
                .sum();
            let nrm = ss.sqrt().max(1e-12);
            for c in 0..cols {
                out[r * cols + c] = w[r * cols + c] as f64 / nrm;
            }
        }
        out
    }
    let (d, n) = (s.d, s.n);
    let we = norm_rows(&s.w_enc, n, d);
    let wd = norm_rows(&s.w_dec, d, n);
    let mut se = 0.0;
    let mut l1 = 0.0;
    for r in 0..m {
        let xc: Vec<f64> = (0..d)
            .map(|i| x[r * d + i] as f64 - s.b[i] as f64)
            .collect();
        let f: Vec<f64> = (0..n)
            .map(|j| {
                let p: f64 = s.b_enc[j] as f64 + (0..d).map(|i| we[j * d + i] * xc[i]).sum::<f64>();
                p.max(0.0)
            })
            .collect();
        l1 += f.iter().sum::<f64>();
        for i in 0..d {
            let xh: f64 = s.b[i] as f64 + (0..n).map(|j| wd[i * n + j] * f[j]).sum::<f64>();
            let e = xh - x[r * d + i] as f64;
            se += e * e;
        }
    }
    se / (m * d) as f64 + lambda * l1 / m as f64
}

/// Central differences of `loss` over every parameter, perturbing the f32 storage by ±h
/// (h a power of two so `p ± h` is exact for |p| < 1) and dividing by the realised step.
fn fd_grads(s: &Sae, loss: &dyn Fn(&Sae) -> f64) -> Grads {
    let h = 2f32.powi(-12);
    let mut g = Grads {
        w_enc: vec![0.0; s.w_enc.len()],
        b_enc: vec![0.0; s.b_enc.len()],
        w_dec: vec![0.0; s.w_dec.len()],
        b: vec![0.0; s.b.len()],
    };
    type Field = fn(&mut Sae) -> &mut Vec<f32>;
    type GField = fn(&mut Grads) -> &mut Vec<f32>;
    let fields: [(Field, GField); 4] = [
        (|s| &mut s.w_enc, |g| &mut g.w_enc),
        (|s| &mut s.b_enc, |g| &mut g.b_enc),
        (|s| &mut s.w_dec, |g| &mut g.w_dec),
        (|s| &mut s.b, |g| &mut g.b),
    ];
    for (pf, gf) in fields {
        let len = pf(&mut s.clone()).len();
        for i in 0..len {
            let mut sp = s.clone();
            let p0 = pf(&mut sp)[i];
            pf(&mut sp)[i] = p0 + h;
            let up = pf(&mut sp)[i] as f64;
            let lp = loss(&sp);
            pf(&mut sp)[i] = p0 - h;
            let dn = pf(&mut sp)[i] as f64;
            let lm = loss(&sp);
            gf(&mut g)[i] = ((lp - lm) / (up - dn)) as f32;
        }
    }
    g
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(0.0f32, |a, &v| a.max(v.abs())).max(1e-3);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-3 * scale,
            "{what}[{i}]: analytic {g} vs finite-difference {w} (scale {scale})"
        );
    }
}

/// A small SAE with a nonzero tied bias and data giving a mix of active/inactive features.
fn fixture() -> (Sae, Vec<f32>, usize) {
    let (d, n, m) = (6, 5, 9);
    let mut rng = StdRng::seed_from_u64(7);
    let mut s = Sae::init(d, n, &mut rng).unwrap();
    for v in s.b.iter_mut() {
        *v = rng.random_range(-0.3..0.3);
    }
    for v in s.b_enc.iter_mut() {
        *v = rng.random_range(-0.2..0.2);
    }
    let x: Vec<f32> = (0..m * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    (s, x, m)
}

/// Raw gradient: `forward_backward` at (already unit-norm) weights vs finite differences of
/// the loss with weights used as given. This is what the paper's `loss.backward()` leaves
/// in `.grad` (the in-place renormalisation happens under no_grad, so it is not
/// differentiated through).
#[test]
fn raw_gradients_match_finite_differences() {
    let (s, x, m) = fixture();
    let lambda = 0.05;
    let (loss, g) = s.forward_backward(&x, m, lambda).unwrap();
    let ref_loss = loss_raw_f64(&s, &x, m, lambda as f64);
    assert!(
        (loss - ref_loss).abs() < 1e-5 * ref_loss.max(1.0),
        "{loss} vs {ref_loss}"
    );
    let fd = fd_grads(&s, &|t| loss_raw_f64(t, &x, m, lambda as f64));
    assert_close("w_enc", &g.w_enc, &fd.w_enc);
    assert_close("b_enc", &g.b_enc, &fd.b_enc);
    assert_close("w_dec", &g.w_dec, &fd.w_dec);
    assert_close("b", &g.b, &fd.b);
}

/// Training-step gradient: `loss_and_grads` + `remove_radial` (what `train_step` feeds
/// Adam) vs finite differences of `L(normalise(W))` at unit-norm W. The radial hook makes
/// the two agree: at ‖w‖ = 1 the gradient of `L(w/‖w‖)` is `g − (g·w)w`.
#[test]
fn radial_removed_gradients_match_finite_differences_through_renormalisation() {
    let (mut s, x, m) = fixture();
    let lambda = 0.05;
    // Start from weights that are far from unit norm: loss_and_grads must renormalise.
    for v in s.w_enc.iter_mut() {
        *v *= 3.0;
    }
    let (loss, mut g) = s.loss_and_grads(&x, m, lambda).unwrap();
    let sn = s.normalised();
    assert!((loss as f64 - loss_renorm_f64(&s, &x, m, lambda as f64)).abs() < 1e-5);
    remove_radial(&mut g.w_enc, &sn.w_enc, sn.n, sn.d);
    remove_radial(&mut g.w_dec, &sn.w_dec, sn.d, sn.n);
    let fd = fd_grads(&sn, &|t| loss_renorm_f64(t, &x, m, lambda as f64));
    assert_close("w_enc", &g.w_enc, &fd.w_enc);
    assert_close("b_enc", &g.b_enc, &fd.b_enc);
    assert_close("w_dec", &g.w_dec, &fd.w_dec);
    assert_close("b", &g.b, &fd.b);
    // The hook leaves no radial component: Σ g⊙w = 0 per row.
    for r in 0..sn.n {
        let dot: f32 = (0..sn.d)
            .map(|i| g.w_enc[r * sn.d + i] * sn.w_enc[r * sn.d + i])
            .sum();
        assert!(dot.abs() < 1e-6, "row {r}: {dot}");
    }
}

#[test]
fn init_follows_the_library() {
    let mut rng = StdRng::seed_from_u64(1);
    let s = Sae::init(64, 30, &mut rng).unwrap();
    s.check().unwrap();
    for r in 0..30 {
        let nrm: f32 = s.w_enc[r * 64..(r + 1) * 64].iter().map(|v| v * v).sum();
        assert!((nrm - 1.0).abs() < 1e-5);
    }
    for r in 0..64 {
        let nrm: f32 = s.w_dec[r * 30..(r + 1) * 30].iter().map(|v| v * v).sum();
        assert!((nrm - 1.0).abs() < 1e-5);
    }
    assert!(s.b_enc.iter().all(|v| v.abs() <= 1.0 / 8.0));
    assert!(s.b_enc.iter().any(|v| v.abs() > 0.05));
    assert!(s.b.iter().all(|&v| v == 0.0));
    assert!(Sae::init(0, 3, &mut rng).is_err());
}

/// Data with sparse structure: each row is a sum of 2 of 8 fixed directions plus noise.
fn sparse_data(rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    let dirs: Vec<f32> = (0..8 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    let mut x = vec![0.0f32; rows * d];
    for r in 0..rows {
        for _ in 0..2 {
            let k = rng.random_range(0..8);
            let a: f32 = rng.random_range(0.5..2.0);
            for i in 0..d {
                x[r * d + i] += a * dirs[k * d + i];
            }
        }
        for i in 0..d {
            x[r * d + i] += rng.random_range(-0.05..0.05);
        }
    }
    x
}

#[test]
fn loss_decreases_over_training() {
    let (rows, d) = (64, 16);
    let x = sparse_data(rows, d, 3);
    let cfg = SaeConfig {
        n_features: 32,
        steps: 300,
        lr: 1e-2,
        ..SaeConfig::default()
    };
    let (sae, log) = train_shared(&x, rows, d, &cfg).unwrap();
    assert_eq!(log.loss.len(), 300);
    let (first, last) = (log.loss[0], *log.loss.last().unwrap());
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    // The trained SAE's loss (fresh forward) matches the logged trend.
    let (now, _) = sae.loss_and_grads(&x, rows, cfg.lambda).unwrap();
    assert!(now <= last * 1.05, "{now} vs {last}");
    // Paper defaults (lr 1e-3) also decrease, more slowly.
    let cfg = SaeConfig {
        n_features: 32,
        steps: 100,
        ..SaeConfig::default()
    };
    let (_, log) = train_shared(&x, rows, d, &cfg).unwrap();
    assert!(log.loss[99] < log.loss[0]);
}

#[test]
fn same_seed_same_bits_other_seed_differs() {
    let (rows, d) = (40, 12);
    let x = sparse_data(rows, d, 5);
    let cfg = SaeConfig {
        n_features: 20,
        steps: 30,
        seed: 11,
        ..SaeConfig::default()
    };
    let (a, la) = train_shared(&x, rows, d, &cfg).unwrap();
    let (b, lb) = train_shared(&x, rows, d, &cfg).unwrap();
    assert_eq!(a, b);
    assert_eq!(la, lb);
    let (c, _) = train_shared(&x, rows, d, &SaeConfig { seed: 12, ..cfg }).unwrap();
    assert_ne!(a.w_enc, c.w_enc);
}

#[test]
fn per_head_equals_each_head_trained_alone_bitwise() {
    let (batch, heads, d) = (10, 5, 24);
    let x = sparse_data(batch * heads, d, 9);
    let cfg = SaeConfig {
        n_features: 16,
        steps: 25,
        seed: 42,
        ..SaeConfig::default()
    };
    let (saes, log) = train_per_head(&x, batch, heads, d, &cfg).unwrap();
    assert_eq!(saes.len(), heads);
    assert_eq!(log.head_loss.len(), heads);
    assert_eq!(log.loss.len(), cfg.steps);
    for (h, sae) in saes.iter().enumerate() {
        let xh = head_rows(&x, batch, heads, d, h);
        let hcfg = SaeConfig {
            seed: head_seed(cfg.seed, h),
            ..cfg
        };
        let (alone, l) = train_shared(&xh, batch, d, &hcfg).unwrap();
        assert_eq!(&alone, sae, "head {h}");
        assert_eq!(l.loss, log.head_loss[h]);
    }
    // Stepping all heads in lockstep gives the same bits and the same mean loss per step.
    let (mut lock, mut adams) = init_per_head(heads, d, &cfg).unwrap();
    let xs = split_heads(&x, batch, heads, d).unwrap();
    for t in 0..cfg.steps {
        let l = step_per_head(&mut lock, &mut adams, &xs, batch, cfg.lambda).unwrap();
        let mean = (l.iter().map(|&v| v as f64).sum::<f64>() / heads as f64) as f32;
        assert_eq!(mean.to_bits(), log.loss[t].to_bits(), "step {t}");
    }
    assert_eq!(lock, saes);
    // Heads got different initialisations.
    assert_ne!(saes[0].b_enc, saes[1].b_enc);
    // And the per-head encode lays features out as [example, head, n].
    let f = encode_per_head(&saes, &x, batch).unwrap();
    let f2 = saes[3]
        .encode(&head_rows(&x, batch, heads, d, 3), batch)
        .unwrap();
    for e in 0..batch {
        let o = (e * heads + 3) * 16;
        assert_eq!(&f[o..o + 16], &f2[e * 16..(e + 1) * 16]);
    }
}

#[test]
fn head_seed_is_fixed() {
    // Saved results depend on this map; changing it is a breaking change.
    assert_eq!(head_seed(0, 0), head_seed(0, 0));
    assert_ne!(head_seed(0, 0), head_seed(0, 1));
    assert_ne!(head_seed(0, 1), head_seed(1, 0));
    assert_eq!(head_seed(0, 0), 0xE220_A839_7B1D_CDAF);
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let cfg = SaeConfig {
        steps: 1,
        n_features: 4,
        ..SaeConfig::default()
    };
    assert!(train_shared(&[], 0, 4, &cfg).is_err());
    assert!(train_shared(&[1.0; 7], 2, 4, &cfg).is_err());
    assert!(train_per_head(&[1.0; 7], 1, 2, 4, &cfg).is_err());
    assert!(train_shared(
        &[1.0; 8],
        2,
        4,
        &SaeConfig {
            n_features: 0,
            ..cfg
        }
    )
    .is_err());
    let (s, _) = train_shared(&[1.0; 8], 2, 4, &cfg).unwrap();
    assert!(s.encode(&[1.0; 5], 1).is_err());
    assert!(s.encode(&[], 0).is_err());
    assert!(s.loss_and_grads(&[1.0; 3], 1, 0.1).is_err());
    assert!(encode_per_head(&[], &[], 0).is_err());
    let mut broken = s.clone();
    broken.b.pop();
    assert!(broken.encode(&[1.0; 4], 1).is_err());
}

#[test]
fn encode_shared_is_relu_of_the_normalised_encoder() {
    let (s, x, m) = fixture();
    let f = encode_shared(&s, &x, m, 1).unwrap();
    let sn = s.normalised();
    for r in 0..m {
        for j in 0..s.n {
            let mut p = sn.b_enc[j] as f64;
            for i in 0..s.d {
                p += sn.w_enc[j * s.d + i] as f64 * (x[r * s.d + i] - s.b[i]) as f64;
            }
            assert!((f[r * s.n + j] as f64 - p.max(0.0)).abs() < 1e-5);
        }
    }
}

/// The one-row-at-a-time loops `normalise_rows` and `remove_radial` were written as; the
/// row-blocked versions must give the same bits (seeded SAEs and results depend on them).
fn normalise_rows_one_by_one(w: &mut [f32], rows: usize, cols: usize) {
    for row in w.chunks_exact_mut(cols).take(rows) {
        let mut ss = 0.0f32;
        for &v in row.iter() {
            ss += v * v;
        }
        let denom = ss.sqrt().max(NORM_EPS);
        for v in row.iter_mut() {
            *v /= denom;
        }
    }
}

fn remove_radial_one_by_one(grad: &mut [f32], w: &[f32], rows: usize, cols: usize) {
    for r in 0..rows {
        let wr = &w[r * cols..(r + 1) * cols];
        let gr = &mut grad[r * cols..(r + 1) * cols];
        let (mut dot, mut ss) = (0.0f32, 0.0f32);
        for (g, w) in gr.iter().zip(wr) {
            dot += g * w;
            ss += w * w;
        }
        let norm = ss.sqrt();
        if norm == 0.0 {
            continue;
        }
        for (g, w) in gr.iter_mut().zip(wr) {
            *g -= dot * (w / norm);
        }
    }
}

#[test]
fn row_blocked_norms_are_bitwise_the_row_loops() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Row counts below, at and past the block of 8, with a remainder; one zero row.
    for (rows, cols) in [(1, 5), (7, 64), (8, 3), (17, 200), (200, 64), (64, 200)] {
        let mut w: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-3.0f32..3.0))
            .collect();
        w[(rows / 2) * cols..(rows / 2 + 1) * cols].fill(0.0);
        let g: Vec<f32> = (0..rows * cols)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let (mut got_w, mut want_w) = (w.clone(), w.clone());
        normalise_rows(&mut got_w, rows, cols);
        normalise_rows_one_by_one(&mut want_w, rows, cols);
        let (mut got_g, mut want_g) = (g.clone(), g.clone());
        remove_radial(&mut got_g, &w, rows, cols);
        remove_radial_one_by_one(&mut want_g, &w, rows, cols);
        for (what, got, want) in [("norm", &got_w, &want_w), ("radial", &got_g, &want_g)] {
            let diff = got
                .iter()
                .zip(want.iter())
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(diff, 0, "{what} {rows}x{cols}: {diff} elements differ");
        }
    }
}

#[test]
fn per_head_init_on_threads_equals_one_head_at_a_time() {
    let cfg = SaeConfig {
        n_features: 12,
        seed: 7,
        ..SaeConfig::default()
    };
    // More heads than this machine has threads, and a count that splits unevenly.
    let heads = 4 * std::thread::available_parallelism().map_or(1, |n| n.get()) + 3;
    let d = 9;
    let par = init_per_head_saes(heads, d, &cfg).unwrap();
    assert_eq!(par.len(), heads);
    for (h, s) in par.iter().enumerate() {
        let one = Sae::init(d, 12, &mut StdRng::seed_from_u64(head_seed(7, h))).unwrap();
        assert_eq!(&one, s, "head {h}");
    }
    assert_eq!(init_per_head(heads, d, &cfg).unwrap().0, par);
    assert!(init_per_head_saes(0, d, &cfg).unwrap().is_empty());
    assert!(init_per_head_saes(3, 0, &cfg).is_err());
}

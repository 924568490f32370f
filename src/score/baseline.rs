//! Baseline head scores that need no SAE, computed from the hooked vectors
//! `x` [examples, heads, d]: sanity floors for the code-overlap scores.
//!
//! - class-mean distance: `‖mean_{pos} x[:,h] − mean_{neg} x[:,h]‖₂`
//! - mean norm: `mean_{all examples} ‖x[e,h]‖₂` (a "how loud is this head" baseline)
//! - random: i.i.d. U[0,1) per head from `StdRng::seed_from_u64(seed)`, in head order
//!
//! Sums are accumulated in f64 in example order.
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn check(x: &[f32], examples: usize, heads: usize, d: usize, is_pos: &[bool]) -> Result<()> {
    if examples == 0 || heads == 0 || d == 0 {
        return Err(Error::InvalidInput(format!(
            "empty activations (examples={examples}, heads={heads}, d={d})"
        )));
    }
    if x.len() != examples * heads * d {
        return Err(Error::shape(
            "hooked activations",
            format!("{examples}×{heads}×{d}"),
            x.len(),
        ));
    }
    if is_pos.len() != examples {
        return Err(Error::shape("example labels", examples, is_pos.len()));
    }
    Ok(())
}

/// Per-class means [heads·d] (positives, negatives), summed in f64 in example order.
fn class_means(
    x: &[f32],
    examples: usize,
    heads: usize,
    d: usize,
    is_pos: &[bool],
    what: &str,
) -> Result<(Vec<f64>, Vec<f64>)> {
    check(x, examples, heads, d, is_pos)?;
    let n_pos = is_pos.iter().filter(|&&p| p).count();
    let n_neg = examples - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::InvalidInput(format!(
            "{what} needs positive and negative examples"
        )));
    }
    let mut sp = vec![0.0f64; heads * d];
    let mut sn = vec![0.0f64; heads * d];
    for (e, &p) in is_pos.iter().enumerate() {
        let acc = if p { &mut sp } else { &mut sn };
        for (a, &v) in acc.iter_mut().zip(&x[e * heads * d..(e + 1) * heads * d]) {
            *a += v as f64;
        }
    }
    sp.iter_mut().for_each(|a| *a /= n_pos as f64);
    sn.iter_mut().for_each(|a| *a /= n_neg as f64);
    Ok((sp, sn))
}

/// `‖mean_pos − mean_neg‖` per head. Needs both classes.
pub fn class_mean_distance(
    x: &[f32],
    examples: usize,
    heads: usize,
    d: usize,
    is_pos: &[bool],
) -> Result<Vec<f64>> {
    let (mp, mn) = class_means(x, examples, heads, d, is_pos, "class-mean distance")?;
    Ok((0..heads)
        .map(|h| {
            (0..d)
                .map(|i| (mp[h * d + i] - mn[h * d + i]).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect())
}

/// Class separation relative to spread: `‖μ_pos − μ_neg‖² / s²` per head, with s² the
/// pooled within-class variance (mean squared distance of each vector to its class
/// mean). Unlike the plain distance it does not favour heads that are merely loud.
/// A head with no within-class spread scores 0 when its means coincide, else 1e30.
pub fn fisher_ratio(
    x: &[f32],
    examples: usize,
    heads: usize,
    d: usize,
    is_pos: &[bool],
) -> Result<Vec<f64>> {
    let (mp, mn) = class_means(x, examples, heads, d, is_pos, "the Fisher ratio")?;
    let mut within = vec![0.0f64; heads];
    for (e, &p) in is_pos.iter().enumerate() {
        let m = if p { &mp } else { &mn };
        for (h, w) in within.iter_mut().enumerate() {
            let row = &x[(e * heads + h) * d..(e * heads + h + 1) * d];
            *w += row
                .iter()
                .zip(&m[h * d..(h + 1) * d])
                .map(|(&v, &mu)| (v as f64 - mu).powi(2))
                .sum::<f64>();
        }
    }
    Ok((0..heads)
        .map(|h| {
            let between: f64 = (0..d)
                .map(|i| (mp[h * d + i] - mn[h * d + i]).powi(2))
                .sum();
            fisher(between, within[h] / examples as f64)
        })
        .collect())
}

/// Between-class over within-class spread, with the degenerate cases of [`fisher_ratio`].
fn fisher(between: f64, within: f64) -> f64 {
    if within > 0.0 {
        between / within
    } else if between > 0.0 {
        1e30
    } else {
        0.0
    }
}

/// Mean L2 norm per head over all examples.
pub fn mean_norm(
    x: &[f32],
    examples: usize,
    heads: usize,
    d: usize,
    is_pos: &[bool],
) -> Result<Vec<f64>> {
    check(x, examples, heads, d, is_pos)?;
    let mut s = vec![0.0f64; heads];
    for e in 0..examples {
        for (h, acc) in s.iter_mut().enumerate() {
            let o = (e * heads + h) * d;
            let ss: f64 = x[o..o + d].iter().map(|&v| (v as f64) * (v as f64)).sum();
            *acc += ss.sqrt();
        }
    }
    Ok(s.into_iter().map(|v| v / examples as f64).collect())
}

/// The class-mean, Fisher and mean-norm baselines of one activation tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorBaselines {
    pub class_mean_distance: Vec<f64>,
    pub fisher_ratio: Vec<f64>,
    pub mean_norm: Vec<f64>,
}

/// [`class_mean_distance`], [`fisher_ratio`] and [`mean_norm`] of `x` [examples, heads, d]
/// computed with tensor ops on `x`'s device (f32), so a GPU run scores the baselines where
/// the activations are and copies only [heads] back. The host functions above (f64
/// accumulation) are the reference. The within-class spread is summed from the centred
/// vectors, not from `Σ‖x‖² − n‖μ‖²`, which cancels badly in f32.
pub fn baselines_on_device(x: &candle_core::Tensor, is_pos: &[bool]) -> Result<TensorBaselines> {
    use candle_core::{DType, Tensor};
    let (examples, heads, d) = x.dims3()?;
    if examples == 0 || heads == 0 || d == 0 {
        return Err(Error::InvalidInput(format!(
            "empty activations (examples={examples}, heads={heads}, d={d})"
        )));
    }
    if is_pos.len() != examples {
        return Err(Error::shape("example labels", examples, is_pos.len()));
    }
    let n_pos = is_pos.iter().filter(|&&p| p).count();
    let n_neg = examples - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return Err(Error::InvalidInput(
            "class-mean baselines need positive and negative examples".into(),
        ));
    }
    let dev = x.device();
    let xf = x.to_dtype(DType::F32)?.reshape((examples, heads * d))?;
    let col = |f: &dyn Fn(bool) -> f32| -> Result<Tensor> {
        let v: Vec<f32> = is_pos.iter().map(|&p| f(p)).collect();
        Ok(Tensor::from_vec(v, (1, examples), dev)?)
    };
    let (ip, inn) = (1.0 / n_pos as f32, 1.0 / n_neg as f32);
    let mp = col(&|p| if p { ip } else { 0.0 })?.matmul(&xf)?; // [1, heads·d]
    let mn = col(&|p| if p { 0.0 } else { inn })?.matmul(&xf)?;
    let between = (&mp - &mn)?.reshape((heads, d))?.sqr()?.sum(1)?; // [heads]
                                                                    // Each example's own class mean [examples, heads·d], to subtract.
    let class: Vec<u32> = is_pos.iter().map(|&p| if p { 0 } else { 1 }).collect();
    let own =
        Tensor::cat(&[&mp, &mn], 0)?.index_select(&Tensor::from_vec(class, examples, dev)?, 0)?;
    let within = (&xf - &own)?
        .sqr()?
        .reshape((examples, heads, d))?
        .sum(2)?
        .sum(0)?
        .affine(1.0 / examples as f64, 0.0)?;
    let norms = xf
        .reshape((examples, heads, d))?
        .sqr()?
        .sum(2)?
        .sqrt()?
        .mean(0)?;
    let host = |t: Tensor| -> Result<Vec<f64>> { Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?) };
    let between = host(between)?;
    let within = host(within)?;
    Ok(TensorBaselines {
        class_mean_distance: between.iter().map(|b| b.sqrt()).collect(),
        fisher_ratio: between
            .iter()
            .zip(&within)
            .map(|(&b, &w)| fisher(b, w))
            .collect(),
        mean_norm: host(norms)?,
    })
}

/// Seeded uniform random scores.
pub fn random_scores(heads: usize, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..heads).map(|_| rng.random::<f64>()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // 2 heads, d = 2; 2 positives, 2 negatives.
        // head 0: pos (1,0),(3,0) mean (2,0); neg (0,0),(0,0) -> distance 2
        // head 1: identical in both classes -> 0
        let x = [
            1.0, 0.0, 3.0, 4.0, //
            3.0, 0.0, 3.0, 4.0, //
            0.0, 0.0, 3.0, 4.0, //
            0.0, 0.0, 3.0, 4.0,
        ];
        let y = [true, true, false, false];
        assert_eq!(
            class_mean_distance(&x, 4, 2, 2, &y).unwrap(),
            vec![2.0, 0.0]
        );
        assert_eq!(mean_norm(&x, 4, 2, 2, &y).unwrap(), vec![1.0, 5.0]);
        assert!(class_mean_distance(&x, 4, 2, 2, &[true; 4]).is_err());
        assert!(mean_norm(&x, 4, 2, 3, &y).is_err());
    }

    #[test]
    fn random_is_seeded() {
        assert_eq!(random_scores(5, 1), random_scores(5, 1));
        assert_ne!(random_scores(5, 1), random_scores(5, 2));
        assert!(random_scores(100, 3).iter().all(|v| (0.0..1.0).contains(v)));
    }
}

#[cfg(test)]
mod device_tests {
    use super::*;
    use candle_core::{Device, Tensor};
    use rand_distr::{Distribution, Normal};

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The tensor-op baselines equal the f64 host references on seeded random data with a
    /// class offset on some heads and a loud, non-separating head.
    #[test]
    fn device_baselines_match_host() {
        let mut rng = StdRng::seed_from_u64(7);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        for (examples, heads, d) in [(40usize, 6usize, 16usize), (9, 3, 5), (200, 12, 64)] {
            let is_pos: Vec<bool> = (0..examples).map(|e| e % 3 != 0).collect();
            let mut x: Vec<f32> = (0..examples * heads * d)
                .map(|_| normal.sample(&mut rng))
                .collect();
            for (e, &pos) in is_pos.iter().enumerate() {
                for h in 0..heads {
                    let o = (e * heads + h) * d;
                    if pos && h % 2 == 0 {
                        x[o] += 2.0 + h as f32;
                    }
                    if h == 1 {
                        x[o..o + d].iter_mut().for_each(|v| *v *= 10.0);
                    }
                }
            }
            let t = Tensor::from_vec(x.clone(), (examples, heads, d), &Device::Cpu).unwrap();
            let got = baselines_on_device(&t, &is_pos).unwrap();
            let cm = class_mean_distance(&x, examples, heads, d, &is_pos).unwrap();
            let fi = fisher_ratio(&x, examples, heads, d, &is_pos).unwrap();
            let mn = mean_norm(&x, examples, heads, d, &is_pos).unwrap();
            assert!(
                rel(&got.class_mean_distance, &cm) < 1e-5,
                "{cm:?} vs {:?}",
                got.class_mean_distance
            );
            assert!(
                rel(&got.fisher_ratio, &fi) < 1e-4,
                "{fi:?} vs {:?}",
                got.fisher_ratio
            );
            assert!(rel(&got.mean_norm, &mn) < 1e-5);
        }
    }

    #[test]
    fn device_baselines_reject_bad_input() {
        let t = Tensor::zeros((4, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(baselines_on_device(&t, &[true; 4]).is_err());
        assert!(baselines_on_device(&t, &[true, false]).is_err());
        let e = Tensor::zeros((0, 2, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(baselines_on_device(&e, &[]).is_err());
        let flat = Tensor::zeros((4, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        assert!(baselines_on_device(&flat, &[true, false, true, false]).is_err());
        // Identical classes and no spread: 0, as on the host.
        let z = baselines_on_device(&t, &[true, false, true, false]).unwrap();
        assert_eq!(z.fisher_ratio, vec![0.0, 0.0]);
    }
}

#[cfg(test)]
mod fisher_tests {
    use super::*;

    #[test]
    fn fisher_prefers_separated_over_loud() {
        // Head 0: means differ by 1, tiny spread. Head 1: means differ by 2, huge spread.
        let (e, h, d) = (4, 2, 1);
        let is_pos = [true, true, false, false];
        let x = [1.01f32, 12.0, 0.99, -8.0, 0.01, 10.0, -0.01, -10.0];
        let f = fisher_ratio(&x, e, h, d, &is_pos).unwrap();
        let c = class_mean_distance(&x, e, h, d, &is_pos).unwrap();
        assert!(c[1] > c[0], "plain distance prefers the loud head");
        assert!(
            f[0] > f[1],
            "Fisher ratio prefers the separated head: {f:?}"
        );
        // Hand value for head 0: between = 1², within = 4·0.01² / 4.
        assert!((f[0] - 1.0 / 1e-4).abs() < 1e-2 * f[0]);
        assert!(fisher_ratio(&x, e, h, d, &[true; 4]).is_err());
    }
}

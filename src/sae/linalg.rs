//! Dense f32 matrix products for the SAE, done by candle's CPU backend (the `gemm` crate).
//!
//! Why candle and not a loop: the shared SAE does five (rows × d × n) products per step,
//! about 3 GFLOP at SmolLM2 sizes, 500 times. `gemm` splits work between threads over
//! output blocks only and sums each output's k terms in a fixed order, so the result does
//! not depend on the thread count or on the run: training stays bitwise deterministic.
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// `op(A) · op(B)` for row-major `A` [a_rows, a_cols] and `B` [b_rows, b_cols], where
/// `op` transposes when the flag is set. Returns the row-major product.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    a: &[f32],
    a_rows: usize,
    a_cols: usize,
    ta: bool,
    b: &[f32],
    b_rows: usize,
    b_cols: usize,
    tb: bool,
) -> Result<Vec<f32>> {
    if a.len() != a_rows * a_cols {
        return Err(Error::shape("matmul lhs", a_rows * a_cols, a.len()));
    }
    if b.len() != b_rows * b_cols {
        return Err(Error::shape("matmul rhs", b_rows * b_cols, b.len()));
    }
    let (m, k) = if ta {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (k2, n) = if tb {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    if k != k2 {
        return Err(Error::shape("matmul inner dimension", k, k2));
    }
    if m == 0 || n == 0 {
        return Ok(Vec::new());
    }
    if k == 0 {
        return Ok(vec![0.0; m * n]);
    }
    let dev = Device::Cpu;
    let mut ta_t = Tensor::from_slice(a, (a_rows, a_cols), &dev)?;
    if ta {
        ta_t = ta_t.t()?;
    }
    let mut tb_t = Tensor::from_slice(b, (b_rows, b_cols), &dev)?;
    if tb {
        tb_t = tb_t.t()?;
    }
    let c = ta_t.matmul(&tb_t)?;
    Ok(c.flatten_all()?.to_vec1::<f32>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f64;
                for t in 0..k {
                    s += a[i * k + t] as f64 * b[t * n + j] as f64;
                }
                c[i * n + j] = s as f32;
            }
        }
        c
    }

    fn transpose(a: &[f32], r: usize, c: usize) -> Vec<f32> {
        let mut t = vec![0.0; a.len()];
        for i in 0..r {
            for j in 0..c {
                t[j * r + i] = a[i * c + j];
            }
        }
        t
    }

    #[test]
    fn all_transpose_combinations_match_naive() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = naive(&a, m, k, &b, n);
        let at = transpose(&a, m, k);
        let bt = transpose(&b, k, n);
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (aa, ar, ac) = if ta { (&at, k, m) } else { (&a, m, k) };
            let (bb, br, bc) = if tb { (&bt, n, k) } else { (&b, k, n) };
            let got = matmul(aa, ar, ac, ta, bb, br, bc, tb).unwrap();
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{ta} {tb}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matmul(&[1.0; 6], 2, 3, false, &[1.0; 6], 2, 3, false).is_err());
        assert!(matmul(&[1.0; 5], 2, 3, false, &[1.0; 6], 3, 2, false).is_err());
    }
}

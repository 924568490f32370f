//! Dense f32 matrix products on the CPU, by the `gemm` crate (the kernel candle's CPU
//! backend calls), called directly: the SAE trainer's products and the CPU forward's
//! (`model::forward_cpu`).
//!
//! Why `gemm`: the shared SAE does five (rows × d × n) products per step, about 3 GFLOP at
//! SmolLM2 sizes, 500 times. `gemm` splits work between threads over output blocks only
//! and sums each output's k terms in a fixed order, so the result does not depend on the
//! thread count or on the run: training stays bitwise deterministic.
//!
//! Why directly and not through a candle `Tensor`: the per-head SAEs do products of
//! 10 × 64 × 200, where building tensors, copying the operands in and the product out, and
//! handing the call to rayon cost five times the arithmetic (57 µs against 10 µs a product
//! on the 2-core VM). The call is the one candle makes, so the products are bitwise the same
//! (`matches_candle_bitwise`).
use crate::error::{Error, Result};
use std::sync::OnceLock;

/// Products with fewer multiply-adds than this run on the calling thread: below it, handing
/// work to rayon costs more than it saves, and the per-head trainers already run one SAE per
/// thread. (The threading never changes a result, see the module comment.)
const PARALLEL_MIN_FMAS: usize = 1 << 23;

/// candle's CPU thread count, asked once: `candle_core::utils::get_num_threads` reads
/// `/proc/cpuinfo` on every call, which cost more than a per-head product itself.
fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(candle_core::utils::get_num_threads)
}

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
    let mut c = vec![0.0f32; m * n];
    if k == 0 {
        return Ok(c);
    }
    // Strides of op(A) and op(B) in elements: (column stride, row stride).
    let (a_cs, a_rs) = if ta { (a_cols, 1) } else { (1, a_cols) };
    let (b_cs, b_rs) = if tb { (b_cols, 1) } else { (1, b_cols) };
    // SAFETY: `c` holds m·n floats written at row stride n, column stride 1; `a` and `b` were
    // checked above to hold a_rows·a_cols and b_rows·b_cols floats, and every (i, l) < (m, k)
    // of op(A) and (l, j) < (k, n) of op(B) maps inside them with these strides. The three
    // buffers do not overlap (`c` is a fresh Vec).
    unsafe {
        gemm_raw(
            (m, n, k),
            (c.as_mut_ptr(), n),
            (a.as_ptr(), a_cs, a_rs),
            (b.as_ptr(), b_cs, b_rs),
            false,
        )
    };
    Ok(c)
}

/// `C[:, ..n] (+)= A · B` for row-major `A` [m, k] with row stride `a_rs` and `B` [k, n]
/// with row stride `b_rs`, into the first `n` columns of `C`'s m rows at row stride `c_rs`
/// (a column block of a wider matrix: the CPU forward writes q, k and v side by side).
/// `accumulate` adds to what `C` holds instead of overwriting it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into(
    c: &mut [f32],
    c_rs: usize,
    a: &[f32],
    a_rs: usize,
    b: &[f32],
    b_rs: usize,
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
) -> Result<()> {
    // Every accessed element's index is below these ends (the last row's first n or k).
    let end = |rows: usize, rs: usize, cols: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + cols
        }
    };
    if c_rs < n || a_rs < k || b_rs < n {
        return Err(Error::shape(
            "gemm row stride",
            format!("c ≥ {n}, a ≥ {k}, b ≥ {n}"),
            format!("{c_rs}, {a_rs}, {b_rs}"),
        ));
    }
    if c.len() < end(m, c_rs, n) || a.len() < end(m, a_rs, k) || b.len() < end(k, b_rs, n) {
        return Err(Error::shape(
            "gemm operands",
            format!("{m}x{k} · {k}x{n}"),
            format!("{}, {}, {} floats", a.len(), b.len(), c.len()),
        ));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * c_rs..r * c_rs + n].fill(0.0);
            }
        }
        return Ok(());
    }
    // SAFETY: the checks above keep every (i, l) < (m, k) of A at i·a_rs + l, every (l, j) of
    // B at l·b_rs + j and every (i, j) of C at i·c_rs + j inside its slice; `c` is borrowed
    // mutably, so it overlaps neither input.
    unsafe {
        gemm_raw(
            (m, n, k),
            (c.as_mut_ptr(), c_rs),
            (a.as_ptr(), 1, a_rs),
            (b.as_ptr(), 1, b_rs),
            accumulate,
        )
    };
    Ok(())
}

/// The one `gemm::gemm` call: C = A·B, or C += A·B with `read_dst`. Threads as
/// [`PARALLEL_MIN_FMAS`] says.
///
/// # Safety
/// `c` must be valid for writes at every (i, j) < (m, n) at row stride `c_rs`, column
/// stride 1; `a` and `b` valid for reads at every (i, l) and (l, j) with their (column, row)
/// strides; `c` must not overlap `a` or `b`.
unsafe fn gemm_raw(
    (m, n, k): (usize, usize, usize),
    (c, c_rs): (*mut f32, usize),
    (a, a_cs, a_rs): (*const f32, usize, usize),
    (b, b_cs, b_rs): (*const f32, usize, usize),
    read_dst: bool,
) {
    let threads = threads();
    let parallelism = if threads > 1 && m * n * k >= PARALLEL_MIN_FMAS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs as isize,
            read_dst,
            a,
            a_cs as isize,
            a_rs as isize,
            b,
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
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

    /// candle's CPU matmul (what this module called before): the direct call must give the
    /// same bits, so results and seeds recorded before it stay reproducible.
    #[allow(clippy::too_many_arguments)]
    fn candle_matmul(
        a: &[f32],
        a_rows: usize,
        a_cols: usize,
        ta: bool,
        b: &[f32],
        b_rows: usize,
        b_cols: usize,
        tb: bool,
    ) -> Vec<f32> {
        use candle_core::{Device, Tensor};
        let dev = Device::Cpu;
        let mut at = Tensor::from_slice(a, (a_rows, a_cols), &dev).unwrap();
        if ta {
            at = at.t().unwrap();
        }
        let mut bt = Tensor::from_slice(b, (b_rows, b_cols), &dev).unwrap();
        if tb {
            bt = bt.t().unwrap();
        }
        at.matmul(&bt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    #[test]
    fn matches_candle_bitwise() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // The SAE's products: per-head z (10 × 64 → 200), per-head result (768), a shared
        // SAE large enough to go through the threaded path, and odd sizes.
        for (m, k, n) in [
            (10, 64, 200),
            (200, 10, 64),
            (10, 200, 768),
            (768, 10, 200),
            (10, 768, 200),
            (300, 768, 200),
            (7, 13, 5),
            (1, 1, 1),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0..1.0)).collect();
            let at = transpose(&a, m, k);
            let bt = transpose(&b, k, n);
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let (aa, ar, ac) = if ta { (&at, k, m) } else { (&a, m, k) };
                let (bb, br, bc) = if tb { (&bt, n, k) } else { (&b, k, n) };
                let got = matmul(aa, ar, ac, ta, bb, br, bc, tb).unwrap();
                let want = candle_matmul(aa, ar, ac, ta, bb, br, bc, tb);
                let diff = got
                    .iter()
                    .zip(&want)
                    .filter(|(g, w)| g.to_bits() != w.to_bits())
                    .count();
                assert_eq!(got.len(), want.len());
                assert_eq!(diff, 0, "{m}x{k}x{n} ta={ta} tb={tb}: {diff} differ");
            }
        }
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        assert_eq!(
            matmul(&[], 2, 0, false, &[], 0, 3, false).unwrap(),
            vec![0.0; 6]
        );
        assert!(matmul(&[], 0, 4, false, &[1.0; 8], 4, 2, false)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(matmul(&[1.0; 6], 2, 3, false, &[1.0; 6], 2, 3, false).is_err());
        assert!(matmul(&[1.0; 5], 2, 3, false, &[1.0; 6], 3, 2, false).is_err());
    }
}

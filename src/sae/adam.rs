//! Adam with PyTorch semantics (`torch.optim.Adam`, no weight decay, no amsgrad), the
//! optimiser of the paper's training loop (§3.3).
//!
//! Per element, at step t (1-based), exactly as `_single_tensor_adam` in torch 2.2:
//! ```text
//! m = m + (1-β1)·(g - m)                 # torch: exp_avg.lerp_(grad, 1-β1)
//! v = β2·v + (1-β2)·g·g                  # torch: exp_avg_sq.mul_(β2).addcmul_(g, g, 1-β2)
//! step_size = lr / (1 - β1^t)            # computed in f64, then used as f32
//! denom     = sqrt(v) / sqrt(1 - β2^t) + eps
//! p = p - step_size · (m / denom)
//! ```
//! The tensor arithmetic is f32; the bias-correction scalars are computed in f64 and rounded
//! to f32 once, as PyTorch does when a Python float meets an f32 tensor.
use crate::error::{Error, Result};

/// Adam state for a fixed list of parameter tensors (each a flat `f32` slice).
///
/// Reusable: one `Adam` per model, created with the sizes of its parameters in the order
/// they are later passed to [`Adam::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Adam {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Number of steps taken so far.
    pub t: u64,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Adam {
    /// Zero moments for parameters of the given lengths.
    pub fn new(sizes: &[usize], lr: f32, beta1: f32, beta2: f32, eps: f32) -> Self {
        Adam {
            lr,
            beta1,
            beta2,
            eps,
            t: 0,
            m: sizes.iter().map(|&s| vec![0.0; s]).collect(),
            v: sizes.iter().map(|&s| vec![0.0; s]).collect(),
        }
    }

    /// One update of every parameter from its gradient. `params[i]` and `grads[i]` must
    /// have the length given as `sizes[i]` to [`Adam::new`].
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]]) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(Error::shape(
                "Adam parameter count",
                self.m.len(),
                format!("{} params, {} grads", params.len(), grads.len()),
            ));
        }
        for (i, (p, g)) in params.iter().zip(grads).enumerate() {
            if p.len() != self.m[i].len() || g.len() != self.m[i].len() {
                return Err(Error::shape(
                    format!("Adam parameter {i}"),
                    self.m[i].len(),
                    format!("param {}, grad {}", p.len(), g.len()),
                ));
            }
        }
        self.t += 1;
        let t = self.t as f64;
        let bc1 = 1.0 - (self.beta1 as f64).powf(t);
        let bc2 = 1.0 - (self.beta2 as f64).powf(t);
        let step_size = (self.lr as f64 / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let c = Consts {
            w1: 1.0 - self.beta1,
            w2: 1.0 - self.beta2,
            beta2: self.beta2,
            eps: self.eps,
            step_size,
            bc2_sqrt,
        };
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            update(p, g, &mut self.m[i], &mut self.v[i], &c);
        }
        Ok(())
    }
}

/// One step's scalars, shared by every element.
struct Consts {
    w1: f32,
    w2: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,
    bc2_sqrt: f32,
}

/// The per-element update, on whatever vector width the caller was compiled for. Zipped
/// iterators (no bounds checks) so the loop vectorises. Rust never fuses a multiply and an
/// add and sqrt and division are correctly rounded, so every width gives the same bits.
#[inline(always)]
fn update_body(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Consts) {
    let mv = m.iter_mut().zip(v.iter_mut());
    for ((pj, &gj), (mj, vj)) in p.iter_mut().zip(g.iter()).zip(mv) {
        *mj += c.w1 * (gj - *mj);
        *vj = *vj * c.beta2 + c.w2 * gj * gj;
        let denom = vj.sqrt() / c.bc2_sqrt + c.eps;
        *pj -= c.step_size * (*mj / denom);
    }
}

/// The same loop compiled for AVX2: eight lanes of sqrt and division instead of the
/// baseline's four, half the time of a per-head SAE's Adam step on the 2-core VM.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn update_avx2(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Consts) {
    update_body(p, g, m, v, c)
}

fn update(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: &Consts) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2 (checked on the line above), the only requirement of a
        // `target_feature(enable = "avx2")` function; its body is safe Rust.
        return unsafe { update_avx2(p, g, m, v, c) };
    }
    update_body(p, g, m, v, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_param_by_about_lr_against_the_gradient_sign() {
        // At t=1, m̂ = g and sqrt(v̂) = |g|, so the update is lr·g/(|g|+eps).
        let mut a = Adam::new(&[3], 1e-3, 0.9, 0.999, 1e-8);
        let mut p = vec![1.0f32, -2.0, 0.5];
        let g = [0.3f32, -4.0, 0.0];
        a.step(&mut [&mut p], &[&g]).unwrap();
        assert!((p[0] - (1.0 - 1e-3)).abs() < 1e-6);
        assert!((p[1] - (-2.0 + 1e-3)).abs() < 1e-6);
        assert_eq!(p[2], 0.5);
    }

    #[test]
    fn matches_a_hand_unrolled_f64_reference() {
        let (lr, b1, b2, eps) = (1e-2f64, 0.9f64, 0.999f64, 1e-8f64);
        let grads = [0.5f64, -0.25, 1.5, 0.0, -3.0];
        let mut a = Adam::new(&[1], lr as f32, b1 as f32, b2 as f32, eps as f32);
        let mut p = [0.7f32];
        let (mut pr, mut m, mut v) = (0.7f64, 0.0f64, 0.0f64);
        for (t, &g) in grads.iter().enumerate() {
            a.step(&mut [&mut p], &[&[g as f32]]).unwrap();
            let t = (t + 1) as f64;
            m = b1 * m + (1.0 - b1) * g;
            v = b2 * v + (1.0 - b2) * g * g;
            let mh = m / (1.0 - b1.powf(t));
            let vh = v / (1.0 - b2.powf(t));
            pr -= lr * mh / (vh.sqrt() + eps);
        }
        assert!((p[0] as f64 - pr).abs() < 1e-6, "{} vs {pr}", p[0]);
    }

    /// The dispatched update (AVX2 where the CPU has it) gives the bits of the baseline
    /// loop, over lengths that leave vector remainders.
    #[test]
    fn vector_widths_give_the_same_bits() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for len in [1, 7, 8, 9, 64, 1000, 12_803] {
            let mut r =
                |s: f32| -> Vec<f32> { (0..len).map(|_| rng.random_range(-s..s)).collect() };
            let (p, g, m) = (r(1.0), r(3.0), r(0.1));
            let v: Vec<f32> = r(0.01).iter().map(|x| x.abs()).collect();
            let c = Consts {
                w1: 0.1,
                w2: 0.001,
                beta2: 0.999,
                eps: 1e-8,
                step_size: 1e-3 / 0.271,
                bc2_sqrt: 0.0447,
            };
            let (mut p1, mut m1, mut v1) = (p.clone(), m.clone(), v.clone());
            let (mut p2, mut m2, mut v2) = (p, m, v);
            update(&mut p1, &g, &mut m1, &mut v1, &c);
            update_body(&mut p2, &g, &mut m2, &mut v2, &c);
            for (a, b) in [(&p1, &p2), (&m1, &m2), (&v1, &v2)] {
                let diff = a
                    .iter()
                    .zip(b.iter())
                    .filter(|(x, y)| x.to_bits() != y.to_bits());
                assert_eq!(diff.count(), 0, "length {len}");
            }
        }
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let mut a = Adam::new(&[2], 1e-3, 0.9, 0.999, 1e-8);
        let mut p = vec![0.0f32; 3];
        assert!(a.step(&mut [&mut p], &[&[0.0; 3]]).is_err());
        assert!(a.step(&mut [], &[]).is_err());
        assert_eq!(a.t, 0);
    }
}

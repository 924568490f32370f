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
        let w1 = 1.0 - self.beta1;
        let w2 = 1.0 - self.beta2;
        let (beta2, eps) = (self.beta2, self.eps);
        for (i, (p, g)) in params.iter_mut().zip(grads).enumerate() {
            // Zipped iterators (no bounds checks) so the loop vectorises; same arithmetic.
            let mv = self.m[i].iter_mut().zip(self.v[i].iter_mut());
            for ((pj, &gj), (mj, vj)) in p.iter_mut().zip(g.iter()).zip(mv) {
                *mj += w1 * (gj - *mj);
                *vj = *vj * beta2 + w2 * gj * gj;
                let denom = vj.sqrt() / bc2_sqrt + eps;
                *pj -= step_size * (*mj / denom);
            }
        }
        Ok(())
    }
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

    #[test]
    fn wrong_lengths_are_errors() {
        let mut a = Adam::new(&[2], 1e-3, 0.9, 0.999, 1e-8);
        let mut p = vec![0.0f32; 3];
        assert!(a.step(&mut [&mut p], &[&[0.0; 3]]).is_err());
        assert!(a.step(&mut [], &[]).is_err());
        assert_eq!(a.t, 0);
    }
}

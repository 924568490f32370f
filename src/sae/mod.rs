//! Tiny sparse autoencoders on attention-head outputs: the CPU reference of the paper's SAE
//! (notes/paper.md §3) that the CUDA kernels are checked against.
//!
//! Two modes:
//! - **shared** ([`train_shared`]): one SAE for all heads, trained on the rows
//!   `x[(example, head), :]`; the paper's method.
//! - **per-head** ([`train_per_head`]): one SAE per head, SAE h trained on `x[:, h, :]`.
//!   All heads step together; head h's SAE is seeded with [`head_seed`]`(cfg.seed, h)` so
//!   it is bitwise the SAE that [`train_shared`] gives on `x[:, h, :]` with that seed.
//!
//! Training is full batch: `cfg.steps` steps of (renormalise → loss/grad → radial removal →
//! Adam), see [`Sae::train_step`]. Everything is deterministic for a given seed: the RNG is
//! `StdRng::seed_from_u64`, and no result depends on the number of threads.
mod adam;
mod model;

pub use adam::Adam;
pub use model::{normalise_rows, remove_radial, Grads, Sae, NORM_EPS};

use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The SAE's hyperparameters, one definition for the CPU trainer, the GPU trainer
/// (`gpu::TrainConfig::sae`), `discover`, `compare`, `bench` and the CLI; `Default` is the
/// paper's main setting (§3.3). A task's own λ (0.05 for Docstring) is set where the task
/// is defined (`TaskSource::default_lambda`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SaeConfig {
    /// Learned features n (paper: 200).
    pub n_features: usize,
    /// L1 coefficient λ (paper: 0.02 for IOI/GT, 0.05 for docstring).
    pub lambda: f32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Full-batch steps (paper: 500).
    pub steps: usize,
    /// Training examples (prompts) an SAE sees (paper: 10); every example is encoded.
    #[serde(default = "default_examples")]
    pub examples: usize,
    pub seed: u64,
}

fn default_examples() -> usize {
    SaeConfig::default().examples
}

impl Default for SaeConfig {
    fn default() -> Self {
        SaeConfig {
            n_features: 200,
            lambda: 0.02,
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            steps: 500,
            examples: 10,
            seed: 0,
        }
    }
}

impl SaeConfig {
    /// Refuse settings that train nothing meaningful (a negative λ rewards dense codes, a
    /// NaN learning rate gives NaN weights and all-zero scores), naming the flag.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str, want: &str, v: f64| {
            Err(crate::Error::InvalidInput(format!(
                "{what} must be {want}, got {v}"
            )))
        };
        let f = |v: f32| f64::from(v);
        if self.n_features == 0 {
            return bad("--features", "at least 1", 0.0);
        }
        if self.steps == 0 {
            return bad("--steps", "at least 1", 0.0);
        }
        if self.examples == 0 {
            return bad("--sae-examples", "at least 1", 0.0);
        }
        if !(self.lambda.is_finite() && self.lambda >= 0.0) {
            return bad("--lambda", "a finite number ≥ 0", f(self.lambda));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("the SAE learning rate", "a finite number > 0", f(self.lr));
        }
        for (k, v) in [("Adam's beta1", self.beta1), ("Adam's beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return bad(k, "in [0, 1)", f(v));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return bad("Adam's eps", "a finite number > 0", f(self.eps));
        }
        Ok(())
    }

    /// A fresh Adam for an SAE of input width `d`, parameters in the order
    /// `[w_enc, b_enc, w_dec, b]` used by [`Sae::train_step`].
    pub fn adam(&self, d: usize) -> Adam {
        let n = self.n_features;
        Adam::new(
            &[n * d, n, d * n, d],
            self.lr,
            self.beta1,
            self.beta2,
            self.eps,
        )
    }
}

/// Loss per step (the loss of each step's forward, before its update).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainLog {
    /// Shared mode: the loss. Per-head mode: the mean over heads (f64 sum in head order).
    pub loss: Vec<f32>,
    /// Per-head mode: `head_loss[h][step]`; empty in shared mode.
    pub head_loss: Vec<Vec<f32>>,
}

/// Seed of head h's SAE in per-head mode: SplitMix64 of `seed + (h+1)·0x9E3779B97F4A7C15`
/// (wrapping). Distinct heads get unrelated streams; the map is fixed forever because
/// saved results depend on it.
pub fn head_seed(seed: u64, head: usize) -> u64 {
    let mut z = seed.wrapping_add(
        (head as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn check_cfg(cfg: &SaeConfig) -> Result<()> {
    if cfg.n_features == 0 {
        return Err(Error::InvalidInput("SAE n_features must be > 0".into()));
    }
    if !(cfg.lambda.is_finite() && cfg.lr.is_finite() && cfg.eps.is_finite()) {
        return Err(Error::InvalidInput(
            "SAE lambda/lr/eps must be finite".into(),
        ));
    }
    Ok(())
}

/// Train one SAE on `x` [rows, d] (shared mode: rows = examples·heads, row-major
/// `[example, head]`). Init from `StdRng::seed_from_u64(cfg.seed)`.
pub fn train_shared(x: &[f32], rows: usize, d: usize, cfg: &SaeConfig) -> Result<(Sae, TrainLog)> {
    check_cfg(cfg)?;
    if rows == 0 || d == 0 {
        return Err(Error::InvalidInput(format!(
            "SAE training data is empty (rows={rows}, d={d})"
        )));
    }
    if x.len() != rows * d {
        return Err(Error::shape(
            "SAE training data",
            format!("{rows}×{d}"),
            x.len(),
        ));
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut sae = Sae::init(d, cfg.n_features, &mut rng)?;
    let mut adam = cfg.adam(d);
    let mut log = TrainLog::default();
    for _ in 0..cfg.steps {
        crate::interrupt::check()?;
        log.loss
            .push(sae.train_step(&mut adam, x, rows, cfg.lambda)?);
    }
    Ok((sae, log))
}

/// Rows `x[:, h, :]` of `x` [batch, heads, d], contiguous [batch, d].
fn head_rows(x: &[f32], batch: usize, heads: usize, d: usize, h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(batch * d);
    for e in 0..batch {
        let o = (e * heads + h) * d;
        out.extend_from_slice(&x[o..o + d]);
    }
    out
}

fn check_bhd(x: &[f32], batch: usize, heads: usize, d: usize, what: &str) -> Result<()> {
    if batch == 0 || heads == 0 || d == 0 {
        return Err(Error::InvalidInput(format!(
            "{what} is empty (batch={batch}, heads={heads}, d={d})"
        )));
    }
    if x.len() != batch * heads * d {
        return Err(Error::shape(what, format!("{batch}×{heads}×{d}"), x.len()));
    }
    Ok(())
}

/// Threads for per-head work: the machine's parallelism, capped by the head count.
/// Results never depend on it (heads are independent and each is computed alone).
fn worker_count(heads: usize) -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, heads.max(1))
}

/// Run `f(h)` for every head on a few scoped threads (contiguous chunks of heads), keeping
/// results in head order.
fn par_heads<T: Send>(heads: usize, f: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    if heads == 0 {
        return Ok(Vec::new()); // step_by(0) below would panic
    }
    let workers = worker_count(heads);
    let chunk = heads.div_ceil(workers);
    let f = &f;
    let parts: Vec<Result<Vec<T>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..heads)
            .step_by(chunk)
            .map(|start| s.spawn(move || (start..(start + chunk).min(heads)).map(f).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidInput("SAE worker thread panicked".into()))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(heads);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Split `x` [batch, heads, d] into per-head row blocks: `out[h]` = `x[:, h, :]` [batch, d].
pub fn split_heads(x: &[f32], batch: usize, heads: usize, d: usize) -> Result<Vec<Vec<f32>>> {
    check_bhd(x, batch, heads, d, "per-head SAE data")?;
    Ok((0..heads)
        .map(|h| head_rows(x, batch, heads, d, h))
        .collect())
}

/// One batched training step of every head's SAE: SAE h steps on `xs[h]` [batch, d] with
/// `adams[h]` (exactly [`Sae::train_step`] per head). Returns each head's loss. Heads are
/// spread over scoped threads in contiguous chunks; they never interact, so the result is
/// the same for any thread count.
pub fn step_per_head(
    saes: &mut [Sae],
    adams: &mut [Adam],
    xs: &[Vec<f32>],
    batch: usize,
    lambda: f32,
) -> Result<Vec<f32>> {
    let heads = saes.len();
    if adams.len() != heads || xs.len() != heads {
        return Err(Error::shape(
            "per-head SAE step (saes, adams, inputs)",
            heads,
            format!("{}, {}", adams.len(), xs.len()),
        ));
    }
    if heads == 0 {
        return Ok(Vec::new());
    }
    let chunk = heads.div_ceil(worker_count(heads));
    let parts: Vec<Result<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = saes
            .chunks_mut(chunk)
            .zip(adams.chunks_mut(chunk))
            .zip(xs.chunks(chunk))
            .map(|((ss, aa), xx)| {
                s.spawn(move || {
                    ss.iter_mut()
                        .zip(aa.iter_mut())
                        .zip(xx)
                        .map(|((sae, adam), x)| sae.train_step(adam, x, batch, lambda))
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(Error::InvalidInput("SAE worker thread panicked".into()))
                })
            })
            .collect()
    });
    let mut out = Vec::with_capacity(heads);
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}

/// Fresh per-head SAEs and optimisers: SAE h from `StdRng::seed_from_u64(head_seed(cfg.seed, h))`.
pub fn init_per_head(heads: usize, d: usize, cfg: &SaeConfig) -> Result<(Vec<Sae>, Vec<Adam>)> {
    let saes = init_per_head_saes(heads, d, cfg)?;
    Ok((saes, (0..heads).map(|_| cfg.adam(d)).collect()))
}

/// The SAEs of [`init_per_head`] without their Adam state (the GPU trainers keep their own).
/// Each head draws from its own seed, so the heads are drawn on several threads with the
/// same result: 144 heads at d = 64 took 32 ms on one core of the development VM.
pub fn init_per_head_saes(heads: usize, d: usize, cfg: &SaeConfig) -> Result<Vec<Sae>> {
    check_cfg(cfg)?;
    par_heads(heads, |h| {
        Sae::init(
            d,
            cfg.n_features,
            &mut StdRng::seed_from_u64(head_seed(cfg.seed, h)),
        )
    })
}

/// Train one SAE per head on `x` [batch, heads, d]: SAE h on `x[:, h, :]`, seeded with
/// [`head_seed`]`(cfg.seed, h)`. Each runs exactly the computation of
/// [`train_shared`]`(x[:, h, :], batch, d, cfg with seed = head_seed(cfg.seed, h))`, so the
/// two give bitwise-equal parameters, and the same as stepping all heads together with
/// [`step_per_head`].
///
/// Each worker thread trains its heads one after another, all steps of one head before the
/// next: a head's parameters, Adam moments and gradients (about 0.4 MB at d = 64) then stay
/// in the core's cache for its 500 steps, where stepping all heads in lockstep streamed every
/// head's state (58 MB for 144 heads) through memory each step.
pub fn train_per_head(
    x: &[f32],
    batch: usize,
    heads: usize,
    d: usize,
    cfg: &SaeConfig,
) -> Result<(Vec<Sae>, TrainLog)> {
    check_cfg(cfg)?;
    let xs = split_heads(x, batch, heads, d)?;
    let trained = par_heads(heads, |h| {
        let mut sae = Sae::init(
            d,
            cfg.n_features,
            &mut StdRng::seed_from_u64(head_seed(cfg.seed, h)),
        )?;
        let mut adam = cfg.adam(d);
        let mut losses = Vec::with_capacity(cfg.steps);
        for _ in 0..cfg.steps {
            crate::interrupt::check()?;
            losses.push(sae.train_step(&mut adam, &xs[h], batch, cfg.lambda)?);
        }
        Ok((sae, losses))
    })?;
    let (saes, head_loss): (Vec<Sae>, Vec<Vec<f32>>) = trained.into_iter().unzip();
    // Mean over heads per step, summed in f64 in head order.
    let loss = (0..cfg.steps)
        .map(|t| {
            let sum: f64 = head_loss.iter().map(|l| l[t] as f64).sum();
            (sum / heads as f64) as f32
        })
        .collect();
    Ok((saes, TrainLog { loss, head_loss }))
}

/// Learned activations of a shared SAE for `x` [examples, heads, d]:
/// returns [examples, heads, n] (the same layout as [`encode_per_head`]).
pub fn encode_shared(sae: &Sae, x: &[f32], examples: usize, heads: usize) -> Result<Vec<f32>> {
    check_bhd(x, examples, heads, sae.d, "SAE input")?;
    sae.encode(x, examples * heads)
}

/// Learned activations of per-head SAEs for `x` [examples, heads, d]: SAE h encodes
/// `x[:, h, :]`. Returns [examples, heads, n]; all SAEs must share d and n.
pub fn encode_per_head(saes: &[Sae], x: &[f32], examples: usize) -> Result<Vec<f32>> {
    let heads = saes.len();
    let first = saes
        .first()
        .ok_or_else(|| Error::InvalidInput("no per-head SAEs to encode with".into()))?;
    let (d, n) = (first.d, first.n);
    if let Some((h, s)) = saes.iter().enumerate().find(|(_, s)| s.d != d || s.n != n) {
        return Err(Error::shape(
            format!("per-head SAE {h} (d, n)"),
            format!("({d}, {n})"),
            format!("({}, {})", s.d, s.n),
        ));
    }
    check_bhd(x, examples, heads, d, "per-head SAE input")?;
    let feats = par_heads(heads, |h| {
        saes[h].encode(&head_rows(x, examples, heads, d, h), examples)
    })?;
    let mut out = vec![0.0f32; examples * heads * n];
    for (h, f) in feats.iter().enumerate() {
        for e in 0..examples {
            let o = (e * heads + h) * n;
            out[o..o + n].copy_from_slice(&f[e * n..(e + 1) * n]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;

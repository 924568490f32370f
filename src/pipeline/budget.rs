//! `--max-memory`: the forward's batch size chosen so that a run's estimated peak fits a
//! budget, or a one-line refusal before any work.
//!
//! The estimate is the sum of what a `discover` run holds at once:
//! * fixed: the weights (at their dtype), the hooked `z` and `result` of every prompt (f32),
//!   the SAEs with their gradients and Adam moments, and on the CPU for bf16 one weight
//!   matrix widened to f32 (candle 0.11.1's CPU matmul widens bf16 operands);
//! * per prompt of a forward batch: every layer's captured `z` (f32) and its mean-reduced
//!   `z` and `result`, one layer's working set (residual, norms in f32, Q/K/V, attention
//!   scores and probabilities in f32, the MLP's three d_mlp-wide activations) and the
//!   last-position logits.
//!
//! Allocator slack and the tokenizer are not counted, so the estimate is a floor.
use crate::error::{Error, Result};
use crate::hooks::HookPoint;
use crate::memory::{human, product};
use crate::model::{Model, ModelConfig, WeightDtype};
use crate::pipeline::{DiscoverConfig, SaeMode};

/// What the estimate is made of (bytes).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub weights: u128,
    /// Hooked activations, SAEs and the widened matrix: held whatever the batch size.
    pub fixed: u128,
    /// Per prompt of a forward batch.
    pub per_prompt: u128,
}

impl Estimate {
    pub fn at(&self, batch: usize) -> u128 {
        self.weights + self.fixed + self.per_prompt * batch as u128
    }
}

/// The estimate for `cfg` on `model`, with prompts of up to `tokens` tokens and `pairs`
/// prompt pairs.
pub fn estimate(model: &Model, cfg: &DiscoverConfig, pairs: usize, tokens: usize) -> Estimate {
    let c = &model.cfg;
    let bytes = model.dtype().bytes();
    let weights = model.weights.bytes() as u128;
    let heads = c.n_heads_total();
    let acts = product(&[2, pairs, heads, c.d_head + c.d_model, 4]);
    let d_in = match cfg.on {
        HookPoint::Z => c.d_head,
        HookPoint::Result => c.d_model,
    };
    let saes = match cfg.sae_mode {
        SaeMode::PerHead => heads,
        SaeMode::Shared => 1,
    };
    let sae = product(&[saes, cfg.sae.n_features, 2 * d_in + 1, 4, 4]);
    let widened = if model.dtype() == WeightDtype::Bf16 && !model.device().is_cuda() {
        product(&[largest_matrix(c), 4])
    } else {
        0
    };
    Estimate {
        weights,
        fixed: acts + sae + widened,
        per_prompt: per_prompt(c, bytes, tokens),
    }
}

/// Elements of the largest weight matrix (the embedding or W_U, for every family here).
fn largest_matrix(c: &ModelConfig) -> usize {
    let attn = c.n_heads.max(c.n_kv_heads) * c.d_head * c.d_model;
    (c.d_vocab * c.d_model).max(c.d_mlp * c.d_model).max(attn)
}

fn per_prompt(c: &ModelConfig, bytes: usize, t: usize) -> u128 {
    let (d, h, kv, dh, l) = (c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.n_layers);
    let captured = product(&[l, t, h * dh, 4]) + product(&[l, h, dh + d, 4]);
    let layer = product(&[t, d, 2 * bytes + 3 * 4])
        + product(&[t, (h + 2 * kv) * dh, bytes])
        + product(&[h, t, t, 4 + 4 + bytes])
        + product(&[t, 3 * c.d_mlp, bytes]);
    let logits = product(&[c.d_vocab, bytes + 4]);
    captured + layer + logits
}

/// Set `cfg.batch_size` to the largest batch (at most its current value) whose estimate
/// fits `budget` bytes, or refuse in one line. Returns the estimate at that batch.
pub fn fit(
    model: &Model,
    cfg: &mut DiscoverConfig,
    budget: u64,
    pairs: usize,
    tokens: usize,
) -> Result<u128> {
    let e = estimate(model, cfg, pairs, tokens);
    let batch = fit_batch(&e, budget, cfg.batch_size, pairs)?;
    cfg.batch_size = batch;
    Ok(e.at(batch))
}

/// [`fit`] for the task `cfg` names, tokenised with `tok` as `discover` will (the
/// prompts' length sizes the per-prompt share).
pub fn fit_discover(
    model: &Model,
    tok: &dyn crate::tokenize::Tokenizer,
    cfg: &mut DiscoverConfig,
    budget: u64,
) -> Result<u128> {
    let p = crate::pipeline::discover::prepare_task(model, tok, cfg)?;
    let tokens = p
        .task
        .clean
        .iter()
        .chain(&p.task.corrupt)
        .map(Vec::len)
        .max()
        .unwrap_or(0);
    fit(model, cfg, budget, p.task.clean.len(), tokens)
}

/// The largest batch in 1..=`most` whose estimate fits `budget`.
pub fn fit_batch(e: &Estimate, budget: u64, most: usize, pairs: usize) -> Result<usize> {
    let budget = budget as u128;
    let held = e.weights + e.fixed;
    if held + e.per_prompt > budget {
        return Err(Error::InvalidInput(format!(
            "--max-memory {}: too small for this run, which holds about {} (weights {}, \
             {pairs} pairs' activations and the SAEs {}) plus {} per prompt of a batch",
            human(budget),
            human(held),
            human(e.weights),
            human(e.fixed),
            human(e.per_prompt)
        )));
    }
    let fits = (budget - held) / e.per_prompt.max(1);
    Ok(fits.min(most.max(1) as u128) as usize)
}

/// `--max-memory` in GB (10⁹ bytes), checked.
pub fn parse_gb(s: &str) -> Result<u64> {
    match s.trim().parse::<f64>() {
        Ok(gb) if gb.is_finite() && gb > 0.0 && gb < 1e9 => Ok((gb * 1e9) as u64),
        _ => Err(Error::InvalidInput(format!(
            "--max-memory {s:?}: expected a positive number of GB"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_shrinks_with_the_budget_and_refuses_below_one_prompt() {
        let e = Estimate {
            weights: 1000,
            fixed: 500,
            per_prompt: 100,
        };
        assert_eq!(fit_batch(&e, 1_000_000, 32, 10).unwrap(), 32);
        assert_eq!(fit_batch(&e, 2_000, 32, 10).unwrap(), 5);
        assert_eq!(fit_batch(&e, 1_600, 32, 10).unwrap(), 1);
        let msg = fit_batch(&e, 1_599, 32, 10).unwrap_err().to_string();
        assert!(
            msg.contains("--max-memory") && msg.contains("per prompt"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn gigabytes_are_parsed_and_checked() {
        assert_eq!(parse_gb("1.5").unwrap(), 1_500_000_000);
        for bad in ["0", "-1", "x", "nan", "inf"] {
            assert!(parse_gb(bad).is_err(), "{bad}");
        }
    }
}

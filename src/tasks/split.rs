//! The SAE paper's example pool and training subset (O'Neill & Bui, `src/main.py`).
//!
//! The pool holds `2 n` prompts: the n clean prompts (positives) first, then the n corrupt
//! prompts (negatives); the paper's code relies on exactly this order ("first half is
//! positive"). Codes are counted over the whole pool; only `n_sae_examples` prompts (`SaeConfig::examples`, 10 by
//! default) train the SAE. The paper draws them from the mixed pool (`randperm(500)[:10]`,
//! about half positive on average); `balanced` draws exactly half from each class instead.
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::PromptPair;
use crate::error::{Error, Result};

/// Pool layout plus the SAE training subset (indices into the pool).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaperSplit {
    /// Pool entry `i` comes from pair `pair_index[i]` (`i mod n`).
    pub pair_index: Vec<usize>,
    /// Pool entry `i` is a positive (clean prompt); the first n are, the last n are not.
    pub is_pos: Vec<bool>,
    /// Pool indices of the SAE training examples, in draw order (balanced: positives first).
    pub sae_train: Vec<usize>,
}

impl PaperSplit {
    /// Number of prompts in the pool (`2 n`).
    pub fn len(&self) -> usize {
        self.is_pos.len()
    }

    pub fn is_empty(&self) -> bool {
        self.is_pos.is_empty()
    }

    /// The pool's prompt texts, in pool order.
    pub fn prompts<'a>(&self, pairs: &'a [PromptPair]) -> Result<Vec<&'a str>> {
        if pairs.len() * 2 != self.len() {
            return Err(Error::shape(
                "paper split pool",
                self.len(),
                pairs.len() * 2,
            ));
        }
        Ok(self
            .pair_index
            .iter()
            .zip(&self.is_pos)
            .map(|(&i, &pos)| {
                if pos {
                    pairs[i].clean.as_str()
                } else {
                    pairs[i].corrupt.as_str()
                }
            })
            .collect())
    }
}

/// Lay out the pool for `n_pairs` pairs and draw `n_sae_examples` training prompts with
/// `seed`. With `balanced`, positives get `ceil(k/2)` and negatives `floor(k/2)`.
pub fn paper_split(
    n_pairs: usize,
    n_sae_examples: usize,
    balanced: bool,
    seed: u64,
) -> Result<PaperSplit> {
    if n_pairs == 0 {
        return Err(Error::InvalidInput("paper split: no prompt pairs".into()));
    }
    if n_sae_examples == 0 {
        return Err(Error::InvalidInput(
            "paper split: need at least 1 SAE training example".into(),
        ));
    }
    let pool = 2 * n_pairs;
    let mut rng = StdRng::seed_from_u64(seed);
    let sae_train = if balanced {
        let n_pos = n_sae_examples.div_ceil(2);
        let n_neg = n_sae_examples / 2;
        if n_pos > n_pairs {
            return Err(Error::InvalidInput(format!(
                "paper split: {n_sae_examples} balanced SAE examples need {n_pos} of each class, \
                 but there are only {n_pairs} pairs"
            )));
        }
        let mut v: Vec<usize> = sample(&mut rng, n_pairs, n_pos).into_vec();
        v.extend(
            sample(&mut rng, n_pairs, n_neg)
                .into_iter()
                .map(|i| i + n_pairs),
        );
        v
    } else {
        if n_sae_examples > pool {
            return Err(Error::InvalidInput(format!(
                "paper split: {n_sae_examples} SAE examples requested from a pool of {pool}"
            )));
        }
        sample(&mut rng, pool, n_sae_examples).into_vec()
    };
    Ok(PaperSplit {
        pair_index: (0..pool).map(|i| i % n_pairs).collect(),
        is_pos: (0..pool).map(|i| i < n_pairs).collect(),
        sae_train,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_balance() {
        let s = paper_split(250, 10, true, 3).unwrap();
        assert_eq!(s.len(), 500);
        assert!(s.is_pos[..250].iter().all(|&p| p));
        assert!(s.is_pos[250..].iter().all(|&p| !p));
        assert_eq!(s.pair_index[251], 1);
        let pos = s.sae_train.iter().filter(|&&i| s.is_pos[i]).count();
        assert_eq!(pos, 5);
        let mut u = s.sae_train.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 10);
    }

    #[test]
    fn mixed_is_deterministic_and_distinct() {
        let a = paper_split(250, 10, false, 7).unwrap();
        assert_eq!(a, paper_split(250, 10, false, 7).unwrap());
        assert_ne!(
            a.sae_train,
            paper_split(250, 10, false, 8).unwrap().sae_train
        );
        assert!(a.sae_train.iter().all(|&i| i < 500));
        assert!(paper_split(3, 7, false, 0).is_err());
        assert!(paper_split(3, 7, true, 0).is_err());
        assert!(paper_split(0, 1, false, 0).is_err());
    }
}

//! Correctness filtering: keep positives the model gets right and negatives it gets wrong.
//!
//! The SAE paper labels clean prompts positive and corrupt prompts negative "by construction"
//! and never checks the model. This filter makes the labels true for the model at hand, given
//! the last-position logits of each prompt (pure logic: the forward pass is done elsewhere).
use serde::{Deserialize, Serialize};

use super::metrics::{metric_value, LogitRow, PairTokens};
use crate::error::{Error, Result};

/// What "the model gets it right" means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterRule {
    /// The top-1 token is the answer (Greater-Than: any year above YY).
    TopRank,
    /// The pair's metric is > 0 (IOI: answer beats the subject).
    MetricPositive,
}

/// Which prompts survived, and accuracies before and after filtering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterReport {
    pub rule: FilterRule,
    pub n_pairs: usize,
    /// Pair indices whose clean prompt the model gets right (kept positives).
    pub kept_pos: Vec<usize>,
    /// Pair indices whose corrupt prompt the model gets wrong (kept negatives).
    pub kept_neg: Vec<usize>,
    /// Pair indices where both hold.
    pub kept_pairs: Vec<usize>,
    /// Fraction of clean prompts answered correctly, before filtering.
    pub clean_acc_before: f32,
    /// Fraction of corrupt prompts still "answered correctly", before filtering.
    pub corrupt_acc_before: f32,
    /// The same over the kept positives / negatives (1 and 0 unless nothing survived: NaN).
    pub clean_acc_after: f32,
    pub corrupt_acc_after: f32,
}

fn correct<R: LogitRow>(rule: FilterRule, row: &R, info: &PairTokens) -> Result<bool> {
    Ok(match rule {
        FilterRule::TopRank => row.top().is_some_and(|t| info.accepts(t)),
        FilterRule::MetricPositive => metric_value(info.metric, row, info)? > 0.0,
    })
}

fn frac(k: usize, n: usize) -> f32 {
    if n == 0 {
        f32::NAN
    } else {
        k as f32 / n as f32
    }
}

/// Filter `pairs` (resolved with [`super::resolve_tokens`]) by last-position logits, one row
/// per pair for the clean and for the corrupt prompt. Errors on mismatched lengths, or when
/// fewer than `min_survivors` positives or negatives are kept.
pub fn filter<R: LogitRow>(
    pairs: &[PairTokens],
    clean_logits: &[R],
    corrupt_logits: &[R],
    rule: FilterRule,
    min_survivors: usize,
) -> Result<FilterReport> {
    let n = pairs.len();
    if clean_logits.len() != n {
        return Err(Error::shape(
            "filter: clean logit rows",
            n,
            clean_logits.len(),
        ));
    }
    if corrupt_logits.len() != n {
        return Err(Error::shape(
            "filter: corrupt logit rows",
            n,
            corrupt_logits.len(),
        ));
    }
    let (mut kept_pos, mut kept_neg, mut kept_pairs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut clean_ok, mut corrupt_ok) = (0usize, 0usize);
    for (i, info) in pairs.iter().enumerate() {
        let c = correct(rule, &clean_logits[i], info)?;
        let k = correct(rule, &corrupt_logits[i], info)?;
        clean_ok += c as usize;
        corrupt_ok += k as usize;
        if c {
            kept_pos.push(i);
        }
        if !k {
            kept_neg.push(i);
        }
        if c && !k {
            kept_pairs.push(i);
        }
    }
    if kept_pos.len() < min_survivors || kept_neg.len() < min_survivors {
        return Err(Error::Task(format!(
            "filter ({rule:?}): {} of {n} positives and {} of {n} negatives survive; \
             need at least {min_survivors} of each (clean accuracy {:.3}, corrupt accuracy {:.3})",
            kept_pos.len(),
            kept_neg.len(),
            frac(clean_ok, n),
            frac(corrupt_ok, n),
        )));
    }
    let mut clean_after = 0usize;
    for &i in &kept_pos {
        clean_after += correct(rule, &clean_logits[i], &pairs[i])? as usize;
    }
    let mut corrupt_after = 0usize;
    for &i in &kept_neg {
        corrupt_after += correct(rule, &corrupt_logits[i], &pairs[i])? as usize;
    }
    Ok(FilterReport {
        rule,
        n_pairs: n,
        clean_acc_before: frac(clean_ok, n),
        corrupt_acc_before: frac(corrupt_ok, n),
        clean_acc_after: frac(clean_after, kept_pos.len()),
        corrupt_acc_after: frac(corrupt_after, kept_neg.len()),
        kept_pos,
        kept_neg,
        kept_pairs,
    })
}

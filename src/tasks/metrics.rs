//! Task metrics as pure functions over one last-position logits row (length = vocab).
//!
//! Signs: every metric here is "higher = the model does the task better". ACDC minimises the
//! negated forms (`-(logit diff)`, `-(prob diff)`), so negate when comparing with its numbers.
//! Internal sums run in f64 so a 50k-entry softmax does not lose the small terms.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::PromptPair;
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

/// Which metric scores a prompt pair. Serialised as `"logit_diff"`, `"max_wrong_diff"` or
/// `{"year_prob_diff": {"yy": 32}}` (the JSONL `metric` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// IOI: answer logit minus the mean wrong-answer logit (ACDC: IO − S, one wrong answer).
    LogitDiff,
    /// Greater-Than: Σ p(years > YY) − Σ p(years ≤ YY), full-vocabulary softmax (ACDC's
    /// `greaterthan_metric` up to sign). `yy` is the start year's last two digits.
    YearProbDiff { yy: u32 },
    /// Docstring: answer logit minus the largest wrong-answer logit (ACDC's
    /// `docstring_metric` up to sign).
    MaxWrongDiff,
}

/// A pair's answer and wrong answers as token ids, ready for [`metric_value`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairTokens {
    pub metric: MetricKind,
    /// First token of `answer`.
    pub answer: u32,
    /// First tokens of `wrong_answers`, deduplicated, in order.
    pub wrong: Vec<u32>,
    /// `YearProbDiff` only: first tokens of `"{YY+1:02}".."99"` (else empty).
    pub greater: Vec<u32>,
    /// `YearProbDiff` only: first tokens of `"00"..="{YY:02}"` (else empty). A token that
    /// starts both a greater and a not-greater year (digit-split tokenizers: `"3"` for 31 and
    /// 35 when YY = 33) says nothing about the comparison and is left out of both sets.
    pub not_greater: Vec<u32>,
}

impl PairTokens {
    /// Is `token` a correct next token? (Greater-Than: any year above YY; else the answer.)
    pub fn accepts(&self, token: u32) -> bool {
        match self.metric {
            MetricKind::YearProbDiff { .. } => self.greater.contains(&token),
            _ => token == self.answer,
        }
    }
}

fn first_token(tok: &dyn Tokenizer, text: &str, what: &str) -> Result<u32> {
    tok.encode(text)?
        .first()
        .copied()
        .ok_or_else(|| Error::Task(format!("{what} `{text}` encodes to no tokens")))
}

/// Resolve a pair's answer strings to ids (first token of each string, as ACDC does).
/// The metric defaults to [`MetricKind::LogitDiff`] when the pair names none.
pub fn resolve_tokens(pair: &PromptPair, tok: &dyn Tokenizer) -> Result<PairTokens> {
    let metric = pair.metric.unwrap_or(MetricKind::LogitDiff);
    let answer = first_token(tok, &pair.answer, "answer")?;
    let mut wrong = Vec::with_capacity(pair.wrong_answers.len());
    for w in &pair.wrong_answers {
        let id = first_token(tok, w, "wrong answer")?;
        if !wrong.contains(&id) {
            wrong.push(id);
        }
    }
    let (mut greater, mut not_greater) = (Vec::new(), Vec::new());
    match metric {
        MetricKind::YearProbDiff { yy } => {
            (greater, not_greater) = year_token_sets(tok, yy)?;
            if greater.is_empty() {
                return Err(Error::Task(format!(
                    "year_prob_diff: with yy = {yy} no token marks a later year for this \
                     tokenizer (prompt: {:?})",
                    pair.clean
                )));
            }
        }
        MetricKind::LogitDiff | MetricKind::MaxWrongDiff => {
            if wrong.is_empty() {
                return Err(Error::Task(format!(
                    "{metric:?} needs at least one wrong answer (prompt: {:?})",
                    pair.clean
                )));
            }
            if wrong.contains(&answer) {
                return Err(Error::Task(format!(
                    "a wrong answer starts with the same token as the answer `{}`",
                    pair.answer
                )));
            }
        }
    }
    Ok(PairTokens {
        metric,
        answer,
        wrong,
        greater,
        not_greater,
    })
}

/// The first tokens of the two-digit years above `yy` and of those at or below it, with
/// tokens that start years on both sides removed (see [`PairTokens::not_greater`]).
pub fn year_token_sets(tok: &dyn Tokenizer, yy: u32) -> Result<(Vec<u32>, Vec<u32>)> {
    let mut hi = BTreeSet::new();
    let mut lo = BTreeSet::new();
    for y in 0..=99u32 {
        let id = first_token(tok, &format!("{y:02}"), "year")?;
        if y > yy {
            hi.insert(id);
        } else {
            lo.insert(id);
        }
    }
    Ok((
        hi.difference(&lo).copied().collect(),
        lo.difference(&hi).copied().collect(),
    ))
}

fn logit(logits: &[f32], id: u32) -> Result<f64> {
    logits
        .get(id as usize)
        .map(|&x| x as f64)
        .ok_or_else(|| Error::shape("metric token id", format!("< {}", logits.len()), id))
}

/// log-softmax of a row, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Σ p(greater) − Σ p(not greater), p = softmax over the whole row.
pub fn year_prob_diff(logits: &[f32], greater: &[u32], not_greater: &[u32]) -> Result<f32> {
    let lp = log_softmax(logits);
    let mass = |ids: &[u32]| -> Result<f64> {
        ids.iter().try_fold(0.0, |acc, &id| {
            lp.get(id as usize)
                .map(|l| acc + l.exp())
                .ok_or_else(|| Error::shape("metric token id", format!("< {}", lp.len()), id))
        })
    };
    Ok((mass(greater)? - mass(not_greater)?) as f32)
}

/// The value of metric `kind` on one last-position logits row. Errors when a token id is
/// outside the row or `kind` needs tokens `info` lacks (e.g. year sets for a non-year pair).
pub fn metric_value(kind: MetricKind, logits: &[f32], info: &PairTokens) -> Result<f32> {
    let answer = logit(logits, info.answer)?;
    match kind {
        MetricKind::LogitDiff => {
            if info.wrong.is_empty() {
                return Err(Error::Task("logit_diff needs a wrong answer".into()));
            }
            let mut sum = 0.0;
            for &w in &info.wrong {
                sum += logit(logits, w)?;
            }
            Ok((answer - sum / info.wrong.len() as f64) as f32)
        }
        MetricKind::MaxWrongDiff => {
            let mut max = f64::NEG_INFINITY;
            for &w in &info.wrong {
                max = max.max(logit(logits, w)?);
            }
            if info.wrong.is_empty() {
                return Err(Error::Task("max_wrong_diff needs a wrong answer".into()));
            }
            Ok((answer - max) as f32)
        }
        MetricKind::YearProbDiff { .. } => {
            if info.greater.is_empty() {
                return Err(Error::Task(
                    "year_prob_diff needs the year token sets (resolve with a YearProbDiff pair)"
                        .into(),
                ));
            }
            year_prob_diff(logits, &info.greater, &info.not_greater)
        }
    }
}

/// KL(clean ‖ patched) = Σ p_clean (log p_clean − log p_patched) between two last-position
/// rows, as ACDC's `kl_divergence` computes it per example.
pub fn kl_divergence(clean: &[f32], patched: &[f32]) -> Result<f32> {
    if clean.len() != patched.len() {
        return Err(Error::shape(
            "kl_divergence rows",
            clean.len(),
            patched.len(),
        ));
    }
    let (lc, lpch) = (log_softmax(clean), log_softmax(patched));
    let kl: f64 = lc
        .iter()
        .zip(&lpch)
        .map(|(&a, &b)| {
            if a == f64::NEG_INFINITY {
                0.0
            } else {
                a.exp() * (a - b)
            }
        })
        .sum();
    Ok(kl as f32)
}

/// Index of the largest logit (first one on ties), `None` for an empty row.
pub fn top_token(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &x) in logits.iter().enumerate() {
        if best.is_none_or(|(_, b)| x > b) {
            best = Some((i, x));
        }
    }
    best.map(|(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f64 = lp.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-12);
    }

    #[test]
    fn top_token_first_max_wins() {
        assert_eq!(top_token(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(top_token(&[]), None);
    }
}

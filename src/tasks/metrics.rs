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

/// The one token of an answer. A logit-difference metric reads a single next-token logit,
/// so an answer of several tokens would be scored by its first alone, silently; it is
/// refused instead.
fn one_token(tok: &dyn Tokenizer, text: &str, what: &str) -> Result<u32> {
    match tok.encode(text)?.as_slice() {
        [] => Err(Error::Task(format!("{what} `{text}` encodes to no tokens"))),
        [id] => Ok(*id),
        ids => Err(Error::Task(format!(
            "{what} `{text}` is {} tokens ({ids:?}); the metric reads one next-token logit, \
             so answers must be one token",
            ids.len()
        ))),
    }
}

/// Resolve a pair's answer strings to token ids: one token each for the logit-difference
/// metrics; the year metric reads its year sets and only the answer's first token.
/// The metric defaults to [`MetricKind::LogitDiff`] when the pair names none.
pub fn resolve_tokens(pair: &PromptPair, tok: &dyn Tokenizer) -> Result<PairTokens> {
    let metric = pair.metric.unwrap_or(MetricKind::LogitDiff);
    let token = match metric {
        MetricKind::YearProbDiff { .. } => first_token,
        MetricKind::LogitDiff | MetricKind::MaxWrongDiff => one_token,
    };
    let answer = token(tok, &pair.answer, "answer")?;
    let mut wrong = Vec::with_capacity(pair.wrong_answers.len());
    for w in &pair.wrong_answers {
        let id = token(tok, w, "wrong answer")?;
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

/// What the metrics read of one last-position logits row: a full row (`[f32]`, `Vec<f32>`)
/// or the [`CompactLogits`] a GPU run copies back instead of the whole vocabulary.
pub trait LogitRow {
    /// The logit of `id`; an error when the row does not hold it.
    fn logit(&self, id: u32) -> Result<f64>;
    /// `ln Σ exp` over the whole row, in f64 (so log p(id) = logit − this).
    fn log_sum_exp(&self) -> f64;
    /// The highest-scoring token, the first one on ties; `None` for an empty row.
    fn top(&self) -> Option<u32>;
}

/// Full rows: slices, vectors and arrays of the whole vocabulary's logits.
impl<T: AsRef<[f32]> + ?Sized> LogitRow for T {
    fn logit(&self, id: u32) -> Result<f64> {
        let row = self.as_ref();
        row.get(id as usize)
            .map(|&x| x as f64)
            .ok_or_else(|| Error::shape("metric token id", format!("< {}", row.len()), id))
    }
    fn log_sum_exp(&self) -> f64 {
        let row = self.as_ref();
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        max + row
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln()
    }
    fn top(&self) -> Option<u32> {
        top_token(self.as_ref())
    }
}

/// The part of a last-position logits row the task metrics read: the logits of the kept
/// token ids (sorted), the row's log-sum-exp and its top token. [`compact_logits`] computes
/// it where the logits are, so a GPU run copies a few numbers per prompt, not the vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactLogits {
    pub ids: Vec<u32>,
    pub vals: Vec<f32>,
    pub log_sum_exp: f64,
    pub top: Option<u32>,
}

impl LogitRow for CompactLogits {
    fn logit(&self, id: u32) -> Result<f64> {
        self.ids
            .binary_search(&id)
            .ok()
            .and_then(|i| self.vals.get(i))
            .map(|&v| v as f64)
            .ok_or_else(|| Error::Task(format!("the logit of token {id} was not kept")))
    }
    fn log_sum_exp(&self) -> f64 {
        self.log_sum_exp
    }
    fn top(&self) -> Option<u32> {
        self.top
    }
}

impl PairTokens {
    /// Every token id the metric and the top-1 check of this pair read, sorted.
    pub fn metric_ids(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::iter::once(self.answer)
            .chain(self.wrong.iter().copied())
            .chain(self.greater.iter().copied())
            .chain(self.not_greater.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// [`CompactLogits`] of each row of `logits` [rows, vocab] keeping the ids `keep[row]`,
/// computed with tensor ops on `logits`' device: a gather of the kept ids, the log-sum-exp
/// in f64, and the top token (the lowest index among the row's maxima, as [`top_token`]).
pub fn compact_logits(
    logits: &candle_core::Tensor,
    keep: &[Vec<u32>],
) -> Result<Vec<CompactLogits>> {
    let (rows, vocab) = logits.dims2()?;
    if rows == 0 || vocab == 0 {
        return Err(Error::InvalidInput(format!(
            "compact_logits: empty logits [{rows}, {vocab}]"
        )));
    }
    if keep.len() != rows {
        return Err(Error::shape(
            "compact_logits: kept-id lists",
            rows,
            keep.len(),
        ));
    }
    // In row chunks: by arithmetic the f64, mask and index temporaries below take ~37 bytes
    // per logit (18 GB for 10,000 rows of GPT-2's vocabulary at once), and candle's CUDA element-wise kernels
    // index with 32 bits.
    const CHUNK: usize = 1024;
    let mut out = Vec::with_capacity(rows);
    for start in (0..rows).step_by(CHUNK) {
        let len = CHUNK.min(rows - start);
        out.extend(compact_chunk(
            &logits.narrow(0, start, len)?,
            &keep[start..start + len],
        )?);
    }
    Ok(out)
}

fn compact_chunk(logits: &candle_core::Tensor, keep: &[Vec<u32>]) -> Result<Vec<CompactLogits>> {
    use candle_core::{DType, Tensor, D};
    let (rows, vocab) = logits.dims2()?;
    let dev = logits.device();
    let width = keep.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut idx = Vec::with_capacity(rows * width);
    for ids in keep {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::shape("metric token id", format!("< {vocab}"), bad));
        }
        let pad = ids.first().copied().unwrap_or(0);
        idx.extend(ids.iter().copied());
        idx.extend(std::iter::repeat_n(pad, width - ids.len()));
    }
    let logits = logits.to_dtype(DType::F32)?.contiguous()?;
    let idx = Tensor::from_vec(idx, (rows, width), dev)?;
    let vals = logits.gather(&idx, 1)?.to_vec2::<f32>()?;
    let wide = logits.to_dtype(DType::F64)?;
    let max = wide.max_keepdim(D::Minus1)?;
    let lse = (wide
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + &max)?
        .squeeze(1)?
        .to_vec1::<f64>()?;
    // First maximum: the smallest index where the row equals its max.
    let fmax = logits.max_keepdim(D::Minus1)?;
    let at = Tensor::arange(0u32, vocab as u32, dev)?
        .unsqueeze(0)?
        .broadcast_as((rows, vocab))?;
    let none = Tensor::full(vocab as u32, (rows, vocab), dev)?;
    let top = logits
        .broadcast_eq(&fmax)?
        .where_cond(&at, &none)?
        .min(D::Minus1)?
        .to_vec1::<u32>()?;
    Ok(keep
        .iter()
        .zip(vals)
        .zip(lse.into_iter().zip(top))
        .map(|((ids, v), (l, t))| CompactLogits {
            ids: ids.clone(),
            vals: v[..ids.len()].to_vec(),
            log_sum_exp: l,
            top: (t < vocab as u32).then_some(t),
        })
        .collect())
}

/// log-softmax of a row, in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let lse = logits.log_sum_exp();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Σ p(greater) − Σ p(not greater), p = softmax over the whole row.
pub fn year_prob_diff<R: LogitRow + ?Sized>(
    logits: &R,
    greater: &[u32],
    not_greater: &[u32],
) -> Result<f32> {
    let lse = logits.log_sum_exp();
    let mass = |ids: &[u32]| -> Result<f64> {
        ids.iter()
            .try_fold(0.0, |acc, &id| Ok(acc + (logits.logit(id)? - lse).exp()))
    };
    Ok((mass(greater)? - mass(not_greater)?) as f32)
}

/// The value of metric `kind` on one last-position logits row. Errors when a token id is
/// outside the row or `kind` needs tokens `info` lacks (e.g. year sets for a non-year pair).
pub fn metric_value<R: LogitRow + ?Sized>(
    kind: MetricKind,
    logits: &R,
    info: &PairTokens,
) -> Result<f32> {
    let logit = |row: &R, id: u32| row.logit(id);
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

    /// Compact rows computed with tensor ops give the metrics, top tokens and filter
    /// decisions of the full rows.
    #[test]
    fn compact_rows_equal_full_rows() {
        use rand::{Rng, SeedableRng};
        let (rows, vocab) = (7usize, 1000usize);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut full: Vec<Vec<f32>> = (0..rows)
            .map(|_| (0..vocab).map(|_| rng.random_range(-8.0f32..8.0)).collect())
            .collect();
        full[2][17] = 50.0; // a tie at the maximum: the lower index wins
        full[2][400] = 50.0;
        full[4][999] = 60.0;
        let ioi = PairTokens {
            metric: MetricKind::LogitDiff,
            answer: 17,
            wrong: vec![400],
            greater: vec![],
            not_greater: vec![],
        };
        let ds = PairTokens {
            metric: MetricKind::MaxWrongDiff,
            answer: 5,
            wrong: vec![999, 6, 7],
            ..ioi.clone()
        };
        let gt = PairTokens {
            metric: MetricKind::YearProbDiff { yy: 50 },
            answer: 60,
            wrong: vec![],
            greater: (51..100).collect(),
            not_greater: (0..51).collect(),
        };
        let pairs = [&ioi, &ds, &gt, &ioi, &ds, &gt, &gt];
        let keep: Vec<Vec<u32>> = pairs.iter().map(|p| p.metric_ids()).collect();
        let t =
            candle_core::Tensor::from_vec(full.concat(), (rows, vocab), &candle_core::Device::Cpu)
                .unwrap();
        let compact = compact_logits(&t, &keep).unwrap();
        for (i, (row, c)) in full.iter().zip(&compact).enumerate() {
            assert_eq!(c.top, top_token(row), "row {i}");
            let (a, b) = (
                metric_value(pairs[i].metric, row, pairs[i]).unwrap(),
                metric_value(pairs[i].metric, c, pairs[i]).unwrap(),
            );
            assert!(
                (a - b).abs() <= 1e-6 * a.abs().max(1.0),
                "row {i}: {a} vs {b}"
            );
        }
        assert_eq!(compact[2].top, Some(17));
        assert_eq!(compact[4].top, Some(999));
        let toks: Vec<PairTokens> = pairs.iter().map(|p| (*p).clone()).collect();
        for rule in [
            super::super::FilterRule::TopRank,
            super::super::FilterRule::MetricPositive,
        ] {
            let a = super::super::filter(&toks, &full, &full, rule, 0).unwrap();
            let b = super::super::filter(&toks, &compact, &compact, rule, 0).unwrap();
            assert_eq!((a.kept_pos, a.kept_neg), (b.kept_pos, b.kept_neg));
        }
        // Only kept ids can be read; ids must be in the vocabulary; one list per row.
        assert!(compact[0].logit(3).is_err());
        assert!(compact_logits(&t, &keep[..3]).is_err());
        let mut bad = keep.clone();
        bad[0].push(vocab as u32);
        assert!(compact_logits(&t, &bad).is_err());
    }

    #[test]
    fn compact_logits_over_several_chunks() {
        // 2,500 rows: three chunks, the last one short; rows come back in order.
        let (rows, vocab) = (2500usize, 6usize);
        let data: Vec<f32> = (0..rows * vocab)
            .map(|i| ((i * 7919) % 23) as f32 * 0.25 - 2.0)
            .collect();
        let keep: Vec<Vec<u32>> = (0..rows).map(|i| vec![(i % vocab) as u32]).collect();
        let t =
            candle_core::Tensor::from_vec(data.clone(), (rows, vocab), &candle_core::Device::Cpu)
                .unwrap();
        let compact = compact_logits(&t, &keep).unwrap();
        assert_eq!(compact.len(), rows);
        for (i, c) in compact.iter().enumerate() {
            let row = &data[i * vocab..(i + 1) * vocab];
            assert_eq!(c.top, top_token(row), "row {i}");
            assert_eq!(
                c.logit(keep[i][0]).unwrap(),
                row[i % vocab] as f64,
                "row {i}"
            );
            assert!(
                (c.log_sum_exp - row.to_vec().log_sum_exp()).abs() < 1e-9,
                "row {i}"
            );
        }
        let empty = candle_core::Tensor::zeros(
            (0, vocab),
            candle_core::DType::F32,
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(compact_logits(&empty, &[]).is_err());
    }

    #[test]
    fn top_token_first_max_wins() {
        assert_eq!(top_token(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(top_token(&[]), None);
    }
}

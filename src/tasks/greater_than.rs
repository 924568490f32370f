//! Greater-Than (Hanna et al. 2023), with ACDC's nouns and year filter.
//!
//! Clean: `"The {noun} lasted from the year {XXYY} to the year {XX}"` (the SAE paper's
//! wording; ACDC ends with `"to {XX}"`). Corrupt: the start year becomes `XX01`, the standard
//! "01" corruption. The model should continue with a two-digit `YY' > YY`; the metric is
//! ACDC's probability difference over the `00`..`99` tokens, so each pair stores
//! [`MetricKind::YearProbDiff`] with its `YY`, `answer = format!("{:02}", YY + 1)` and the
//! wrong answers `"00"..=YY`.
//!
//! Years (ACDC's `get_year_data`): centuries 11..=17, years `XX02..=XX98`, kept when the
//! tokenizer splits `" XXYY"` exactly as `" XX"` followed by `"YY"`; then each century's first
//! and last surviving year is dropped. For GPT-2 this is ACDC's `[" XX", "YY"]` test. For
//! tokenizers that split digits one by one (e.g. SmolLM2) the same rule keeps a year when the
//! century prefix and `YY` tokenise separately and `YY` is at most two tokens; the metric then
//! reads the first token of each `YY` string (see [`super::metrics::resolve_tokens`]), and
//! years whose later years share no distinct first token (`YY` in the 90s when digits are
//! split) are dropped because the metric could not be positive. A
//! century is skipped when its corrupt year `" XX01"` does not split the same way, so clean and
//! corrupt prompts align token by token.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::metrics::year_token_sets;
use super::words::{self, require, single_token_words};
use super::{
    token_len, too_many_tries, GenStats, MetricKind, PromptPair, TaskSet, WordListStats,
    MAX_TRIES_PER_PAIR,
};
use crate::error::Result;
use crate::tokenize::Tokenizer;

/// ACDC's centuries (`range(11, 18)`).
pub const CENTURIES: std::ops::RangeInclusive<u32> = 11..=17;

/// Does `" {century}{yy:02}"` tokenise as `" {century}"` then `"{yy:02}"`, with `YY` at most
/// two tokens?
fn splits_cleanly(tok: &dyn Tokenizer, century: u32, yy: u32) -> Result<bool> {
    let full = tok.encode(&format!(" {century}{yy:02}"))?;
    let mut parts = tok.encode(&format!(" {century}"))?;
    let tail = tok.encode(&format!("{yy:02}"))?;
    if tail.is_empty() || tail.len() > 2 {
        return Ok(false);
    }
    parts.extend(tail);
    Ok(full == parts)
}

/// The years ACDC's filter keeps for `tok`, as `(century, yy)`, plus their stats.
pub fn years(tok: &dyn Tokenizer) -> Result<(Vec<(u32, u32)>, WordListStats)> {
    let mut out = Vec::new();
    let mut available = 0usize;
    // A digit-split tokenizer cannot tell 95 from 91 by the next token; skip such YY.
    let mut has_later_token = [false; 100];
    for (yy, ok) in has_later_token.iter_mut().enumerate() {
        *ok = yy < 99 && !year_token_sets(tok, yy as u32)?.0.is_empty();
    }
    for c in CENTURIES {
        available += 97;
        if !splits_cleanly(tok, c, 1)? {
            continue;
        }
        let mut ok = Vec::new();
        for yy in 2..=98 {
            if splits_cleanly(tok, c, yy)? && has_later_token[yy as usize] {
                ok.push((c, yy));
            }
        }
        // ACDC: `all_success[1:-1]`.
        if ok.len() > 2 {
            out.extend_from_slice(&ok[1..ok.len() - 1]);
        }
    }
    let stats = WordListStats {
        list: "years".into(),
        available,
        kept: out.len(),
    };
    Ok((out, stats))
}

/// The clean and corrupt prompt for one noun, century and `YY`.
pub fn prompt(noun: &str, century: u32, yy: u32) -> (String, String) {
    (
        format!("The {noun} lasted from the year {century}{yy:02} to the year {century}"),
        format!("The {noun} lasted from the year {century}01 to the year {century}"),
    )
}

/// See the module docs. Errors when no year or noun survives the tokenizer filter.
pub fn generate(tok: &dyn Tokenizer, n: usize, seed: u64) -> Result<TaskSet> {
    let all_nouns = words::lines(words::GT_NOUNS);
    let (nouns, noun_stats) = single_token_words(tok, "nouns", &all_nouns)?;
    require("greater-than", &noun_stats, 1)?;
    let (years, year_stats) = years(tok)?;
    require("greater-than", &year_stats, 1)?;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(n);
    let mut regenerated = 0usize;
    let max_tries = n.saturating_mul(MAX_TRIES_PER_PAIR);
    let mut tries = 0usize;
    while pairs.len() < n {
        if tries >= max_tries {
            return Err(too_many_tries("greater-than", n, pairs.len(), tries));
        }
        tries += 1;
        let noun = nouns[rng.random_range(0..nouns.len() as u32) as usize];
        let (century, yy) = years[rng.random_range(0..years.len() as u32) as usize];
        let (clean, corrupt) = prompt(noun, century, yy);
        if token_len(tok, &clean)? != token_len(tok, &corrupt)? {
            regenerated += 1;
            continue;
        }
        pairs.push(PromptPair {
            clean,
            corrupt,
            answer: format!("{:02}", yy + 1),
            wrong_answers: (0..=yy).map(|y| format!("{y:02}")).collect(),
            metric: Some(MetricKind::YearProbDiff { yy }),
        });
    }
    Ok(TaskSet {
        name: "greater-than".into(),
        pairs,
        stats: GenStats {
            word_lists: vec![noun_stats, year_stats],
            pairs_regenerated: regenerated,
        },
    })
}

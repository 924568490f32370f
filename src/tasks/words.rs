//! The embedded ACDC word lists and the single-token filter shared by the generators.
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

use super::WordListStats;

pub(crate) const IOI_NAMES: &str = include_str!("../../data/ioi_names.txt");
pub(crate) const IOI_PLACES: &str = include_str!("../../data/ioi_places.txt");
pub(crate) const IOI_OBJECTS: &str = include_str!("../../data/ioi_objects.txt");
pub(crate) const IOI_TEMPLATES_BABA: &str = include_str!("../../data/ioi_templates_baba.txt");
pub(crate) const IOI_TEMPLATES_ABBA: &str = include_str!("../../data/ioi_templates_abba.txt");
pub(crate) const GT_NOUNS: &str = include_str!("../../data/greaterthan_nouns.txt");
pub(crate) const DS_VARIABLES: &str = include_str!("../../data/docstring_variable_names.txt");
pub(crate) const DS_NOUNS: &str = include_str!("../../data/docstring_nouns.txt");
pub(crate) const GROUND_TRUTH_JSON: &str = include_str!("../../data/ground_truth_heads.json");

/// One entry per non-empty line, in source order (order matters for seeded draws).
pub(crate) fn lines(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whitespace-separated words, in source order (the Docstring lists are one line each).
pub(crate) fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Keep the words whose `" " + word` is one token under `tok`: the generators substitute
/// words after a space, and a multi-token word would shift every later position.
pub(crate) fn single_token_words<'a>(
    tok: &dyn Tokenizer,
    list: &str,
    words: &[&'a str],
) -> Result<(Vec<&'a str>, WordListStats)> {
    let mut kept = Vec::with_capacity(words.len());
    for w in words {
        if tok.single_token(&format!(" {w}"))?.is_some() {
            kept.push(*w);
        }
    }
    let stats = WordListStats {
        list: list.to_string(),
        available: words.len(),
        kept: kept.len(),
    };
    Ok((kept, stats))
}

/// Error unless at least `need` words survived the tokenizer filter.
pub(crate) fn require(task: &str, stats: &WordListStats, need: usize) -> Result<()> {
    if stats.kept < need {
        return Err(Error::Task(format!(
            "{task}: only {} of {} {} are single tokens for this tokenizer; need at least {need}",
            stats.kept, stats.available, stats.list
        )));
    }
    Ok(())
}

//! Tasks: the prompt pairs a circuit is searched on, their metrics, and ground truth.
//!
//! - [`generate`] builds ACDC's three benchmark tasks (IOI, Greater-Than, Docstring) for any
//!   tokenizer, deterministically per seed ([`ioi`], [`greater_than`], [`docstring`]).
//! - [`jsonl`] reads and writes user tasks (and imports auto-circuit's prompt JSON).
//! - [`metrics`] holds the task metrics as pure functions over one logits row.
//! - [`filter`] keeps only prompts the model actually gets right (positives) or wrong
//!   (negatives), given last-position logits.
//! - [`split`] lays out the paper's 2n-prompt pool and its SAE training subset.
//! - [`circuits`] holds ground-truth head sets (built-in and user JSON).
//!
//! The word lists come from ACDC (MIT; see `data/README.md`) and are embedded in the binary.
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

pub mod circuits;
pub mod docstring;
pub mod filter;
pub mod greater_than;
pub mod ioi;
pub mod jsonl;
pub mod metrics;
pub mod split;
mod words;

pub use circuits::Circuit;
pub use filter::{filter, FilterReport, FilterRule};
pub use jsonl::{
    import_auto_circuit, parse_auto_circuit, parse_jsonl, read_jsonl, to_jsonl_string, write_jsonl,
    AutoCircuitImport,
};
pub use metrics::{
    compact_logits, kl_divergence, metric_value, resolve_tokens, top_token, year_prob_diff,
    year_token_sets, CompactLogits, LogitRow, MetricKind, PairTokens,
};
pub use split::{paper_split, PaperSplit};

/// One clean prompt and its corrupted counterpart. The model is scored on the token that
/// follows the prompt; `answer` is that token's text (with its leading space, e.g. `" Mary"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptPair {
    pub clean: String,
    pub corrupt: String,
    pub answer: String,
    /// Competing answers the metric compares against (IOI: the subject; Docstring: the other
    /// arguments; Greater-Than: the years `<= YY`).
    #[serde(default)]
    pub wrong_answers: Vec<String>,
    /// How to score this pair; `None` lets the caller choose (logit difference by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<MetricKind>,
}

/// How many words of one list a tokenizer kept (single-token words only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordListStats {
    pub list: String,
    pub available: usize,
    pub kept: usize,
}

/// What generation had to throw away, so a user sees how a tokenizer shaped the task.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenStats {
    pub word_lists: Vec<WordListStats>,
    /// Candidate pairs discarded (and redrawn) because clean and corrupt token lengths differed.
    pub pairs_regenerated: usize,
}

impl GenStats {
    /// The stats of the list called `list`, if generation used one.
    pub fn list(&self, list: &str) -> Option<&WordListStats> {
        self.word_lists.iter().find(|w| w.list == list)
    }
}

/// A named set of prompt pairs plus how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSet {
    pub name: String,
    pub pairs: Vec<PromptPair>,
    pub stats: GenStats,
}

/// The built-in benchmark tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TaskKind {
    Ioi,
    GreaterThan,
    Docstring,
}

impl TaskKind {
    /// The canonical short name (also accepted by `FromStr`).
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Ioi => "ioi",
            TaskKind::GreaterThan => "gt",
            TaskKind::Docstring => "docstring",
        }
    }
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TaskKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ioi" => Ok(TaskKind::Ioi),
            "gt" | "greater-than" | "greaterthan" | "greater_than" => Ok(TaskKind::GreaterThan),
            "docstring" | "ds" => Ok(TaskKind::Docstring),
            other => Err(Error::Task(format!(
                "unknown task `{other}` (expected ioi, gt/greater-than, docstring/ds)"
            ))),
        }
    }
}

/// Generate `n` prompt pairs of a built-in task for `tok`, deterministically per `seed`.
///
/// Every pair's clean and corrupt prompts have the same token length under `tok` (pairs that
/// do not are redrawn and counted in [`GenStats::pairs_regenerated`]).
pub fn generate(kind: TaskKind, tok: &dyn Tokenizer, n: usize, seed: u64) -> Result<TaskSet> {
    if n == 0 {
        return Err(Error::Task(format!(
            "{kind}: asked for 0 prompt pairs; need at least 1"
        )));
    }
    // A pair and its tokens take well under a kilobyte; an absurd --n is refused before
    // the generators reserve room for it.
    crate::memory::check(
        &format!("--n {n}: the prompt pairs"),
        crate::memory::product(&[n, 1024]),
    )?;
    match kind {
        TaskKind::Ioi => ioi::generate(tok, n, seed),
        TaskKind::GreaterThan => greater_than::generate(tok, n, seed),
        TaskKind::Docstring => docstring::generate(tok, n, seed),
    }
}

/// How many redraws a generator may spend per requested pair before giving up; generous,
/// since a tokenizer that splits every candidate would otherwise loop forever.
pub(crate) const MAX_TRIES_PER_PAIR: usize = 200;

/// Token length of `text` under `tok` (no BOS).
pub(crate) fn token_len(tok: &dyn Tokenizer, text: &str) -> Result<usize> {
    Ok(tok.encode(text)?.len())
}

/// Error for a generator that could not find enough equal-length pairs.
pub(crate) fn too_many_tries(task: &str, n: usize, made: usize, tries: usize) -> Error {
    Error::Task(format!(
        "{task}: made only {made} of {n} pairs with equal clean/corrupt token length after \
         {tries} draws; this tokenizer splits the task's words unevenly"
    ))
}

//! From a task name or file to tokenised clean/corrupt prompts with their metric tokens.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tasks::{self, PairTokens, PromptPair, TaskKind};
use crate::tokenize::Tokenizer;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TaskSource {
    Builtin(TaskKind),
    /// JSONL (`clean`, `corrupt`, `answer`, …) or auto-circuit's prompt JSON.
    File(PathBuf),
}

impl TaskSource {
    pub fn parse(s: &str) -> Result<Self> {
        let p = std::path::Path::new(s);
        if p.extension().is_some_and(|e| e == "jsonl" || e == "json") || p.exists() {
            return Ok(TaskSource::File(p.to_owned()));
        }
        Ok(TaskSource::Builtin(s.parse::<TaskKind>()?))
    }
    pub fn name(&self) -> String {
        match self {
            TaskSource::Builtin(k) => k.name().to_string(),
            TaskSource::File(p) => p.display().to_string(),
        }
    }
    /// The paper's λ: 0.05 for Docstring, 0.02 otherwise.
    pub fn default_lambda(&self) -> f32 {
        match self {
            TaskSource::Builtin(TaskKind::Docstring) => 0.05,
            _ => 0.02,
        }
    }
}

/// Which part of a task's pairs a run uses. The split is fixed: a pair's part follows from
/// its clean prompt's text alone (a salted FNV-1a hash: 60 % train, 20 % validation, 20 %
/// test), so the same prompt is in the same part for every seed, `--n` and machine, and a
/// circuit found on `train` is evaluated on pairs it never saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Split {
    /// Every pair, as before splits existed.
    #[default]
    All,
    Train,
    Validation,
    Test,
}

impl Split {
    pub fn name(&self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }

    /// The part of the pairs this split keeps.
    fn fraction(&self) -> f64 {
        match self {
            Split::All => 1.0,
            Split::Train => 0.6,
            Split::Validation | Split::Test => 0.2,
        }
    }

    /// The part a clean prompt belongs to.
    pub fn of(clean: &str) -> Split {
        // FNV-1a, salted so that the split does not line up with any other use of the hash.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"headcode-split-v1\0".iter().chain(clean.as_bytes()) {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        match h % 100 {
            0..60 => Split::Train,
            60..80 => Split::Validation,
            _ => Split::Test,
        }
    }

    pub fn keeps(&self, clean: &str) -> bool {
        *self == Split::All || Split::of(clean) == *self
    }
}

/// Tokenised pairs ready for the model.
pub struct PreparedTask {
    pub name: String,
    pub pairs: Vec<PromptPair>,
    pub clean: Vec<Vec<u32>>,
    pub corrupt: Vec<Vec<u32>>,
    pub tokens: Vec<PairTokens>,
    /// Generation notes (word lists kept, pairs regenerated, lines imported).
    pub notes: serde_json::Value,
}

pub fn load_pairs(
    src: &TaskSource,
    tok: &dyn Tokenizer,
    n: usize,
    seed: u64,
    split: Split,
) -> Result<(Vec<PromptPair>, serde_json::Value)> {
    if split == Split::All {
        return load_all(src, tok, n, seed);
    }
    let mut pool = match src {
        // A generator makes as many pairs as asked: ask for enough that `n` fall in the split.
        TaskSource::Builtin(_) => ((n as f64 / split.fraction()) * 1.25) as usize + 16,
        TaskSource::File(_) => 0,
    };
    loop {
        let (all, mut notes) = load_all(src, tok, pool, seed)?;
        let offered = all.len();
        let mut kept: Vec<PromptPair> = all.into_iter().filter(|p| split.keeps(&p.clean)).collect();
        let enough = n > 0 && kept.len() >= n;
        if enough || pool == 0 || pool >= 64 * n.max(1) {
            if kept.is_empty() || (n > 0 && kept.len() < n && matches!(src, TaskSource::Builtin(_)))
            {
                return Err(Error::Task(format!(
                    "{}: only {} of {offered} pairs fall in the {} split, {n} asked",
                    src.name(),
                    kept.len(),
                    split.name()
                )));
            }
            if n > 0 {
                kept.truncate(n);
            }
            if let Some(o) = notes.as_object_mut() {
                o.insert("split".into(), split.name().into());
                o.insert("split_of_pairs".into(), offered.into());
            }
            return Ok((kept, notes));
        }
        pool *= 2;
    }
}

fn load_all(
    src: &TaskSource,
    tok: &dyn Tokenizer,
    n: usize,
    seed: u64,
) -> Result<(Vec<PromptPair>, serde_json::Value)> {
    match src {
        TaskSource::Builtin(kind) => {
            let set = tasks::generate(*kind, tok, n, seed)?;
            let notes = serde_json::to_value(&set.stats)?;
            Ok((set.pairs, notes))
        }
        TaskSource::File(path) => {
            let text = crate::error::read_text(path)?;
            let is_auto = text.trim_start().starts_with('{') && text.contains("\"prompts\"");
            let (mut pairs, notes) = if is_auto {
                let imp = tasks::parse_auto_circuit(&text, path)?;
                let notes = serde_json::json!({
                    "format": "auto-circuit",
                    "extra_answers_ignored": imp.extra_answers_ignored,
                });
                (imp.pairs, notes)
            } else {
                (
                    tasks::parse_jsonl(&text, path)?,
                    serde_json::json!({"format": "jsonl"}),
                )
            };
            if pairs.is_empty() {
                return Err(Error::Task(format!("{}: no prompt pairs", path.display())));
            }
            if n > 0 && pairs.len() > n {
                pairs.truncate(n);
            }
            Ok((pairs, notes))
        }
    }
}

/// Tokenise with BOS (TransformerLens prepends it to string prompts) and check every
/// pair has equal length, as patching and the paper's protocol need.
pub fn prepare(
    src: &TaskSource,
    tok: &dyn Tokenizer,
    n: usize,
    seed: u64,
    bos: bool,
    split: Split,
) -> Result<PreparedTask> {
    let (pairs, notes) = load_pairs(src, tok, n, seed, split)?;
    let mut clean = Vec::with_capacity(pairs.len());
    let mut corrupt = Vec::with_capacity(pairs.len());
    let mut tokens = Vec::with_capacity(pairs.len());
    for (i, p) in pairs.iter().enumerate() {
        if p.clean.is_empty() || p.corrupt.is_empty() {
            return Err(Error::Task(format!("pair {i}: empty prompt")));
        }
        let a = tok.encode_with_bos(&p.clean, bos)?;
        let b = tok.encode_with_bos(&p.corrupt, bos)?;
        if a.len() != b.len() {
            return Err(Error::Task(format!(
                "pair {i}: clean has {} tokens and corrupt {}; pairs must have equal token length",
                a.len(),
                b.len()
            )));
        }
        clean.push(a);
        corrupt.push(b);
        tokens.push(tasks::resolve_tokens(p, tok).map_err(|e| match e {
            Error::Task(m) => Error::Task(format!("{}: pair {i}: {m}", src.name())),
            other => other,
        })?);
    }
    Ok(PreparedTask {
        name: src.name(),
        pairs,
        clean,
        corrupt,
        tokens,
        notes,
    })
}

impl PreparedTask {
    /// Metric of pair `i` from last-position logits (NaN if the tokens do not fit).
    pub fn metric<R: tasks::LogitRow + ?Sized>(&self, i: usize, logits: &R) -> f32 {
        self.tokens
            .get(i)
            .and_then(|t| tasks::metric_value(t.metric, logits, t).ok())
            .unwrap_or(f32::NAN)
    }
}

fn top1<R: tasks::LogitRow>(row: &R, t: &tasks::PairTokens) -> bool {
    row.top().is_some_and(|x| t.accepts(x))
}

/// What the last-position logits say before any head is scored.
pub struct LogitSummary {
    pub clean_acc: f32,
    pub corrupt_acc: f32,
    /// Mean over finite metric values (NaN when there is none).
    pub clean_metric: f32,
    pub corrupt_metric: f32,
    pub filter: Option<tasks::FilterReport>,
}

/// Top-1 accuracies, metric means and the optional correctness filter from the rows of the
/// clean prompts followed by those of the corrupt ones.
pub fn logit_summary<R: tasks::LogitRow>(
    rows: &[R],
    task: &PreparedTask,
    rule: Option<tasks::FilterRule>,
    min_survivors: usize,
) -> Result<LogitSummary> {
    let n_pairs = task.tokens.len();
    if rows.len() != 2 * n_pairs {
        return Err(Error::shape(
            "last-position logit rows",
            2 * n_pairs,
            rows.len(),
        ));
    }
    let (lc, lx) = rows.split_at(n_pairs);
    let acc = |l: &[R]| {
        l.iter()
            .zip(&task.tokens)
            .filter(|(l, t)| top1(*l, t))
            .count() as f32
            / n_pairs as f32
    };
    let mean_metric = |l: &[R]| {
        let v: Vec<f32> = l
            .iter()
            .enumerate()
            .map(|(i, r)| task.metric(i, r))
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            f32::NAN
        } else {
            v.iter().sum::<f32>() / v.len() as f32
        }
    };
    let filter = match rule {
        Some(rule) => Some(tasks::filter(&task.tokens, lc, lx, rule, min_survivors)?),
        None => None,
    };
    Ok(LogitSummary {
        clean_acc: acc(lc),
        corrupt_acc: acc(lx),
        clean_metric: mean_metric(lc),
        corrupt_metric: mean_metric(lx),
        filter,
    })
}

/// The pairs of a built-in task that `model` answers right on the clean prompt and wrong
/// on the corrupted one (`headcode task --filter`), with the filter's report.
pub fn filter_pairs(
    model: &crate::model::Model,
    tok: &dyn Tokenizer,
    kind: TaskKind,
    n: usize,
    seed: u64,
    pairs: Vec<PromptPair>,
) -> Result<(Vec<PromptPair>, tasks::FilterReport)> {
    // The same n and seed regenerate `pairs`, tokenised with BOS.
    let prep = prepare(&TaskSource::Builtin(kind), tok, n, seed, true, Split::All)?;
    let lc = model.last_logits(&prep.clean, 32)?;
    let lx = model.last_logits(&prep.corrupt, 32)?;
    let rep = tasks::filter(&prep.tokens, &lc, &lx, tasks::FilterRule::TopRank, 1)?;
    let kept = rep.kept_pairs.iter().map(|&i| pairs[i].clone()).collect();
    Ok((kept, rep))
}

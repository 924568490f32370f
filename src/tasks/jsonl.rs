//! User tasks: JSONL prompt pairs, and import of auto-circuit's prompt JSON.
//!
//! JSONL: one object per line, `{"clean": .., "corrupt": .., "answer": " Mary",
//! "wrong_answers": [" John"], "metric": "logit_diff"}`; the last two are optional. Blank
//! lines are allowed; anything else that is not a valid pair is an error naming the file and
//! the 1-based line, never skipped, and unknown keys are rejected so a typo cannot silently
//! drop a field.
use std::path::Path;

use serde::Deserialize;

use super::PromptPair;
use crate::error::{read_text, Error, Result};

fn line_err(path: &Path, line: usize, msg: impl Into<String>) -> Error {
    Error::Line {
        path: path.to_path_buf(),
        line,
        msg: msg.into(),
    }
}

/// Parse JSONL text; `path` only names the source in errors.
pub fn parse_jsonl(text: &str, path: &Path) -> Result<Vec<PromptPair>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let pair: PromptPair =
            serde_json::from_str(line).map_err(|e| line_err(path, n, e.to_string()))?;
        for (field, value) in [
            ("clean", &pair.clean),
            ("corrupt", &pair.corrupt),
            ("answer", &pair.answer),
        ] {
            if value.is_empty() {
                return Err(line_err(path, n, format!("`{field}` is empty")));
            }
        }
        if let Some(k) = pair.wrong_answers.iter().position(String::is_empty) {
            return Err(line_err(path, n, format!("wrong_answers[{k}] is empty")));
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(Error::format(
            path,
            "empty task file: expected one JSON prompt pair per line",
        ));
    }
    Ok(pairs)
}

/// Read a JSONL task file.
pub fn read_jsonl(path: &Path) -> Result<Vec<PromptPair>> {
    parse_jsonl(&read_text(path)?, path)
}

/// Serialise pairs as JSONL (one object per line, trailing newline).
pub fn to_jsonl_string(pairs: &[PromptPair]) -> Result<String> {
    let mut out = String::new();
    for p in pairs {
        out.push_str(&serde_json::to_string(p)?);
        out.push('\n');
    }
    Ok(out)
}

/// Write pairs to a JSONL file.
pub fn write_jsonl(path: &Path, pairs: &[PromptPair]) -> Result<()> {
    crate::error::write_file(path, to_jsonl_string(pairs)?)
}

#[derive(Deserialize)]
struct AcFile {
    prompts: Vec<AcPrompt>,
}

#[derive(Deserialize)]
struct AcPrompt {
    clean: String,
    corrupt: String,
    answers: Vec<String>,
    #[serde(default)]
    wrong_answers: Vec<String>,
}

/// An auto-circuit import. auto-circuit allows several correct answers per prompt;
/// [`PromptPair`] has one, so the first is kept and the rest are counted here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoCircuitImport {
    pub pairs: Vec<PromptPair>,
    /// Prompts that listed more than one answer.
    pub prompts_with_extra_answers: usize,
    /// Answers beyond the first, summed over prompts.
    pub extra_answers_ignored: usize,
}

/// Parse auto-circuit's `{"prompts": [{"clean", "corrupt", "answers", "wrong_answers"}]}`.
pub fn parse_auto_circuit(text: &str, path: &Path) -> Result<AutoCircuitImport> {
    let file: AcFile =
        serde_json::from_str(text).map_err(|e| Error::format(path, e.to_string()))?;
    if file.prompts.is_empty() {
        return Err(Error::format(path, "`prompts` is empty"));
    }
    let mut out = AutoCircuitImport {
        pairs: Vec::with_capacity(file.prompts.len()),
        prompts_with_extra_answers: 0,
        extra_answers_ignored: 0,
    };
    for (i, p) in file.prompts.into_iter().enumerate() {
        let bad = |msg: &str| Error::format(path, format!("prompts[{i}]: {msg}"));
        if p.clean.is_empty() || p.corrupt.is_empty() {
            return Err(bad("empty `clean` or `corrupt`"));
        }
        let mut answers = p.answers.into_iter();
        let answer = answers
            .next()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| bad("`answers` is empty"))?;
        let extra = answers.len();
        if extra > 0 {
            out.prompts_with_extra_answers += 1;
            out.extra_answers_ignored += extra;
        }
        out.pairs.push(PromptPair {
            clean: p.clean,
            corrupt: p.corrupt,
            answer,
            wrong_answers: p.wrong_answers,
            metric: None,
        });
    }
    Ok(out)
}

/// Read an auto-circuit prompt JSON file.
pub fn import_auto_circuit(path: &Path) -> Result<AutoCircuitImport> {
    parse_auto_circuit(&read_text(path)?, path)
}

//! Indirect Object Identification (Wang et al. 2022), with ACDC's word lists.
//!
//! Clean: an ABBA or BABA template, e.g. `"Then, Mary and John went to the store. John gave a
//! ring to"`; the answer is the indirect object `" Mary"`, the wrong answer the subject
//! `" John"`. The final IO token of the template is dropped, as ACDC does.
//!
//! Corrupt (ABC): the same template, place and object with three fresh names: X in the IO
//! slot, Z in the first subject slot, Y in the second (ACDC's chained IO→RAND, S→RAND,
//! S1→RAND flips, e.g. `"Then, X and Z went to the store. Y gave a ring to"`). Unlike ACDC's
//! flips, which may repeat a name, the five names here are always distinct, so the corrupt
//! prompt never carries the IO signal.
//!
//! Templates: all 15 BABA plus their 15 ABBA forms, drawn uniformly (the SAE paper's IOI data;
//! ACDC itself used only ABBA template 0). Names are kept only when `" " + name` is one token.
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::words::{self, require, single_token_words};
use super::{
    token_len, too_many_tries, GenStats, MetricKind, PromptPair, TaskSet, MAX_TRIES_PER_PAIR,
};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

/// IO, S and three corrupt names must all differ.
const NAMES_NEEDED: usize = 5;

/// The templates with their final `" [A]"` removed (the answer is never part of the prompt).
pub fn templates() -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in words::lines(words::IOI_TEMPLATES_ABBA)
        .into_iter()
        .chain(words::lines(words::IOI_TEMPLATES_BABA))
    {
        let stem = t
            .strip_suffix(" [A]")
            .ok_or_else(|| Error::Task(format!("ioi: template does not end with \" [A]\": {t}")))?;
        out.push(stem.to_string());
    }
    Ok(out)
}

/// Fill one template stem: `[A]` → `a`, the first `[B]` → `s1`, later `[B]`s → `s2`.
fn fill(stem: &str, a: &str, s1: &str, s2: &str, place: &str, object: &str) -> String {
    let t = stem.replacen("[B]", s1, 1).replace("[B]", s2);
    t.replace("[A]", a)
        .replace("[PLACE]", place)
        .replace("[OBJECT]", object)
}

fn pick<'a>(rng: &mut StdRng, list: &[&'a str]) -> &'a str {
    list[rng.random_range(0..list.len() as u32) as usize]
}

/// Draw `k` distinct indices below `n` (rejection, as ACDC's name loops do).
fn distinct(rng: &mut StdRng, n: usize, k: usize) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::with_capacity(k);
    while out.len() < k {
        let i = rng.random_range(0..n as u32) as usize;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// See the module docs. Errors when fewer than 5 names are single tokens.
pub fn generate(tok: &dyn Tokenizer, n: usize, seed: u64) -> Result<TaskSet> {
    let all_names = words::lines(words::IOI_NAMES);
    let (names, name_stats) = single_token_words(tok, "names", &all_names)?;
    require("ioi", &name_stats, NAMES_NEEDED)?;
    let places = words::lines(words::IOI_PLACES);
    let objects = words::lines(words::IOI_OBJECTS);
    let stems = templates()?;
    let stem_refs: Vec<&str> = stems.iter().map(String::as_str).collect();

    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(n);
    let mut regenerated = 0usize;
    let max_tries = n.saturating_mul(MAX_TRIES_PER_PAIR);
    let mut tries = 0usize;
    while pairs.len() < n {
        if tries >= max_tries {
            return Err(too_many_tries("ioi", n, pairs.len(), tries));
        }
        tries += 1;
        let stem = pick(&mut rng, &stem_refs);
        let idx = distinct(&mut rng, names.len(), NAMES_NEEDED);
        let (io, s) = (names[idx[0]], names[idx[1]]);
        let (x, y, z) = (names[idx[2]], names[idx[3]], names[idx[4]]);
        let place = pick(&mut rng, &places);
        let object = pick(&mut rng, &objects);
        let clean = fill(stem, io, s, s, place, object);
        let corrupt = fill(stem, x, z, y, place, object);
        if token_len(tok, &clean)? != token_len(tok, &corrupt)? {
            regenerated += 1;
            continue;
        }
        pairs.push(PromptPair {
            clean,
            corrupt,
            answer: format!(" {io}"),
            wrong_answers: vec![format!(" {s}")],
            metric: Some(MetricKind::LogitDiff),
        });
    }
    Ok(TaskSet {
        name: "ioi".into(),
        pairs,
        stats: GenStats {
            word_lists: vec![name_stats],
            pairs_regenerated: regenerated,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_strip_final_io() {
        let t = templates().unwrap();
        assert_eq!(t.len(), 30);
        assert_eq!(
            t[0],
            "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to"
        );
        assert!(t.iter().all(|s| !s.ends_with("[A]")));
    }

    #[test]
    fn fill_splits_subject_slots() {
        let s = fill(
            "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
            "X",
            "Z",
            "Y",
            "store",
            "ring",
        );
        assert_eq!(s, "Then, X and Z went to the store. Y gave a ring to");
    }
}

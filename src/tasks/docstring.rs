//! Docstring (Heimersheim & Janiak 2023), ACDC's `docstring_induction_prompt_generator`
//! with `style="rest"`, 3 matching args, 2 def-prefix args, 1 def-suffix arg, 0 doc-prefix
//! args, a 3-word method description and 2-word argument descriptions.
//!
//! Clean:
//! ```text
//! \ndef {met}(self, p1, p2, m1, m2, m3, s1):\n    """w1 w2 w3\n\n    :param m1: d d\n    :param m2: d d\n    :param
//! ```
//! The answer is `" m3"`; the wrong answers are the other 13 sampled argument names.
//! Corrupt (`random_random`): the def becomes `p1, p2, r1, r2, r3, s1` and the documented
//! params two further fresh names, so the answer cannot be inferred.
//!
//! ACDC reseeds Python's `random` per prompt; here one seeded stream draws all prompts
//! (like the SAE paper's copy). Variable names and nouns are kept only when `" " + word` is
//! one token.
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;

use super::words::{self, require, single_token_words};
use super::{
    token_len, too_many_tries, GenStats, MetricKind, PromptPair, TaskSet, MAX_TRIES_PER_PAIR,
};
use crate::error::Result;
use crate::tokenize::Tokenizer;

/// `met_name` + random_answer(1) + rr_mid_def(3) + rr_mid_doc(2) + not_matching(2) +
/// matching(3) + def_prefix(2) + def_suffix(1).
const VARS_NEEDED: usize = 15;
const MET_DESC_LEN: usize = 3;
const ARG_DESC_LEN: usize = 2;

/// ACDC's `docstring_prompt_templ` for `style="rest"`.
pub fn render(
    met_name: &str,
    met_desc: &[&str],
    def_args: &[&str],
    doc_args: &[&str],
    doc_descs: &[Vec<&str>],
) -> String {
    let ind4 = "    ";
    let doc_lines: Vec<String> = doc_args
        .iter()
        .zip(doc_descs)
        .map(|(arg, desc)| format!("{ind4}:param {arg}: {}", desc.join(" ")))
        .collect();
    format!(
        "\ndef {met_name}(self, {}):\n{ind4}\"\"\"{}\n\n{}\n{ind4}:param",
        def_args.join(", "),
        met_desc.join(" "),
        doc_lines.join("\n")
    )
}

fn draw<'a>(rng: &mut StdRng, list: &[&'a str], k: usize) -> Vec<&'a str> {
    sample(rng, list.len(), k)
        .into_iter()
        .map(|i| list[i])
        .collect()
}

/// See the module docs. Errors when fewer than 15 variable names or 3 nouns are single tokens.
pub fn generate(tok: &dyn Tokenizer, n: usize, seed: u64) -> Result<TaskSet> {
    let all_vars = words::words(words::DS_VARIABLES);
    let (vars, var_stats) = single_token_words(tok, "variables", &all_vars)?;
    require("docstring", &var_stats, VARS_NEEDED)?;
    let all_nouns = words::words(words::DS_NOUNS);
    let (nouns, noun_stats) = single_token_words(tok, "nouns", &all_nouns)?;
    require("docstring", &noun_stats, MET_DESC_LEN.max(ARG_DESC_LEN))?;

    let mut rng = StdRng::seed_from_u64(seed);
    let mut pairs = Vec::with_capacity(n);
    let mut regenerated = 0usize;
    let max_tries = n.saturating_mul(MAX_TRIES_PER_PAIR);
    let mut tries = 0usize;
    while pairs.len() < n {
        if tries >= max_tries {
            return Err(too_many_tries("docstring", n, pairs.len(), tries));
        }
        tries += 1;
        let drawn = draw(&mut rng, &vars, VARS_NEEDED);
        let (met_name, all_args) = (drawn[0], &drawn[1..]);
        // ACDC's split of `all_args`, in order.
        let rr_mid_def = &all_args[1..4];
        let rr_mid_doc = &all_args[4..6];
        let matching = &all_args[8..11];
        let def_prefix = &all_args[11..13];
        let def_suffix = &all_args[13..14];
        let met_desc = draw(&mut rng, &nouns, MET_DESC_LEN);
        let doc_descs: Vec<Vec<&str>> = (0..2)
            .map(|_| draw(&mut rng, &nouns, ARG_DESC_LEN))
            .collect();

        let clean_def = [def_prefix, matching, def_suffix].concat();
        let corrupt_def = [def_prefix, rr_mid_def, def_suffix].concat();
        let clean = render(met_name, &met_desc, &clean_def, &matching[..2], &doc_descs);
        let corrupt = render(met_name, &met_desc, &corrupt_def, rr_mid_doc, &doc_descs);
        if token_len(tok, &clean)? != token_len(tok, &corrupt)? {
            regenerated += 1;
            continue;
        }
        let answer = matching[2];
        pairs.push(PromptPair {
            clean,
            corrupt,
            answer: format!(" {answer}"),
            wrong_answers: all_args
                .iter()
                .filter(|a| **a != answer)
                .map(|a| format!(" {a}"))
                .collect(),
            metric: Some(MetricKind::MaxWrongDiff),
        });
    }
    Ok(TaskSet {
        name: "docstring".into(),
        pairs,
        stats: GenStats {
            word_lists: vec![var_stats, noun_stats],
            pairs_regenerated: regenerated,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_matches_acdc_layout() {
        let s = render(
            "load",
            &["a", "b", "c"],
            &["p1", "p2", "m1", "m2", "m3", "s1"],
            &["m1", "m2"],
            &[vec!["x", "y"], vec!["z", "w"]],
        );
        assert_eq!(
            s,
            "\ndef load(self, p1, p2, m1, m2, m3, s1):\n    \"\"\"a b c\n\n    :param m1: x y\n    :param m2: z w\n    :param"
        );
    }
}

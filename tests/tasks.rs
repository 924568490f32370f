//! Tests of the `tasks` stage: generators, JSONL, metrics, filtering, ground truth.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use headcode::tasks::{
    circuits, filter, generate, kl_divergence, metric_value, paper_split, parse_auto_circuit,
    parse_jsonl, read_jsonl, resolve_tokens, to_jsonl_string, write_jsonl, Circuit, FilterRule,
    MetricKind, PairTokens, PromptPair, TaskKind,
};
use headcode::tokenize::{Gpt2Tokenizer, Tokenizer};
use headcode::{Error, Result};

const KINDS: [TaskKind; 3] = [TaskKind::Ioi, TaskKind::GreaterThan, TaskKind::Docstring];

fn gpt2() -> Gpt2Tokenizer {
    Gpt2Tokenizer::new().unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tasks")
        .join(name)
}

// ---------------------------------------------------------------- generators

#[test]
fn same_seed_same_prompts_different_seed_different() {
    let tok = gpt2();
    for kind in KINDS {
        let a = generate(kind, &tok, 30, 0).unwrap();
        let b = generate(kind, &tok, 30, 0).unwrap();
        let c = generate(kind, &tok, 30, 1).unwrap();
        assert_eq!(a, b, "{kind}: same seed must give identical prompts");
        assert_eq!(
            to_jsonl_string(&a.pairs).unwrap(),
            to_jsonl_string(&b.pairs).unwrap()
        );
        assert_ne!(
            a.pairs, c.pairs,
            "{kind}: seeds 0 and 1 gave the same prompts"
        );
        assert_eq!(a.pairs.len(), 30);
    }
}

#[test]
fn word_list_counts_under_gpt2() {
    let tok = gpt2();
    let ioi = generate(TaskKind::Ioi, &tok, 1, 0).unwrap();
    let names = ioi.stats.list("names").unwrap();
    assert_eq!(names.available, 99, "ACDC's NAMES has 99 entries");
    assert_eq!(
        names.kept, 99,
        "every ACDC name is one GPT-2 token after a space"
    );

    let gt = generate(TaskKind::GreaterThan, &tok, 1, 0).unwrap();
    let nouns = gt.stats.list("nouns").unwrap();
    assert_eq!((nouns.available, nouns.kept), (120, 120));
    let years = gt.stats.list("years").unwrap();
    assert_eq!(years.available, 7 * 97);
    assert_eq!(years.kept, GT_YEARS_KEPT_GPT2);

    let ds = generate(TaskKind::Docstring, &tok, 1, 0).unwrap();
    let vars = ds.stats.list("variables").unwrap();
    assert_eq!(vars.available, 111);
    assert_eq!(vars.kept, DS_VARS_KEPT_GPT2);
    let ds_nouns = ds.stats.list("nouns").unwrap();
    assert_eq!(ds_nouns.available, 687);
    assert_eq!(ds_nouns.kept, DS_NOUNS_KEPT_GPT2);
}

// Single-token survivors under GPT-2 (pinned; a change means the filter or data changed).
const GT_YEARS_KEPT_GPT2: usize = 604;
const DS_VARS_KEPT_GPT2: usize = 111;
const DS_NOUNS_KEPT_GPT2: usize = 687;

#[test]
fn every_pair_has_equal_token_length_under_gpt2() {
    let tok = gpt2();
    for kind in KINDS {
        let set = generate(kind, &tok, 200, 0).unwrap();
        // ACDC's lists were chosen for GPT-2: nothing needs redrawing.
        assert_eq!(set.stats.pairs_regenerated, 0, "{kind}");
        for (i, p) in set.pairs.iter().enumerate() {
            let c = tok.encode(&p.clean).unwrap().len();
            let k = tok.encode(&p.corrupt).unwrap().len();
            assert_eq!(c, k, "{kind} pair {i}: {:?} vs {:?}", p.clean, p.corrupt);
        }
    }
}

#[test]
fn task_shapes_under_gpt2() {
    let tok = gpt2();
    let ioi = generate(TaskKind::Ioi, &tok, 50, 0).unwrap();
    for p in &ioi.pairs {
        assert!(p.clean.ends_with(" to") || p.clean.ends_with(" said to"));
        assert!(p.answer.starts_with(' '));
        assert_eq!(p.wrong_answers.len(), 1);
        let io = p.answer.trim();
        let s = p.wrong_answers[0].trim();
        assert_ne!(io, s);
        assert_eq!(
            p.clean.matches(io).count(),
            1,
            "IO appears once: {}",
            p.clean
        );
        assert_eq!(
            p.clean.matches(s).count(),
            2,
            "S appears twice: {}",
            p.clean
        );
        assert!(!p.corrupt.contains(io) && !p.corrupt.contains(s));
        assert_eq!(p.metric, Some(MetricKind::LogitDiff));
        // Ends with " to" and the IO is the next token.
        assert_eq!(tok.encode(&p.answer).unwrap().len(), 1);
    }
    let gt = generate(TaskKind::GreaterThan, &tok, 50, 0).unwrap();
    for p in &gt.pairs {
        let Some(MetricKind::YearProbDiff { yy }) = p.metric else {
            panic!("gt metric")
        };
        assert!((3..=97).contains(&yy));
        assert!(p.corrupt.contains("01 to the year"));
        assert_eq!(p.answer, format!("{:02}", yy + 1));
        assert_eq!(p.wrong_answers.len(), yy as usize + 1);
        let toks = tok.encode(&p.clean).unwrap();
        assert_eq!(toks.len(), tok.encode(&p.corrupt).unwrap().len());
    }
    let ds = generate(TaskKind::Docstring, &tok, 50, 0).unwrap();
    for p in &ds.pairs {
        assert!(p.clean.starts_with("\ndef ") && p.clean.ends_with("    :param"));
        assert_eq!(p.wrong_answers.len(), 13);
        assert!(!p.wrong_answers.contains(&p.answer));
        assert!(p.clean.contains(p.answer.trim()));
        assert!(!p.corrupt.contains(&format!("{},", p.answer)));
        assert_eq!(p.metric, Some(MetricKind::MaxWrongDiff));
    }
}

/// Compare the first 3 pairs of each task (seed 0, GPT-2) with the committed snapshot.
/// Regenerate with `UPDATE_SNAPSHOTS=1 cargo test --test tasks snapshot`.
#[test]
fn snapshot_first_three_prompts_seed0() {
    let tok = gpt2();
    for (kind, file) in [
        (TaskKind::Ioi, "ioi_seed0.jsonl"),
        (TaskKind::GreaterThan, "gt_seed0.jsonl"),
        (TaskKind::Docstring, "docstring_seed0.jsonl"),
    ] {
        let set = generate(kind, &tok, 3, 0).unwrap();
        let got = to_jsonl_string(&set.pairs).unwrap();
        let path = fixture(file);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            got,
            want,
            "{kind}: prompts changed for seed 0 ({})",
            path.display()
        );
        // The same prompts read back from the snapshot.
        assert_eq!(read_jsonl(&path).unwrap(), set.pairs);
        // A longer run starts with the same prompts.
        let longer = generate(kind, &tok, 10, 0).unwrap();
        assert_eq!(&longer.pairs[..3], &set.pairs[..]);
    }
}

#[test]
fn snapshot_spot_values() {
    // Human-readable pins of the first prompt of each task (same data as the snapshot).
    let tok = gpt2();
    let first = |k| generate(k, &tok, 1, 0).unwrap().pairs.remove(0);
    let ioi = first(TaskKind::Ioi);
    assert_eq!(ioi.clean, IOI_FIRST_CLEAN);
    assert_eq!(ioi.corrupt, IOI_FIRST_CORRUPT);
    let gt = first(TaskKind::GreaterThan);
    assert_eq!(gt.clean, GT_FIRST_CLEAN);
    assert_eq!(gt.corrupt, GT_FIRST_CORRUPT);
}

const IOI_FIRST_CLEAN: &str =
    "While Mark and Tyler were commuting to the office, Mark gave a computer to";
const IOI_FIRST_CORRUPT: &str =
    "While Jessica and Gregory were commuting to the office, Lisa gave a computer to";
const GT_FIRST_CLEAN: &str = "The rivalry lasted from the year 1630 to the year 16";
const GT_FIRST_CORRUPT: &str = "The rivalry lasted from the year 1601 to the year 16";

#[test]
fn zero_pairs_is_an_error() {
    let tok = gpt2();
    for kind in KINDS {
        assert!(matches!(generate(kind, &tok, 0, 0), Err(Error::Task(_))));
    }
}

/// A tokenizer that gives every character its own token: no word survives the
/// single-token filter, so generation must fail with a clear error, not panic.
struct CharTok;
impl Tokenizer for CharTok {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.chars().map(|c| c as u32).collect())
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(ids.iter().filter_map(|&i| char::from_u32(i)).collect())
    }
    fn bos_id(&self) -> Option<u32> {
        None
    }
    fn vocab_size(&self) -> usize {
        0x110000
    }
    fn name(&self) -> &str {
        "chars"
    }
}

#[test]
fn too_few_single_token_words_is_an_error() {
    for kind in [TaskKind::Ioi, TaskKind::Docstring] {
        match generate(kind, &CharTok, 5, 0) {
            Err(Error::Task(msg)) => assert!(msg.contains("single tokens"), "{msg}"),
            other => panic!("{kind}: expected a Task error, got {other:?}"),
        }
    }
}

/// Word-level tokenizer that splits every digit into its own token (like SmolLM2): words
/// (with their leading space) and single characters get ids on first sight.
struct DigitTok(Mutex<BTreeMap<String, u32>>);
impl DigitTok {
    fn new() -> Self {
        DigitTok(Mutex::new(BTreeMap::new()))
    }
    fn id(&self, piece: &str) -> u32 {
        let mut m = self.0.lock().unwrap();
        let n = m.len() as u32;
        *m.entry(piece.to_string()).or_insert(n)
    }
}
impl Tokenizer for DigitTok {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut word = String::new();
        for c in text.chars() {
            if c.is_alphabetic() || (c == ' ' && word.is_empty()) {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                out.push(self.id(&word));
                word.clear();
            }
            if c == ' ' {
                word.push(c);
            } else {
                out.push(self.id(&c.to_string()));
            }
        }
        if !word.is_empty() {
            out.push(self.id(&word));
        }
        Ok(out)
    }
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let m = self.0.lock().unwrap();
        let rev: BTreeMap<u32, &String> = m.iter().map(|(k, v)| (*v, k)).collect();
        Ok(ids
            .iter()
            .filter_map(|i| rev.get(i).map(|s| s.as_str()))
            .collect())
    }
    fn bos_id(&self) -> Option<u32> {
        None
    }
    fn vocab_size(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn name(&self) -> &str {
        "digits"
    }
}

#[test]
fn greater_than_with_digit_split_tokenizer() {
    let tok = DigitTok::new();
    let set = generate(TaskKind::GreaterThan, &tok, 20, 0).unwrap();
    let years = set.stats.list("years").unwrap();
    // " 1732" = " " "1" "7" "3" "2" = (" " "1" "7") + ("3" "2"): every year splits cleanly.
    // YY in 90..=98 is dropped (the next token, "9", cannot say "later"), leaving 02..=89;
    // then each century loses its first and last year.
    assert_eq!(years.kept, 7 * 86);
    for p in &set.pairs {
        assert_eq!(
            tok.encode(&p.clean).unwrap().len(),
            tok.encode(&p.corrupt).unwrap().len()
        );
        let info = resolve_tokens(p, &tok).unwrap();
        let Some(MetricKind::YearProbDiff { yy }) = p.metric else {
            panic!()
        };
        // The tens digit of YY is ambiguous, so it is in neither set.
        let tens = tok.encode(&format!("{}", yy / 10)).unwrap()[0];
        assert!(!info.greater.contains(&tens) && !info.not_greater.contains(&tens));
        assert!(!info.greater.is_empty());
    }
}

#[test]
fn task_kind_names() {
    for (s, k) in [
        ("ioi", TaskKind::Ioi),
        ("IOI", TaskKind::Ioi),
        ("gt", TaskKind::GreaterThan),
        ("greater-than", TaskKind::GreaterThan),
        ("greaterthan", TaskKind::GreaterThan),
        ("docstring", TaskKind::Docstring),
        ("ds", TaskKind::Docstring),
    ] {
        assert_eq!(s.parse::<TaskKind>().unwrap(), k);
    }
    match "sentiment".parse::<TaskKind>() {
        Err(Error::Task(msg)) => assert!(msg.contains("sentiment")),
        other => panic!("{other:?}"),
    }
    assert_eq!(TaskKind::GreaterThan.to_string(), "gt");
}

// ---------------------------------------------------------------- paper split

#[test]
fn paper_split_pool_layout() {
    let s = paper_split(250, headcode::sae::SaeConfig::default().examples, false, 0).unwrap();
    assert_eq!(s.len(), 500);
    assert_eq!(s.is_pos.iter().filter(|&&p| p).count(), 250);
    assert!(s.is_pos[..250].iter().all(|&p| p));
    assert_eq!(s.sae_train.len(), 10);
    let pairs = vec![
        PromptPair {
            clean: "c0".into(),
            corrupt: "k0".into(),
            answer: " a".into(),
            wrong_answers: vec![],
            metric: None,
        },
        PromptPair {
            clean: "c1".into(),
            corrupt: "k1".into(),
            answer: " a".into(),
            wrong_answers: vec![],
            metric: None,
        },
    ];
    let s = paper_split(2, 4, true, 0).unwrap();
    assert_eq!(s.prompts(&pairs).unwrap(), vec!["c0", "c1", "k0", "k1"]);
    assert_eq!(s.sae_train.iter().filter(|&&i| s.is_pos[i]).count(), 2);
    assert!(s.prompts(&pairs[..1]).is_err());
}

// ---------------------------------------------------------------- JSONL

fn pair(clean: &str, answer: &str, wrong: &[&str], metric: Option<MetricKind>) -> PromptPair {
    PromptPair {
        clean: clean.into(),
        corrupt: format!("{clean} (corrupt)"),
        answer: answer.into(),
        wrong_answers: wrong.iter().map(|s| s.to_string()).collect(),
        metric,
    }
}

#[test]
fn jsonl_round_trip() {
    let tok = gpt2();
    let dir = tempfile::tempdir().unwrap();
    let mut pairs = generate(TaskKind::GreaterThan, &tok, 5, 3).unwrap().pairs;
    pairs.extend(generate(TaskKind::Docstring, &tok, 5, 3).unwrap().pairs);
    pairs.push(pair("Quote \"this\"\n", " x", &[], None));
    let path = dir.path().join("t.jsonl");
    write_jsonl(&path, &pairs).unwrap();
    assert_eq!(read_jsonl(&path).unwrap(), pairs);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), pairs.len());
    assert!(text.contains("{\"year_prob_diff\":{\"yy\":"));
    assert!(text.contains("\"metric\":\"max_wrong_diff\""));
}

#[test]
fn jsonl_minimal_lines_blank_lines_and_crlf() {
    let text = "{\"clean\":\"a b\",\"corrupt\":\"c d\",\"answer\":\" e\"}\r\n\r\n   \n{\"clean\":\"x\",\"corrupt\":\"y\",\"answer\":\" z\",\"wrong_answers\":[\" w\"],\"metric\":\"logit_diff\"}\n";
    let pairs = parse_jsonl(text, Path::new("t.jsonl")).unwrap();
    assert_eq!(pairs.len(), 2);
    assert!(pairs[0].wrong_answers.is_empty() && pairs[0].metric.is_none());
    assert_eq!(pairs[1].metric, Some(MetricKind::LogitDiff));
}

fn line_error(text: &str) -> (PathBuf, usize, String) {
    match parse_jsonl(text, Path::new("user.jsonl")) {
        Err(Error::Line { path, line, msg }) => (path, line, msg),
        other => panic!("expected a Line error, got {other:?}"),
    }
}

#[test]
fn jsonl_malformed_line_names_path_and_line() {
    let good = "{\"clean\":\"a\",\"corrupt\":\"b\",\"answer\":\" c\"}";
    let (path, line, _) = line_error(&format!("{good}\n\n{good}\n{{not json\n{good}\n"));
    assert_eq!(path, PathBuf::from("user.jsonl"));
    assert_eq!(line, 4);
    let err = parse_jsonl(&format!("{good}\n{{oops"), Path::new("user.jsonl")).unwrap_err();
    assert!(err.to_string().starts_with("user.jsonl:2: "), "{err}");
}

#[test]
fn jsonl_missing_field_empty_field_and_unknown_key() {
    let (_, line, msg) = line_error("{\"clean\":\"a\",\"answer\":\" c\"}");
    assert_eq!(line, 1);
    assert!(msg.contains("corrupt"), "{msg}");
    let (_, line, msg) = line_error(
        "{\"clean\":\"a\",\"corrupt\":\"b\",\"answer\":\" c\"}\n{\"clean\":\"a\",\"corrupt\":\"b\",\"answer\":\"\"}",
    );
    assert_eq!(line, 2);
    assert!(msg.contains("answer"), "{msg}");
    let (_, _, msg) =
        line_error("{\"clean\":\"a\",\"corrupt\":\"b\",\"answer\":\" c\",\"wrong_answer\":[]}");
    assert!(msg.contains("wrong_answer"), "{msg}");
    let (_, _, msg) =
        line_error("{\"clean\":\"a\",\"corrupt\":\"b\",\"answer\":\" c\",\"metric\":\"accuracy\"}");
    assert!(msg.contains("accuracy"), "{msg}");
}

#[test]
fn jsonl_empty_file_is_an_error() {
    for text in ["", "\n\n  \n"] {
        match parse_jsonl(text, Path::new("empty.jsonl")) {
            Err(Error::Format { path, msg }) => {
                assert_eq!(path, PathBuf::from("empty.jsonl"));
                assert!(msg.contains("empty"), "{msg}");
            }
            other => panic!("expected a Format error, got {other:?}"),
        }
    }
    assert!(matches!(
        read_jsonl(Path::new("/nonexistent/t.jsonl")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn auto_circuit_import() {
    let text = r#"{"seq_labels": ["a"], "prompts": [
        {"clean": "When Mary and John went", "corrupt": "When Amy and Bob went", "answers": [" Mary"], "wrong_answers": [" John"]},
        {"clean": "from 1732 to 17", "corrupt": "from 1701 to 17", "answers": ["33", "34", "35"], "wrong_answers": ["31"]}
    ]}"#;
    let imp = parse_auto_circuit(text, Path::new("ac.json")).unwrap();
    assert_eq!(imp.pairs.len(), 2);
    assert_eq!(imp.pairs[0].answer, " Mary");
    assert_eq!(imp.pairs[0].wrong_answers, vec![" John"]);
    assert_eq!(imp.pairs[1].answer, "33");
    assert_eq!(imp.prompts_with_extra_answers, 1);
    assert_eq!(imp.extra_answers_ignored, 2);

    for bad in [
        r#"{"prompts": []}"#,
        r#"{"prompts": [{"clean": "a", "corrupt": "b", "answers": []}]}"#,
        r#"{"prompts": [{"clean": "a", "answers": [" x"]}]}"#,
        r#"[1, 2]"#,
    ] {
        match parse_auto_circuit(bad, Path::new("ac.json")) {
            Err(Error::Format { path, .. }) => assert_eq!(path, PathBuf::from("ac.json")),
            other => panic!("{bad}: expected a Format error, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------- metrics

fn info(metric: MetricKind, answer: u32, wrong: &[u32]) -> PairTokens {
    PairTokens {
        metric,
        answer,
        wrong: wrong.to_vec(),
        greater: vec![],
        not_greater: vec![],
    }
}

#[test]
fn logit_diff_and_max_wrong() {
    let logits = [0.5f32, 3.0, -1.0, 2.0];
    let ld = metric_value(
        MetricKind::LogitDiff,
        &logits,
        &info(MetricKind::LogitDiff, 1, &[3]),
    );
    assert!((ld.unwrap() - 1.0).abs() < 1e-6);
    // Mean over several wrong answers: 3 - (2 + -1)/2 = 2.5.
    let ld = metric_value(
        MetricKind::LogitDiff,
        &logits,
        &info(MetricKind::LogitDiff, 1, &[3, 2]),
    );
    assert!((ld.unwrap() - 2.5).abs() < 1e-6);
    let mw = metric_value(
        MetricKind::MaxWrongDiff,
        &logits,
        &info(MetricKind::MaxWrongDiff, 0, &[1, 2, 3]),
    );
    assert!((mw.unwrap() - (0.5 - 3.0)).abs() < 1e-6);
    // Out-of-range token id: an error, not a panic.
    assert!(metric_value(
        MetricKind::LogitDiff,
        &logits,
        &info(MetricKind::LogitDiff, 9, &[0])
    )
    .is_err());
    assert!(metric_value(
        MetricKind::LogitDiff,
        &logits,
        &info(MetricKind::LogitDiff, 0, &[])
    )
    .is_err());
}

#[test]
fn year_prob_diff_known_values() {
    // Uniform over 4 tokens: greater = {0, 1}, not greater = {2}: 0.5 - 0.25.
    let logits = [0.0f32; 4];
    let mut i = info(MetricKind::YearProbDiff { yy: 50 }, 0, &[]);
    i.greater = vec![0, 1];
    i.not_greater = vec![2];
    let v = metric_value(i.metric, &logits, &i).unwrap();
    assert!((v - 0.25).abs() < 1e-6);
    // ln 3 on token 0 gives it p = 3/6.
    let logits = [3f32.ln(), 0.0, 0.0, 0.0];
    let v = metric_value(i.metric, &logits, &i).unwrap();
    assert!((v - (4.0 / 6.0 - 1.0 / 6.0)).abs() < 1e-6);
    // Without year sets the metric refuses.
    let bare = info(MetricKind::YearProbDiff { yy: 50 }, 0, &[]);
    assert!(metric_value(bare.metric, &logits, &bare).is_err());
}

#[test]
fn year_prob_diff_matches_acdc_cumsum_form_under_gpt2() {
    let tok = gpt2();
    let p = pair(
        "The war lasted from the year 1732 to the year 17",
        "33",
        &[],
        Some(MetricKind::YearProbDiff { yy: 32 }),
    );
    let i = resolve_tokens(&p, &tok).unwrap();
    assert_eq!(i.greater.len(), 67);
    assert_eq!(i.not_greater.len(), 33);
    let year_ids: Vec<u32> = (0..100)
        .map(|y| tok.encode(&format!("{y:02}")).unwrap()[0])
        .collect();
    let mut logits = vec![0.0f32; 50257];
    for (k, &id) in year_ids.iter().enumerate() {
        logits[id as usize] = (k as f32 * 0.37).sin() * 4.0;
    }
    // ACDC: -(csum[-1] - 2 csum[YY]) with p = full softmax; ours is the negation.
    let max = logits.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let z: f64 = logits.iter().map(|&x| (x as f64 - max).exp()).sum();
    let p: Vec<f64> = year_ids
        .iter()
        .map(|&id| (logits[id as usize] as f64 - max).exp() / z)
        .collect();
    let csum: Vec<f64> = p
        .iter()
        .scan(0.0, |s, x| {
            *s += x;
            Some(*s)
        })
        .collect();
    let acdc = -(csum[99] - 2.0 * csum[32]);
    let ours = metric_value(i.metric, &logits, &i).unwrap() as f64;
    assert!((ours + acdc).abs() < 1e-6, "{ours} vs {acdc}");
}

#[test]
fn kl_known_values() {
    let a = [1.0f32, 2.0, 3.0];
    assert!(kl_divergence(&a, &a).unwrap().abs() < 1e-7);
    // Shift invariance.
    assert!(kl_divergence(&a, &[11.0, 12.0, 13.0]).unwrap().abs() < 1e-6);
    // Two tokens: p = (1/2, 1/2), q = softmax(ln 3, 0) = (3/4, 1/4).
    let kl = kl_divergence(&[0.0, 0.0], &[3f32.ln(), 0.0]).unwrap();
    let want = 0.5 * (0.5f64 / 0.75).ln() + 0.5 * (0.5f64 / 0.25).ln();
    assert!((kl as f64 - want).abs() < 1e-6);
    assert!(kl_divergence(&[0.0], &[0.0, 1.0]).is_err());
}

#[test]
fn resolve_tokens_for_generated_pairs() {
    let tok = gpt2();
    let ioi = generate(TaskKind::Ioi, &tok, 3, 0).unwrap();
    let i = resolve_tokens(&ioi.pairs[0], &tok).unwrap();
    assert_eq!(i.answer, tok.encode(&ioi.pairs[0].answer).unwrap()[0]);
    assert_eq!(i.wrong.len(), 1);
    let ds = generate(TaskKind::Docstring, &tok, 3, 0).unwrap();
    assert_eq!(resolve_tokens(&ds.pairs[0], &tok).unwrap().wrong.len(), 13);
    // No metric given: logit difference, which needs a wrong answer.
    let p = pair("x", " a", &[], None);
    assert!(matches!(resolve_tokens(&p, &tok), Err(Error::Task(_))));
    let p = pair("x", " a", &[" a"], None);
    assert!(resolve_tokens(&p, &tok).is_err());
}

// ---------------------------------------------------------------- filter

#[test]
fn filter_top_rank_and_metric_positive() {
    let pairs = vec![
        info(MetricKind::LogitDiff, 0, &[1]),
        info(MetricKind::LogitDiff, 0, &[1]),
        info(MetricKind::LogitDiff, 0, &[1]),
    ];
    let clean = vec![
        vec![2.0, 1.0, 0.0], // right, top-1
        vec![1.0, 0.0, 5.0], // metric > 0 but not top-1
        vec![0.0, 1.0, 0.0], // wrong
    ];
    let corrupt = vec![
        vec![0.0, 1.0, 0.0], // wrong: a good negative
        vec![3.0, 0.0, 0.0], // still right: a bad negative
        vec![1.0, 0.0, 2.0], // metric > 0 but not top-1
    ];
    let r = filter(&pairs, &clean, &corrupt, FilterRule::TopRank, 1).unwrap();
    assert_eq!(r.kept_pos, vec![0]);
    assert_eq!(r.kept_neg, vec![0, 2]);
    assert_eq!(r.kept_pairs, vec![0]);
    assert!((r.clean_acc_before - 1.0 / 3.0).abs() < 1e-6);
    assert!((r.corrupt_acc_before - 1.0 / 3.0).abs() < 1e-6);
    assert_eq!((r.clean_acc_after, r.corrupt_acc_after), (1.0, 0.0));

    let r = filter(&pairs, &clean, &corrupt, FilterRule::MetricPositive, 1).unwrap();
    assert_eq!(r.kept_pos, vec![0, 1]);
    assert_eq!(r.kept_neg, vec![0]);
    assert_eq!(r.kept_pairs, vec![0]);

    match filter(&pairs, &clean, &corrupt, FilterRule::TopRank, 2) {
        Err(Error::Task(msg)) => assert!(msg.contains("need at least 2"), "{msg}"),
        other => panic!("{other:?}"),
    }
    assert!(filter(&pairs, &clean[..2], &corrupt, FilterRule::TopRank, 0).is_err());
}

#[test]
fn filter_top_rank_greater_than_accepts_any_later_year() {
    let mut i = info(MetricKind::YearProbDiff { yy: 1 }, 2, &[]);
    i.greater = vec![2, 3];
    i.not_greater = vec![0, 1];
    let clean = vec![vec![0.0, 0.0, 0.0, 9.0]]; // "later year" 3 on top, not the answer 2
    let corrupt = vec![vec![9.0, 0.0, 0.0, 0.0]];
    let r = filter(&[i], &clean, &corrupt, FilterRule::TopRank, 1).unwrap();
    assert_eq!(r.kept_pairs, vec![0]);
}

// ---------------------------------------------------------------- circuits

#[test]
fn builtin_circuits() {
    let ioi = Circuit::builtin("ioi").unwrap();
    assert_eq!(ioi.heads.len(), 26);
    assert!(ioi.contains(9, 9) && ioi.contains(9, 0) && !ioi.contains(11, 3));
    let sae = Circuit::builtin("ioi-sae-repo").unwrap();
    assert_eq!(sae.heads.len(), 26);
    assert!(sae.contains(11, 3) && !sae.contains(9, 0));

    for name in ["gt", "greaterthan", "GT"] {
        let gt = Circuit::builtin(name).unwrap();
        assert_eq!(gt.name, "gt");
        assert_eq!(
            gt.heads,
            vec![
                (0, 1),
                (0, 3),
                (0, 5),
                (5, 5),
                (6, 1),
                (6, 9),
                (7, 10),
                (8, 11),
                (9, 1)
            ]
        );
    }
    assert_eq!(
        Circuit::builtin("gt-sae-repo").unwrap().heads,
        Circuit::builtin("gt").unwrap().heads
    );
    assert_eq!(
        circuits::builtin_mlp_layers("gt").unwrap(),
        vec![0, 1, 2, 3, 8, 9, 10, 11]
    );
    assert!(circuits::builtin_mlp_layers("ioi").unwrap().is_empty());

    let ds = Circuit::builtin("docstring").unwrap();
    assert_eq!(
        ds.heads,
        vec![(0, 5), (1, 2), (1, 4), (2, 0), (3, 0), (3, 6)]
    );
    let ds2 = Circuit::builtin("docstring-sae-repo").unwrap();
    assert_eq!(
        ds2.heads,
        vec![(0, 5), (1, 0), (1, 4), (2, 0), (3, 0), (3, 6)]
    );

    for name in circuits::builtin_names() {
        Circuit::builtin(name).unwrap();
    }
    assert!(matches!(
        Circuit::builtin("sentiment"),
        Err(Error::Circuit(_))
    ));
}

#[test]
fn circuit_validate_and_mask() {
    let ioi = Circuit::builtin("ioi").unwrap();
    ioi.validate(12, 12).unwrap();
    // IOI against attn-only-4l (4 layers x 8 heads): out of range.
    match ioi.validate(4, 8) {
        Err(Error::Circuit(msg)) => assert!(msg.contains("outside"), "{msg}"),
        other => panic!("{other:?}"),
    }
    let ds = Circuit::builtin("docstring").unwrap();
    ds.validate(4, 8).unwrap();
    let m = ds.mask(4, 8);
    assert_eq!(m.len(), 32);
    assert_eq!(m.iter().filter(|&&b| b).count(), 6);
    assert!(m[5] && m[8 + 2] && m[3 * 8 + 6] && !m[0]);
    assert_eq!(ioi.mask(12, 12).iter().filter(|&&b| b).count(), 26);
}

#[test]
fn user_circuits_from_json() {
    let a = Circuit::from_json_str("[[9, 6], [10, 0]]", "mine").unwrap();
    let b = Circuit::from_json_str(r#"["L10H0", "a9.6"]"#, "mine").unwrap();
    let c = Circuit::from_json_str(
        r#"{"name": "x", "heads": ["a9.h6", "l10h0", [9, 6]]}"#,
        "mine",
    )
    .unwrap();
    assert_eq!(a.heads, vec![(9, 6), (10, 0)]);
    assert_eq!(a.heads, b.heads);
    assert_eq!(a.heads, c.heads);
    assert_eq!(c.name, "x");
    for bad in [
        r#"["L9"]"#,
        r#"["nine.six"]"#,
        r#"[[9, -1]]"#,
        r#"[[9, 6, 1]]"#,
        r#"[]"#,
        r#"{"head": []}"#,
        r#"42"#,
        "not json",
    ] {
        assert!(
            matches!(Circuit::from_json_str(bad, "bad"), Err(Error::Circuit(_))),
            "{bad}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.json");
    std::fs::write(&path, r#"["L0H1", "L3H2"]"#).unwrap();
    let f = Circuit::from_json_file(&path).unwrap();
    assert_eq!(
        (f.name.as_str(), f.heads.clone()),
        ("c", vec![(0, 1), (3, 2)])
    );
    assert_eq!(Circuit::load(path.to_str().unwrap()).unwrap(), f);
    std::fs::write(&path, r#"["L0H1", "oops"]"#).unwrap();
    match Circuit::from_json_file(&path) {
        Err(Error::Format { path: p, msg }) => {
            assert_eq!(p, path);
            assert!(msg.contains("entry 1"), "{msg}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(Circuit::load("ioi").unwrap().heads.len(), 26);
    assert!(Circuit::load("no-such-circuit").is_err());
}

/// Every circuit shipped in data/circuits loads, fits SmolLM2-135M (30 layers × 9 heads),
/// has no repeated head, and holds as many heads as its name says (`top27`, `core5`, …).
#[test]
fn shipped_circuits_fit_smollm2() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/circuits");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        let c = Circuit::load(p.to_str().unwrap()).unwrap();
        c.validate(30, 9).unwrap();
        let mut heads = c.heads.clone();
        heads.sort();
        heads.dedup();
        assert_eq!(heads.len(), c.heads.len(), "{}", p.display());
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let count: usize = stem
            .rsplit('-')
            .next()
            .unwrap()
            .trim_start_matches(|ch: char| ch.is_ascii_alphabetic())
            .parse()
            .unwrap();
        assert_eq!(c.heads.len(), count, "{}", p.display());
        n += 1;
    }
    assert!(n >= 6, "{n} circuits in {}", dir.display());
}

/// The fixed split: a pair's part follows from its clean prompt alone, so the parts never
/// share a prompt whatever the seed or `--n`, and they hold about 60 / 20 / 20 %.
#[test]
fn splits_are_disjoint_fixed_and_sized() {
    use headcode::pipeline::prompts::load_pairs;
    use headcode::pipeline::{Split, TaskSource};
    let tok = gpt2();
    for kind in [TaskKind::Ioi, TaskKind::GreaterThan, TaskKind::Docstring] {
        let src = TaskSource::Builtin(kind);
        let mut seen: std::collections::HashMap<String, Split> = Default::default();
        for split in [Split::Train, Split::Validation, Split::Test] {
            for (seed, n) in [(0u64, 40usize), (7, 25)] {
                let (pairs, notes) = load_pairs(&src, &tok, n, seed, split).unwrap();
                assert_eq!(pairs.len(), n, "{kind:?} {split:?}");
                assert_eq!(notes["split"], split.name());
                for p in &pairs {
                    assert_eq!(Split::of(&p.clean), split);
                    let prev = seen.insert(p.clean.clone(), split);
                    assert!(
                        prev.is_none_or(|s| s == split),
                        "{kind:?}: {} in two splits",
                        p.clean
                    );
                }
            }
        }
        // Sizes over a large pool.
        let (all, _) = load_pairs(&src, &tok, 1000, 3, Split::All).unwrap();
        let frac = |s: Split| {
            all.iter().filter(|p| Split::of(&p.clean) == s).count() as f64 / all.len() as f64
        };
        let distinct: std::collections::HashSet<&str> =
            all.iter().map(|p| p.clean.as_str()).collect();
        if distinct.len() > 500 {
            assert!(
                (frac(Split::Train) - 0.6).abs() < 0.06,
                "{kind:?} {}",
                frac(Split::Train)
            );
            assert!((frac(Split::Validation) - 0.2).abs() < 0.05);
        }
    }
    // A file's lines are split the same way; a split that keeps none is an error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one.jsonl");
    let line = r#"{"clean": "When Mary and John went to the store, John gave a drink to", "corrupt": "When Mary and John went to the store, Mary gave a drink to", "answer": " Mary", "wrong_answers": [" John"]}"#;
    std::fs::write(&path, format!("{line}\n")).unwrap();
    let src = TaskSource::File(path);
    let part = Split::of("When Mary and John went to the store, John gave a drink to");
    assert_eq!(load_pairs(&src, &tok, 0, 0, part).unwrap().0.len(), 1);
    let other = if part == Split::Train {
        Split::Test
    } else {
        Split::Train
    };
    let e = load_pairs(&src, &tok, 0, 0, other)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("split"), "{e}");
}

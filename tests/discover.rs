//! `discover` end to end on a small random-weight model with GPT-2's vocabulary, and the
//! consistency of every file it writes.
mod common;
use common::tiny_gpt2_vocab as tiny;
use headcode::pipeline::discover::CircuitSpec;
use headcode::pipeline::{discover, DiscoverConfig, SaeMode, TaskSource};
use headcode::tasks::TaskKind;
use headcode::tokenize::Gpt2Tokenizer;

fn config(dir: &std::path::Path) -> DiscoverConfig {
    let circ = dir.join("circuit.json");
    std::fs::write(&circ, r#"["L0H1", "L1H2", "L1H3"]"#).unwrap();
    let mut c = DiscoverConfig::paper(TaskSource::Builtin(TaskKind::Ioi));
    c.n = 24;
    c.sae.steps = 30;
    c.sae.n_features = 16;
    c.trials = 2;
    c.patch_pairs = 4;
    c.circuit = CircuitSpec::Named(circ.to_str().unwrap().into());
    c
}

#[test]
fn discover_writes_consistent_outputs() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let r = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.trials.len(), 2);
    assert_eq!(r.task.positives, 24);
    for name in [
        "sae",
        "sae-normalised",
        "sae-edge",
        "class-means",
        "class-means-z",
        "mean-norm",
        "random",
    ] {
        assert!(r.scores.contains_key(name), "{name} missing");
        assert!(r.auc.contains_key(name), "{name} AUC missing");
    }
    let out = dir.path().join("run");
    let files = headcode::report::run::write_discover(&out, &m, &r, true).unwrap();
    for f in [
        "scores.json",
        "scores.csv",
        "roc.json",
        "heatmap.svg",
        "roc.svg",
        "faithfulness.svg",
        "codes.json",
    ] {
        assert!(files.iter().any(|x| x == f) && out.join(f).is_file(), "{f}");
    }
    // The CSV agrees with the JSON.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    let sae = j["scores"]["sae"].as_array().unwrap();
    let mut rd = csv::Reader::from_path(out.join("scores.csv")).unwrap();
    let mut n = 0;
    for (i, rec) in rd.records().enumerate() {
        let rec = rec.unwrap();
        assert_eq!(rec[2].to_string(), format!("L{}H{}", i / 4, i % 4));
        let s: f64 = rec[3].parse().unwrap();
        assert!((s - sae[i].as_f64().unwrap()).abs() < 1e-9);
        let in_c: bool = rec[6].parse().unwrap();
        assert_eq!(in_c, ["L0H1", "L1H2", "L1H3"].contains(&&rec[2]));
        n += 1;
    }
    assert_eq!(n, 8);
    let roc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("roc.json")).unwrap()).unwrap();
    let auc = roc["auc"].as_f64().unwrap();
    let want = headcode::eval::roc::auc(&r.scores["sae"], &r.circuit.as_ref().unwrap().mask(2, 4))
        .unwrap();
    assert!((auc - want).abs() < 1e-12);
    assert!(out
        .join("saes/all_heads.attn.hook_result/cfg.json")
        .is_file());
    // The saved baselines re-score to discover's AUCs bit for bit against the run's own
    // circuit (random redrawn from each trial's seed), and against another circuit to the
    // AUC of the saved scores.
    let mask = r.circuit.as_ref().unwrap().mask(2, 4);
    let base = headcode::report::run::rescore_baselines(&out, &mask)
        .unwrap()
        .unwrap();
    assert!(base.len() >= 6, "{base:?}");
    for (name, ms) in &base {
        assert_eq!(ms.mean.to_bits(), r.auc[name].mean.to_bits(), "{name}");
        assert_eq!(ms.std.to_bits(), r.auc[name].std.to_bits(), "{name}");
    }
    let other = [true, false, false, false, false, true, false, true];
    let base2 = headcode::report::run::rescore_baselines(&out, &other)
        .unwrap()
        .unwrap();
    let want = headcode::eval::roc::auc(&r.scores["class-means"], &other).unwrap();
    assert!((base2["class-means"].mean - want).abs() < 1e-12);
    // A wrong head count, a malformed file and a missing one.
    assert!(headcode::report::run::rescore_baselines(&out, &other[..5]).is_err());
    let junk = dir.path().join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    assert!(headcode::report::run::rescore_baselines(&junk, &other)
        .unwrap()
        .is_none());
    std::fs::write(junk.join("scores.json"), "{\"trials\": 3}").unwrap();
    let e = headcode::report::run::rescore_baselines(&junk, &other).unwrap_err();
    assert!(e.to_string().contains("trials"), "{e}");
    // Saved codes re-score to the same node scores.
    let saved = headcode::report::run::read_codes(&out).unwrap();
    let again = headcode::score::node_scores(&saved.trials[0], false).unwrap();
    assert_eq!(again.score, r.trials[0].node.score);
}

#[test]
fn discover_is_deterministic_and_per_head_mode_runs() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.faithfulness = None;
    cfg.trials = 1;
    let a = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap();
    let b = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(a.trials[0].codes, b.trials[0].codes);
    assert_eq!(a.scores, b.scores);
    cfg.sae_mode = SaeMode::PerHead;
    cfg.on = headcode::hooks::HookPoint::Z;
    let c = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(c.trials[0].codes.heads, 8);
}

#[test]
fn discover_rejects_bad_input() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // A GPT-2-small circuit does not fit a 2×4 model.
    let mut cfg = config(dir.path());
    cfg.circuit = CircuitSpec::Named("ioi".into());
    let e = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("L"), "{e}");
    // Unequal pair lengths in a user task.
    let f = dir.path().join("bad.jsonl");
    std::fs::write(
        &f,
        "{\"clean\": \"a b c\", \"corrupt\": \"a\", \"answer\": \" d\"}\n",
    )
    .unwrap();
    let mut cfg = config(dir.path());
    cfg.task = TaskSource::File(f);
    let e = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("equal token length"), "{e}");
    // Zero trials.
    let mut cfg = config(dir.path());
    cfg.trials = 0;
    assert!(discover(&m, &tok, &cfg, &mut |_, _, _| {}).is_err());
}

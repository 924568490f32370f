//! `discover` end to end on a small random-weight model with GPT-2's vocabulary, and the
//! consistency of every file it writes.
mod common;
use candle_core::Device;
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
    let mut cfg = config(dir.path());
    cfg.keep_activations = true;
    let r = discover(&m, &tok, &cfg, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.trials.len(), 2);
    assert_eq!(r.task.positives, 24);
    for name in [
        "sae",
        "sae-normalised",
        "sae-mi",
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
    let mut dir_out = headcode::report::out::OutDir::prepare(&out, false).unwrap();
    let files = headcode::report::run::write_discover(&mut dir_out, &m, &r, true).unwrap();
    for f in [
        "scores.json",
        "scores.csv",
        "roc.json",
        "heatmap.svg",
        "roc.svg",
        "faithfulness.svg",
        "codes.json",
        "activations.safetensors",
    ] {
        assert!(files.iter().any(|x| x == f) && out.join(f).is_file(), "{f}");
    }
    // The saved activations are the vectors the baselines read, in codes.json's order.
    let st =
        candle_core::safetensors::load(out.join("activations.safetensors"), &Device::Cpu).unwrap();
    let z = &st["z"];
    assert_eq!(z.dims(), &[48, 8, m.cfg.d_head]);
    assert_eq!(st["result"].dims(), &[48, 8, m.cfg.d_model]);
    let is_pos: Vec<bool> = st["is_pos"]
        .to_vec1::<i64>()
        .unwrap()
        .iter()
        .map(|&p| p == 1)
        .collect();
    assert_eq!(is_pos, r.trials[0].codes.is_pos);
    let pair = st["pair"].to_vec1::<i64>().unwrap();
    let want: Vec<i64> = (0..24).chain(0..24).collect();
    assert_eq!(pair, want);
    for (name, t, d) in [
        ("class-means-z", z, m.cfg.d_head),
        ("class-means", &st["result"], m.cfg.d_model),
    ] {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let cm = headcode::score::baseline::class_mean_distance(&x, 48, 8, d, &is_pos).unwrap();
        assert_eq!(cm, r.scores[name], "{name}");
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
    // `headcode score --mi` re-scores the saved codes to discover's `sae-mi`.
    let stdout = score_mi(&out);
    let want = format!(
        "sae-mi: AUC {:.3} ± {:.3}",
        r.auc["sae-mi"].mean, r.auc["sae-mi"].std
    );
    assert!(stdout.contains(&want), "{stdout}");
    let mut rd = csv::Reader::from_path(out.join("rescore-sae-mi.csv")).unwrap();
    let mi = &r.scores["sae-mi"];
    for (i, rec) in rd.records().enumerate() {
        let s: f64 = rec.unwrap()[3].parse().unwrap();
        assert!((s - mi[i]).abs() < 1e-12, "head {i}: {s} vs {}", mi[i]);
    }
    // Options that mean nothing together are refused, not ignored.
    for (args, says) in [
        (&["--mi", "--edge"][..], "cannot be used with"),
        (&["--k", "3"][..], "--edge"),
    ] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_headcode"))
            .arg("score")
            .arg(&out)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{args:?}: {err}");
    }
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

/// Runs `headcode score DIR --mi`, which must succeed; its stdout.
fn score_mi(dir: &std::path::Path) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args(["score", dir.to_str().unwrap(), "--mi"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    stdout
}

/// `headcode score --mi` on a hand-made code table whose mutual information is known.
#[test]
fn score_mi_on_hand_made_codes() {
    let dir = tempfile::tempdir().unwrap();
    // 1 layer × 3 heads, 2 positives then 2 negatives. Head 0 separates the classes
    // (ln 2), head 1 has one code everywhere (0), head 2 shares one code (0.2158).
    let codes = [0, 7, 0, 1, 7, 0, 2, 7, 0, 3, 7, 1];
    let table = serde_json::json!({
        "n_layers": 1, "n_heads": 3, "labels": ["L0H0", "L0H1", "L0H2"],
        "circuit": {"name": "c", "heads": [[0, 0]]},
        "trials": [{"codes": codes, "examples": 4, "heads": 3, "n_codes": 8,
                    "is_pos": [true, true, false, false]}]
    });
    std::fs::write(dir.path().join("codes.json"), table.to_string()).unwrap();
    let stdout = score_mi(dir.path());
    // Head 0 (the circuit) ranks above both others.
    assert!(
        stdout.contains("sae-mi: AUC 1.000 ± 0.000 over 1 trial"),
        "{stdout}"
    );
    let want = [
        2f64.ln(),
        0.0,
        0.5 * (4.0f64 / 3.0).ln() + 0.25 * (2.0f64 / 3.0).ln() + 0.25 * 2f64.ln(),
    ];
    let mut rd = csv::Reader::from_path(dir.path().join("rescore-sae-mi.csv")).unwrap();
    let got: Vec<f64> = rd
        .records()
        .map(|r| r.unwrap()[3].parse().unwrap())
        .collect();
    assert_eq!(got.len(), 3);
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
    }
}

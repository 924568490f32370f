//! `compare` end to end on a small random-weight model with GPT-2's vocabulary: every
//! method runs, the files parse, and the table agrees with the saved scores.
mod common;
use common::tiny_gpt2_vocab as tiny;
use headcode::baselines::{AcdcConfig, AcdcMetric, Granularity};
use headcode::eval::roc::auc;
use headcode::model::graph::CircuitGraph;
use headcode::pipeline::discover::CircuitSpec;
use headcode::pipeline::{compare, CompareConfig, DiscoverConfig, Method, TaskSource};
use headcode::report::compare::write_compare;
use headcode::report::out::OutDir;
use headcode::tasks::TaskKind;
use headcode::tokenize::Gpt2Tokenizer;

fn config(circuit: &str, granularity: Granularity) -> CompareConfig {
    let mut d = DiscoverConfig::paper(TaskSource::Builtin(TaskKind::Ioi));
    d.n = 24;
    d.sae.steps = 30;
    d.sae.n_features = 16;
    d.batch_size = 8;
    d.circuit = CircuitSpec::Named(circuit.into());
    CompareConfig {
        discover: d,
        methods: vec![
            Method::Sae,
            Method::Patching,
            Method::Acdc,
            Method::Eap,
            Method::EapIg,
        ],
        pairs: 6,
        acdc: AcdcConfig {
            granularity,
            metric: AcdcMetric::Kl,
            thresholds: vec![1e-5, 1e-4, 1e-3, 1e-2],
        },
        eap_split_qkv: true,
        ig_steps: 2,
        eap_batch: 4,
        eval_pairs: 5,
        eval_split: headcode::pipeline::Split::Validation,
        ablation: headcode::eval::mib_curve::CircuitAblation::Patching,
        resamples: 4,
        stability_k: Some(3),
    }
}

#[test]
fn compare_runs_every_method_and_its_files_agree() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let circ = dir.path().join("circuit.json");
    // Heads plus edges of the q/k/v-split graph, for edge AUCs.
    std::fs::write(
        &circ,
        r#"{"name": "toy", "heads": ["L0H1", "L1H2", "L1H3"],
            "edges": ["L0H1->L1H2.q", "input->L0H1.v", "L1H2->output", "L1H3->output"]}"#,
    )
    .unwrap();
    let cfg = config(circ.to_str().unwrap(), Granularity::EdgesQkv);
    let r = compare(&m, &tok, &cfg, "cpu", &mut |_, _, _| {}).unwrap();
    // Peak memory per method, the SAE method's at least its own discover's.
    let stages: Vec<&str> = r.memory.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(
        stages,
        [
            "load",
            "sae",
            "patching",
            "acdc",
            "eap",
            "eap-ig",
            "stability",
            "faithfulness"
        ]
    );
    let host = |s: &str| {
        r.memory
            .stages
            .iter()
            .find(|x| x.stage == s)
            .unwrap()
            .host_peak_bytes
    };
    assert!(host("sae").unwrap() > 0);
    assert!(r.memory.host_peak_bytes >= host("eap"));
    let names: Vec<&str> = r.rows.iter().map(|r| r.method.as_str()).collect();
    // Every SAE scorer has its row (the primary `sae (sae)` and the other three).
    for want in [
        "sae (sae)",
        "sae-normalised",
        "sae-mi",
        "sae-edge",
        "class-means-z",
        "class-means",
        "random",
        "patching",
        "acdc (edges-qkv)",
        "eap",
        "eap-ig",
    ] {
        assert!(names.contains(&want), "missing row {want}: {names:?}");
    }
    // CPR and CMD for every method, from curves that run from the empty circuit (f = 0 at
    // the edge level) to the whole model (f = 1); stability for all but ACDC.
    let f = r.faithfulness.as_ref().unwrap();
    assert_eq!(f.pairs, 5);
    for row in &r.rows {
        let c = &r.curves[&row.method];
        assert_eq!(row.cpr, Some(c.cpr));
        assert_eq!(row.cmd, Some(c.cmd));
        for curve in [&c.signed, &c.absolute] {
            assert_eq!(curve.points.len(), 11);
            let last = curve.points.last().unwrap();
            assert!(
                (last.faithfulness - 1.0).abs() < 1e-4,
                "{}: {last:?}",
                row.method
            );
            assert_eq!(last.edge_fraction, 1.0);
            if c.level == headcode::mib::MibLevel::Edge {
                assert_eq!(curve.points[0].edges, 0);
                assert!(curve.points[0].faithfulness.abs() < 1e-6);
            }
        }
        let st = row.stability;
        if row.method.starts_with("acdc") {
            assert!(st.is_none());
        } else {
            let st = st.unwrap_or_else(|| panic!("{} has no stability", row.method));
            assert!((0.0..=1.0).contains(&st), "{}: {st}", row.method);
        }
    }
    assert_eq!(r.stability.as_ref().unwrap().k, 3);
    // The MIB scores: edge level for the edge methods, with EAP's sign flipped into MIB's
    // "higher = cutting hurts more"; node level for the head-only methods.
    let (eap_mib, level) = r.mib_scores("eap").unwrap().unwrap();
    assert_eq!(level, headcode::mib::MibLevel::Edge);
    for (a, b) in eap_mib
        .edges
        .iter()
        .zip(&r.eap.as_ref().unwrap().edge_scores)
    {
        assert!((*a as f64 + b).abs() < 1e-6 * (1.0 + b.abs()));
    }
    let (pm, level) = r.mib_scores("patching").unwrap().unwrap();
    assert_eq!(level, headcode::mib::MibLevel::Node);
    let nodes = pm.nodes.unwrap();
    assert!(nodes[0].is_nan()); // input: unscored
    let p = r.patching.as_ref().unwrap();
    assert_eq!(nodes[1], p.effect[0]); // L0H0's signed effect

    // --mib: one submission folder per method, read back to the same scores.
    let methods: Vec<_> = r
        .rows
        .iter()
        .filter_map(|row| {
            r.mib_scores(&row.method)
                .unwrap()
                .map(|(s, l)| (row.method.clone(), s, l))
        })
        .collect();
    assert_eq!(methods.len(), r.rows.len());
    let mib_dir = dir.path().join("mib");
    let written = headcode::report::mib::write_mib(
        &mut OutDir::prepare(&mib_dir, false).unwrap(),
        &r.task,
        "tiny_model",
        &r.mib_graph(),
        r.d_model,
        &methods,
    )
    .unwrap();
    assert!(
        written.contains(&"eap-ig/ioi_tiny-model/importances.json".to_string()),
        "{written:?}"
    );
    assert!(written.contains(&"sae/ioi_tiny-model/importances.json".to_string()));
    let back = headcode::mib::MibGraph::read(&mib_dir.join("eap/ioi_tiny-model/importances.json"))
        .unwrap();
    back.check_model(&r.mib_graph(), r.d_model, &mib_dir)
        .unwrap();
    for (a, b) in back.scores.edges.iter().zip(&eap_mib.edges) {
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "{a} vs {b}");
    }
    let mask = r.circuit.mask(2, 4);
    for row in &r.rows {
        let s = &r.head_scores[&row.method];
        assert_eq!(s.len(), 8);
        assert!((auc(s, &mask).unwrap() - row.node_auc).abs() < 1e-12);
        assert!(row.seconds >= 0.0);
    }
    let sae_t = r.rows[0].seconds;
    for row in &r.rows {
        let ratio = row.time_vs_sae.unwrap();
        assert!((ratio - row.seconds / sae_t).abs() < 1e-9);
    }
    // Edge AUCs only where edges are scored.
    let by = |n: &str| r.rows.iter().find(|x| x.method == n).unwrap();
    assert!(by("acdc (edges-qkv)").edge_auc.is_some());
    assert!(by("eap").edge_auc.is_some());
    assert!(by("patching").edge_auc.is_none());
    let g = CircuitGraph::for_model(&m, true);
    let eapr = r.eap.as_ref().unwrap();
    let mut labels = vec![false; g.n_edges()];
    for e in &r.circuit.edges {
        labels[(0..g.n_edges()).find(|&i| &g.edge_label(i) == e).unwrap()] = true;
    }
    let abs: Vec<f64> = eapr.edge_scores.iter().map(|x| x.abs()).collect();
    assert!((auc(&abs, &labels).unwrap() - by("eap").edge_auc.unwrap()).abs() < 1e-12);
    // ACDC: one run per threshold, with the pruned model's metric recomputed.
    let a = r.acdc.as_ref().unwrap();
    assert_eq!(a.runs.len(), 4);
    for run in &a.runs {
        assert!((run.metric - run.metric_recomputed).abs() < 1e-5 * (1.0 + run.metric));
    }

    // Beside the circuit file (a name runs write too), in a folder of its own.
    let out = dir.path().join("out");
    let files = write_compare(&mut OutDir::prepare(&out, false).unwrap(), &r).unwrap();
    for f in [
        "compare.json",
        "compare.md",
        "roc.svg",
        "acdc_circuits.json",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} not written");
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), r.rows.len());
    for (jr, row) in rows.iter().zip(&r.rows) {
        assert_eq!(jr["method"], row.method.as_str());
        assert!((jr["node_auc"].as_f64().unwrap() - row.node_auc).abs() < 1e-12);
    }
    let md = std::fs::read_to_string(out.join("compare.md")).unwrap();
    // Header, separator, one line per row.
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| ")).count(),
        r.rows.len() + 2
    );
    let ac: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("acdc_circuits.json")).unwrap())
            .unwrap();
    let runs = ac["runs"].as_array().unwrap();
    assert_eq!(runs.len(), a.runs.len());
    for (jr, run) in runs.iter().zip(&a.runs) {
        assert_eq!(jr["heads"].as_array().unwrap().len(), run.heads.len());
        assert_eq!(jr["edges"].as_array().unwrap().len(), run.kept_edges.len());
    }
    let svg = std::fs::read_to_string(out.join("roc.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("eap"));

    // Rescoring the saved file: the same circuit gives the same table; another circuit
    // gives the AUCs of the saved scores against it.
    let saved: headcode::pipeline::CompareResult =
        serde_json::from_str(&std::fs::read_to_string(out.join("compare.json")).unwrap()).unwrap();
    let same = saved.rescore(r.circuit.clone()).unwrap();
    for (a, b) in same.rows.iter().zip(&r.rows) {
        assert!((a.node_auc - b.node_auc).abs() < 1e-12, "{}", a.method);
        assert_eq!(a.edge_auc.is_some(), b.edge_auc.is_some());
        if let (Some(x), Some(y)) = (a.edge_auc, b.edge_auc) {
            assert!((x - y).abs() < 1e-12);
        }
        // serde_json parses floats to within an ulp.
        assert!((a.seconds - b.seconds).abs() <= 1e-12 * b.seconds.abs().max(1.0));
    }
    let other = headcode::tasks::Circuit::new("other", vec![(0, 0), (1, 1)]);
    let mask2 = other.mask(2, 4);
    let re = saved.rescore(other).unwrap();
    for row in &re.rows {
        let want = auc(&r.head_scores[&row.method], &mask2).unwrap();
        assert!((row.node_auc - want).abs() < 1e-12);
        assert!(row.edge_auc.is_none(), "the new circuit lists no edges");
    }
    assert!(saved
        .rescore(headcode::tasks::Circuit::new("far", vec![(9, 0)]))
        .is_err());
}

#[test]
fn compare_heads_mode_and_errors() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let circ = dir.path().join("c.json");
    std::fs::write(&circ, r#"["L0H1", "L1H2"]"#).unwrap();
    let mut cfg = config(circ.to_str().unwrap(), Granularity::Heads);
    cfg.methods = vec![Method::Acdc, Method::Eap];
    let r = compare(&m, &tok, &cfg, "cpu", &mut |_, _, _| {}).unwrap();
    assert_eq!(r.rows.len(), 2);
    assert!(r
        .rows
        .iter()
        .all(|x| x.time_vs_sae.is_none() && x.edge_auc.is_none()));
    write_compare(&mut OutDir::prepare(dir.path(), false).unwrap(), &r).unwrap();

    // No circuit, a circuit that does not fit, an edge not in the graph, no methods.
    let mut bad = config("none", Granularity::Heads);
    bad.discover.circuit = CircuitSpec::None;
    assert!(compare(&m, &tok, &bad, "cpu", &mut |_, _, _| {}).is_err());
    let big = dir.path().join("big.json");
    std::fs::write(&big, r#"["L5H1"]"#).unwrap();
    let c = config(big.to_str().unwrap(), Granularity::Heads);
    assert!(compare(&m, &tok, &c, "cpu", &mut |_, _, _| {}).is_err());
    let wrong_edge = dir.path().join("we.json");
    std::fs::write(
        &wrong_edge,
        r#"{"heads": ["L0H1"], "edges": ["L1H1->L0H1.q"]}"#,
    )
    .unwrap();
    let mut c = config(wrong_edge.to_str().unwrap(), Granularity::EdgesQkv);
    c.methods = vec![Method::Eap];
    let e = compare(&m, &tok, &c, "cpu", &mut |_, _, _| {}).unwrap_err();
    assert!(e.to_string().contains("L1H1->L0H1.q"), "{e}");
    let mut c = config(circ.to_str().unwrap(), Granularity::Heads);
    c.methods.clear();
    assert!(compare(&m, &tok, &c, "cpu", &mut |_, _, _| {}).is_err());
}

#[test]
fn stability_and_graph_helpers() {
    use headcode::pipeline::compare::{edges_on_split, mean_jaccard};
    let a = vec![4.0, 3.0, 2.0, 1.0];
    let b = vec![1.0, 2.0, 3.0, 4.0];
    let c = vec![4.0, 2.0, 3.0, 1.0];
    assert_eq!(mean_jaccard(&[a.clone(), a.clone()], 2), Some(1.0));
    assert_eq!(mean_jaccard(&[a.clone(), b.clone()], 2), Some(0.0));
    // {0,1} {2,3} {0,2}: pairs 0, 1/3, 1/3.
    let j = mean_jaccard(&[a.clone(), b, c], 2).unwrap();
    assert!((j - 2.0 / 9.0).abs() < 1e-12, "{j}");
    // Ties go to the lower index.
    assert_eq!(
        mean_jaccard(&[vec![1.0; 4], vec![1.0, 1.0, 0.0, 0.0]], 2),
        Some(1.0)
    );
    assert_eq!(mean_jaccard(&[a], 2), None);

    // An unsplit graph's edge into a head gives its score to the q, k and v edges.
    let un = CircuitGraph::new(2, 3, true, false, false);
    let sp = CircuitGraph::new(2, 3, true, true, false);
    let scores: Vec<f64> = (0..un.n_edges()).map(|e| e as f64).collect();
    let moved = edges_on_split(&scores, &un, &sp).unwrap();
    assert_eq!(moved.len(), sp.n_edges());
    for (e, got) in moved.iter().enumerate() {
        let label = sp.edge_label(e);
        let base = label
            .strip_suffix(".q")
            .or_else(|| label.strip_suffix(".k"))
            .or_else(|| label.strip_suffix(".v"))
            .unwrap_or(&label);
        let want = (0..un.n_edges())
            .find(|&i| un.edge_label(i) == base)
            .unwrap();
        assert_eq!(*got, want as f64, "{label}");
    }
    assert_eq!(edges_on_split(&moved, &sp, &sp).unwrap(), moved);
    assert!(edges_on_split(&scores[1..], &un, &sp).is_err());
}

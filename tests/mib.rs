//! MIB circuit files against EAP-IG's own code: the fixtures in tests/fixtures/mib/ were
//! written by EAP-IG's `graph.py` (scripts/mib_golden.py). Our writer must give the same
//! bytes, our reader the same scores, our top-n + prune the same `in_graph`.
use std::path::{Path, PathBuf};

use headcode::mib::{apply_topn, MibConfig, MibGraph, MibLayout, MibLevel, MibScores};
use headcode::model::graph::CircuitGraph;
use headcode::tasks::Circuit;
use headcode::Error;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mib")
        .join(name)
}

fn read_text(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

fn sha(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 0/1 per edge in EAP-IG's order and per node (logits last, always 1), as the fixtures
/// store `in_graph`.
fn bits(layout: &MibLayout, edges: &[bool], nodes: &[bool]) -> (String, String) {
    let e = layout
        .edge_order
        .iter()
        .map(|&e| if edges[e] { '1' } else { '0' })
        .collect();
    let mut n: String = nodes.iter().map(|&x| if x { '1' } else { '0' }).collect();
    n.push('1');
    (e, n)
}

#[test]
fn writer_gives_eap_igs_bytes() {
    for name in ["tiny.json", "tiny_parallel.json"] {
        let text = read_text(name);
        let g = MibGraph::from_json(&text, &fixture(name)).unwrap();
        assert_eq!(g.to_json(), text, "{name}");
    }
}

#[test]
fn reader_gives_eap_igs_scores() {
    let g = MibGraph::read(&fixture("tiny.json")).unwrap();
    assert_eq!(
        g.cfg,
        MibConfig {
            n_layers: 2,
            n_heads: 3,
            parallel_attn_mlp: false,
            d_model: 16
        }
    );
    let layout = g.layout();
    assert_eq!(layout.n_nodes(), 10);
    assert_eq!(layout.edge_order.len(), 75);
    // The file's first edge and nodes, as written there.
    let first = layout.edge_id("input->a0.h0<q>").unwrap();
    assert_eq!(g.scores.edges[first], -1.5255959033966064f64 as f32);
    assert!(g.edges_in_graph[first]);
    let nodes = g.scores.nodes.as_ref().unwrap();
    assert!(nodes[0].is_nan(), "input is unscored");
    assert!(
        nodes[layout.node_index("m0").unwrap()].is_nan(),
        "m0 is unscored"
    );
    assert_eq!(
        nodes[layout.node_index("a0.h0").unwrap()],
        1.3804936408996582f64 as f32
    );
    assert!(!g.nodes_in_graph[layout.node_index("a0.h2").unwrap()]);

    let p = MibGraph::read(&fixture("tiny_parallel.json")).unwrap();
    assert!(p.cfg.parallel_attn_mlp);
    assert!(p.scores.nodes.is_none(), "no node scores in the file");
    // In a parallel block the MLP does not read its own layer's heads.
    let l = p.layout();
    assert!(l.edge_id("a0.h1->m0").is_none());
    assert!(l.edge_id("a0.h1->m1").is_some());
    assert!(l.edge_id("m0->a1.h0<v>").is_some());
}

#[test]
fn topn_and_prune_as_eap_ig() {
    let sel: serde_json::Value = serde_json::from_str(&read_text("tiny_selections.json")).unwrap();
    let mut cases = 0;
    for (name, file) in [
        ("tiny", "tiny.json"),
        ("tiny_parallel", "tiny_parallel.json"),
    ] {
        let g = MibGraph::read(&fixture(file)).unwrap();
        let layout = g.layout();
        for c in sel[name].as_array().unwrap() {
            let n = c["n"].as_u64().unwrap() as usize;
            let absolute = c["absolute"].as_bool().unwrap();
            let level = match c["level"].as_str().unwrap() {
                "edge" => MibLevel::Edge,
                _ => MibLevel::Node,
            };
            let s = g.apply_topn(n, absolute, level).unwrap();
            let (e, nd) = bits(&layout, &s.edges, &s.nodes);
            let what = format!("{name} n={n} absolute={absolute} {level:?}");
            assert_eq!(e, c["edges"].as_str().unwrap(), "edges, {what}");
            assert_eq!(nd, c["nodes"].as_str().unwrap(), "nodes, {what}");
            assert_eq!(
                s.weighted_edge_count,
                c["weighted_edge_count"].as_f64().unwrap(),
                "weighted_edge_count, {what}"
            );
            cases += 1;
        }
    }
    assert!(cases >= 50, "{cases} cases");
}

#[test]
fn too_many_requested_is_an_error() {
    let g = MibGraph::read(&fixture("tiny.json")).unwrap();
    assert_eq!(g.n_items(MibLevel::Edge).unwrap(), 75);
    assert_eq!(g.n_items(MibLevel::Node).unwrap(), 7);
    let e = g
        .apply_topn(76, true, MibLevel::Edge)
        .unwrap_err()
        .to_string();
    assert!(e.contains("76") && e.contains("75"), "{e}");
    let e = g
        .apply_topn(8, true, MibLevel::Node)
        .unwrap_err()
        .to_string();
    assert!(e.contains("scored nodes (7)"), "{e}");
    let p = MibGraph::read(&fixture("tiny_parallel.json")).unwrap();
    let e = p
        .apply_topn(1, true, MibLevel::Node)
        .unwrap_err()
        .to_string();
    assert!(e.contains("node scores"), "{e}");
}

/// The rule-made scores of scripts/mib_golden.py's `rule_scores`, in our edge-id order.
fn rule_scores(layout: &MibLayout) -> MibScores {
    let n = layout.edge_order.len();
    let mut edges = vec![0f32; n];
    for (k, &e) in layout.edge_order.iter().enumerate() {
        let p = (k * 7919) % n;
        edges[e] = if p % 2 == 1 {
            -(p as f32 + 1.0)
        } else {
            p as f32 + 1.0
        };
    }
    let nf = layout.cfg.n_forward();
    let nodes = (0..nf)
        .map(|f| {
            let q = (f * 31) % nf;
            if q % 2 == 1 {
                -(q as f32 + 1.0)
            } else {
                q as f32 + 1.0
            }
        })
        .collect();
    MibScores {
        edges,
        nodes: Some(nodes),
    }
}

#[test]
fn gpt2_small_as_eap_ig() {
    let want: serde_json::Value = serde_json::from_str(&read_text("gpt2_small.json")).unwrap();
    let graph = CircuitGraph::new(12, 12, true, true, false);
    assert_eq!(graph.senders.len() + 1, 158);
    assert_eq!(graph.n_edges(), 32_491);
    let cfg = MibConfig::for_graph(&graph, 768).unwrap();
    assert_eq!(cfg.counts(), Some((158, 32_491)));
    assert_eq!(cfg.n_forward() as u64, want["n_forward"].as_u64().unwrap());
    assert_eq!(
        cfg.n_backward() as u64,
        want["n_backward"].as_u64().unwrap()
    );
    let layout = MibLayout::new(cfg);
    assert_eq!(layout.n_nodes() as u64, want["n_nodes"].as_u64().unwrap());
    assert_eq!(
        layout.edge_order.len() as u64,
        want["n_edges"].as_u64().unwrap()
    );
    let nodes: Vec<String> = (0..layout.n_nodes()).map(|i| layout.node_name(i)).collect();
    let edges: Vec<String> = layout
        .edge_order
        .iter()
        .map(|&e| layout.edge_name(e))
        .collect();
    assert_eq!(sha(&nodes.join("\n")), want["node_names_sha256"]);
    assert_eq!(sha(&edges.join("\n")), want["edge_names_sha256"]);
    assert_eq!(edges[..5], want["first_edges"].as_array().unwrap()[..]);

    // The whole file for rule-made scores, with in_graph from top-500 |score| edges.
    let scores = rule_scores(&layout);
    let mut g = MibGraph::new(&graph, 768, scores.clone()).unwrap();
    let sel = g.apply_topn(500, true, MibLevel::Edge).unwrap();
    g.select(&sel).unwrap();
    let text = g.to_json();
    assert_eq!(
        text.len() as u64,
        want["to_json_topn500_bytes"].as_u64().unwrap()
    );
    assert_eq!(sha(&text), want["to_json_topn500_sha256"]);

    for c in want["selections"].as_array().unwrap() {
        let n = c["n"].as_u64().unwrap() as usize;
        let absolute = c["absolute"].as_bool().unwrap();
        let level = match c["level"].as_str().unwrap() {
            "edge" => MibLevel::Edge,
            _ => MibLevel::Node,
        };
        let s = apply_topn(&graph, &scores, n, absolute, level).unwrap();
        let (e, nd) = bits(&layout, &s.edges, &s.nodes);
        let what = format!("n={n} absolute={absolute} {level:?}");
        assert_eq!(sha(&e), c["edges_sha256"], "edges, {what}");
        assert_eq!(s.n_edges() as u64, c["n_edges"].as_u64().unwrap(), "{what}");
        assert_eq!(nd, c["nodes"].as_str().unwrap(), "nodes, {what}");
        assert_eq!(
            s.weighted_edge_count,
            c["weighted_edge_count"].as_f64().unwrap(),
            "{what}"
        );
    }
}

#[test]
fn names_map_both_ways() {
    for (l, h, parallel) in [(2, 3, false), (3, 2, true), (12, 12, false), (1, 1, true)] {
        let graph = CircuitGraph::new(l, h, true, true, parallel);
        let layout = MibLayout::new(MibConfig::for_graph(&graph, 8).unwrap());
        let mut order = layout.edge_order.clone();
        order.sort_unstable();
        assert_eq!(
            order,
            (0..graph.n_edges()).collect::<Vec<_>>(),
            "a permutation"
        );
        let mut cells = std::collections::HashSet::new();
        for e in 0..graph.n_edges() {
            assert_eq!(layout.edge_id(&layout.edge_name(e)), Some(e));
            assert!(
                cells.insert(layout.matrix_index(e)),
                "one matrix cell per edge"
            );
        }
        for i in 0..layout.n_nodes() {
            assert_eq!(layout.node_index(&layout.node_name(i)), Some(i));
        }
    }
    let graph = CircuitGraph::new(2, 3, true, true, false);
    let layout = MibLayout::new(MibConfig::for_graph(&graph, 8).unwrap());
    let e = layout.edge_id("a0.h1->a1.h2<k>").unwrap();
    assert_eq!(graph.edge_label(e), "L0H1->L1H2.k");
    assert_eq!(
        layout.edge_name(graph.edge_id(0, graph.output_receiver()).unwrap()),
        "input->logits"
    );
    // EAP-IG's matrix: per layer q of every head, then k, then v, then the MLP.
    assert_eq!(layout.matrix_index(e), (2, 10 + 3 + 2));
    for bad in [
        "a0.h01->m1",
        "a0.h1->m1<q>",
        "a0.h1->a1.h2",
        "m1->a1.h0<q>",
        "a1.h0->a0.h0<q>",
        "logits->m1",
        "input->a0.h0<x>",
        "input->a0.h3<q>",
    ] {
        assert_eq!(layout.edge_id(bad), None, "{bad}");
    }
}

#[test]
fn submission_layout() {
    let p = headcode::mib::submission_file(Path::new("out"), "eap-ig", "greater_than", "gpt2");
    assert_eq!(
        p,
        Path::new("out/eap-ig/greater-than_gpt2/importances.json")
    );
}

#[test]
fn non_mib_graphs_are_refused() {
    let e = MibConfig::for_graph(&CircuitGraph::new(2, 3, true, false, false), 8).unwrap_err();
    assert!(e.to_string().contains("split q/k/v"), "{e}");
    let e = MibConfig::for_graph(&CircuitGraph::new(2, 3, false, true, false), 8).unwrap_err();
    assert!(e.to_string().contains("MLP"), "{e}");
}

#[test]
fn round_trip_is_identity() {
    for (l, h, parallel, with_nodes) in [
        (2, 3, false, true),
        (3, 2, true, false),
        (4, 4, false, true),
    ] {
        let graph = CircuitGraph::new(l, h, true, true, parallel);
        // Scores spanning repr's positional and exponent forms, both signs, zeros.
        let edges: Vec<f64> = (0..graph.n_edges())
            .map(|e| {
                let x = ((e * 2654435761) % 1000) as f64 - 500.0;
                x * 10f64.powi((e % 13) as i32 - 8)
            })
            .collect();
        let nodes: Vec<f64> = (0..graph.senders.len())
            .map(|i| i as f64 * 0.37 - 1.0)
            .collect();
        let mut scores = MibScores::from_importance(&edges, with_nodes.then_some(&nodes[..]));
        if let Some(n) = scores.nodes.as_mut() {
            n[0] = f32::NAN;
        }
        let mut g = MibGraph::new(&graph, 32, scores).unwrap();
        let sel = g
            .apply_topn(graph.n_edges() / 3, false, MibLevel::Edge)
            .unwrap();
        g.select(&sel).unwrap();
        let dir = std::env::temp_dir().join(format!("headcode-mib-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("g{l}{h}.json"));
        g.write(&path).unwrap();
        let back = MibGraph::read(&path).unwrap();
        // NaN != NaN: compare node scores by bits.
        let bits = |g: &MibGraph| {
            g.scores
                .nodes
                .as_ref()
                .map(|n| n.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
        };
        assert_eq!(bits(&back), bits(&g));
        assert_eq!(back.scores.edges, g.scores.edges);
        assert_eq!(back.edges_in_graph, g.edges_in_graph);
        assert_eq!(back.nodes_in_graph, g.nodes_in_graph);
        assert_eq!(back.cfg, g.cfg);
        assert_eq!(back.to_json(), g.to_json());
        back.check_model(&graph, 32, &path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn sign_convention() {
    // headcode's EAP: the metric's change when cut, negative for an important edge; MIB:
    // the loss's change, positive for it.
    let s = MibScores::from_metric_change(&[-2.0, 0.5], Some(&[-1.0]));
    assert_eq!(s.edges, vec![2.0, -0.5]);
    assert_eq!(s.nodes, Some(vec![1.0]));
    let s = MibScores::from_importance(&[-2.0, 0.5], None);
    assert_eq!(s.edges, vec![-2.0, 0.5]);
    let graph = CircuitGraph::new(2, 3, true, true, false);
    let nodes = MibScores::head_nodes(&graph, &[1., 2., 3., 4., 5., 6.]).unwrap();
    assert!(nodes[0].is_nan() && nodes[graph.mlp_sender(0).unwrap()].is_nan());
    assert_eq!(nodes[graph.head_sender(1, 2)], 6.0);
    let s = MibScores::for_heads(&graph, &[1., 2., 3., 4., 5., 6.]).unwrap();
    assert_eq!(s.edges, vec![0.0; graph.n_edges()]);
    let mut g = MibGraph::new(&graph, 8, s).unwrap();
    g.include_all();
    assert_eq!(g.n_items(MibLevel::Node).unwrap(), 6);
    // The top two heads (L1H2, L1H1) survive node-level selection with input and the MLPs.
    let sel = g.apply_topn(2, true, MibLevel::Node).unwrap();
    let kept: Vec<usize> = (0..sel.nodes.len()).filter(|&i| sel.nodes[i]).collect();
    let (m0, m1) = (graph.mlp_sender(0).unwrap(), graph.mlp_sender(1).unwrap());
    assert_eq!(
        kept,
        vec![0, m0, graph.head_sender(1, 1), graph.head_sender(1, 2), m1]
    );
    assert!(MibScores::for_heads(&graph, &[1.0]).is_err());
}

/// Apply `edit` to tiny.json's text and read it: the error must be one line naming the
/// file and containing each of `want`.
fn bad(edit: impl Fn(&str) -> String, want: &[&str]) {
    let path = Path::new("/data/circuits/bad.json");
    let text = edit(&read_text("tiny.json"));
    let e = MibGraph::from_json(&text, path).unwrap_err();
    assert!(matches!(e, Error::Format { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "one line: {msg}");
    assert!(msg.starts_with("/data/circuits/bad.json: "), "{msg}");
    for w in want {
        assert!(msg.contains(w), "`{w}` not in: {msg}");
    }
}

#[test]
fn bad_input_names_file_and_key() {
    let r = |a: &'static str, b: &'static str| {
        move |t: &str| {
            assert!(t.contains(a), "{a}");
            t.replacen(a, b, 1)
        }
    };
    bad(|_| "[1, 2]".into(), &["expected an object"]);
    bad(|_| "{\"cfg\": {".into(), &["not JSON", "line 1"]);
    bad(r("\"cfg\"", "\"cgf\""), &["`cfg` is missing"]);
    bad(
        r("\"n_heads\": 3", "\"n_heads\": 3.0"),
        &["cfg.n_heads", "integer"],
    );
    bad(
        r("\"n_heads\": 3", "\"n_heads\": 2"),
        &["\"a0.h2\"", "no such node"],
    );
    bad(
        r("\"n_heads\": 3", "\"n_heads\": 4"),
        &["nodes", "\"a0.h3\" is missing"],
    );
    bad(
        r("\"n_layers\": 2", "\"n_layers\": 99999999999"),
        &["cfg", "more nodes or edges"],
    );
    bad(
        r("\"parallel_attn_mlp\": false", "\"parallel_attn_mlp\": 0"),
        &["cfg.parallel_attn_mlp", "true or false"],
    );
    bad(
        r("\"a0.h1\": {", "\"a0.h9\": {"),
        &["nodes[\"a0.h9\"]", "no such node"],
    );
    bad(
        r("\"input->a0.h0<q>\"", "\"input->a0.h0<x>\""),
        &["edges[\"input->a0.h0<x>\"]", "no such edge"],
    );
    bad(
        r("\"input->a0.h0<q>\"", "\"a1.h0->a0.h0<q>\""),
        &["edges[\"a1.h0->a0.h0<q>\"]", "no such edge"],
    );
    bad(
        r(
            "\"input->a0.h0<q>\": {\"score\": -1.5255959033966064, \"in_graph\": true}, ",
            "",
        ),
        &["edges: \"input->a0.h0<q>\" is missing"],
    );
    bad(
        r("\"score\": -1.5255959033966064", "\"score\": NaN"),
        &["edges[\"input->a0.h0<q>\"].score", "NaN"],
    );
    bad(
        r("\"score\": -1.5255959033966064", "\"score\": Infinity"),
        &["edges[\"input->a0.h0<q>\"].score", "finite"],
    );
    bad(
        r("\"score\": -1.5255959033966064", "\"score\": 1e39"),
        &["edges[\"input->a0.h0<q>\"].score", "finite"],
    );
    bad(
        r("\"score\": -1.5255959033966064", "\"score\": \"-1.5\""),
        &["edges[\"input->a0.h0<q>\"].score", "expected a number"],
    );
    bad(
        r(
            "\"score\": -1.5255959033966064, \"in_graph\": true",
            "\"score\": -1.5",
        ),
        &["edges[\"input->a0.h0<q>\"]", "`in_graph` is missing"],
    );
    bad(
        r("\"in_graph\": false}", "\"in_graph\": \"no\"}"),
        &["in_graph", "true or false"],
    );
    bad(
        r(
            "\"in_graph\": true, \"score\": NaN}",
            "\"in_graph\": true, \"score\": NaN, \"score\": 1}",
        ),
        &["\"score\" is listed twice"],
    );
    bad(
        r(
            "\"in_graph\": true, \"score\": NaN}",
            "\"in_graph\": true, \"neurons\": [true]}",
        ),
        &["nodes[\"input\"].neurons", "neuron-level"],
    );
    bad(
        r(
            "\"in_graph\": true, \"score\": NaN}",
            "\"in_graph\": true, \"score\": -Infinity}",
        ),
        &["nodes[\"input\"].score", "finite"],
    );
    bad(
        r(
            "\"in_graph\": true, \"score\": NaN}",
            "\"in_graph\": true, \"colour\": 1}",
        ),
        &["nodes[\"input\"]", "unknown key \"colour\""],
    );
    bad(
        r("\"input->a0.h0<q>\": {", "\"input->a0.h0<q>\": 5, \"x\": {"),
        &["edges[\"input->a0.h0<q>\"]", "expected an object"],
    );

    // The cfg against a model.
    let g = MibGraph::read(&fixture("tiny.json")).unwrap();
    let p = Path::new("c.json");
    let check = |graph: CircuitGraph, d: usize, want: &str| {
        let e = g.check_model(&graph, d, p).unwrap_err().to_string();
        assert!(e.starts_with("c.json: ") && e.contains(want), "{e}");
    };
    check(
        CircuitGraph::new(12, 12, true, true, false),
        16,
        "`cfg.n_layers` is 2 but the model has 12",
    );
    check(
        CircuitGraph::new(2, 4, true, true, false),
        16,
        "`cfg.n_heads` is 3",
    );
    check(
        CircuitGraph::new(2, 3, true, true, true),
        16,
        "`cfg.parallel_attn_mlp` is false",
    );
    check(
        CircuitGraph::new(2, 3, true, true, false),
        768,
        "`cfg.d_model` is 16 but the model has 768",
    );
    check(
        CircuitGraph::new(2, 3, true, false, false),
        16,
        "split q/k/v",
    );
    g.check_model(&CircuitGraph::new(2, 3, true, true, false), 16, p)
        .unwrap();
}

#[test]
fn circuit_from_a_mib_file() {
    let path = fixture("tiny.json");
    let g = MibGraph::read(&path).unwrap();
    let c = Circuit::load(path.to_str().unwrap()).unwrap();
    assert_eq!(c.name, "tiny");
    assert_eq!(c.heads, g.heads_in_graph());
    assert!(!c.heads.is_empty() && c.heads.len() < 6);
    assert!(!c.contains(0, 2), "a0.h2 is not in_graph in the file");
    assert_eq!(c.edges, g.edge_labels_in_graph());
    assert_eq!(
        c.edges.len(),
        g.edges_in_graph.iter().filter(|&&x| x).count()
    );
    assert!(c.edges.iter().all(|e| e.contains("->")));
    // Errors name the full path.
    let dir = std::env::temp_dir().join(format!("headcode-mib-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        read_text("tiny.json").replacen("\"a0.h1\": {", "\"a0.h9\": {", 1),
    )
    .unwrap();
    let e = Circuit::load(bad.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("{}: ", bad.display())) && e.contains("a0.h9"),
        "{e}"
    );
    // Nothing in_graph: not a circuit.
    let mut none = g.clone();
    none.nodes_in_graph.iter_mut().for_each(|x| *x = false);
    none.edges_in_graph.iter_mut().for_each(|x| *x = false);
    std::fs::write(&bad, none.to_json()).unwrap();
    let e = Circuit::load(bad.to_str().unwrap())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no head"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Any EAP-IG file given in `HEADCODE_MIB_FILE` (e.g. MIB-circuit-track's
/// `circuits/ioi-eap-ig.json`, GPT-2 small, 2.4 MB: too large to ship) reads and writes
/// back byte for byte. Skipped when unset.
#[test]
fn any_eap_ig_file_round_trips() {
    let Some(p) = std::env::var_os("HEADCODE_MIB_FILE") else {
        return;
    };
    let path = PathBuf::from(p);
    let text = std::fs::read_to_string(&path).unwrap();
    let g = MibGraph::from_json(&text, &path).unwrap();
    assert!(
        g.to_json() == text,
        "{} does not write back byte for byte",
        path.display()
    );
    eprintln!(
        "{}: {} edges ({} in_graph), {} heads in_graph",
        path.display(),
        g.scores.edges.len(),
        g.edges_in_graph.iter().filter(|&&x| x).count(),
        g.heads_in_graph().len()
    );
}

//! `evaluate` (MIB's faithfulness curve, CPR and CMD) on a small random-weight model with
//! GPT-2's vocabulary, against the same curve computed by hand: each circuit's metric from
//! the graph forward's slow edge-by-edge reference, faithfulness and the trapezoid areas
//! written out here.
mod common;
use candle_core::Tensor;
use common::tiny_gpt2_vocab as tiny;
use headcode::eval::mib_curve::{masked_metrics, CircuitAblation};
use headcode::mib::{apply_topn, MibGraph, MibLevel, MibScores};
use headcode::model::graph::{GraphCache, GraphModel, GraphRunOptions, PatchContext};
use headcode::pipeline::evaluate::{evaluate, EvaluateConfig};
use headcode::pipeline::prompts::prepare;
use headcode::pipeline::{Split, TaskSource};
use headcode::tasks::{metric_value, PairTokens, TaskKind};
use headcode::tokenize::Gpt2Tokenizer;
use rand::{Rng, SeedableRng};

fn mean_metric(logits: &Tensor, toks: &[PairTokens]) -> f64 {
    let rows = logits.to_vec2::<f32>().unwrap();
    rows.iter()
        .zip(toks)
        .map(|(r, t)| metric_value(t.metric, r, t).unwrap() as f64)
        .sum::<f64>()
        / rows.len() as f64
}

/// An unpatched run's cache.
fn capture(gm: &GraphModel, tokens: &[Vec<u32>]) -> GraphCache {
    gm.run(
        tokens,
        GraphRunOptions {
            capture: true,
            ..Default::default()
        },
    )
    .unwrap()
    .cache
    .unwrap()
}

fn random_scores(n_edges: usize, seed: u64) -> MibScores {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let e: Vec<f64> = (0..n_edges).map(|_| rng.random_range(-1.0..1.0)).collect();
    MibScores::from_importance(&e, None)
}

#[test]
fn evaluate_matches_a_hand_computed_curve() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let gm = GraphModel::new(&m, true).unwrap();
    let ne = gm.graph.n_edges();
    let scores = random_scores(ne, 11);
    let percentages = vec![0.0, 0.05, 0.2, 0.5, 1.0];
    for ablation in [
        CircuitAblation::Patching,
        CircuitAblation::Mean,
        CircuitAblation::Zero,
    ] {
        let cfg = EvaluateConfig {
            task: TaskSource::Builtin(TaskKind::Ioi),
            n: 6,
            seed: 0,
            split: Split::Validation,
            bos: true,
            level: MibLevel::Edge,
            ablation,
            percentages: percentages.clone(),
            batch_size: 4, // two batches of unequal size
        };
        let e = evaluate(&m, &tok, &cfg, "random", &scores, &mut |_, _, _| {}).unwrap();
        assert_eq!(e.pairs, 6);
        assert_eq!(e.n_edges, ne);

        // By hand: one batch of all six pairs, each circuit through the reference mixing.
        let task = prepare(&cfg.task, &tok, 6, 0, true, Split::Validation).unwrap();
        let clean_cache = capture(&gm, &task.clean);
        let corrupt_cache = capture(&gm, &task.corrupt);
        let full = mean_metric(&clean_cache.logits, &task.tokens);
        let ctx = match ablation {
            CircuitAblation::Patching => PatchContext::new(clean_cache, corrupt_cache).unwrap(),
            CircuitAblation::Zero => {
                let z: Vec<Tensor> = clean_cache
                    .blocks
                    .iter()
                    .map(|b| b.zeros_like().unwrap())
                    .collect();
                PatchContext::ablate(clean_cache, &z).unwrap()
            }
            CircuitAblation::Mean => {
                // Every real token of the corrupted prompts, averaged per sender.
                let mut sums: Vec<Tensor> = Vec::new();
                let mut count = 0.0;
                for (i, p) in task.corrupt.iter().enumerate() {
                    let c = capture(&gm, std::slice::from_ref(p));
                    count += p.len() as f64;
                    for (bi, b) in c.blocks.iter().enumerate() {
                        let s = b.sum_keepdim(0).unwrap();
                        if i == 0 {
                            sums.push(s);
                        } else {
                            sums[bi] = (&sums[bi] + s).unwrap();
                        }
                    }
                }
                let means: Vec<Tensor> = sums.iter().map(|s| (s / count).unwrap()).collect();
                PatchContext::ablate(clean_cache, &means).unwrap()
            }
        };
        let run = |mask: &[bool]| {
            let l = gm
                .run(
                    &task.clean,
                    GraphRunOptions {
                        mask: Some(mask),
                        patch: Some(&ctx),
                        reference: true,
                        ..Default::default()
                    },
                )
                .unwrap()
                .logits;
            mean_metric(&l, &task.tokens)
        };
        let empty = run(&vec![false; ne]);
        let tol = 1e-4 * (1.0 + full.abs() + empty.abs());
        assert!((e.metric_full - full).abs() < tol, "{ablation:?}: m(N)");
        assert!(
            (e.metric_empty - empty).abs() < tol,
            "{ablation:?}: m(∅) {} {empty}",
            e.metric_empty
        );
        if ablation == CircuitAblation::Patching {
            // Every edge cut from the corrupted run is the corrupted run.
            let corrupt = m.last_logits(&task.corrupt, 8).unwrap();
            let direct: f64 = corrupt
                .iter()
                .zip(&task.tokens)
                .map(|(r, t)| metric_value(t.metric, r, t).unwrap() as f64)
                .sum::<f64>()
                / 6.0;
            assert!((empty - direct).abs() < tol, "{empty} vs {direct}");
        }
        for (curve, absolute) in [(&e.curves.signed, false), (&e.curves.absolute, true)] {
            let mut xs = Vec::new();
            let mut fs = Vec::new();
            for (pt, &p) in curve.points.iter().zip(&percentages) {
                let n = (p * ne as f64) as usize;
                let sel = apply_topn(&gm.graph, &scores, n, absolute, MibLevel::Edge).unwrap();
                let kept = sel.edges.iter().filter(|&&k| k).count();
                let metric = run(&sel.edges);
                let f = (metric - empty) / (full - empty);
                assert_eq!(pt.items, n);
                assert_eq!(pt.edges, kept);
                assert!(
                    (pt.metric - metric).abs() < tol,
                    "{ablation:?} {p}: {} vs {metric}",
                    pt.metric
                );
                assert!((pt.faithfulness - f).abs() < 1e-3, "{ablation:?} {p}");
                xs.push(kept as f64 / ne as f64);
                fs.push(f);
            }
            let mut under = 0.0;
            let mut from_1 = 0.0;
            for i in 0..xs.len() - 1 {
                under += (xs[i + 1] - xs[i]) * (fs[i] + fs[i + 1]) / 2.0;
                from_1 +=
                    (xs[i + 1] - xs[i]) * ((1.0 - fs[i]).abs() + (1.0 - fs[i + 1]).abs()) / 2.0;
            }
            assert!((curve.area_under - under).abs() < 1e-3, "{ablation:?}");
            assert!((curve.area_from_1 - from_1).abs() < 1e-3, "{ablation:?}");
        }
        assert_eq!(e.curves.cpr, e.curves.signed.area_under);
        assert_eq!(e.curves.cmd, e.curves.absolute.area_from_1);
    }
}

/// Masks that repeat run once, the all-kept mask is the clean run, and f is 0 and 1 at the
/// two ends, under every ablation.
#[test]
fn masked_metrics_runs_each_mask_once() {
    let m = tiny();
    let tok = Gpt2Tokenizer::new().unwrap();
    let gm = GraphModel::new(&m, true).unwrap();
    let ne = gm.graph.n_edges();
    let task = prepare(
        &TaskSource::Builtin(TaskKind::Ioi),
        &tok,
        4,
        1,
        true,
        Split::Test,
    )
    .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let masks: Vec<Vec<bool>> = (0..4)
        .map(|i| {
            (0..ne)
                .map(|_| rng.random_bool([0.1, 0.5, 0.9, 0.5][i]))
                .collect()
        })
        .chain(std::iter::once(vec![true; ne]))
        .collect();
    let mut repeated = masks.clone();
    repeated.push(masks[1].clone());
    for ablation in [
        CircuitAblation::Patching,
        CircuitAblation::Mean,
        CircuitAblation::Zero,
    ] {
        let mut runs = 0;
        let r = masked_metrics(
            &gm,
            &task.clean,
            &task.corrupt,
            &task.tokens,
            &repeated,
            ablation,
            4,
            |d, _| runs = d,
        )
        .unwrap();
        // Four distinct partial masks and the empty one; the all-kept mask is the clean run.
        assert_eq!(runs, 5);
        assert_eq!(r.masked[1], r.masked[5]);
        assert!((r.masked[4] - r.full).abs() < 1e-9);
        assert!(r.faithfulness(r.full).unwrap() == 1.0);
        assert!(r.faithfulness(r.empty).unwrap() == 0.0);
    }
    // Bad input: a mask of the wrong length, unequal pairs, an empty list of pairs.
    assert!(masked_metrics(
        &gm,
        &task.clean,
        &task.corrupt,
        &task.tokens,
        &[vec![true; 3]],
        CircuitAblation::Patching,
        4,
        |_, _| {}
    )
    .is_err());
    assert!(masked_metrics(
        &gm,
        &task.clean,
        &task.corrupt[..2],
        &task.tokens,
        &[],
        CircuitAblation::Patching,
        4,
        |_, _| {}
    )
    .is_err());
    assert!(masked_metrics(
        &gm,
        &[],
        &[],
        &[],
        &[],
        CircuitAblation::Patching,
        4,
        |_, _| {}
    )
    .is_err());
}

/// Circuit sizes out of order or outside 0 … 1, and a score file for another model, are
/// one-line errors naming what is wrong.
#[test]
fn evaluate_bad_input() {
    use headcode::eval::mib_curve::check_percentages;
    assert!(check_percentages(&[0.0, 0.5, 0.2, 1.0])
        .unwrap_err()
        .to_string()
        .contains("increase"));
    assert!(check_percentages(&[0.0, 1.5])
        .unwrap_err()
        .to_string()
        .contains("outside"));
    assert!(check_percentages(&[0.5]).is_err());
    let m = tiny();
    let gm = GraphModel::new(&m, true).unwrap();
    let other = headcode::model::graph::CircuitGraph::new(3, 4, true, true, false);
    let g = MibGraph::new(&other, 32, random_scores(other.n_edges(), 1)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("importances.json");
    std::fs::write(&path, g.to_json()).unwrap();
    let read = MibGraph::read(&path).unwrap();
    let e = read
        .check_model(&gm.graph, 32, &path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("importances.json"), "{e}");
    // Scores with the wrong number of edges are refused by evaluate itself.
    let tok = Gpt2Tokenizer::new().unwrap();
    let cfg = EvaluateConfig {
        task: TaskSource::Builtin(TaskKind::Ioi),
        n: 2,
        seed: 0,
        split: Split::Validation,
        bos: true,
        level: MibLevel::Edge,
        ablation: CircuitAblation::Patching,
        percentages: vec![0.0, 1.0],
        batch_size: 2,
    };
    assert!(evaluate(&m, &tok, &cfg, "x", &random_scores(3, 0), &mut |_, _, _| {}).is_err());
    // Node level without node scores.
    let cfg = EvaluateConfig {
        level: MibLevel::Node,
        ..cfg
    };
    let e = evaluate(
        &m,
        &tok,
        &cfg,
        "x",
        &random_scores(gm.graph.n_edges(), 0),
        &mut |_, _, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("node"), "{e}");
}

/// Both kinds of area on a curve written out by hand.
#[test]
fn curve_areas_by_hand() {
    use headcode::eval::mib_curve::{Curve, CurvePoint};
    let pt = |fraction: f64, edge_fraction: f64, faithfulness: f64| CurvePoint {
        fraction,
        items: 0,
        edges: 0,
        weighted_edges: 0.0,
        edge_fraction,
        metric: 0.0,
        faithfulness,
    };
    let c = Curve::new(
        false,
        vec![
            pt(0.0, 0.0, 0.0),
            pt(0.1, 0.3, 0.5),
            pt(0.5, 0.6, 1.5),
            pt(1.0, 1.0, 1.0),
        ],
    );
    // Over the edge fraction: 0.3·0.25 + 0.3·1.0 + 0.4·1.25; |1−f|: 0.3·0.75 + 0.3·0.5 + 0.4·0.25.
    assert!((c.area_under - (0.075 + 0.3 + 0.5)).abs() < 1e-12);
    assert!((c.area_from_1 - (0.225 + 0.15 + 0.1)).abs() < 1e-12);
    // Over the sizes from 10 %: 0.4·1.0 + 0.5·1.25; |1−f|: 0.4·0.5 + 0.5·0.25.
    assert!((c.area_under_by_size - (0.4 + 0.625)).abs() < 1e-12);
    assert!((c.area_from_1_by_size - (0.2 + 0.125)).abs() < 1e-12);
}

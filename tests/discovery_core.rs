//! The CPU discovery core end to end on synthetic head outputs with a known circuit:
//! hooked vectors → SAE (shared and per-head) → codes → node/edge/baseline scores → ROC.
//!
//! Construction: every head writes one of a few random directions per example, scaled by
//! U[1, 2), plus small noise. Non-circuit heads draw from the same 3 directions for both
//! classes; circuit heads draw from 3 directions for positives and 3 *other* directions for
//! negatives. A working SAE gives circuit heads codes unique to positives (|P\N| > 0) and
//! others none, so the node score should rank the circuit first.
use headcode::codes::{CodeOptions, CodeTable};
use headcode::eval::roc;
use headcode::sae::{self, SaeConfig};
use headcode::score::{self, ScoreInputs, ScoreMethod};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const LAYERS: usize = 3;
const HEADS_PER_LAYER: usize = 4;
const H: usize = LAYERS * HEADS_PER_LAYER;
const D: usize = 16;
const CIRCUIT: [usize; 3] = [1, 6, 11];

struct Data {
    x: Vec<f32>,
    examples: usize,
    is_pos: Vec<bool>,
    in_circuit: Vec<bool>,
}

fn synthetic(per_class: usize, seed: u64) -> Data {
    let mut rng = StdRng::seed_from_u64(seed);
    let examples = 2 * per_class;
    let is_pos: Vec<bool> = (0..examples).map(|e| e < per_class).collect();
    let in_circuit: Vec<bool> = (0..H).map(|h| CIRCUIT.contains(&h)).collect();
    // 6 unit directions per head (0..3 shared/positive, 3..6 negative-only).
    let dirs: Vec<Vec<f32>> = (0..H * 6)
        .map(|_| {
            let v: Vec<f32> = (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.into_iter().map(|a| a / n).collect()
        })
        .collect();
    let mut x = vec![0.0f32; examples * H * D];
    for e in 0..examples {
        for h in 0..H {
            let k = rng.random_range(0..3) + if in_circuit[h] && !is_pos[e] { 3 } else { 0 };
            let a: f32 = rng.random_range(1.0..2.0);
            for i in 0..D {
                x[(e * H + h) * D + i] = a * dirs[h * 6 + k][i] + rng.random_range(-0.01..0.01);
            }
        }
    }
    Data {
        x,
        examples,
        is_pos,
        in_circuit,
    }
}

fn cfg() -> SaeConfig {
    SaeConfig {
        n_features: 64,
        lambda: 0.02,
        lr: 1e-2,
        steps: 300,
        seed: 5,
        ..SaeConfig::default()
    }
}

#[test]
fn shared_sae_node_scores_find_the_circuit() {
    let data = synthetic(10, 1);
    // SAE trained on 10 examples (mixed classes), codes counted on all 20, as the paper does.
    let train_rows: Vec<f32> = data.x[..]
        .chunks(H * D)
        .enumerate()
        .filter(|(e, _)| e % 2 == 0)
        .flat_map(|(_, r)| r.iter().copied())
        .collect();
    let (sae, log) = sae::train_shared(&train_rows, 10 * H, D, &cfg()).unwrap();
    assert!(
        log.loss.last().unwrap() < &(0.5 * log.loss[0]),
        "{:?}",
        (log.loss[0], log.loss.last())
    );
    let table = CodeTable::from_shared(
        &sae,
        &data.x,
        data.examples,
        H,
        data.is_pos.clone(),
        CodeOptions::default(),
    )
    .unwrap();
    let node = score::node_scores(&table, false).unwrap();
    let auc = roc::auc(&node.score, &data.in_circuit).unwrap();
    assert!(auc >= 0.9, "node AUC {auc}, scores {:?}", node.score);
    for &h in &CIRCUIT {
        assert!(
            node.n_unique_pos[h] > 0,
            "circuit head {h} has no positive-only code"
        );
    }
    // The edge method runs on the same table and also favours the circuit.
    let edge = score::edge_scores(&table, None).unwrap();
    assert_eq!(edge.k, H * H / 2);
    let eauc = roc::auc(&edge.score, &data.in_circuit).unwrap();
    assert!(eauc >= 0.8, "edge AUC {eauc}, scores {:?}", edge.score);
    let ev = roc::evaluate(&node.score, &data.in_circuit).unwrap();
    assert_eq!(ev.auc, auc);
}

#[test]
fn per_head_saes_find_the_circuit() {
    let data = synthetic(10, 2);
    let cfg = SaeConfig {
        n_features: 16,
        ..cfg()
    };
    let (saes, log) = sae::train_per_head(&data.x, data.examples, H, D, &cfg).unwrap();
    assert_eq!(log.head_loss.len(), H);
    let table = CodeTable::from_per_head(
        &saes,
        &data.x,
        data.examples,
        data.is_pos.clone(),
        CodeOptions::default(),
    )
    .unwrap();
    let s = ScoreMethod::Node { normalise: false }
        .score(
            &ScoreInputs {
                codes: Some(&table),
                ..Default::default()
            },
            LAYERS,
            HEADS_PER_LAYER,
        )
        .unwrap();
    assert_eq!(s.labels()[6], "L1H2");
    let auc = roc::auc(&s.values, &data.in_circuit).unwrap();
    assert!(auc >= 0.9, "per-head node AUC {auc}, scores {:?}", s.values);
}

#[test]
fn baselines_on_known_structure() {
    let data = synthetic(200, 3);
    let inp = ScoreInputs {
        activations: Some((&data.x, D)),
        is_pos: Some(&data.is_pos),
        codes: None,
    };
    // Class means differ only at circuit heads: perfect separation.
    let cm = ScoreMethod::ClassMeanDistance
        .score(&inp, LAYERS, HEADS_PER_LAYER)
        .unwrap();
    assert_eq!(roc::auc(&cm.values, &data.in_circuit).unwrap(), 1.0);
    // Scale circuit heads up: mean norm separates them too.
    let mut x = data.x.clone();
    for e in 0..data.examples {
        for &h in &CIRCUIT {
            for v in &mut x[(e * H + h) * D..(e * H + h + 1) * D] {
                *v *= 3.0;
            }
        }
    }
    let inp = ScoreInputs {
        activations: Some((&x, D)),
        ..inp
    };
    let mn = ScoreMethod::MeanNorm
        .score(&inp, LAYERS, HEADS_PER_LAYER)
        .unwrap();
    assert_eq!(roc::auc(&mn.values, &data.in_circuit).unwrap(), 1.0);
    // Random scores: mean AUC over seeds is near chance.
    let aucs: Vec<f64> = (0..200)
        .map(|s| {
            let r = ScoreMethod::Random { seed: s }
                .score(&inp, LAYERS, HEADS_PER_LAYER)
                .unwrap();
            roc::auc(&r.values, &data.in_circuit).unwrap()
        })
        .collect();
    let ms = roc::mean_std(&aucs).unwrap();
    assert!((ms.mean - 0.5).abs() < 0.05, "random AUC {ms:?}");
}

#[test]
fn whole_pipeline_is_deterministic() {
    let data = synthetic(5, 4);
    let cfg = SaeConfig { steps: 40, ..cfg() };
    let run = || {
        let (sae, _) = sae::train_shared(&data.x, data.examples * H, D, &cfg).unwrap();
        let t = CodeTable::from_shared(
            &sae,
            &data.x,
            data.examples,
            H,
            data.is_pos.clone(),
            CodeOptions::default(),
        )
        .unwrap();
        (sae, t)
    };
    let (a, ta) = run();
    let (b, tb) = run();
    assert_eq!(a, b);
    assert_eq!(ta, tb);
}

/// Wall time of the paper-size shared SAE (500 steps, SmolLM2-135M: 10 examples × 270
/// heads = 2700 rows, d 576 → 200). Run with
/// `cargo test --release --test discovery_core -- --ignored --nocapture`.
#[test]
#[ignore = "timing; slow in debug builds"]
fn timing_shared_sae_smollm2_500_steps() {
    let (rows, d) = (2700, 576);
    let mut rng = StdRng::seed_from_u64(0);
    let x: Vec<f32> = (0..rows * d)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let cfg = SaeConfig::default();
    let t0 = std::time::Instant::now();
    let (_, log) = sae::train_shared(&x, rows, d, &cfg).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "shared SAE {rows}x{d}->{} x {} steps: {secs:.2} s ({:.1} ms/step), loss {} -> {}",
        cfg.n_features,
        cfg.steps,
        1e3 * secs / cfg.steps as f64,
        log.loss[0],
        log.loss[cfg.steps - 1]
    );
    let t0 = std::time::Instant::now();
    let (ex, heads) = (10, 144);
    let x: Vec<f32> = (0..ex * heads * 768)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let (_, _) = sae::train_per_head(&x, ex, heads, 768, &cfg).unwrap();
    println!(
        "per-head SAEs 144 x (10x768->200) x 500 steps: {:.2} s",
        t0.elapsed().as_secs_f64()
    );
}

//! The computational-graph forward (ACDC's graph) on the fixture models: unpatched it equals
//! the plain forward; cut edges equal the edge-by-edge definition; resuming equals a full
//! run; cutting every edge out of a head equals patching that head's z.
mod common;
use candle_core::Tensor;
use common::{fixture, prompts};
use headcode::eval::patching::replace_heads;
use headcode::model::graph::{CircuitGraph, GraphModel, GraphRunOptions};
use headcode::model::{ForwardOptions, Intervention};
use rand::{Rng, SeedableRng};

fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
        / scale
}

const MODELS: [&str; 8] = [
    "gpt2_tiny",
    "llama_tiny",
    "attn_only_tiny",
    "attn_only_shortformer_tiny",
    "qwen2_tiny",
    "gemma2_tiny",
    "gemma3_tiny",
    "pythia_tiny",
];

#[test]
fn edge_counts_match_acdc() {
    // ACDC counts 32,923 edges for GPT-2 small and 1,377 for attn-only-4l; both include
    // 3 placeholder edges per head (q/k/v input → q/k/v) that this graph folds into the
    // receivers: 32,923 − 3·144 and 1,377 − 3·32.
    assert_eq!(
        CircuitGraph::new(12, 12, true, true, false).n_edges(),
        32_923 - 432
    );
    assert_eq!(
        CircuitGraph::new(4, 8, false, true, false).n_edges(),
        1_377 - 96
    );
    let g = CircuitGraph::new(3, 2, true, false, false);
    for e in 0..g.n_edges() {
        let (s, r) = g.edge(e);
        assert_eq!(g.edge_id(s, r), Some(e));
    }
    assert_eq!(g.edge_label(0), "input->L0H0");
    assert_eq!(g.receiver_label(g.output_receiver()), "output");
}

#[test]
fn unpatched_graph_equals_the_forward() {
    let (clean, _) = prompts();
    for name in MODELS {
        let m = fixture(name);
        let want = m
            .forward(&clean, ForwardOptions::default())
            .unwrap()
            .logits
            .unwrap();
        for split in [false, true] {
            let gm = GraphModel::new(&m, split).unwrap();
            let got = gm.run(&clean, GraphRunOptions::default()).unwrap().logits;
            let e = max_rel(&got, &want);
            assert!(e < 1e-5, "{name} split={split}: rel err {e}");
        }
    }
}

fn random_mask(n: usize, p_keep: f64, seed: u64) -> Vec<bool> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_bool(p_keep)).collect()
}

#[test]
fn cut_edges_equal_the_definition_and_resume_equals_full_runs() {
    let (clean, corrupt) = prompts();
    for name in MODELS {
        let m = fixture(name);
        for split in [false, true] {
            let gm = GraphModel::new(&m, split).unwrap();
            let ctx = gm.patch_context(&clean, &corrupt).unwrap();
            let ne = gm.graph.n_edges();
            for (seed, p) in [(1, 0.9), (2, 0.5), (3, 0.1)] {
                let mask = random_mask(ne, p, seed);
                let run = |reference: bool| {
                    gm.run(
                        &clean,
                        GraphRunOptions {
                            mask: Some(&mask),
                            patch: Some(&ctx),
                            reference,
                            ..Default::default()
                        },
                    )
                    .unwrap()
                    .logits
                };
                let e = max_rel(&run(false), &run(true));
                assert!(e < 1e-5, "{name} split={split} p={p}: rel err {e}");
            }
            // Cuts only into the last layers: resuming there equals the full run.
            let nl = m.cfg.n_layers;
            let from = gm.graph.attn_receivers(nl - 1).start;
            let mut mask = vec![true; ne];
            for (e, k) in mask.iter_mut().enumerate() {
                let (_, r) = gm.graph.edge(e);
                if r >= from && e % 3 != 0 {
                    *k = false;
                }
            }
            let full = gm
                .run(
                    &clean,
                    GraphRunOptions {
                        mask: Some(&mask),
                        patch: Some(&ctx),
                        ..Default::default()
                    },
                )
                .unwrap()
                .logits;
            let resumed = gm
                .run(
                    &clean,
                    GraphRunOptions {
                        mask: Some(&mask),
                        patch: Some(&ctx),
                        start_layer: nl - 1,
                        ..Default::default()
                    },
                )
                .unwrap()
                .logits;
            let e = max_rel(&resumed, &full);
            assert!(e < 1e-5, "{name} split={split}: resume rel err {e}");
            // Resuming above a cut edge is refused.
            let err = gm.run(
                &clean,
                GraphRunOptions {
                    mask: Some(&mask),
                    patch: Some(&ctx),
                    start_layer: nl,
                    ..Default::default()
                },
            );
            assert!(err.is_err());
        }
    }
}

struct PatchZ {
    layer: usize,
    head: usize,
    src: Tensor,
}
impl Intervention for PatchZ {
    fn on_z(&mut self, layer: usize, z: &Tensor, _l: &[usize]) -> headcode::Result<Option<Tensor>> {
        if layer != self.layer {
            return Ok(None);
        }
        Ok(Some(replace_heads(z, &self.src, &[self.head])?))
    }
}

#[test]
fn cutting_a_heads_outputs_equals_patching_its_z() {
    let (clean, corrupt) = prompts();
    // Not Gemma: its post-attention norm makes a head's edges a share under the norm's
    // scale, so cutting them is not patching z there (see `graph`'s module doc).
    for name in MODELS.iter().filter(|n| !n.starts_with("gemma")) {
        let m = fixture(name);
        let corr = m
            .forward(
                &corrupt,
                ForwardOptions {
                    capture_z: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let gm = GraphModel::new(&m, true).unwrap();
        let ctx = gm.patch_context(&clean, &corrupt).unwrap();
        let (layer, head) = (0, 1);
        let s = gm.graph.head_sender(layer, head);
        let mut mask = vec![true; gm.graph.n_edges()];
        for r in 0..gm.graph.receivers.len() {
            if let Some(e) = gm.graph.edge_id(s, r) {
                mask[e] = false;
            }
        }
        let got = gm
            .run(
                &clean,
                GraphRunOptions {
                    mask: Some(&mask),
                    patch: Some(&ctx),
                    ..Default::default()
                },
            )
            .unwrap()
            .logits;
        let mut iv = PatchZ {
            layer,
            head,
            src: corr.z[layer].clone(),
        };
        let want = m
            .forward(
                &clean,
                ForwardOptions {
                    intervention: Some(&mut iv),
                    ..Default::default()
                },
            )
            .unwrap()
            .logits
            .unwrap();
        let e = max_rel(&got, &want);
        assert!(e < 1e-5, "{name}: rel err {e}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let (clean, corrupt) = prompts();
    let m = fixture("gpt2_tiny");
    let gm = GraphModel::new(&m, false).unwrap();
    let short = vec![true; 3];
    assert!(gm
        .run(
            &clean,
            GraphRunOptions {
                mask: Some(&short),
                ..Default::default()
            }
        )
        .is_err());
    let mut mask = vec![true; gm.graph.n_edges()];
    mask[0] = false;
    // A cut without caches.
    assert!(gm
        .run(
            &clean,
            GraphRunOptions {
                mask: Some(&mask),
                ..Default::default()
            }
        )
        .is_err());
    // Unequal pair lengths.
    let mut bad = corrupt.clone();
    bad[0].push(1);
    assert!(gm.patch_context(&clean, &bad).is_err());
}

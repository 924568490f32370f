//! Patching and faithfulness on the GPT-2 fixture, checked against direct recomputation.
use candle_core::Device;
use headcode::eval::faithfulness::{faithfulness, Ablation};
use headcode::eval::patching::{patch_heads, replace_heads};
use headcode::model::{ForwardOptions, Intervention, Model};

mod common;
use common::prompts;

fn model() -> Model {
    common::fixture("gpt2_tiny")
}

/// Logit of token 7 minus token 11 at the last position.
fn metric(_i: usize, l: &[f32]) -> f32 {
    l[7] - l[11]
}

struct Patch {
    layer: usize,
    head: usize,
    src: candle_core::Tensor,
}
impl Intervention for Patch {
    fn on_z(
        &mut self,
        layer: usize,
        z: &candle_core::Tensor,
        _l: &[usize],
    ) -> headcode::Result<Option<candle_core::Tensor>> {
        if layer != self.layer {
            return Ok(None);
        }
        Ok(Some(replace_heads(z, &self.src, &[self.head])?))
    }
}

#[test]
fn patching_matches_a_full_rerun_per_head() {
    let m = model();
    let (clean, corrupt) = prompts();
    let r = patch_heads(&m, &clean, &corrupt, &metric, 2, |_| {}).unwrap();
    assert_eq!(r.effect.len(), 15);
    // Recompute two heads from scratch (no resumed residual stream), one prompt at a time.
    for (l, h) in [(0usize, 3usize), (2, 1)] {
        let mut sum = 0f32;
        for i in 0..clean.len() {
            let mc = metric(i, &m.last_logits(&clean[i..i + 1], 1).unwrap()[0]);
            let mx = metric(i, &m.last_logits(&corrupt[i..i + 1], 1).unwrap()[0]);
            let z = m
                .forward(
                    &corrupt[i..i + 1],
                    ForwardOptions {
                        capture_z: true,
                        ..Default::default()
                    },
                )
                .unwrap()
                .z;
            let mut iv = Patch {
                layer: l,
                head: h,
                src: z[l].clone(),
            };
            let out = m
                .forward(
                    &clean[i..i + 1],
                    ForwardOptions {
                        intervention: Some(&mut iv),
                        ..Default::default()
                    },
                )
                .unwrap();
            let mp = metric(i, &out.logits.unwrap().to_vec2::<f32>().unwrap()[0]);
            sum += (mp - mc) / (mx - mc);
        }
        let want = sum / clean.len() as f32;
        let got = r.effect[l * 5 + h];
        assert!(
            (got - want).abs() < 1e-3 * want.abs().max(1.0),
            "L{l}H{h}: {got} vs {want}"
        );
    }
    assert_eq!(r.circuit(Some(4), None).len(), 4);
}

#[test]
fn patching_rejects_unequal_pairs() {
    let m = model();
    let err = patch_heads(&m, &[vec![1, 2, 3]], &[vec![1, 2]], &metric, 2, |_| {}).unwrap_err();
    assert!(err.to_string().contains("equal lengths"), "{err}");
}

#[test]
fn keeping_every_head_is_fully_faithful() {
    let m = model();
    let (clean, corrupt) = prompts();
    let scores: Vec<f32> = (0..15).map(|i| i as f32).collect();
    for ab in [Ablation::Mean, Ablation::Corrupt] {
        let f = faithfulness(
            &m,
            &clean,
            &corrupt,
            &scores,
            &[0, 5, 15],
            ab,
            &metric,
            2,
            0,
        )
        .unwrap();
        assert!((f.ours[2] - 1.0).abs() < 1e-4, "{ab:?}: {:?}", f.ours);
        assert!((f.random[2] - 1.0).abs() < 1e-4);
        // With nothing kept the two rankings ablate the same heads.
        assert!((f.ours[0] - f.random[0]).abs() < 1e-5);
        // The random curve depends on the seed alone, not on the scores it sits beside.
        let reversed: Vec<f32> = scores.iter().rev().copied().collect();
        let g = faithfulness(
            &m,
            &clean,
            &corrupt,
            &reversed,
            &[0, 5, 15],
            ab,
            &metric,
            2,
            0,
        )
        .unwrap();
        assert_eq!(f.random, g.random, "{ab:?}");
        assert_ne!(f.ours, g.ours, "{ab:?}");
    }
    let _ = Device::Cpu;
}

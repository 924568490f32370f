//! Patching and faithfulness on the GPT-2 fixture, checked against direct recomputation.
use candle_core::Device;
use headcode::eval::faithfulness::{faithfulness, Ablation};
use headcode::eval::patching::{patch_heads, replace_heads};
use headcode::model::{ForwardOptions, Intervention, Model, Processing};

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
    assert_eq!(r.circuit(Some(4), None, false).len(), 4);
}

/// `m` with head `dst` of `layer` made a copy of head `src` (same queries, keys and values,
/// so the same z) that writes `-c` times its output, while `src` writes `1 + c` times
/// its own: together they write what `src` wrote before.
fn split_head(m: &Model, layer: usize, src: usize, dst: usize, c: f32) -> Model {
    use candle_core::Tensor;
    let mut w = m.weights.clone();
    let lw = &mut w.layers[layer];
    // `to` := f · (head `src` of t)
    let copy = |t: &Tensor, f: f32, to: usize| -> Tensor {
        let dims = t.dims().to_vec();
        let per = t.elem_count() / dims[0];
        let mut v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let head: Vec<f32> = v[src * per..(src + 1) * per]
            .iter()
            .map(|x| x * f)
            .collect();
        v[to * per..(to + 1) * per].copy_from_slice(&head);
        Tensor::from_vec(v, dims, t.device()).unwrap()
    };
    for t in [
        &mut lw.w_q,
        &mut lw.w_k,
        &mut lw.w_v,
        &mut lw.b_q,
        &mut lw.b_k,
        &mut lw.b_v,
    ] {
        *t = copy(t, 1.0, dst);
    }
    let w_o = copy(&lw.w_o, -c, dst);
    lw.w_o = copy(&w_o, 1.0 + c, src);
    // Already processed: build the forward's matrices from the edited weights as they are.
    Model::from_parts(m.cfg.clone(), w, Processing::NONE, "edited".into()).unwrap()
}

/// A head that works against the task belongs to the circuit. In the last layer, head B is
/// rebuilt as a copy of the head A that helps most, writing −4 times A's output while A
/// writes 5 times its own: together they write what A wrote, so patching B alone pushes
/// the metric away from the corrupted value, strongly. Ranked by |effect| B is in the
/// top 3 of 15 heads; ranked by sign, last.
#[test]
fn a_head_built_to_work_against_the_task_is_in_the_top_k() {
    let m = model();
    let (clean, corrupt) = prompts();
    let (nl, nh) = (m.cfg.n_layers, m.cfg.n_heads);
    let before = patch_heads(&m, &clean, &corrupt, &metric, 2, |_| {}).unwrap();
    let l = nl - 1;
    let a = (0..nh)
        .max_by(|&x, &y| before.effect[l * nh + x].total_cmp(&before.effect[l * nh + y]))
        .unwrap();
    assert!(before.effect[l * nh + a] > 0.0, "{:?}", before.effect);
    let b = (0..nh)
        .filter(|&h| h != a)
        .min_by(|&x, &y| {
            (before.effect[l * nh + x].abs()).total_cmp(&before.effect[l * nh + y].abs())
        })
        .unwrap();
    let m = split_head(&m, l, a, b, 4.0);
    let r = patch_heads(&m, &clean, &corrupt, &metric, 2, |_| {}).unwrap();
    let i = l * nh + b;
    let e = r.effect[i];
    // Built to be large and negative: the most negative effect of any head.
    assert!(e < -1.0, "L{l}H{b} effect {e}: {:?}", r.effect);
    assert_eq!(*r.ranking(true).last().unwrap(), i, "{:?}", r.effect);
    let top3 = r.circuit(Some(3), None, false);
    assert!(top3.contains(&(l, b)), "{top3:?}: {:?}", r.effect);
    // The signed ranking puts it last, out of any top-k short of every head.
    assert!(!r.circuit(Some(nl * nh - 1), None, true).contains(&(l, b)));
    // A threshold on |effect| keeps it; one on the signed effect does not.
    assert!(r.circuit(None, Some(1.0), false).contains(&(l, b)));
    assert!(!r.circuit(None, Some(1.0), true).contains(&(l, b)));
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

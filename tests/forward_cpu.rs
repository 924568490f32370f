//! The CPU forward (host buffers, `model::forward_cpu`) against candle's forward, its
//! reference, on every family and every option the callers use: logits at the last and at
//! every position, captured z, attention outputs and residual streams, a run resumed at a
//! layer, and an intervention that replaces z. The golden parity tests (tests/parity.rs)
//! hold the same path against transformers and TransformerLens.
mod common;

use candle_core::Tensor;
use common::{fixture, rel_err, FAMILIES};
use headcode::model::{ForwardOptions, ForwardOutput, Intervention, LogitsAt, Model};

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Prompts of four lengths (padding in every batch), long enough for the Gemma fixtures'
/// 4-token sliding window to bind.
fn prompts() -> Vec<Vec<u32>> {
    vec![
        vec![5u32, 9, 13, 2, 77, 101, 3, 44, 250, 7, 19],
        vec![1, 2, 3, 4, 5, 6],
        vec![42, 17],
        vec![8, 8, 120, 31, 200, 1, 2, 3, 4],
    ]
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    let e = rel_err(got, want);
    assert!(e <= 2e-5, "{what}: rel err {e}");
}

fn same_outputs(name: &str, a: &ForwardOutput, b: &ForwardOutput) {
    assert_eq!(a.lengths, b.lengths);
    match (&a.logits, &b.logits) {
        (Some(x), Some(y)) => {
            assert_eq!(x.dims(), y.dims(), "{name} logits shape");
            close(&format!("{name} logits"), &flat(x), &flat(y));
        }
        (None, None) => {}
        _ => panic!("{name}: logits present in one forward only"),
    }
    for (what, xs, ys) in [
        ("z", &a.z, &b.z),
        ("attn_out", &a.attn_out, &b.attn_out),
        ("resid", &a.resid, &b.resid),
    ] {
        assert_eq!(xs.len(), ys.len(), "{name} {what} layers");
        for (l, (x, y)) in xs.iter().zip(ys).enumerate() {
            assert_eq!(x.dims(), y.dims(), "{name} {what} layer {l} shape");
            close(&format!("{name} {what} layer {l}"), &flat(x), &flat(y));
        }
    }
}

/// Runs both forwards with the options `opts` makes (called once for each).
fn both(
    m: &Model,
    tokens: &[Vec<u32>],
    opts: impl Fn() -> ForwardOptions<'static>,
) -> (ForwardOutput, ForwardOutput) {
    (
        m.forward(tokens, opts()).unwrap(),
        m.forward_candle(tokens, opts()).unwrap(),
    )
}

#[test]
fn every_family_and_option_equals_candle() {
    let p = prompts();
    for name in FAMILIES {
        let m = fixture(name);
        for logits in [LogitsAt::Last, LogitsAt::All, LogitsAt::None] {
            let (a, b) = both(&m, &p, || ForwardOptions {
                logits,
                capture_z: true,
                capture_attn_out: true,
                capture_resid: true,
                ..Default::default()
            });
            same_outputs(&format!("{name} {logits:?}"), &a, &b);
        }
        // Only last-position logits, nothing captured: the last layer's MLP runs on the
        // last rows alone.
        let (a, b) = both(&m, &p, ForwardOptions::default);
        same_outputs(&format!("{name} last only"), &a, &b);
        // One prompt, no padding.
        let (a, b) = both(&m, &p[..1], ForwardOptions::default);
        same_outputs(&format!("{name} one prompt"), &a, &b);
    }
}

#[test]
fn a_resumed_run_equals_candle_and_the_whole_run() {
    let p = prompts();
    for name in FAMILIES {
        let m = fixture(name);
        let whole = m
            .forward(
                &p,
                ForwardOptions {
                    capture_resid: true,
                    ..Default::default()
                },
            )
            .unwrap();
        let l0 = m.cfg.n_layers - 1;
        let start = || ForwardOptions {
            start: Some((l0, whole.resid[l0].clone())),
            ..Default::default()
        };
        let (a, b) = both(&m, &p, start);
        same_outputs(&format!("{name} resumed"), &a, &b);
        close(
            &format!("{name} resumed vs whole"),
            &flat(a.logits.as_ref().unwrap()),
            &flat(whole.logits.as_ref().unwrap()),
        );
    }
}

/// Replaces layer 0's z by a fixed pattern and records what it was shown.
struct Replace {
    seen: Vec<Vec<f32>>,
}

impl Intervention for Replace {
    fn on_z(
        &mut self,
        layer: usize,
        z: &Tensor,
        _lengths: &[usize],
    ) -> headcode::Result<Option<Tensor>> {
        self.seen.push(flat(z));
        if layer != 0 {
            return Ok(None);
        }
        let n = z.elem_count();
        let v: Vec<f32> = (0..n).map(|i| ((i % 13) as f32 - 6.0) * 0.05).collect();
        Ok(Some(Tensor::from_vec(v, z.dims(), z.device())?))
    }
}

#[test]
fn an_intervention_sees_and_replaces_the_same_z() {
    let p = prompts();
    for name in FAMILIES {
        let m = fixture(name);
        let (mut ia, mut ib) = (Replace { seen: vec![] }, Replace { seen: vec![] });
        let a = m
            .forward(
                &p,
                ForwardOptions {
                    capture_z: true,
                    intervention: Some(&mut ia),
                    ..Default::default()
                },
            )
            .unwrap();
        let b = m
            .forward_candle(
                &p,
                ForwardOptions {
                    capture_z: true,
                    intervention: Some(&mut ib),
                    ..Default::default()
                },
            )
            .unwrap();
        same_outputs(&format!("{name} intervened"), &a, &b);
        assert_eq!(ia.seen.len(), m.cfg.n_layers);
        for (l, (x, y)) in ia.seen.iter().zip(&ib.seen).enumerate() {
            close(&format!("{name} z shown at layer {l}"), x, y);
        }
        // The replacement took: layer 0's captured z is the pattern.
        assert!((flat(&a.z[0])[0] - -0.3).abs() < 1e-6, "{name}");
    }
}

#[test]
fn bad_batches_are_refused_in_one_line() {
    let m = fixture("llama_tiny");
    for (tokens, want) in [
        (vec![], "empty batch"),
        (vec![vec![1u32], vec![]], "prompt 1 has no tokens"),
        (vec![vec![1u32, u32::MAX]], "outside the vocabulary"),
    ] {
        let e = m
            .forward(&tokens, ForwardOptions::default())
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains(want) && !e.contains('\n'), "{e}");
    }
}

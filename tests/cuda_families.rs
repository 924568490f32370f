//! Every model family on the CUDA path against the CPU: the forward, the per-head hooks
//! (`z`, `result`, padded batches, every position and the mean) and the ACDC/EAP graph's
//! run, on the parity fixtures. Needs a CUDA device: a GPU, or headcode-emu's stand-in
//! libraries (`scripts/emu-selftest.sh` runs this file under them in CI).
#![cfg(feature = "cuda")]
mod common;

use std::path::Path;

use candle_core::{Device, Tensor};
use common::{rel_err, FAMILIES};
use headcode::hooks::{collect, Reduce};
use headcode::model::graph::{GraphModel, GraphRunOptions};
use headcode::model::{load, LoadOptions, Model, ModelSpec, Processing};

fn load_on(name: &str, device: Device) -> Model {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let spec = ModelSpec::resolve(p.to_str().unwrap()).unwrap();
    load(
        &spec,
        &LoadOptions {
            processing: Processing::TL_DEFAULT,
            device,
            dtype: None,
            max_memory: None,
        },
    )
    .unwrap()
    .0
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn families_on_cuda_equal_the_cpu() {
    let gpu = Device::new_cuda(0).expect("a CUDA device (a GPU, or headcode-emu's libraries)");
    // Three lengths in one batch, so padding and the masks are exercised; long enough for
    // the Gemma fixtures' 4-token window to bind.
    let prompts = vec![
        vec![5u32, 9, 13, 2, 77, 101, 3, 44, 250],
        vec![1, 2, 3, 4, 5, 6],
        vec![42, 17],
    ];
    for name in FAMILIES {
        let (cpu, cuda) = (load_on(name, Device::Cpu), load_on(name, gpu.clone()));
        for reduce in [Reduce::All, Reduce::Mean] {
            let a = collect(&cpu, &prompts, reduce, 8, |_| {}).unwrap();
            let b = collect(&cuda, &prompts, reduce, 8, |_| {}).unwrap();
            for (what, x, y) in [
                ("z", &b.z.data, &a.z.data),
                ("result", &b.result.data, &a.result.data),
            ] {
                let e = rel_err(x, y);
                assert!(e <= 1e-4, "{name} {reduce:?} {what}: rel err {e}");
            }
            for (i, (x, y)) in b.last_logits.iter().zip(&a.last_logits).enumerate() {
                let e = rel_err(x, y);
                assert!(
                    e <= 1e-4,
                    "{name} {reduce:?} logits of prompt {i}: rel err {e}"
                );
            }
        }
        // The computational graph (ACDC, EAP) runs on the device too.
        let g_cpu = GraphModel::new(&cpu, true).unwrap();
        let g_gpu = GraphModel::new(&cuda, true).unwrap();
        let run =
            |g: &GraphModel| host(&g.run(&prompts, GraphRunOptions::default()).unwrap().logits);
        let e = rel_err(&run(&g_gpu), &run(&g_cpu));
        assert!(e <= 1e-4, "{name} graph logits: rel err {e}");
        eprintln!("{name}: CUDA equals the CPU");
    }
}

/// EAP and EAP-IG on the device: candle's CUDA autograd through the q/k/v-split graph
/// gives the CPU's edge scores (the gradients, the interpolated inputs, the batching).
#[test]
fn attribution_on_cuda_equals_the_cpu() {
    use headcode::baselines::eap::{attribute, Attribution};
    use headcode::tasks::{MetricKind, PairTokens};
    let gpu = Device::new_cuda(0).expect("a CUDA device (a GPU, or headcode-emu's libraries)");
    let clean = vec![
        vec![3u32, 17, 99, 4, 250, 7],
        vec![8, 8, 120, 31],
        vec![200, 1, 2, 3, 4],
    ];
    let corrupt = vec![
        vec![3u32, 42, 99, 4, 251, 7],
        vec![9, 8, 121, 31],
        vec![201, 1, 7, 3, 6],
    ];
    let toks: Vec<PairTokens> = (0..clean.len())
        .map(|i| PairTokens {
            metric: MetricKind::LogitDiff,
            answer: 7 + i as u32,
            wrong: vec![11],
            greater: vec![],
            not_greater: vec![],
        })
        .collect();
    for name in ["gpt2_tiny", "llama_tiny"] {
        let (cpu, cuda) = (load_on(name, Device::Cpu), load_on(name, gpu.clone()));
        for how in [Attribution::Eap, Attribution::IgInputs { steps: 2 }] {
            let run = |m: &Model| {
                attribute(m, &clean, &corrupt, &toks, true, how, 2, |_, _| {})
                    .unwrap()
                    .edge_scores
                    .iter()
                    .map(|&x| x as f32)
                    .collect::<Vec<f32>>()
            };
            let (a, b) = (run(&cpu), run(&cuda));
            assert!(
                a.iter().any(|&x| x != 0.0),
                "{name} {how:?}: every score is 0"
            );
            let e = rel_err(&b, &a);
            assert!(e <= 1e-4, "{name} {how:?} edge scores: rel err {e}");
        }
        eprintln!("{name}: EAP and EAP-IG on CUDA equal the CPU");
    }
}

/// The device draws `random_model` makes for half-dtype shapes (curand's normals, in f32
/// before the cast): the moments asked for, an odd length (candle rounds up to the even
/// count curand needs), and the same numbers again after the same seed.
#[test]
fn device_normals_have_the_moments_asked_for() {
    let gpu = Device::new_cuda(0).expect("a CUDA device (a GPU, or headcode-emu's libraries)");
    let n = 100_001;
    gpu.set_seed(7).unwrap();
    let a = host(&Tensor::randn(0f32, 0.02, n, &gpu).unwrap());
    assert_eq!(a.len(), n);
    let mean = a.iter().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = a.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n as f64;
    // 5 standard errors: the mean's is 0.02/sqrt(n), the variance's about sqrt(2/n)·var.
    assert!(mean.abs() < 5.0 * 0.02 / (n as f64).sqrt(), "mean {mean}");
    assert!(
        (var.sqrt() - 0.02).abs() < 0.02 * 5.0 * (0.5 / n as f64).sqrt(),
        "std {}",
        var.sqrt()
    );
    gpu.set_seed(7).unwrap();
    let b = host(&Tensor::randn(0f32, 0.02, n, &gpu).unwrap());
    assert_eq!(a, b, "the same seed draws the same numbers");
}

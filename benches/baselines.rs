//! The baselines' unit costs on CPU, with the prompts and cut pattern of
//! `headcode bench --baselines`: one ACDC edge test (a patched graph forward with the q/k/v
//! split, resumed at the middle layer, a tenth of the later edges cut), one ACDC head test
//! (a forward resumed at the middle layer) and, at the GPT-2-small shape, one EAP batch
//! (clean + corrupted forward + backward). GPT-2-small shape (random weights) with 8 pairs,
//! and SmolLM2-135M (fetched on first use) with 32 pairs, 18 tokens each.
use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use headcode::baselines::eap::eap;
use headcode::bench::baselines::{sample_cut_mask, synthetic_pairs};
use headcode::model::graph::{GraphModel, GraphRunOptions};
use headcode::model::random::random_model;
use headcode::model::{ForwardOptions, Model};
use headcode::tasks::{MetricKind, PairTokens};

fn bench_model(c: &mut Criterion, group: &str, model: &Model, pairs: usize, with_eap: bool) {
    let (clean, corrupt) = synthetic_pairs(pairs, 18, model.cfg.d_vocab);
    let mid = model.cfg.n_layers / 2;
    let gm = GraphModel::new(model, true).unwrap();
    let ctx = gm.patch_context(&clean, &corrupt).unwrap();
    let mask = sample_cut_mask(&gm.graph, mid);
    let base = model
        .forward(
            &clean,
            ForwardOptions {
                capture_resid: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.throughput(Throughput::Elements((pairs * 18) as u64));
    g.bench_function("acdc_edge_test_from_middle_layer", |b| {
        b.iter(|| {
            gm.run(
                &clean,
                GraphRunOptions {
                    mask: Some(&mask),
                    patch: Some(&ctx),
                    start_layer: mid,
                    ..Default::default()
                },
            )
            .unwrap()
        })
    });
    g.bench_function("acdc_head_test_from_middle_layer", |b| {
        b.iter(|| {
            model
                .forward(
                    &clean,
                    ForwardOptions {
                        start: Some((mid, base.resid[mid].clone())),
                        ..Default::default()
                    },
                )
                .unwrap()
        })
    });
    if with_eap {
        let toks: Vec<PairTokens> = (0..pairs as u32)
            .map(|i| PairTokens {
                metric: MetricKind::LogitDiff,
                answer: 100 + i,
                wrong: vec![200],
                greater: vec![],
                not_greater: vec![],
            })
            .collect();
        g.bench_function("eap_batch", |b| {
            b.iter(|| eap(model, &clean, &corrupt, &toks, true, pairs, |_, _| {}).unwrap())
        });
    }
    g.finish();
}

fn bench_gpt2_small(c: &mut Criterion) {
    let model = random_model("gpt2-small-shape", 0, &Device::Cpu, None).unwrap();
    bench_model(c, "baselines_gpt2_small_8x18", &model, 8, true);
}

fn bench_smollm2(c: &mut Criterion) {
    let spec = match headcode::model::ModelSpec::resolve("smollm2-135m") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping SmolLM2 bench: {e}");
            return;
        }
    };
    let (model, _tok) = headcode::model::load(&spec, &Default::default()).unwrap();
    bench_model(c, "baselines_smollm2_32x18", &model, 32, false);
}

criterion_group!(benches, bench_gpt2_small, bench_smollm2);
criterion_main!(benches);

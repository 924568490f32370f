//! The baselines' unit costs on CPU at the GPT-2-small shape (random weights), 8 prompt
//! pairs × 18 tokens: one ACDC edge test (a patched graph forward resumed at layer 6, with
//! the q/k/v split and a tenth of the later edges cut), one ACDC head test (a z-patched
//! forward resumed at layer 6), and one EAP batch (clean + corrupted forward + backward).
use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use headcode::baselines::eap::eap;
use headcode::model::graph::{GraphModel, GraphRunOptions};
use headcode::model::random::{gpt2_shape, random_weights};
use headcode::model::{ForwardOptions, Model, Processing};
use headcode::tasks::{MetricKind, PairTokens};

fn bench_baselines(c: &mut Criterion) {
    let cfg = gpt2_shape("gpt2-small-shape").unwrap();
    let w = random_weights(&cfg, 0, &Device::Cpu).unwrap();
    let model = Model::from_parts(cfg, w, Processing::TL_DEFAULT, "random".into()).unwrap();
    let clean: Vec<Vec<u32>> = (0..8u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % 50257).collect())
        .collect();
    let corrupt: Vec<Vec<u32>> = clean
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(j, &t)| if j % 5 == 2 { (t + 7) % 50257 } else { t })
                .collect()
        })
        .collect();
    let gm = GraphModel::new(&model, true).unwrap();
    let ctx = gm.patch_context(&clean, &corrupt).unwrap();
    let first = gm.graph.attn_receivers(6).start;
    let mut mask = vec![true; gm.graph.n_edges()];
    for (e, k) in mask.iter_mut().enumerate() {
        if gm.graph.edge(e).1 >= first && e % 10 == 0 {
            *k = false;
        }
    }
    let mut g = c.benchmark_group("baselines_gpt2_small_8x18");
    g.sample_size(10);
    g.throughput(Throughput::Elements(8 * 18));
    g.bench_function("acdc_edge_test_from_layer6", |b| {
        b.iter(|| {
            gm.run(
                &clean,
                GraphRunOptions {
                    mask: Some(&mask),
                    patch: Some(&ctx),
                    start_layer: 6,
                    ..Default::default()
                },
            )
            .unwrap()
        })
    });
    let base = model
        .forward(
            &clean,
            ForwardOptions {
                capture_resid: true,
                ..Default::default()
            },
        )
        .unwrap();
    g.bench_function("acdc_head_test_from_layer6", |b| {
        b.iter(|| {
            model
                .forward(
                    &clean,
                    ForwardOptions {
                        start: Some((6, base.resid[6].clone())),
                        ..Default::default()
                    },
                )
                .unwrap()
        })
    });
    let toks: Vec<PairTokens> = (0..8)
        .map(|i| PairTokens {
            metric: MetricKind::LogitDiff,
            answer: 100 + i,
            wrong: vec![200],
            greater: vec![],
            not_greater: vec![],
        })
        .collect();
    g.bench_function("eap_batch", |b| {
        b.iter(|| eap(&model, &clean, &corrupt, &toks, true, 8, |_, _| {}).unwrap())
    });
    g.finish();
}

/// SmolLM2-135M (fetched into the cache on first use), 32 pairs × 18 tokens as in the
/// README's `compare` run: one ACDC test at the q/k/v-split edge granularity and at the
/// head granularity, both resumed at the middle layer (the average cost over a sweep).
fn bench_smollm2(c: &mut Criterion) {
    let spec = match headcode::model::ModelSpec::resolve("smollm2-135m") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping SmolLM2 bench: {e}");
            return;
        }
    };
    let (model, _tok) = headcode::model::load(&spec, &Default::default()).unwrap();
    let clean: Vec<Vec<u32>> = (0..32u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % 49152).collect())
        .collect();
    let corrupt: Vec<Vec<u32>> = clean
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(j, &t)| if j % 5 == 2 { (t + 7) % 49152 } else { t })
                .collect()
        })
        .collect();
    let mid = model.cfg.n_layers / 2;
    let gm = GraphModel::new(&model, true).unwrap();
    let ctx = gm.patch_context(&clean, &corrupt).unwrap();
    let first = gm.graph.attn_receivers(mid).start;
    let mut mask = vec![true; gm.graph.n_edges()];
    for (e, k) in mask.iter_mut().enumerate() {
        if gm.graph.edge(e).1 >= first && e % 10 == 0 {
            *k = false;
        }
    }
    let base = model
        .forward(
            &clean,
            ForwardOptions {
                capture_resid: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut g = c.benchmark_group("baselines_smollm2_32x18");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32 * 18));
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
    g.finish();
}

criterion_group!(benches, bench_baselines, bench_smollm2);
criterion_main!(benches);

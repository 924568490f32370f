//! Forward pass + per-head hooks on CPU at the GPT-2-small shape (random weights):
//! 32 prompts × 18 tokens, mean-reduced z and result for all 144 heads.
use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use headcode::hooks::{collect, Reduce};
use headcode::model::random::{gpt2_shape, random_weights};
use headcode::model::{Model, Processing};

fn bench_forward_hooks(c: &mut Criterion) {
    let cfg = gpt2_shape("gpt2-small-shape").unwrap();
    let w = random_weights(&cfg, 0, &Device::Cpu).unwrap();
    let model = Model::from_parts(
        cfg,
        w,
        Processing::TL_DEFAULT,
        "random gpt2-small shape".into(),
    )
    .unwrap();
    let prompts: Vec<Vec<u32>> = (0..32u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % 50257).collect())
        .collect();
    let mut g = c.benchmark_group("forward_hooks_gpt2_small");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32 * 18));
    g.bench_function("32x18_tokens_mean_z_result", |b| {
        b.iter(|| collect(&model, &prompts, Reduce::Mean, 32, |_| {}).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_forward_hooks, bench_smollm2);
criterion_main!(benches);

/// The real model: SmolLM2-135M (fetched into the cache on first use).
fn bench_smollm2(c: &mut Criterion) {
    let spec = match headcode::model::ModelSpec::resolve("smollm2-135m") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping SmolLM2 bench: {e}");
            return;
        }
    };
    let (model, _tok) = headcode::model::load(&spec, &Default::default()).unwrap();
    let prompts: Vec<Vec<u32>> = (0..32u32)
        .map(|i| (0..18u32).map(|j| (i * 131 + j * 17) % 49152).collect())
        .collect();
    let mut g = c.benchmark_group("forward_hooks_smollm2");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32 * 18));
    g.bench_function("32x18_tokens_mean_z_result", |b| {
        b.iter(|| collect(&model, &prompts, Reduce::Mean, 32, |_| {}).unwrap())
    });
    g.finish();
}

//! Forward pass + per-head hooks on CPU at the GPT-2-small shape (random weights):
//! 32 prompts × 18 tokens, mean-reduced z and result for all 144 heads.
use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use headcode::hooks::{collect, Reduce};
use headcode::model::random::random_model;

fn bench_forward_hooks(c: &mut Criterion) {
    let model = random_model("gpt2-small-shape", 0, &Device::Cpu, None).unwrap();
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

/// What `discover` does with the last-position logits of 500 pairs (1000 rows × GPT-2's
/// 50,257): copy every row to the host and read top token and metric from it (the CPU
/// path), or compact the rows where they are first (the GPU path's `compact_logits`). On a
/// CPU the compaction (f64 log-sum-exp and first-maximum search over every element, as
/// tensor ops) costs more than the plain loop, which is why only the GPU path uses it; the
/// first number is the host work the GPU path avoids, before any device→host transfer.
fn bench_logit_rows(c: &mut Criterion) {
    use headcode::tasks::{compact_logits, metric_value, LogitRow, MetricKind, PairTokens};
    let (rows, vocab) = (1000usize, 50257usize);
    let t = candle_core::Tensor::randn(0f32, 3.0, (rows, vocab), &Device::Cpu).unwrap();
    let pair = PairTokens {
        metric: MetricKind::LogitDiff,
        answer: 1000,
        wrong: vec![2000],
        greater: vec![],
        not_greater: vec![],
    };
    let keep = vec![pair.metric_ids(); rows];
    fn read<R: LogitRow>(rows: &[R], pair: &PairTokens) -> f32 {
        rows.iter()
            .map(|r| metric_value(pair.metric, r, pair).unwrap() + r.top().unwrap_or(0) as f32)
            .sum()
    }
    let mut g = c.benchmark_group("last_logits_1000x50257");
    g.sample_size(10);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("full_rows_to_host", |b| {
        b.iter(|| read(&t.to_vec2::<f32>().unwrap(), &pair))
    });
    g.bench_function("compact_rows", |b| {
        b.iter(|| read(&compact_logits(&t, &keep).unwrap(), &pair))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_forward_hooks,
    bench_smollm2,
    bench_logit_rows
);
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

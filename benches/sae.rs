//! SAE step and scoring throughput at the paper's sizes (CPU reference path).
//!
//! - `shared_step`: one full-batch training step of the shared SAE, rows × d → 200
//!   (GPT-2 small: 10 examples × 144 heads = 1440 rows, d 768; SmolLM2-135M: 10 × 270 =
//!   2700 rows, d 576). Throughput in rows/s.
//! - `per_head_step`: one lockstep step of 144 per-head SAEs on 10 examples each (d 64 and
//!   768), `step_per_head`.
//! - `per_head_train_50_steps`: `train_per_head` (what `discover` runs) for 50 steps, each
//!   worker training its heads one after another.
//! - `encode_codes_node`: encode 500 examples × 144 heads (d 768) with a shared SAE, argmax,
//!   node score. Throughput in (example, head) vectors/s.
//! - `baselines`: class-mean distance, Fisher ratio and mean norm, host and tensor-op forms.
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use headcode::codes::{CodeOptions, CodeTable};
use headcode::sae::{self, Sae, SaeConfig};
use headcode::score;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

fn data(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn shared_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("shared_step");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for (name, rows, d) in [
        ("gpt2_1440x768", 1440, 768),
        ("smollm2_2700x576", 2700, 576),
    ] {
        let cfg = SaeConfig::default();
        let x = data(rows * d, 1);
        let mut sae = Sae::init(d, cfg.n_features, &mut StdRng::seed_from_u64(0)).unwrap();
        let mut adam = cfg.adam(d);
        g.throughput(Throughput::Elements(rows as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| black_box(sae.train_step(&mut adam, &x, rows, cfg.lambda).unwrap()))
        });
    }
    g.finish();
}

fn per_head_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_head_step");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let (batch, heads) = (10, 144);
    for d in [64, 768] {
        let cfg = SaeConfig::default();
        let x = data(batch * heads * d, 2);
        let xs = sae::split_heads(&x, batch, heads, d).unwrap();
        let (mut saes, mut adams) = sae::init_per_head(heads, d, &cfg).unwrap();
        g.throughput(Throughput::Elements((batch * heads) as u64));
        g.bench_function(BenchmarkId::new("144heads_10ex", d), |b| {
            b.iter(|| {
                black_box(
                    sae::step_per_head(&mut saes, &mut adams, &xs, batch, cfg.lambda).unwrap(),
                )
            })
        });
    }
    g.finish();
}

/// What `discover` runs: `train_per_head`, each worker training its heads one after another
/// for all steps. 50 steps here (initialisation included); a step costs about the time / 50.
fn per_head_train(c: &mut Criterion) {
    let mut g = c.benchmark_group("per_head_train_50_steps");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let (batch, heads) = (10, 144);
    for d in [64, 768] {
        let cfg = SaeConfig {
            steps: 50,
            ..SaeConfig::default()
        };
        let x = data(batch * heads * d, 2);
        g.throughput(Throughput::Elements((batch * heads * cfg.steps) as u64));
        g.bench_function(BenchmarkId::new("144heads_10ex", d), |b| {
            b.iter(|| black_box(sae::train_per_head(&x, batch, heads, d, &cfg).unwrap()))
        });
    }
    g.finish();
}

fn encode_codes_node(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_codes_node");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let (examples, heads, d) = (500, 144, 768);
    let cfg = SaeConfig::default();
    let x = data(examples * heads * d, 3);
    let sae = Sae::init(d, cfg.n_features, &mut StdRng::seed_from_u64(0)).unwrap();
    let is_pos: Vec<bool> = (0..examples).map(|e| e < examples / 2).collect();
    g.throughput(Throughput::Elements((examples * heads) as u64));
    g.bench_function("gpt2_500x144x768", |b| {
        b.iter(|| {
            let t = CodeTable::from_shared(
                &sae,
                &x,
                examples,
                heads,
                is_pos.clone(),
                CodeOptions::default(),
            )
            .unwrap();
            black_box(score::node_scores(&t, false).unwrap())
        })
    });
    // Scoring alone, node and edge, on a fixed table.
    let t = CodeTable::from_shared(
        &sae,
        &x,
        examples,
        heads,
        is_pos.clone(),
        CodeOptions::default(),
    )
    .unwrap();
    g.bench_function("node_score_only", |b| {
        b.iter(|| black_box(score::node_scores(&t, false).unwrap()))
    });
    g.bench_function("edge_score_only", |b| {
        b.iter(|| black_box(score::edge_scores(&t, None).unwrap()))
    });
    g.finish();
}

/// The class-mean, Fisher and mean-norm baselines of 1000 examples × 144 heads × 768: the
/// host functions (f64 sums; the CPU path) and the tensor-op version the GPU path runs
/// where the activations are (here on the CPU device).
fn baselines(c: &mut Criterion) {
    use score::baseline;
    let mut g = c.benchmark_group("baselines");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    let (examples, heads, d) = (1000, 144, 768);
    let x = data(examples * heads * d, 4);
    let is_pos: Vec<bool> = (0..examples).map(|e| e < examples / 2).collect();
    g.throughput(Throughput::Elements((examples * heads) as u64));
    g.bench_function("host_f64_1000x144x768", |b| {
        b.iter(|| {
            black_box((
                baseline::class_mean_distance(&x, examples, heads, d, &is_pos).unwrap(),
                baseline::fisher_ratio(&x, examples, heads, d, &is_pos).unwrap(),
                baseline::mean_norm(&x, examples, heads, d, &is_pos).unwrap(),
            ))
        })
    });
    let t =
        candle_core::Tensor::from_vec(x.clone(), (examples, heads, d), &candle_core::Device::Cpu)
            .unwrap();
    g.bench_function("tensor_ops_1000x144x768", |b| {
        b.iter(|| black_box(baseline::baselines_on_device(&t, &is_pos).unwrap()))
    });
    g.finish();
}

criterion_group!(
    benches,
    shared_step,
    per_head_step,
    per_head_train,
    encode_codes_node,
    baselines
);
criterion_main!(benches);

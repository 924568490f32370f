//! A criterion bench per kernel family, `cargo bench --bench kernels`:
//!
//! - `kernels_cpu_reference` (always): the plain-Rust references in `headcode::gpu::reference`
//!   that the GPU self-test compares against (hook reduce + W_O, argmax, node and edge
//!   overlap counts, one SAE's training, encode + argmax), at GPT-2-small head layout with
//!   sizes a CPU finishes in seconds. Throughput per (prompt, head), per SAE step, or per head
//!   pair.
//! - `kernels_cuda_gpt2-small-shape`, `kernels_cuda_gpt2-xl-shape` (with `--features cuda`
//!   on a GPU): every stage of `headcode bench --device cuda` (`bench::stages::visit_stages`),
//!   each timed by CUDA events around every run with the device synchronised, untimed
//!   preparation (restoring the initial SAE parameters) between runs. Without CUDA or a GPU
//!   the group says why in one line and is skipped, so `cargo bench` works everywhere.
//!
//! Filter as usual, e.g. `cargo bench --features cuda --bench kernels -- small/sae`.
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use headcode::bench::stages::{visit_stages, BenchOptions, ModelShape, StageSink};
use headcode::gpu::{reference, HookReduce, TrainConfig};
use headcode::Result;

fn cpu_reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernels_cpu_reference");
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    // GPT-2 small's head layout; 32 prompts keep the hook in the CPU's reach.
    let (heads, d_head, d_model, n_codes) = (144usize, 64usize, 768usize, 200usize);

    let (b, p) = (32usize, 18usize);
    let z = reference::randn(b * p * heads * d_head, 1.0, 1);
    let w_o = reference::randn(heads * d_head * d_model, 0.05, 2);
    let mask = vec![true; b * p];
    g.throughput(Throughput::Elements((b * heads) as u64));
    g.bench_function("hook_reduce_mean_result_32x18", |bn| {
        bn.iter(|| {
            black_box(reference::hook_reduce(
                &z,
                &mask,
                b,
                p,
                heads,
                d_head,
                HookReduce::Mean,
                Some((&w_o, d_model)),
            ))
        })
    });

    let e = 500usize;
    let acts = reference::randn(e * heads * n_codes, 1.0, 3);
    g.throughput(Throughput::Elements((e * heads) as u64));
    g.bench_function("argmax_rows_500x144x200", |bn| {
        bn.iter(|| black_box(reference::argmax_rows(&acts, n_codes)))
    });

    let codes = reference::random_codes(e * heads, n_codes as u32, 4);
    let is_pos: Vec<bool> = (0..e).map(|i| i < e / 2).collect();
    g.bench_function("node_overlap_500x144", |bn| {
        bn.iter(|| black_box(reference::node_overlap(&codes, &is_pos, heads, n_codes)))
    });
    g.throughput(Throughput::Elements((heads * (heads - 1) / 2) as u64));
    g.bench_function("edge_overlap_500x144", |bn| {
        bn.iter(|| black_box(reference::edge_overlap(&codes, &is_pos, heads, n_codes)))
    });

    // One per-head SAE on z (10 rows, 64 -> 200); the GPU trains 144 of these at once.
    let steps = 20u32;
    let x = reference::randn(10 * d_head, 1.0, 5);
    let init = reference::init_params(d_head, n_codes, 6);
    let cfg = TrainConfig::with_steps(steps);
    g.throughput(Throughput::Elements(u64::from(steps)));
    g.bench_function("train_sae_10x64x200_20_steps", |bn| {
        bn.iter(|| black_box(reference::train_sae(&x, &init, &cfg)))
    });

    let xe = reference::randn(e * d_head, 1.0, 7);
    g.throughput(Throughput::Elements(e as u64));
    g.bench_function("encode_argmax_500x64x200", |bn| {
        bn.iter(|| black_box(reference::encode_argmax(&init, &xe)))
    });
    g.finish();
}

/// Puts each stage of the GPU bench under criterion, timed by the stage's own CUDA-event
/// runner (`iter_custom`).
struct CriterionSink<'a> {
    c: &'a mut Criterion,
    group: String,
}

impl StageSink for CriterionSink<'_> {
    fn stage(
        &mut self,
        name: &str,
        _detail: &str,
        elements: u64,
        run: &mut dyn FnMut(u64) -> Result<Duration>,
    ) -> Result<f64> {
        let mut failed = None;
        let mut g = self.c.benchmark_group(&self.group);
        // Stages take 0.1 ms to 15 s a run (GPT-2-XL per-head SAEs on result): the fewest
        // samples criterion allows, and flat sampling (10 runs at least, not 55).
        g.sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .throughput(Throughput::Elements(elements));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                if failed.is_some() {
                    return Duration::ZERO;
                }
                run(iters).unwrap_or_else(|e| {
                    failed = Some(e);
                    Duration::ZERO
                })
            })
        });
        g.finish();
        failed.map_or(Ok(0.0), Err)
    }
}

fn cuda_stages(c: &mut Criterion) {
    for model in [ModelShape::Gpt2Small, ModelShape::Gpt2Xl] {
        let opts = BenchOptions {
            model,
            print: false,
            ..BenchOptions::default()
        };
        let group = format!("kernels_cuda_{}", model.dims().name);
        let mut sink = CriterionSink { c, group };
        if let Err(e) = visit_stages(&opts, &mut sink) {
            eprintln!("{}: skipped: {e}", sink.group);
            return;
        }
    }
}

criterion_group!(benches, cpu_reference, cuda_stages);
criterion_main!(benches);

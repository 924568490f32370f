//! `cargo bench --features cuda --bench kernels`: per-stage CUDA timings at the GPT-2 small
//! and GPT-2 XL shapes (see `headcode::gpu::bench`). Without the feature (or without a GPU)
//! it says so and exits successfully, so `cargo bench` keeps working everywhere.
use headcode::gpu::bench::{bench, BenchOptions, ModelShape};

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    for model in [ModelShape::Gpt2Small, ModelShape::Gpt2Xl] {
        let name = model.dims().name;
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let opts = BenchOptions {
            model,
            ..BenchOptions::default()
        };
        match bench(&opts) {
            Ok(report) => match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("{name}: {e}"),
            },
            Err(e) => {
                eprintln!("{name}: skipped: {e}");
                return;
            }
        }
    }
}

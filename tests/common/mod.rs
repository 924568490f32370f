//! Models shared by the integration tests.
#![allow(dead_code)] // each test file uses a subset

use candle_core::Device;
use headcode::model::random::random_weights;
use headcode::model::{
    load, Activation, LoadOptions, Model, ModelConfig, ModelSpec, Norm, PosEmbedding, Processing,
};

/// Three clean prompts of unequal lengths and their corrupted twins (fixture vocabularies).
pub fn prompts() -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let clean = vec![
        vec![3u32, 17, 99, 4, 250],
        vec![8, 8, 120, 31],
        vec![200, 1, 2, 3, 4, 5],
    ];
    let corrupt = vec![
        vec![3u32, 42, 99, 4, 251],
        vec![9, 8, 121, 31],
        vec![201, 1, 7, 3, 4, 6],
    ];
    (clean, corrupt)
}

/// A fixture model from `tests/fixtures/NAME`, with TransformerLens processing.
pub fn fixture(name: &str) -> Model {
    let p = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    load(&ModelSpec::resolve(&p).unwrap(), &LoadOptions::default())
        .unwrap()
        .0
}

/// A 2-layer, 4-head random-weight model with GPT-2's vocabulary, so the built-in tasks
/// tokenise onto it.
pub fn tiny_gpt2_vocab() -> Model {
    let cfg = ModelConfig {
        architecture: "gpt2".into(),
        n_layers: 2,
        n_heads: 4,
        n_kv_heads: 4,
        d_model: 32,
        d_head: 8,
        d_mlp: 64,
        d_vocab: 50257,
        n_ctx: 64,
        norm: Norm::LayerNorm,
        eps: 1e-5,
        pos: PosEmbedding::Standard,
        act: Activation::GeluNew,
        attn_only: false,
        details: Default::default(),
    };
    let w = random_weights(&cfg, 7, &Device::Cpu).unwrap();
    Model::from_parts(cfg, w, Processing::TL_DEFAULT, "tiny".into()).unwrap()
}

//! Models shared by the integration tests.
#![allow(dead_code)] // each test file uses a subset

use candle_core::Device;
use headcode::model::random::random_weights;
use headcode::model::{
    load, Activation, LoadOptions, Model, ModelConfig, ModelSpec, Norm, PosEmbedding, Processing,
};

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
    };
    let w = random_weights(&cfg, 7, &Device::Cpu).unwrap();
    Model::from_parts(cfg, w, Processing::TL_DEFAULT, "tiny".into()).unwrap()
}

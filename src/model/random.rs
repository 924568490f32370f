//! Random-weight models of a given shape, for benches and speed runs where timing does
//! not depend on the weights (GPT-2 small / XL shapes).
use candle_core::{DType, Device, Tensor};

use super::config::{Activation, ModelConfig, Norm, PosEmbedding};
use super::weights::{LayerWeights, MlpWeights, NormWeights, Weights};
use crate::error::{Error, Result};

/// GPT-2 family shapes by name: `gpt2-small-shape`, `gpt2-medium-shape`,
/// `gpt2-large-shape`, `gpt2-xl-shape` (the `-shape` suffix is optional).
pub fn gpt2_shape(name: &str) -> Result<ModelConfig> {
    let n = name.trim_end_matches("-shape");
    let (l, h, d) = match n {
        "gpt2-small" | "gpt2" => (12, 12, 768),
        "gpt2-medium" => (24, 16, 1024),
        "gpt2-large" => (36, 20, 1280),
        "gpt2-xl" => (48, 25, 1600),
        _ => {
            return Err(Error::InvalidInput(format!(
                "unknown model shape {name:?} (gpt2-small-shape, gpt2-medium-shape, gpt2-large-shape, gpt2-xl-shape)"
            )))
        }
    };
    Ok(ModelConfig {
        architecture: "gpt2".into(),
        n_layers: l,
        n_heads: h,
        n_kv_heads: h,
        d_model: d,
        d_head: 64,
        d_mlp: 4 * d,
        d_vocab: 50257,
        n_ctx: 1024,
        norm: Norm::LayerNorm,
        eps: 1e-5,
        pos: PosEmbedding::Standard,
        act: Activation::GeluNew,
        attn_only: false,
        details: Default::default(),
    })
}

/// A model of shape `name` ([`gpt2_shape`]) with [`random_weights`] from `seed` (the same
/// weights on every device), TransformerLens processing applied.
pub fn random_model(name: &str, seed: u64, dev: &Device) -> Result<super::Model> {
    let cfg = gpt2_shape(name)?;
    let w = random_weights(&cfg, seed, dev)?;
    let source = format!("{name} (random weights, seed {seed})");
    super::Model::from_parts(cfg, w, super::Processing::TL_DEFAULT, source)
}

/// N(0, 0.02) weights (GPT-2's init), unit norm weights, zero biases.
pub fn random_weights(cfg: &ModelConfig, seed: u64, dev: &Device) -> Result<Weights> {
    // Seeded here rather than through the device: candle cannot seed its CPU RNG.
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let rng = std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(seed));
    let normal =
        rand_distr::Normal::new(0f32, 0.02).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let r = |shape: &[usize]| -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let mut g = rng.borrow_mut();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut *g)).collect();
        Ok(Tensor::from_vec(v, shape, dev)?)
    };
    let z = |shape: &[usize]| -> Result<Tensor> { Ok(Tensor::zeros(shape, DType::F32, dev)?) };
    let o = |n: usize| -> Result<Tensor> { Ok(Tensor::ones(n, DType::F32, dev)?) };
    let (d, h, kv, dh, dm, v) = (
        cfg.d_model,
        cfg.n_heads,
        cfg.n_kv_heads,
        cfg.d_head,
        cfg.d_mlp,
        cfg.d_vocab,
    );
    let ln = |with_bias: bool| -> Result<NormWeights> {
        Ok(NormWeights {
            w: Some(o(d)?),
            b: if with_bias { Some(z(&[d])?) } else { None },
        })
    };
    let bias = cfg.norm == Norm::LayerNorm;
    let mut layers = Vec::new();
    for _ in 0..cfg.n_layers {
        layers.push(LayerWeights {
            ln1: ln(bias)?,
            w_q: r(&[h, d, dh])?,
            b_q: z(&[h, dh])?,
            w_k: r(&[kv, d, dh])?,
            b_k: z(&[kv, dh])?,
            w_v: r(&[kv, d, dh])?,
            b_v: z(&[kv, dh])?,
            w_o: r(&[h, dh, d])?,
            b_o: z(&[d])?,
            ln2: ln(bias)?,
            mlp: if cfg.attn_only {
                None
            } else {
                Some(MlpWeights {
                    w_in: r(&[d, dm])?,
                    b_in: z(&[dm])?,
                    w_gate: if cfg.act.gated() {
                        Some(r(&[d, dm])?)
                    } else {
                        None
                    },
                    w_out: r(&[dm, d])?,
                    b_out: z(&[d])?,
                })
            },
            ln1_post: None,
            ln2_post: None,
            q_norm: None,
            k_norm: None,
        });
    }
    let w_e = r(&[v, d])?;
    Ok(Weights {
        w_u: w_e.t()?.contiguous()?,
        w_e,
        w_pos: match cfg.pos {
            PosEmbedding::Rotary { .. } => None,
            _ => Some(r(&[cfg.n_ctx, d])?),
        },
        layers,
        ln_final: ln(bias)?,
        b_u: z(&[v])?,
        synthesized: v * d,
    })
}

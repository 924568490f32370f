//! Random-weight models of a given shape, for benches and speed runs where timing does
//! not depend on the weights (GPT-2 small / XL shapes).
use candle_core::{DType, Device, Tensor};

use super::config::{Activation, ArchDetails, ModelConfig, Norm, PosEmbedding, RopeScaling};
use super::dtype::WeightDtype;
use super::weights::{LayerWeights, MlpWeights, NormWeights, Weights};
use crate::error::{Error, Result};

/// The shapes `bench --model` and the end-to-end checks know, by name.
pub const SHAPES: &[&str] = &[
    "gpt2-small-shape",
    "gpt2-medium-shape",
    "gpt2-large-shape",
    "gpt2-xl-shape",
    "qwen2.5-0.5b-shape",
    "llama-3.2-1b-shape",
    "gemma-2-2b-shape",
    "llama-3.1-8b-shape",
];

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

/// Any shape of [`SHAPES`]: the GPT-2 family, or the config.json of Qwen2.5-0.5B,
/// Llama-3.2-1B, Gemma-2-2B or Llama-3.1-8B (layers, heads, key/value heads, widths,
/// vocabulary, norms, rotary embedding and its scaling, soft-caps, local layers).
pub fn shape(name: &str) -> Result<ModelConfig> {
    let n = name.trim().to_ascii_lowercase();
    let n = n.trim_end_matches("-shape");
    let llama3 = |factor: f32| RopeScaling::Llama3 {
        factor,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192.0,
    };
    // (architecture, layers, heads, kv heads, d_model, d_head, d_mlp, vocab, context, eps,
    // rope base, activation, details)
    let (arch, l, h, kv, d, dh, dm, v, ctx, eps, base, act, details) = match n {
        "qwen2.5-0.5b" => (
            "qwen2",
            24,
            14,
            2,
            896,
            64,
            4864,
            151936,
            32768,
            1e-6,
            1e6,
            Activation::SwiGlu,
            ArchDetails::default(),
        ),
        "llama-3.2-1b" => (
            "llama",
            16,
            32,
            8,
            2048,
            64,
            8192,
            128256,
            131072,
            1e-5,
            5e5,
            Activation::SwiGlu,
            ArchDetails {
                rope_scaling: llama3(32.0),
                ..Default::default()
            },
        ),
        "llama-3.1-8b" => (
            "llama",
            32,
            32,
            8,
            4096,
            128,
            14336,
            128256,
            131072,
            1e-5,
            5e5,
            Activation::SwiGlu,
            ArchDetails {
                rope_scaling: llama3(8.0),
                ..Default::default()
            },
        ),
        "gemma-2-2b" => (
            "gemma2",
            26,
            8,
            4,
            2304,
            256,
            9216,
            256000,
            8192,
            1e-6,
            1e4,
            Activation::GeGlu,
            ArchDetails {
                attn_scale: Some(1.0 / 16.0),
                attn_softcap: Some(50.0),
                final_softcap: Some(30.0),
                sliding_window: Some(4096),
                local_layers: (0..26).map(|l| l % 2 == 0).collect(),
                ..Default::default()
            },
        ),
        _ => {
            return gpt2_shape(n).map_err(|_| {
                Error::InvalidInput(format!(
                    "unknown model shape {name:?} ({})",
                    SHAPES.join(", ")
                ))
            })
        }
    };
    Ok(ModelConfig {
        architecture: arch.into(),
        n_layers: l,
        n_heads: h,
        n_kv_heads: kv,
        d_model: d,
        d_head: dh,
        d_mlp: dm,
        d_vocab: v,
        n_ctx: ctx,
        norm: Norm::RmsNorm,
        eps,
        pos: PosEmbedding::Rotary {
            base,
            interleaved: false,
        },
        act,
        attn_only: false,
        details,
    })
}

/// The checkpoint parameter count of shape `name` (a tied unembedding counted once, as
/// Transformers counts it; Llama-3.1-8B's is untied, Qwen2's q/k/v biases counted).
pub fn shape_params(name: &str) -> Result<usize> {
    let c = shape(name)?;
    let (d, h, kv, dh, dm, v) = (
        c.d_model,
        c.n_heads,
        c.n_kv_heads,
        c.d_head,
        c.d_mlp,
        c.d_vocab,
    );
    let untied = name.trim_end_matches("-shape") == "llama-3.1-8b";
    let ln = if c.norm == Norm::LayerNorm { 2 * d } else { d };
    let pos = if c.pos == PosEmbedding::Standard {
        c.n_ctx * d
    } else {
        0
    };
    let mut layer = 2 * d * h * dh + 2 * d * kv * dh + 2 * ln;
    layer += if c.act.gated() {
        3 * d * dm
    } else {
        2 * d * dm
    };
    match c.architecture.as_str() {
        "gpt2" => layer += 3 * h * dh + d + dm + d, // q/k/v, o, MLP biases
        "qwen2" => layer += (h + 2 * kv) * dh,
        "gemma2" => layer += 2 * d, // post-attention and post-MLP norms
        _ => {}
    }
    Ok(v * d * if untied { 2 } else { 1 } + pos + c.n_layers * layer + ln)
}

/// A model of shape `name` ([`shape`]) with random weights from `seed`, TransformerLens
/// processing applied, in `dtype` (default: f32 for the GPT-2 shapes, bf16 for the
/// others, whose f32 weights would not fit where they are meant to run). In f32 the
/// weights are [`random_weights`]' (the same on every device, for CPU-vs-GPU parity); in
/// a half dtype on CUDA they are drawn on the device (curand, seeded), so nothing large
/// crosses the bus, and on the CPU drawn tensor by tensor and narrowed at once.
pub fn random_model(
    name: &str,
    seed: u64,
    dev: &Device,
    dtype: Option<WeightDtype>,
) -> Result<super::Model> {
    let cfg = shape(name)?;
    let own = if cfg.architecture == "gpt2" {
        WeightDtype::F32
    } else {
        WeightDtype::Bf16
    };
    let dtype = WeightDtype::choose(Some(dtype.unwrap_or(own)), None, dev)?;
    let w = random_weights_as(&cfg, seed, dev, dtype)?;
    let source = format!("{name} (random weights, seed {seed}, {dtype})");
    super::Model::from_parts(cfg, w, super::Processing::TL_DEFAULT, source)
}

/// [`random_weights`] in f32 ([`random_model`] says how half dtypes are drawn).
pub fn random_weights(cfg: &ModelConfig, seed: u64, dev: &Device) -> Result<Weights> {
    random_weights_as(cfg, seed, dev, WeightDtype::F32)
}

/// N(0, 0.02) weights (GPT-2's init), unit norm weights, zero biases, in `dtype`.
fn random_weights_as(
    cfg: &ModelConfig,
    seed: u64,
    dev: &Device,
    dtype: WeightDtype,
) -> Result<Weights> {
    // Seeded here rather than through the device: candle cannot seed its CPU RNG.
    use rand::SeedableRng;
    use rand_distr::Distribution;
    let d_t = dtype.dtype();
    let on_device = dev.is_cuda() && dtype != WeightDtype::F32;
    if on_device {
        dev.set_seed(seed)?;
    }
    let rng = std::cell::RefCell::new(rand::rngs::StdRng::seed_from_u64(seed));
    let normal =
        rand_distr::Normal::new(0f32, 0.02).map_err(|e| Error::InvalidInput(e.to_string()))?;
    let r = |shape: &[usize]| -> Result<Tensor> {
        if on_device {
            return Ok(Tensor::randn(0f32, 0.02, shape, dev)?.to_dtype(d_t)?);
        }
        let n: usize = shape.iter().product();
        let mut g = rng.borrow_mut();
        let v: Vec<f32> = (0..n).map(|_| normal.sample(&mut *g)).collect();
        Ok(Tensor::from_vec(v, shape, dev)?.to_dtype(d_t)?)
    };
    let z = |shape: &[usize]| -> Result<Tensor> { Ok(Tensor::zeros(shape, d_t, dev)?) };
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
    let gemma = cfg.architecture == "gemma2";
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
            ln1_post: gemma.then(|| ln(false)).transpose()?,
            ln2_post: gemma.then(|| ln(false)).transpose()?,
            q_norm: None,
            k_norm: None,
        });
    }
    let w_e = r(&[v, d])?;
    // W_U is W_E's transpose (tied, as all but Llama-3.1-8B are); our layout holds it
    // apart from W_E either way, so memory and time are an untied model's.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The shapes' parameter counts equal the published checkpoints' (Transformers'
    /// `num_parameters()`), which pins layers, heads, widths and vocabularies.
    #[test]
    fn shapes_have_their_checkpoints_parameter_counts() {
        for (name, published) in [
            ("gpt2-small-shape", 124_439_808),
            ("qwen2.5-0.5b-shape", 494_032_768),
            ("llama-3.2-1b-shape", 1_235_814_400),
            ("gemma-2-2b-shape", 2_614_341_888),
            ("llama-3.1-8b-shape", 8_030_261_248),
        ] {
            assert_eq!(shape_params(name).unwrap(), published, "{name}");
        }
        for name in SHAPES {
            let c = shape(name).unwrap();
            c.validate(std::path::Path::new(name)).unwrap();
        }
        let e = shape("llama-9b-shape").unwrap_err().to_string();
        assert!(e.contains("llama-3.1-8b-shape"), "{e}");
    }

    #[test]
    fn half_random_weights_are_drawn_in_their_dtype() {
        let mut c = shape("gemma-2-2b-shape").unwrap();
        (c.n_layers, c.d_model, c.d_mlp, c.d_vocab, c.d_head) = (2, 16, 32, 64, 8);
        c.details.local_layers = vec![true, false];
        let w = random_weights_as(&c, 3, &Device::Cpu, WeightDtype::Bf16).unwrap();
        let m =
            crate::model::Model::from_parts(c, w, crate::model::Processing::TL_DEFAULT, "t".into())
                .unwrap();
        assert_eq!(m.dtype(), WeightDtype::Bf16);
        assert!(
            m.weights.layers[0].ln1_post.is_some(),
            "Gemma 2's post norms"
        );
        let out = m.forward(&[vec![1, 2, 3]], Default::default()).unwrap();
        assert!(crate::model::weights::all_finite(&out.logits.unwrap()).unwrap());
    }
}

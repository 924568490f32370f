//! One configuration drives every supported architecture. Loaders translate each
//! checkpoint family's config (HF GPT-2 / Llama `config.json`, a TransformerLens config,
//! GGUF metadata) into this.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// LayerNorm (centre, scale, affine).
    LayerNorm,
    /// RMSNorm (scale only), Llama family.
    RmsNorm,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PosEmbedding {
    /// Learned absolute positions added to the residual stream (GPT-2).
    Standard,
    /// Learned positions added to the query and key inputs only, after ln1
    /// (TransformerLens `shortformer`, used by attn-only-4l).
    Shortformer,
    /// Rotary embeddings on q and k.
    Rotary {
        base: f32,
        /// `true`: rotate interleaved pairs (2i, 2i+1), GPT-J style, which is what
        /// llama.cpp's Q/K permutation needs on GGUF weights; `false`: rotate-half
        /// (i, i + d/2), Hugging Face Llama.
        interleaved: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// tanh approximation (GPT-2's `gelu_new`).
    GeluNew,
    /// exact erf GELU.
    Gelu,
    Relu,
    /// SwiGLU: silu(x W_gate) * (x W_in), Llama and Qwen2.
    SwiGlu,
    /// GeGLU: gelu_tanh(x W_gate) * (x W_in), Gemma 2 and 3.
    GeGlu,
}

impl Activation {
    /// Gated MLPs carry a W_gate beside W_in.
    pub fn gated(self) -> bool {
        matches!(self, Activation::SwiGlu | Activation::GeGlu)
    }
}

/// Frequency scaling of rotary embeddings (`rope_scaling` in a Hugging Face config).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type")]
pub enum RopeScaling {
    #[default]
    None,
    /// Positions divided by `factor` (Gemma 3's global layers).
    Linear { factor: f32 },
    /// Llama 3.1's wavelength-dependent scaling of the inverse frequencies.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// What the families after GPT-2 and Llama change in the block. All off by default, so
/// a GPT-2 or Llama config carries `ArchDetails::default()`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ArchDetails {
    /// Attention and MLP both read the block's input (GPT-NeoX `use_parallel_residual`):
    /// x + attn(ln1(x)) + mlp(ln2(x)).
    pub parallel_attn_mlp: bool,
    /// Rotary embeddings on the first `rotary_dim` dimensions of each head only
    /// (GPT-NeoX `rotary_pct`); `None`: all of them.
    pub rotary_dim: Option<usize>,
    /// Scaling of the rotary frequencies on global layers.
    pub rope_scaling: RopeScaling,
    /// Rotary base of the local (sliding-window) layers, where it differs (Gemma 3).
    pub rope_local_base: Option<f32>,
    /// Attention-logit scale; `None`: 1/√d_head. Gemma: `query_pre_attn_scalar`^-½.
    pub attn_scale: Option<f64>,
    /// Attention logits soft-capped as cap·tanh(s/cap) before the mask (Gemma 2).
    pub attn_softcap: Option<f64>,
    /// Final logits soft-capped the same way (Gemma 2).
    pub final_softcap: Option<f64>,
    /// Keys further back than this from the query are masked on local layers.
    pub sliding_window: Option<usize>,
    /// Per layer, `true` for local (sliding-window) attention; empty: all global.
    pub local_layers: Vec<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Family name for reports: `gpt2`, `transformer-lens`, `llama`.
    pub architecture: String,
    pub n_layers: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer (= n_heads without grouped-query attention).
    pub n_kv_heads: usize,
    pub d_model: usize,
    pub d_head: usize,
    /// 0 for attention-only models.
    pub d_mlp: usize,
    pub d_vocab: usize,
    pub n_ctx: usize,
    pub norm: Norm,
    pub eps: f64,
    pub pos: PosEmbedding,
    pub act: Activation,
    pub attn_only: bool,
    /// Family details beyond GPT-2 and Llama (Gemma, GPT-NeoX).
    #[serde(default)]
    pub details: ArchDetails,
}

impl ModelConfig {
    /// Whether layer `l` attends within a sliding window only.
    pub fn is_local(&self, l: usize) -> bool {
        self.details.local_layers.get(l).copied().unwrap_or(false)
    }
    /// The attention-logit scale.
    pub fn attn_scale(&self) -> f64 {
        self.details
            .attn_scale
            .unwrap_or(1.0 / (self.d_head as f64).sqrt())
    }
    /// Rotated dimensions per head (all of them without partial rotary).
    pub fn rotary_dim(&self) -> usize {
        self.details.rotary_dim.unwrap_or(self.d_head)
    }
    pub fn n_heads_total(&self) -> usize {
        self.n_layers * self.n_heads
    }
    /// TransformerLens head labels, layer-major: `L{l}H{h}`.
    pub fn head_labels(&self) -> Vec<String> {
        (0..self.n_layers)
            .flat_map(|l| (0..self.n_heads).map(move |h| format!("L{l}H{h}")))
            .collect()
    }
    pub(crate) fn validate(&self, origin: &std::path::Path) -> crate::Result<()> {
        let bad = |m: String| Err(crate::Error::format(origin, m));
        // Bounds that keep every product of two sizes inside usize; the checkpoint then
        // bounds the rest (`check_fits`).
        for (k, v, max) in [
            ("n_layers", self.n_layers, MAX_LAYERS),
            ("n_heads", self.n_heads, MAX_DIM),
            ("n_kv_heads", self.n_kv_heads, MAX_DIM),
            ("d_model", self.d_model, MAX_DIM),
            ("d_head", self.d_head, MAX_DIM),
            ("d_mlp", self.d_mlp, MAX_DIM),
            ("d_vocab", self.d_vocab, MAX_DIM),
        ] {
            if v > max {
                return bad(format!("{k} {v} is larger than any model ({max} at most)"));
            }
        }
        if self.n_layers == 0 || self.n_heads == 0 || self.d_model == 0 || self.d_head == 0 {
            return bad(format!(
                "config has a zero size (n_layers {}, n_heads {}, d_model {}, d_head {})",
                self.n_layers, self.n_heads, self.d_model, self.d_head
            ));
        }
        if self.n_kv_heads == 0 || self.n_heads % self.n_kv_heads != 0 {
            return bad(format!(
                "n_heads {} is not a multiple of n_kv_heads {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if let PosEmbedding::Rotary { .. } = self.pos {
            if self.d_head % 2 != 0 {
                return bad(format!(
                    "rotary embeddings need an even d_head, got {}",
                    self.d_head
                ));
            }
        }
        if let Some(r) = self.details.rotary_dim {
            if r == 0 || r > self.d_head || r % 2 != 0 {
                return bad(format!(
                    "rotary dimensions {r} must be even and within d_head {}",
                    self.d_head
                ));
            }
        }
        if !self.details.local_layers.is_empty() {
            if self.details.local_layers.len() != self.n_layers {
                return bad(format!(
                    "{} layer types for {} layers",
                    self.details.local_layers.len(),
                    self.n_layers
                ));
            }
            if self.details.local_layers.iter().any(|&x| x)
                && self.details.sliding_window.is_none_or(|w| w == 0)
            {
                return bad("local layers without a positive sliding window".into());
            }
        }
        for (k, v) in [
            ("attention soft-cap", self.details.attn_softcap),
            ("final soft-cap", self.details.final_softcap),
            ("attention scale", self.details.attn_scale),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return bad(format!("{k} must be a positive number, got {v}"));
                }
            }
        }
        if !self.attn_only && self.d_mlp == 0 {
            return bad("d_mlp is 0 but the model is not attention-only".into());
        }
        if self.d_vocab == 0 {
            return bad("d_vocab is 0".into());
        }
        Ok(())
    }

    /// The fewest weights a checkpoint of this config holds: the embedding, W_Q and W_O of
    /// every layer, and the MLP's two matrices. A config claiming more than its checkpoint
    /// holds is refused before anything is allocated from its sizes.
    pub(crate) fn min_weights(&self) -> u128 {
        let (l, d) = (self.n_layers as u128, self.d_model as u128);
        let attn = 2 * self.n_heads as u128 * self.d_head as u128 * d;
        let mlp = if self.attn_only {
            0
        } else {
            2 * d * self.d_mlp as u128
        };
        self.d_vocab as u128 * d + l * (attn + mlp)
    }

    /// Refuse a config whose sizes its checkpoint (`held` weights in `source`) cannot hold.
    pub(crate) fn check_fits(
        &self,
        origin: &std::path::Path,
        source: &str,
        held: u128,
    ) -> crate::Result<()> {
        let need = self.min_weights();
        if need > held {
            return Err(crate::Error::format(
                origin,
                format!(
                    "the config's sizes (n_layers {}, d_model {}, n_heads {} × d_head {}, \
                     d_mlp {}, d_vocab {}) need at least {need} weights, but {} holds {held}",
                    self.n_layers,
                    self.d_model,
                    self.n_heads,
                    self.d_head,
                    self.d_mlp,
                    self.d_vocab,
                    source
                ),
            ));
        }
        Ok(())
    }
}

/// Upper bounds on a config's sizes: far above any released model, low enough that the
/// product of two sizes cannot overflow.
pub const MAX_LAYERS: usize = 1 << 16;
pub const MAX_DIM: usize = 1 << 31;

/// Refuse a layer count no model has before anything is sized from it (`key` names it in
/// the file `origin`).
pub(crate) fn check_layer_count(
    origin: &std::path::Path,
    key: &str,
    n: usize,
) -> crate::Result<()> {
    if n > MAX_LAYERS {
        return Err(crate::Error::format(
            origin,
            format!("{key} {n} is larger than any model ({MAX_LAYERS} at most)"),
        ));
    }
    Ok(())
}

/// TransformerLens-equivalent weight processing (`HookedTransformer.from_pretrained`
/// defaults). Each flag is applied only where it is defined for the model: centring needs
/// LayerNorm, so RMSNorm models get the norm weight folded and nothing centred but W_U.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Processing {
    pub fold_ln: bool,
    pub center_writing_weights: bool,
    pub center_unembed: bool,
    pub fold_value_biases: bool,
}

impl Processing {
    pub const TL_DEFAULT: Processing = Processing {
        fold_ln: true,
        center_writing_weights: true,
        center_unembed: true,
        fold_value_biases: true,
    };
    pub const NONE: Processing = Processing {
        fold_ln: false,
        center_writing_weights: false,
        center_unembed: false,
        fold_value_biases: false,
    };
}

impl Default for Processing {
    fn default() -> Self {
        Self::TL_DEFAULT
    }
}

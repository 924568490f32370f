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
    /// SwiGLU: silu(x W_gate) * (x W_in), Llama family.
    SwiGlu,
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
}

impl ModelConfig {
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
        if !self.attn_only && self.d_mlp == 0 {
            return bad("d_mlp is 0 but the model is not attention-only".into());
        }
        Ok(())
    }
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

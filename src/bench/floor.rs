//! Hardware floors of the SAE training stages and of the model's forward pass: the least
//! time the device's peak FP32 rate and DRAM bandwidth allow, from the device's own
//! attributes. `bench` prints them beside
//! each measured stage, so a target can be judged against what the hardware permits (the
//! issue's per-head-on-result target is stated as a multiple of such a floor).
//!
//! Counting rule (a lower bound, stated in the report):
//! * compute: the five GEMM-shaped products of a step (encode, decode, ReLU backward and the
//!   two weight gradients), 2·R·n·d FLOPs each, at the peak FP32 FMA rate; the element-wise
//!   work (renormalisation, radial removal, Adam) is left out;
//! * one block per SAE (the persistent trainers): an SAE cannot use more than one SM, so the
//!   SAEs run in ceil(N / SMs) waves at one SM's peak each;
//! * memory: when the parameters and both Adam moments (3 floats a parameter) exceed the L2
//!   cache, every step reads and writes them all from DRAM; otherwise no DRAM floor is given.
use serde::{Deserialize, Serialize};

pub use crate::gpu::device::{fp32_lanes_per_sm, DeviceLimits};

/// Floors of training `count` SAEs of `rows` rows, d -> n, for `steps` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaeFloor {
    pub stage: String,
    /// GEMM FLOPs of the whole training.
    pub gemm_flops: f64,
    /// All SMs at peak FP32 (ms).
    pub compute_ms: f64,
    /// One block per SAE, ceil(count / SMs) waves at one SM's peak (ms); None for a single
    /// SAE, which any trainer spreads over the whole device.
    pub compute_one_block_per_sae_ms: Option<f64>,
    /// Parameters + Adam moments (bytes).
    pub state_bytes: u64,
    /// steps · 2 · state / DRAM bandwidth when the state exceeds L2, else None (ms).
    pub dram_ms: Option<f64>,
}

pub fn sae_floor(
    stage: &str,
    count: usize,
    rows: usize,
    d: usize,
    n: usize,
    steps: u32,
    lim: &DeviceLimits,
) -> SaeFloor {
    let (c, r, d, n, t) = (count as f64, rows as f64, d as f64, n as f64, steps as f64);
    let per_sae_step = 5.0 * 2.0 * r * n * d;
    let gemm_flops = c * t * per_sae_step;
    let waves = (count as u64).div_ceil(lim.sms.max(1) as u64) as f64;
    let state_bytes = count as u64 * 3 * (2 * d as u64 * n as u64 + n as u64 + d as u64) * 4;
    let bw = lim.dram_bytes_per_s();
    let dram_ms =
        (state_bytes > lim.l2_bytes && bw > 0.0).then(|| 1e3 * t * 2.0 * state_bytes as f64 / bw);
    SaeFloor {
        stage: stage.into(),
        gemm_flops,
        compute_ms: ms_at(gemm_flops, lim.peak_flops()),
        compute_one_block_per_sae_ms: (count > 1)
            .then(|| ms_at(waves * t * per_sae_step, lim.sm_flops())),
        state_bytes,
        dram_ms,
    }
}

/// The FP32 compute floor of a model's forward pass (what `bench` prints beside the forward
/// + hooks rows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForwardFloor {
    /// GEMM-shaped FLOPs of the pass.
    pub flops: f64,
    /// All SMs at peak FP32 (ms).
    pub compute_ms: f64,
}

/// Dimensions of a forward pass, as the floor counts it.
#[derive(Debug, Clone, Copy)]
pub struct ForwardDims {
    pub layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    /// K/V heads (grouped-query attention; = n_heads for GPT-2).
    pub n_kv_heads: usize,
    pub d_head: usize,
    pub d_mlp: usize,
    /// Weight matrices of the MLP: 2 (GPT-2), 3 (SwiGLU).
    pub mlp_mats: usize,
    pub vocab: usize,
    pub prompts: usize,
    pub tokens: usize,
    /// Rows of logits computed (last positions only: one a prompt).
    pub logit_rows: usize,
}

impl ForwardDims {
    /// A model's dimensions, for `prompts` prompts of `tokens` tokens with last-position
    /// logits (one row a prompt).
    pub fn for_config(c: &crate::model::ModelConfig, prompts: usize, tokens: usize) -> Self {
        ForwardDims {
            layers: c.n_layers,
            d_model: c.d_model,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            d_head: c.d_head,
            d_mlp: c.d_mlp,
            mlp_mats: match (c.attn_only, c.act) {
                (true, _) => 0,
                (false, a) if a.gated() => 3,
                (false, _) => 2,
            },
            vocab: c.d_vocab,
            prompts,
            tokens,
            logit_rows: prompts,
        }
    }
}

/// FP32 floor of a forward pass: per token and layer the Q, K, V and O projections and the
/// MLP's matrices (2 FLOPs a multiply-add), per prompt and layer the causal attention scores
/// and weighted sums, and the logits rows; norms, softmax and activations are left out.
/// GPT-2 small, 500 prompts of 18 tokens: 1.57 TFLOP, 23.5 ms at an H100's FP32 peak, so a
/// 10 ms forward needs TF32 or 16-bit tensor cores.
pub fn forward_floor(f: &ForwardDims, lim: &DeviceLimits) -> ForwardFloor {
    let flops = forward_flops(f);
    ForwardFloor {
        flops,
        compute_ms: ms_at(flops, lim.peak_flops()),
    }
}

/// The FLOPs [`forward_floor`] counts.
pub fn forward_flops(f: &ForwardDims) -> f64 {
    let d = f.d_model as f64;
    let (h, kv, dh) = (f.n_heads as f64, f.n_kv_heads as f64, f.d_head as f64);
    let per_token_layer = 2.0 * d * h * dh
        + 2.0 * 2.0 * d * kv * dh
        + 2.0 * h * dh * d
        + f.mlp_mats as f64 * 2.0 * d * f.d_mlp as f64;
    let t = f.tokens as f64;
    // causal: query i attends to i + 1 keys; scores and the weighted sum, 2 FLOPs each
    let attn_per_prompt_layer = 2.0 * 2.0 * h * dh * t * (t + 1.0) / 2.0;
    let layers = f.layers as f64;
    let prompts = f.prompts as f64;
    layers * (prompts * t * per_token_layer + prompts * attn_per_prompt_layer)
        + 2.0 * d * f.vocab as f64 * f.logit_rows as f64
}

/// Milliseconds for `flops` at `rate` FLOP/s; NaN for an unknown (zero) rate.
fn ms_at(flops: f64, rate: f64) -> f64 {
    if rate > 0.0 {
        1e3 * flops / rate
    } else {
        f64::NAN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// H100 SXM as its driver reports it: 132 SMs at 1980 MHz, HBM3 2619 MHz x 5120 bits,
    /// 50 MB L2.
    fn h100() -> DeviceLimits {
        DeviceLimits {
            sms: 132,
            clock_khz: 1_980_000,
            fp32_lanes_per_sm: fp32_lanes_per_sm(9, 0),
            mem_clock_khz: 2_619_000,
            mem_bus_bits: 5120,
            l2_bytes: 50 * 1024 * 1024,
        }
    }

    #[test]
    fn h100_peaks_match_the_data_sheet() {
        let l = h100();
        // 66.9 TFLOP/s FP32 and 3.35 TB/s (NVIDIA's H100 SXM figures: 67 TFLOPS, 3.35 TB/s)
        assert!(
            (l.peak_flops() / 1e12 - 66.9).abs() < 0.1,
            "{}",
            l.peak_flops()
        );
        assert!((l.dram_bytes_per_s() / 1e12 - 3.352).abs() < 0.01);
    }

    #[test]
    fn per_head_z_floor_is_below_the_issue_target_only_when_balanced() {
        // 144 SAEs 64 -> 200, 10 rows, 500 steps: 92.2 GFLOP
        let f = sae_floor("z", 144, 10, 64, 200, 500, &h100());
        assert!((f.gemm_flops - 92.16e9).abs() < 1e6);
        assert!((f.compute_ms - 1.378).abs() < 0.01, "{}", f.compute_ms);
        // two waves of one SAE per SM
        assert!((f.compute_one_block_per_sae_ms.unwrap() - 2.525).abs() < 0.01);
        // 44.7 MB of state fits the 50 MB L2: no DRAM floor
        assert_eq!(f.state_bytes, 144 * 3 * (2 * 64 * 200 + 264) * 4);
        assert!(f.dram_ms.is_none());
    }

    #[test]
    fn per_head_result_floor_is_dram_bound() {
        // 144 SAEs 768 -> 200: 532.5 MB of state, read and written every step
        let f = sae_floor("r", 144, 10, 768, 200, 500, &h100());
        assert!((f.state_bytes as f64 / 1e6 - 532.51).abs() < 0.01);
        let dram = f.dram_ms.unwrap();
        assert!((dram - 158.85).abs() < 0.01, "{dram}");
        assert!(dram > f.compute_ms);
    }

    #[test]
    fn shared_sae_needs_tensor_cores_for_ten_ms() {
        // 1440 rows 768 -> 200, 500 steps: 1.11 TFLOP, 16.5 ms at the H100's FP32 peak
        let f = sae_floor("s", 1, 1440, 768, 200, 500, &h100());
        assert!((f.compute_ms - 16.53).abs() < 0.01, "{}", f.compute_ms);
        assert!(f.compute_one_block_per_sae_ms.is_none());
        assert!(f.dram_ms.is_none());
    }

    #[test]
    fn gpt2_small_forward_needs_tensor_cores_for_ten_ms() {
        let dims = ForwardDims {
            layers: 12,
            d_model: 768,
            n_heads: 12,
            n_kv_heads: 12,
            d_head: 64,
            d_mlp: 3072,
            mlp_mats: 2,
            vocab: 50_257,
            prompts: 500,
            tokens: 18,
            logit_rows: 500,
        };
        let f = forward_floor(&dims, &h100());
        // 12 layers x 9000 tokens x 14.16 MFLOP + attention 3.2 GFLOP + logits 38.6 GFLOP
        let by_hand = 12.0 * 9000.0 * 14_155_776.0
            + 12.0 * 500.0 * 4.0 * 768.0 * 171.0
            + 2.0 * 768.0 * 50_257.0 * 500.0;
        assert!((f.flops - by_hand).abs() < 1.0, "{} vs {by_hand}", f.flops);
        assert!((f.flops / 1e12 - 1.571).abs() < 0.001, "{}", f.flops);
        assert!((f.compute_ms - 23.5).abs() < 0.1, "{}", f.compute_ms);
        // grouped K/V and a gated MLP count as such
        let g = forward_floor(
            &ForwardDims {
                n_kv_heads: 4,
                mlp_mats: 3,
                ..dims
            },
            &h100(),
        );
        let per_token_layer_delta = -2.0 * 2.0 * 768.0 * 8.0 * 64.0 + 2.0 * 768.0 * 3072.0;
        assert!((g.flops - f.flops - 12.0 * 9000.0 * per_token_layer_delta).abs() < 1.0);
    }

    #[test]
    fn forward_dims_follow_the_model_config() {
        let mut c = crate::model::random::gpt2_shape("gpt2-small-shape").unwrap();
        let f = ForwardDims::for_config(&c, 500, 18);
        assert_eq!(
            (
                f.layers,
                f.d_model,
                f.n_heads,
                f.n_kv_heads,
                f.d_head,
                f.d_mlp,
                f.mlp_mats
            ),
            (12, 768, 12, 12, 64, 3072, 2)
        );
        assert_eq!(
            (f.vocab, f.prompts, f.tokens, f.logit_rows),
            (50_257, 500, 18, 500)
        );
        c.act = crate::model::Activation::SwiGlu;
        assert_eq!(ForwardDims::for_config(&c, 1, 1).mlp_mats, 3);
        c.attn_only = true;
        assert_eq!(ForwardDims::for_config(&c, 1, 1).mlp_mats, 0);
    }

    #[test]
    fn unknown_architecture_gives_no_compute_floor() {
        let l = DeviceLimits {
            fp32_lanes_per_sm: fp32_lanes_per_sm(3, 5),
            ..h100()
        };
        assert!(sae_floor("z", 1, 10, 64, 200, 500, &l).compute_ms.is_nan());
    }
}

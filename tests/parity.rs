//! Golden parity against Hugging Face transformers and TransformerLens on the random-weight
//! fixtures made by `scripts/make_fixtures.py` (see tests/fixtures/README.md).
//! Tolerance: |ours − ref| ≤ 1e-4 · max|ref| per tensor (logits, every head's z and result).
mod common;

use common::rel_err;
use std::path::Path;

use candle_core::{Device, Tensor};
use headcode::hooks::{collect, Reduce};
use headcode::model::{load, LoadOptions, Model, ModelSpec, Processing};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_model(spec: &str, processing: Processing) -> Model {
    let spec = ModelSpec::resolve(fixture(spec).to_str().unwrap()).unwrap();
    load(
        &spec,
        &LoadOptions {
            processing,
            device: Device::Cpu,
            dtype: None,
            max_memory: None,
        },
    )
    .unwrap()
    .0
}

fn check(model: &Model, exp_file: &Path, center_logits: bool) -> f32 {
    common::check_expected(model, exp_file, center_logits)
}

#[test]
fn gpt2_hf_raw_matches_transformers() {
    let m = load_model("gpt2_tiny", Processing::NONE);
    let e = check(&m, &fixture("gpt2_tiny/expected_raw.safetensors"), false);
    eprintln!("gpt2 raw worst rel err {e:.2e}");
}

#[test]
fn gpt2_hf_processed_matches_transformer_lens() {
    let m = load_model("gpt2_tiny", Processing::TL_DEFAULT);
    assert_eq!(m.processing, Processing::TL_DEFAULT);
    let e = check(
        &m,
        &fixture("gpt2_tiny/expected_processed.safetensors"),
        false,
    );
    eprintln!("gpt2 processed worst rel err {e:.2e}");
}

#[test]
fn gpt2_hub_layout_loads_identically() {
    let a = load_model("gpt2_tiny", Processing::TL_DEFAULT);
    let b = load_model("gpt2_tiny_hub_layout", Processing::TL_DEFAULT);
    check(
        &b,
        &fixture("gpt2_tiny/expected_processed.safetensors"),
        false,
    );
    assert_eq!(a.cfg.n_layers, b.cfg.n_layers);
}

#[test]
fn attn_only_transformer_lens_safetensors_and_pth() {
    for file in ["model.safetensors", "model.pth"] {
        let p = fixture("attn_only_tiny").join(file);
        let spec = ModelSpec::resolve(p.to_str().unwrap()).unwrap();
        for (proc, exp) in [
            (Processing::NONE, "expected_raw.safetensors"),
            (Processing::TL_DEFAULT, "expected_processed.safetensors"),
        ] {
            let m = load(
                &spec,
                &LoadOptions {
                    processing: proc,
                    device: Device::Cpu,
                    dtype: None,
                    max_memory: None,
                },
            )
            .unwrap()
            .0;
            assert!(m.cfg.attn_only);
            let e = check(&m, &fixture("attn_only_tiny").join(exp), false);
            eprintln!("attn-only {file} {exp}: {e:.2e}");
        }
    }
}

#[test]
fn attn_only_shortformer_matches_transformer_lens() {
    for (proc, exp) in [
        (Processing::NONE, "expected_raw.safetensors"),
        (Processing::TL_DEFAULT, "expected_processed.safetensors"),
    ] {
        let m = load_model("attn_only_shortformer_tiny", proc);
        check(&m, &fixture("attn_only_shortformer_tiny").join(exp), false);
    }
}

#[test]
fn llama_hf_matches_transformers_raw_and_processed() {
    for dir in ["llama_tiny", "llama_tiny_sharded"] {
        let m = load_model(dir, Processing::NONE);
        assert_eq!(m.cfg.n_kv_heads, 2);
        let e = check(&m, &fixture(dir).join("expected.safetensors"), false);
        eprintln!("{dir} raw {e:.2e}");
        // RMSNorm folding changes no head output; centring W_U shifts logits by a
        // per-position constant.
        let m = load_model(dir, Processing::TL_DEFAULT);
        assert!(!m.processing.center_writing_weights);
        check(&m, &fixture(dir).join("expected.safetensors"), true);
    }
}

/// The families beyond GPT-2 and Llama, against Hugging Face transformers on random
/// weights of odd sizes: raw, and with TransformerLens's default processing.
fn family_parity(dir: &str, n_kv: usize) {
    let m = load_model(dir, Processing::NONE);
    assert_eq!(m.cfg.n_kv_heads, n_kv, "{dir}");
    let e = check(&m, &fixture(dir).join("expected_raw.safetensors"), false);
    eprintln!("{dir} raw worst rel err {e:.2e}");
    let m = load_model(dir, Processing::TL_DEFAULT);
    assert!(
        m.processing.fold_ln && m.processing.fold_value_biases,
        "{dir}"
    );
    // Soft-capped logits cannot be centred (TL skips centre_unembed for them), so they
    // must match as they are.
    let capped = m.cfg.details.final_softcap.is_some();
    assert_eq!(m.processing.center_unembed, !capped, "{dir}");
    let e = check(
        &m,
        &fixture(dir).join("expected_processed.safetensors"),
        !capped,
    );
    eprintln!("{dir} processed worst rel err {e:.2e}");
}

#[test]
fn qwen2_matches_transformers() {
    family_parity("qwen2_tiny", 2);
    let m = load_model("qwen2_tiny", Processing::NONE);
    assert!(m.cfg.details.sliding_window.is_none());
}

#[test]
fn gemma2_matches_transformers() {
    family_parity("gemma2_tiny", 2);
    let m = load_model("gemma2_tiny", Processing::NONE);
    let d = &m.cfg.details;
    assert_eq!(d.local_layers, vec![true, false, true]);
    assert_eq!((d.attn_softcap, d.final_softcap), (Some(3.0), Some(5.0)));
}

#[test]
fn gemma3_matches_transformers() {
    family_parity("gemma3_tiny", 1);
    let m = load_model("gemma3_tiny", Processing::NONE);
    let d = &m.cfg.details;
    assert_eq!(d.local_layers, vec![true, false, true]);
    assert_eq!(d.rope_local_base, Some(10000.0));
    assert!(d.attn_softcap.is_none());
}

#[test]
fn pythia_matches_transformers() {
    family_parity("pythia_tiny", 5);
    let m = load_model("pythia_tiny", Processing::NONE);
    assert!(m.cfg.details.parallel_attn_mlp);
    assert_eq!(m.cfg.rotary_dim(), 4);
    assert!(m.processing.center_writing_weights || !m.processing.fold_ln);
}

#[test]
fn padding_does_not_change_real_positions() {
    for dir in [
        "gpt2_tiny",
        "llama_tiny",
        "attn_only_tiny",
        "gemma2_tiny",
        "gemma3_tiny",
        "pythia_tiny",
    ] {
        let m = load_model(dir, Processing::TL_DEFAULT);
        let prompts = vec![vec![5u32, 9, 13], vec![1, 2, 3, 4, 5, 6, 7], vec![42]];
        let batched = collect(&m, &prompts, Reduce::Mean, 8, |_| {}).unwrap();
        for (i, p) in prompts.iter().enumerate() {
            let alone = collect(&m, std::slice::from_ref(p), Reduce::Mean, 1, |_| {}).unwrap();
            let w = batched.z.heads() * batched.z.dim();
            let e = rel_err(&batched.z.data[i * w..(i + 1) * w], &alone.z.data);
            assert!(e < 1e-5, "{dir}: prompt {i} z changed by padding: {e}");
            let w = batched.result.heads() * batched.result.dim();
            let e = rel_err(&batched.result.data[i * w..(i + 1) * w], &alone.result.data);
            assert!(e < 1e-5, "{dir}: prompt {i} result changed by padding: {e}");
            let e = rel_err(&batched.last_logits[i], &alone.last_logits[0]);
            assert!(e < 1e-5, "{dir}: prompt {i} logits changed by padding: {e}");
        }
    }
}

/// llama.cpp's converter permutes the rows of W_Q and W_K within each head so that the
/// rotate-half pairs (i, i + d/2) become adjacent pairs (2i, 2i + 1). Interleaved rotary on
/// permuted weights must equal rotate-half on the original ones: the GGUF path's premise.
#[test]
fn interleaved_rotary_on_llama_cpp_permuted_weights_equals_rotate_half() {
    use headcode::model::load::load_llama_hf;
    use headcode::model::{LogitsAt, Model, PosEmbedding};
    let (cfg, w) = load_llama_hf(&fixture("llama_tiny"), &Device::Cpu, Default::default()).unwrap();
    let dh = cfg.d_head;
    // new[..., 2i + j] = old[..., j·dh/2 + i] along d_head (our W_Q is [heads, d_model, d_head]).
    let perm: Vec<u32> = (0..dh).map(|k| ((k % 2) * dh / 2 + k / 2) as u32).collect();
    let idx = Tensor::new(perm.as_slice(), &Device::Cpu).unwrap();
    let mut wp = w.clone();
    for l in wp.layers.iter_mut() {
        l.w_q = l.w_q.index_select(&idx, 2).unwrap();
        l.w_k = l.w_k.index_select(&idx, 2).unwrap();
    }
    let mut cfg_p = cfg.clone();
    let PosEmbedding::Rotary { base, interleaved } = cfg.pos else {
        panic!("llama uses rotary embeddings")
    };
    assert!(!interleaved);
    cfg_p.pos = PosEmbedding::Rotary {
        base,
        interleaved: true,
    };
    let a = Model::from_parts(cfg, w, Processing::NONE, "hf".into()).unwrap();
    let b = Model::from_parts(
        cfg_p.clone(),
        wp.clone(),
        Processing::NONE,
        "permuted".into(),
    )
    .unwrap();
    let toks = vec![vec![3u32, 77, 150, 9, 200, 41, 5]];
    let run = |m: &Model| {
        let o = m
            .forward(
                &toks,
                headcode::model::ForwardOptions {
                    logits: LogitsAt::All,
                    ..Default::default()
                },
            )
            .unwrap();
        o.logits
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
    };
    let (la, lb) = (run(&a), run(&b));
    let e = rel_err(&lb, &la);
    assert!(e < 1e-5, "interleaved on permuted vs rotate-half: {e}");
    // And the wrong pairing on permuted weights is far off.
    let mut cfg_w = cfg_p;
    cfg_w.pos = PosEmbedding::Rotary {
        base,
        interleaved: false,
    };
    let c = Model::from_parts(cfg_w, wp, Processing::NONE, "wrong".into()).unwrap();
    assert!(rel_err(&run(&c), &la) > 1e-3);
}

/// Mean and last reductions, computed on the device per chunk, equal the same reductions
/// of `Reduce::All`'s per-position vectors; padded positions of `All` are zero; chunking
/// changes nothing.
#[test]
fn reductions_agree_across_chunks() {
    let m = load_model("gpt2_tiny", Processing::TL_DEFAULT);
    let prompts: Vec<Vec<u32>> = vec![
        vec![5, 9, 13],
        vec![1, 2, 3, 4, 5, 6, 7],
        vec![42],
        vec![8, 8, 8, 8],
        vec![3, 1, 4, 1, 5],
    ];
    let all = collect(&m, &prompts, Reduce::All, 2, |_| {}).unwrap();
    let mean = collect(&m, &prompts, Reduce::Mean, 2, |_| {}).unwrap();
    let last = collect(&m, &prompts, Reduce::Last, 3, |_| {}).unwrap();
    let mean1 = collect(&m, &prompts, Reduce::Mean, 5, |_| {}).unwrap();
    assert_eq!(all.z.shape, vec![5, 7, all.z.heads(), all.z.dim()]);
    assert_eq!(mean.z.lengths, vec![3, 7, 1, 4, 5]);
    assert!(rel_err(&mean.z.data, &mean1.z.data) < 1e-5);
    assert!(rel_err(&mean.result.data, &mean1.result.data) < 1e-5);
    for (acts, m_acts, l_acts) in [
        (&all.z, &mean.z, &last.z),
        (&all.result, &mean.result, &last.result),
    ] {
        let (h, d, t) = (acts.heads(), acts.dim(), acts.shape[1]);
        for (i, &len) in acts.lengths.iter().enumerate() {
            let at = |p: usize| &acts.data[((i * t + p) * h) * d..((i * t + p + 1) * h) * d];
            for p in len..t {
                assert!(
                    at(p).iter().all(|&x| x == 0.0),
                    "prompt {i} pos {p} not zero"
                );
            }
            let mut avg = vec![0f32; h * d];
            for p in 0..len {
                for (a, x) in avg.iter_mut().zip(at(p)) {
                    *a += x / len as f32;
                }
            }
            let w = h * d;
            let e = rel_err(&m_acts.data[i * w..(i + 1) * w], &avg);
            assert!(e < 1e-5, "prompt {i}: mean differs by {e}");
            let e = rel_err(&l_acts.data[i * w..(i + 1) * w], at(len - 1));
            assert!(e < 1e-5, "prompt {i}: last differs by {e}");
        }
    }
    for (a, b) in all.last_logits.iter().zip(&mean.last_logits) {
        assert!(rel_err(a, b) < 1e-5);
    }
}

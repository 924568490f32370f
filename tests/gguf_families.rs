//! The GGUF loader on the `qwen2`, `gemma2`, `gemma3` and `gptneox` architectures, on
//! files written as llama.cpp's `convert_hf_to_gguf.py` writes them
//! (`tests/fixtures/*_tiny/model.gguf`, made by `scripts/make_fixtures.py --only gguf`
//! from the HF checkpoints beside them; see tests/fixtures/README.md).
//!
//! Each GGUF must give the HF folder's config and reproduce the folder's expected outputs
//! (transformers raw, TransformerLens-processed) within 1e-4 of each tensor's largest value.
//!
//! Two things a Gemma GGUF cannot carry, so llama.cpp (and headcode after it) derives
//! them from the architecture and the fixtures, which set them unusually, disagree:
//! - `query_pre_attn_scalar` (Gemma 2 fixture 24, Gemma 3 32): llama.cpp scales scores by
//!   1/√key_length (20, 24) except on the 27B sizes;
//! - Gemma 3's `layer_types` (local, global, local): llama.cpp hard-codes five local layers
//!   to one global (`set_swa_pattern(6)`, no key read), so all three layers are local.
//!
//! The tests assert the loader derives exactly llama.cpp's values there, then set the HF
//! values on the loaded config to compare the forward against transformers: that checks
//! every tensor and every other metadata key. Regenerating the Gemma fixtures with
//! llama.cpp-compatible settings would break their HF parity tests (tests/parity.rs),
//! which pin the unusual values on purpose.
mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use common::{check_expected, rel_err};
use headcode::model::load::{load_gguf, load_llama_hf, load_neox_hf};
use headcode::model::{
    load, ForwardOptions, LoadOptions, LogitsAt, Model, ModelConfig, ModelSpec, Processing,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The config the HF folder gives.
fn hf_config(name: &str) -> ModelConfig {
    let dir = fixture(name);
    let (cfg, _) = if name.starts_with("pythia") {
        load_neox_hf(&dir, &Device::Cpu, Default::default())
    } else {
        load_llama_hf(&dir, &Device::Cpu, Default::default())
    }
    .unwrap();
    cfg
}

/// Loads `model.gguf` as users do (weights, config and the vocabulary it carries).
fn load_gguf_model(name: &str, processing: Processing) -> Model {
    let p = fixture(name).join("model.gguf");
    let spec = ModelSpec::resolve(p.to_str().unwrap()).unwrap();
    assert!(matches!(spec, ModelSpec::Gguf(_)), "{name}: {spec:?}");
    let (m, tok) = load(
        &spec,
        &LoadOptions {
            processing,
            device: Device::Cpu,
            dtype: None,
            max_memory: None,
        },
    )
    .unwrap();
    assert_eq!(tok.vocab_size(), 300, "{name}");
    let ids = tok.encode("the hat").unwrap();
    assert!(
        !ids.is_empty() && ids.iter().all(|&i| i < 300),
        "{name}: {ids:?}"
    );
    assert_eq!(tok.decode(&ids).unwrap(), "the hat", "{name}");
    m
}

/// The fields that decide the forward pass, GGUF against HF.
fn assert_same_config(name: &str, g: &ModelConfig, h: &ModelConfig) {
    assert_eq!(
        (
            g.n_layers,
            g.n_heads,
            g.n_kv_heads,
            g.d_model,
            g.d_head,
            g.d_mlp
        ),
        (
            h.n_layers,
            h.n_heads,
            h.n_kv_heads,
            h.d_model,
            h.d_head,
            h.d_mlp
        ),
        "{name}: sizes"
    );
    assert_eq!((g.d_vocab, g.n_ctx), (h.d_vocab, h.n_ctx), "{name}");
    assert_eq!((g.norm, g.act, g.pos), (h.norm, h.act, h.pos), "{name}");
    assert_eq!(g.attn_only, h.attn_only, "{name}");
    // GGUF stores ε as f32.
    assert!(
        (g.eps - h.eps).abs() <= 1e-7 * h.eps,
        "{name}: eps {} vs {}",
        g.eps,
        h.eps
    );
    let (gd, hd) = (&g.details, &h.details);
    // An empty list means no local layer (HF's Qwen2 config lists them all as global).
    let local = |c: &ModelConfig| -> Vec<bool> {
        (0..c.n_layers)
            .map(|l| c.details.local_layers.get(l).copied().unwrap_or(false))
            .collect()
    };
    assert_eq!(local(g), local(h), "{name}: local layers");
    assert_eq!(gd.sliding_window, hd.sliding_window, "{name}: window");
    assert_eq!(
        gd.attn_softcap, hd.attn_softcap,
        "{name}: attention soft-cap"
    );
    assert_eq!(gd.final_softcap, hd.final_softcap, "{name}: final soft-cap");
    assert_eq!(
        gd.rope_local_base, hd.rope_local_base,
        "{name}: local rope base"
    );
    assert_eq!(gd.rope_scaling, hd.rope_scaling, "{name}: rope scaling");
    assert_eq!(gd.rotary_dim, hd.rotary_dim, "{name}: rotary dims");
    assert_eq!(g.rotary_dim(), h.rotary_dim(), "{name}");
    assert_eq!(gd.parallel_attn_mlp, hd.parallel_attn_mlp, "{name}");
    assert!(
        (g.attn_scale() - h.attn_scale()).abs() < 1e-12,
        "{name}: attention scale {} vs {}",
        g.attn_scale(),
        h.attn_scale()
    );
}

/// Raw against transformers, processed against TransformerLens's defaults (logits centred
/// unless soft-capped). `fix`: sets on the GGUF config what the file cannot carry.
fn parity(name: &str, fix: impl Fn(&mut ModelConfig)) -> (f32, f32) {
    let dir = fixture(name);
    let mut worst = [0f32; 2];
    for (k, (proc, exp)) in [
        (Processing::NONE, "expected_raw.safetensors"),
        (Processing::TL_DEFAULT, "expected_processed.safetensors"),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut cfg, w, _) =
            load_gguf(&dir.join("model.gguf"), &Device::Cpu, Default::default()).unwrap();
        fix(&mut cfg);
        let m = Model::from_parts(cfg, w, proc, name.into()).unwrap();
        let capped = m.cfg.details.final_softcap.is_some();
        assert_eq!(
            m.processing.center_unembed,
            proc.center_unembed && !capped,
            "{name}"
        );
        worst[k] = check_expected(&m, &dir.join(exp), proc.center_unembed && !capped);
    }
    eprintln!(
        "{name} GGUF worst rel err: raw {:.2e}, processed {:.2e}",
        worst[0], worst[1]
    );
    (worst[0], worst[1])
}

/// Logits of the longest (9-token) expected prompt.
fn logits(m: &Model, name: &str) -> Vec<f32> {
    let exp = candle_core::safetensors::load(
        fixture(name).join("expected_raw.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    let toks: Vec<u32> = exp["tokens.2"]
        .to_vec1::<i64>()
        .unwrap()
        .into_iter()
        .map(|x| x as u32)
        .collect();
    let out = m
        .forward(
            &[toks],
            ForwardOptions {
                logits: LogitsAt::All,
                ..Default::default()
            },
        )
        .unwrap();
    out.logits
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

#[test]
fn qwen2_gguf_matches_hf() {
    let name = "qwen2_tiny";
    let m = load_gguf_model(name, Processing::NONE);
    assert_eq!(m.cfg.architecture, "qwen2");
    assert_same_config(name, &m.cfg, &hf_config(name));
    assert!(m.cfg.details.sliding_window.is_none());
    parity(name, |_| {});
}

#[test]
fn pythia_gguf_matches_hf() {
    let name = "pythia_tiny";
    let m = load_gguf_model(name, Processing::NONE);
    assert_eq!(m.cfg.architecture, "gpt-neox");
    assert_same_config(name, &m.cfg, &hf_config(name));
    assert_eq!(m.cfg.rotary_dim(), 4);
    assert!(m.cfg.details.parallel_attn_mlp);
    parity(name, |_| {});
}

#[test]
fn gemma2_gguf_matches_hf_but_for_the_attention_scale() {
    let name = "gemma2_tiny";
    let hf = hf_config(name);
    let m = load_gguf_model(name, Processing::NONE);
    assert_eq!(m.cfg.architecture, "gemma2");
    // llama.cpp: 1/√key_length on every size but the 27B; HF: 1/√query_pre_attn_scalar.
    assert_eq!(m.cfg.details.attn_scale, Some(1.0 / 20f64.sqrt()));
    assert_eq!(hf.details.attn_scale, Some(1.0 / 24f64.sqrt()));
    // Gemma 2's local/global alternation is the same in both.
    assert_eq!(m.cfg.details.local_layers, vec![true, false, true]);
    assert_eq!(m.cfg.details.sliding_window, Some(4));
    assert_eq!(
        (m.cfg.details.attn_softcap, m.cfg.details.final_softcap),
        (Some(3.0), Some(5.0))
    );
    let mut cfg = m.cfg.clone();
    cfg.details.attn_scale = hf.details.attn_scale;
    assert_same_config(name, &cfg, &hf);
    parity(name, |c| c.details.attn_scale = hf.details.attn_scale);
    // The scale matters here: the file as llama.cpp reads it is another model.
    let d = llama_cpp_vs_hf_gap(name, |c| c.details.attn_scale = hf.details.attn_scale);
    assert!(d > 1e-3, "{name}: attention scale changed nothing: {d}");
}

#[test]
fn gemma3_gguf_matches_hf_but_for_the_scale_and_layer_pattern() {
    let name = "gemma3_tiny";
    let hf = hf_config(name);
    let m = load_gguf_model(name, Processing::NONE);
    assert_eq!(m.cfg.architecture, "gemma3");
    assert_eq!(m.cfg.details.attn_scale, Some(1.0 / 24f64.sqrt()));
    assert_eq!(hf.details.attn_scale, Some(1.0 / 32f64.sqrt()));
    // llama.cpp: layer l is local unless (l + 1) % 6 == 0, so 3 layers are all local.
    assert_eq!(m.cfg.details.local_layers, vec![true, true, true]);
    assert_eq!(hf.details.local_layers, vec![true, false, true]);
    // Global layers: base 1e6 scaled linearly ×4; local ones: llama.cpp's fixed 1e4.
    assert_eq!(m.cfg.details.rope_local_base, Some(10000.0));
    assert!(m.cfg.details.attn_softcap.is_none() && m.cfg.details.final_softcap.is_none());
    let fix = |c: &mut ModelConfig| {
        c.details.attn_scale = hf.details.attn_scale;
        c.details.local_layers = hf.details.local_layers.clone();
    };
    let mut cfg = m.cfg.clone();
    fix(&mut cfg);
    assert_same_config(name, &cfg, &hf);
    parity(name, fix);
    let d = llama_cpp_vs_hf_gap(name, |c| {
        c.details.local_layers = hf.details.local_layers.clone()
    });
    assert!(d > 1e-3, "{name}: the layer pattern changed nothing: {d}");
}

/// A Gemma 3 file without `gemma3.attention.sliding_window` (the converter omits it when
/// `sliding_window_pattern` is 1) has no local layer, as in llama.cpp.
#[test]
fn gemma3_gguf_without_window_is_all_global() {
    use candle_core::quantized::gguf_file;
    let src = fixture("gemma3_tiny").join("model.gguf");
    let mut f = std::fs::File::open(&src).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let tensors: Vec<_> = names
        .iter()
        .map(|n| content.tensor(&mut f, n, &Device::Cpu).unwrap())
        .collect();
    let mut keys: Vec<&String> = content.metadata.keys().collect();
    keys.sort();
    let md: Vec<(&str, &gguf_file::Value)> = keys
        .iter()
        .filter(|k| k.as_str() != "gemma3.attention.sliding_window")
        .map(|k| (k.as_str(), &content.metadata[*k]))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("no_window.gguf");
    let mut out = std::fs::File::create(&path).unwrap();
    let ts: Vec<(&str, &_)> = names.iter().map(|n| n.as_str()).zip(&tensors).collect();
    gguf_file::write(&mut out, &md, &ts).unwrap();
    drop(out);
    let (cfg, _, _) = load_gguf(&path, &Device::Cpu, Default::default()).unwrap();
    assert!(cfg.details.local_layers.iter().all(|&x| !x), "{cfg:?}");
    assert_eq!(cfg.details.sliding_window, None);
}

/// Largest relative change of the logits when `fix` sets HF's values on the config the
/// GGUF gives.
fn llama_cpp_vs_hf_gap(name: &str, fix: impl Fn(&mut ModelConfig)) -> f32 {
    let (cfg, w, _) = load_gguf(
        &fixture(name).join("model.gguf"),
        &Device::Cpu,
        Default::default(),
    )
    .unwrap();
    let mut hf_like = cfg.clone();
    fix(&mut hf_like);
    let a = Model::from_parts(cfg, w.clone(), Processing::NONE, "llama.cpp".into()).unwrap();
    let b = Model::from_parts(hf_like, w, Processing::NONE, "HF".into()).unwrap();
    let d = rel_err(&logits(&a, name), &logits(&b, name));
    eprintln!("{name}: llama.cpp's reading moves the logits by {d:.2e}");
    d
}

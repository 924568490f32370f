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

/// max |a − b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn center_rows(v: &mut [f32], width: usize) {
    for row in v.chunks_mut(width) {
        let m = row.iter().sum::<f32>() / width as f32;
        row.iter_mut().for_each(|x| *x -= m);
    }
}

fn flat(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Compares logits, z and result for every prompt of an expected-output file
/// (tests/fixtures/README.md) within 1e-4 of each tensor's largest value; returns the
/// worst relative error. `center_logits`: compare logits with each row's mean removed.
pub fn check_expected(model: &Model, exp_file: &std::path::Path, center_logits: bool) -> f32 {
    use headcode::hooks::{collect, Reduce};
    let exp = candle_core::safetensors::load(exp_file, &Device::Cpu).unwrap();
    let n = exp.keys().filter(|k| k.starts_with("tokens.")).count();
    assert!(n > 0, "{exp_file:?} holds no prompts");
    let c = &model.cfg;
    let (nl, nh, dh, d, v) = (c.n_layers, c.n_heads, c.d_head, c.d_model, c.d_vocab);
    let mut worst = 0f32;
    for i in 0..n {
        let toks: Vec<u32> = exp[&format!("tokens.{i}")]
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect();
        let t = toks.len();
        let out = model
            .forward(
                std::slice::from_ref(&toks),
                headcode::model::ForwardOptions {
                    logits: headcode::model::LogitsAt::All,
                    ..Default::default()
                },
            )
            .unwrap();
        let mut ours = flat(&out.logits.unwrap());
        let mut theirs = flat(&exp[&format!("logits.{i}")]);
        if center_logits {
            center_rows(&mut ours, v);
            center_rows(&mut theirs, v);
        }
        let e = rel_err(&ours, &theirs);
        assert!(e <= 1e-4, "{exp_file:?} prompt {i}: logits rel err {e}");
        worst = worst.max(e);

        let got = collect(model, &[toks], Reduce::All, 8, |_| {}).unwrap();
        let (ez, er) = (
            flat(&exp[&format!("z.{i}")]),
            flat(&exp[&format!("result.{i}")]),
        );
        for l in 0..nl {
            for h in 0..nh {
                let (mut oz, mut tz, mut or, mut tr) = (vec![], vec![], vec![], vec![]);
                for p in 0..t {
                    // ours: [1, T, L*H, dim]; theirs: [L, T, H, dim]
                    let (oi, ti) = (p * nl * nh + l * nh + h, (l * t + p) * nh + h);
                    oz.extend_from_slice(&got.z.data[oi * dh..(oi + 1) * dh]);
                    tz.extend_from_slice(&ez[ti * dh..(ti + 1) * dh]);
                    or.extend_from_slice(&got.result.data[oi * d..(oi + 1) * d]);
                    tr.extend_from_slice(&er[ti * d..(ti + 1) * d]);
                }
                let (e_z, e_r) = (rel_err(&oz, &tz), rel_err(&or, &tr));
                assert!(
                    e_z <= 1e-4,
                    "{exp_file:?} prompt {i} L{l}H{h}: z rel err {e_z}"
                );
                assert!(
                    e_r <= 1e-4,
                    "{exp_file:?} prompt {i} L{l}H{h}: result rel err {e_r}"
                );
                worst = worst.max(e_z).max(e_r);
            }
        }
    }
    worst
}

/// One parity fixture per model family (tests/fixtures/README.md).
pub const FAMILIES: [&str; 7] = [
    "gpt2_tiny",
    "llama_tiny",
    "attn_only_tiny",
    "qwen2_tiny",
    "gemma2_tiny",
    "gemma3_tiny",
    "pythia_tiny",
];

/// A file under tests/fixtures.
pub fn fixture_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// gpt2_tiny (3 layers × 5 heads) with its embedding widened to GPT-2's 50257 tokens, so
/// the built-in tasks tokenise onto it from the command line (the extra rows are a fixed
/// pseudo-random fill).
pub fn wide_gpt2(dir: &std::path::Path) -> std::path::PathBuf {
    let m = dir.join("gpt2_wide");
    std::fs::create_dir_all(&m).unwrap();
    let cfg = std::fs::read_to_string(fixture_path("gpt2_tiny/config.json")).unwrap();
    std::fs::write(
        m.join("config.json"),
        cfg.replace("\"vocab_size\": 300", "\"vocab_size\": 50257"),
    )
    .unwrap();
    let mut t =
        candle_core::safetensors::load(fixture_path("gpt2_tiny/model.safetensors"), &Device::Cpu)
            .unwrap();
    let keys: Vec<String> = t
        .keys()
        .filter(|k| k.ends_with("wte.weight") || k.ends_with("lm_head.weight"))
        .cloned()
        .collect();
    assert!(!keys.is_empty(), "no embedding in gpt2_tiny");
    for k in keys {
        let w = &t[&k];
        let (v, d) = w.dims2().unwrap();
        let mut x: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        let mut s = 0x9e3779b97f4a7c15u64;
        for _ in 0..(50257 - v) * d {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x.push(((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1);
        }
        t.insert(
            k,
            candle_core::Tensor::from_vec(x, (50257, d), &Device::Cpu).unwrap(),
        );
    }
    candle_core::safetensors::save(&t, m.join("model.safetensors")).unwrap();
    m
}

/// A copy of gpt2_tiny whose tensors were edited by `edit`.
pub fn broken_gpt2(
    edit: impl FnOnce(&mut std::collections::HashMap<String, candle_core::Tensor>),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_path("gpt2_tiny/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let mut t =
        candle_core::safetensors::load(fixture_path("gpt2_tiny/model.safetensors"), &Device::Cpu)
            .unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    dir
}

//! The second real model: Gemma 3 270M (Q4_K_M GGUF, the built-in `gemma-3-270m`, fetched
//! into the cache on first use), loaded as a user loads it and checked against llama.cpp
//! (tests/fixtures/gemma3_270m_llamacpp.json, scripts/make_llamacpp_fixture.py).
use std::sync::OnceLock;

use headcode::model::{load, LoadOptions, Model, ModelSpec, Processing};
use headcode::tokenize::Tokenizer;
use serde_json::Value as Json;

struct Loaded {
    model: Model,
    tok: Box<dyn Tokenizer>,
}

fn gemma3() -> &'static Loaded {
    static M: OnceLock<Loaded> = OnceLock::new();
    M.get_or_init(|| {
        let spec = ModelSpec::resolve("gemma-3-270m").expect("fetch gemma-3-270m");
        let (model, tok) = load(&spec, &LoadOptions::default()).expect("load gemma-3-270m");
        Loaded { model, tok }
    })
}

fn fixture() -> Json {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/gemma3_270m_llamacpp.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).expect(p)).expect(p)
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn log_softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let lse = m + l.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    l.iter().map(|&x| x as f64 - lse).collect()
}

#[test]
fn architecture_is_read_from_gguf() {
    let c = &gemma3().model.cfg;
    assert_eq!(c.architecture, "gemma3");
    assert_eq!(
        (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head),
        (18, 4, 1, 640, 256)
    );
    assert_eq!((c.d_mlp, c.d_vocab), (2048, 262144));
    let d = &c.details;
    // Five local layers, then a global one.
    let globals: Vec<usize> = (0..18).filter(|&l| !d.local_layers[l]).collect();
    assert_eq!(globals, vec![5, 11, 17]);
    assert_eq!(d.sliding_window, Some(512));
    assert_eq!(d.rope_local_base, Some(10000.0));
    assert!(d.attn_softcap.is_none() && d.final_softcap.is_none());
    assert!((c.attn_scale() - 1.0 / 16.0).abs() < 1e-12);
}

/// The tokenizer the loader builds from the file, id for id with llama.cpp.
#[test]
fn loaded_tokenizer_equals_llama_cpp() {
    let t = gemma3().tok.as_ref();
    let f = fixture();
    assert_eq!(t.bos_id(), Some(2));
    for c in f["tokenize"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        assert_eq!(
            t.encode_with_bos(text, true).unwrap(),
            ids(&c["ids_with_bos"]),
            "{text:?}"
        );
    }
}

/// Next-token distributions against llama.cpp's on the same prompts. llama.cpp multiplies
/// with the 4-bit weights and 8-bit-quantised activations, we with the weights dequantised
/// to f32, so they differ by quantisation noise: the same top token, every one of
/// llama.cpp's top 20 within 0.03 in probability and (above p = 0.001) within 0.5 in
/// log-probability, and 0.15 on average.
#[test]
fn next_token_distributions_match_llama_cpp() {
    let m = gemma3();
    let f = fixture();
    let (mut worst_lp, mut worst_p, mut sum_lp, mut n_lp) = (0f64, 0f64, 0f64, 0usize);
    for c in f["next_token"].as_array().unwrap() {
        let prompt = c["prompt"].as_str().unwrap();
        let toks = ids(&c["ids"]);
        assert_eq!(m.tok.encode_with_bos(prompt, true).unwrap(), toks);
        let lp = log_softmax(&m.model.last_logits(&[toks], 1).unwrap()[0]);
        let argmax = (0..lp.len())
            .max_by(|&a, &b| lp[a].total_cmp(&lp[b]))
            .unwrap();
        assert_eq!(argmax as u64, c["argmax"].as_u64().unwrap(), "{prompt:?}");
        for e in c["top"].as_array().unwrap() {
            let id = e["id"].as_u64().unwrap() as usize;
            let p_ref = e["prob"].as_f64().unwrap();
            let d_lp = (lp[id] - p_ref.ln()).abs();
            let d_p = (lp[id].exp() - p_ref).abs();
            eprintln!(
                "{prompt:?} {:?}: ours {:.4} llama.cpp {p_ref:.4}",
                e["text"].as_str().unwrap(),
                lp[id].exp()
            );
            assert!(d_p <= 0.03, "{prompt:?} token {id}: |Δp| {d_p}");
            if p_ref > 1e-3 {
                assert!(d_lp <= 0.5, "{prompt:?} token {id}: |Δ log p| {d_lp}");
                worst_lp = worst_lp.max(d_lp);
                sum_lp += d_lp;
                n_lp += 1;
            }
            worst_p = worst_p.max(d_p);
        }
    }
    let mean_lp = sum_lp / n_lp.max(1) as f64;
    eprintln!(
        "|Δ log p| worst {worst_lp:.3}, mean {mean_lp:.3} over {n_lp} tokens with p > 1e-3; \
         worst |Δp| {worst_p:.4}"
    );
    assert!(
        n_lp >= 40 && mean_lp <= 0.15,
        "mean |Δ log p| {mean_lp} over {n_lp}"
    );
}

/// TransformerLens processing leaves predictions as they are (no final soft-cap on
/// Gemma 3, so the unembedding is centred).
#[test]
fn processing_keeps_predictions() {
    let m = gemma3();
    assert!(m.model.processing.center_unembed);
    let spec = ModelSpec::resolve("gemma-3-270m").unwrap();
    let (raw, _) = load(
        &spec,
        &LoadOptions {
            processing: Processing::NONE,
            ..Default::default()
        },
    )
    .unwrap();
    let toks = m
        .tok
        .encode_with_bos("One, two, three, four,", true)
        .unwrap();
    let a = log_softmax(&m.model.last_logits(std::slice::from_ref(&toks), 1).unwrap()[0]);
    let b = log_softmax(&raw.last_logits(&[toks], 1).unwrap()[0]);
    let worst = a
        .iter()
        .zip(&b)
        .filter(|(_, y)| **y > -10.0)
        .fold(0f64, |w, (x, y)| w.max((x - y).abs()));
    assert!(worst < 1e-3, "log-probs moved by {worst}");
}

/// `predict` and a small `discover` from the command line, offline, as a user runs them.
#[test]
fn predict_and_discover_from_the_cli() {
    gemma3(); // fetched (and cached) before the CLI needs it
    let bin = env!("CARGO_BIN_EXE_headcode");
    let o = std::process::Command::new(bin)
        .args([
            "predict",
            "gemma-3-270m",
            "--prompt",
            "When Mary and John went to the store, John gave a drink to",
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let first = out.lines().nth(1).unwrap_or_default();
    assert!(first.contains("\" Mary\""), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let o = std::process::Command::new(bin)
        .args(["discover", "gemma-3-270m", "--task", "ioi", "--n", "16"])
        .args([
            "--steps",
            "50",
            "--trials",
            "1",
            "--faithfulness",
            "none",
            "--out",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let manifest: Json =
        serde_json::from_str(&std::fs::read_to_string(run.join("scores.json")).unwrap()).unwrap();
    assert_eq!(manifest["counts"]["pairs"], 16);
    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
}

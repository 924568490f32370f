//! headcode's SentencePiece tokenizer against llama.cpp on the real Gemma 3 270M vocabulary
//! (the built-in `gemma-3-270m` GGUF, fetched into the cache on first use).
//! tests/fixtures/gemma3_270m_llamacpp.json holds llama.cpp's ids and renderings
//! (scripts/make_llamacpp_fixture.py).
use std::sync::OnceLock;

use candle_core::quantized::gguf_file::{Content, Value};
use headcode::model::fetch::GEMMA3_270M;
use headcode::tokenize::{SpmTokenizer, Tokenizer};
use serde_json::Value as Json;

fn fixture() -> &'static Json {
    static F: OnceLock<Json> = OnceLock::new();
    F.get_or_init(|| {
        let p = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/gemma3_270m_llamacpp.json"
        );
        serde_json::from_str(&std::fs::read_to_string(p).expect(p)).expect(p)
    })
}

/// The tokenizer built from the GGUF's own metadata, as a loader would.
fn gemma() -> &'static SpmTokenizer {
    static T: OnceLock<SpmTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let path = GEMMA3_270M.path().expect("fetch gemma-3-270m");
        let mut f = std::fs::File::open(&path).unwrap();
        let md = Content::read(&mut f).unwrap().metadata;
        let key = |k: &str| md.get(k).unwrap_or_else(|| panic!("{k} missing"));
        let array = |k: &str| key(k).to_vec().unwrap().iter();
        assert_eq!(key("tokenizer.ggml.model").to_string().unwrap(), "llama");
        let tokens: Vec<String> = array("tokenizer.ggml.tokens")
            .map(|v| v.to_string().unwrap().clone())
            .collect();
        let scores = array("tokenizer.ggml.scores")
            .map(|v| v.to_f32().unwrap())
            .collect();
        let types = array("tokenizer.ggml.token_type")
            .map(|v| v.to_i32().unwrap())
            .collect();
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .is_none_or(|v| v.to_bool().unwrap());
        let bos = md
            .get("tokenizer.ggml.bos_token_id")
            .map(|v| v.to_u32().unwrap())
            .filter(|_| add_bos);
        // llama.cpp's default for "llama" vocabularies when the key is absent is true.
        let space = md
            .get("tokenizer.ggml.add_space_prefix")
            .is_none_or(|v| matches!(v, Value::Bool(true)));
        SpmTokenizer::new(
            tokens,
            scores,
            types,
            bos,
            space,
            path.display().to_string(),
        )
        .unwrap()
    })
}

fn ids(v: &Json) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn fixture_is_for_this_gguf() {
    let m = &fixture()["model"];
    assert_eq!(m["sha256"], GEMMA3_270M.sha256);
    assert_eq!(m["bytes"], GEMMA3_270M.bytes);
    let t = gemma();
    assert_eq!(m["n_vocab"], t.vocab_size());
    assert_eq!(m["bos_id"].as_u64().map(|b| b as u32), t.bos_id());
    assert_eq!(m["add_bos"], true);
}

#[test]
fn ids_equal_llama_cpp() {
    let t = gemma();
    let cases = fixture()["tokenize"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        assert_eq!(t.encode(text).unwrap(), ids(&c["ids"]), "{text:?}");
        assert_eq!(
            t.encode_with_bos(text, true).unwrap(),
            ids(&c["ids_with_bos"]),
            "{text:?} with BOS"
        );
    }
    // The next-token prompts, as the model test will feed them.
    for c in fixture()["next_token"].as_array().unwrap() {
        let p = c["prompt"].as_str().unwrap();
        assert_eq!(t.encode_with_bos(p, true).unwrap(), ids(&c["ids"]), "{p:?}");
    }
}

#[test]
fn decode_equals_llama_cpp() {
    let t = gemma();
    let mut round_trips = 0;
    for c in fixture()["tokenize"].as_array().unwrap() {
        let (text, want) = (
            c["text"].as_str().unwrap(),
            c["detokenized"].as_str().unwrap(),
        );
        let got = t.decode(&ids(&c["ids"])).unwrap();
        assert_eq!(got, want, "{text:?}");
        if want == text {
            assert_eq!(t.decode(&t.encode(text).unwrap()).unwrap(), text);
            round_trips += 1;
        }
    }
    assert!(round_trips >= 10, "only {round_trips} texts round-trip");
    // Single tokens, including the top predictions' pieces.
    for c in fixture()["next_token"].as_array().unwrap() {
        for e in c["top"].as_array().unwrap() {
            let id = e["id"].as_u64().unwrap() as u32;
            assert_eq!(t.decode(&[id]).unwrap(), e["text"].as_str().unwrap(), "{e}");
        }
    }
}

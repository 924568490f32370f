//! One driver per parser that headcode reads from strangers, shared by the fuzz targets
//! (`fuzz/fuzz_targets/*.rs`) and the crash regression test (`tests/fuzz_regressions.rs`,
//! which includes this file with `#[path]`), so a reproducer runs through exactly the code
//! the fuzzer found it with.
//!
//! Every driver calls headcode's public entry points, never a copy of their parsing. A
//! driver returns the library's `Result` so the caller can ignore it: an `Err` is the
//! right answer to a bad file; only a panic, an abort or a runaway allocation is a bug.
//!
//! Entry points that take a path get the fuzz bytes written to a file in a scratch folder
//! under /dev/shm (one per process, so parallel fuzzers and `-fork` children never share
//! files), next to valid companions taken from `tests/fixtures/`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use headcode::model::{load, Model, ModelSpec, Processing};
use headcode::tokenize::{HfTokenizer, SpmTokenizer, Tokenizer};
use headcode::Result;

/// Every target, by the name of its fuzz target and of its regression folder.
pub const TARGETS: &[&str] = &[
    "safetensors",
    "safetensors_index",
    "gguf",
    "tl_pth",
    "hf_config",
    "tokenizer_json",
    "gguf_vocab",
    "task_jsonl",
    "auto_circuit",
    "circuit_json",
    "score_rescore",
    "compare_rescore",
    "mib_json",
];

/// Run `data` through the driver of `target` (the regression test's entry).
pub fn run(target: &str, data: &[u8]) -> Result<()> {
    match target {
        "safetensors" => safetensors(data),
        "safetensors_index" => safetensors_index(data),
        "gguf" => gguf(data),
        "tl_pth" => tl_pth(data),
        "hf_config" => hf_config(data),
        "tokenizer_json" => tokenizer_json(data),
        "gguf_vocab" => gguf_vocab(data),
        "task_jsonl" => task_jsonl(data),
        "auto_circuit" => auto_circuit(data),
        "circuit_json" => circuit_json(data),
        "score_rescore" => score_rescore(data),
        "compare_rescore" => compare_rescore(data),
        "mib_json" => mib_json(data),
        other => panic!("unknown fuzz target {other:?}"),
    }
}

/// `tests/fixtures/`, found from either crate: the fuzz crate lives in `fuzz/`, the
/// regression test in the repository root. `HEADCODE_FIXTURES` overrides both.
pub fn fixtures() -> PathBuf {
    if let Some(p) = std::env::var_os("HEADCODE_FIXTURES") {
        return PathBuf::from(p);
    }
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for p in [here.join("tests/fixtures"), here.join("../tests/fixtures")] {
        if p.is_dir() {
            return p;
        }
    }
    panic!("tests/fixtures not found from {}", here.display())
}

/// `/dev/shm/headcode-fuzz-<pid>/<sub>`, created on first use (RAM-backed, so the file
/// round trip costs the fuzzer little). Falls back to the temp dir where /dev/shm is absent.
pub fn scratch(sub: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base
        .join(format!("headcode-fuzz-{}", std::process::id()))
        .join(sub);
    std::fs::create_dir_all(&d).expect("creating the fuzz scratch folder");
    d
}

/// Remove this process's scratch folders (the regression test calls it when done).
pub fn remove_scratch() {
    let d = scratch("");
    let _ = std::fs::remove_dir_all(d);
}

/// Point `dir/name` at the fixture file `src` (a symlink: the loaders only read it).
fn companion(dir: &Path, name: &str, src: &Path) {
    let dst = dir.join(name);
    if dst.symlink_metadata().is_ok() {
        return;
    }
    #[cfg(unix)]
    std::os::unix::fs::symlink(src, &dst).expect("linking a fixture into the scratch folder");
    #[cfg(not(unix))]
    std::fs::copy(src, &dst).expect("copying a fixture into the scratch folder");
}

fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("writing the fuzz input to the scratch folder");
}

/// The model folders a leading byte chooses from: every Hugging Face family headcode loads
/// and the two TransformerLens fixtures.
#[derive(Clone, Copy, Debug)]
enum Family {
    Gpt2,
    Gpt2HubLayout,
    Llama,
    Qwen2,
    Gemma2,
    Gemma3,
    Neox,
    TlAttnOnly,
    TlShortformer,
}

const FAMILIES: [Family; 9] = [
    Family::Gpt2,
    Family::Gpt2HubLayout,
    Family::Llama,
    Family::Qwen2,
    Family::Gemma2,
    Family::Gemma3,
    Family::Neox,
    Family::TlAttnOnly,
    Family::TlShortformer,
];

impl Family {
    fn pick(b: u8) -> Family {
        FAMILIES[b as usize % FAMILIES.len()]
    }
    fn fixture(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2_tiny",
            Family::Gpt2HubLayout => "gpt2_tiny_hub_layout",
            Family::Llama => "llama_tiny",
            Family::Qwen2 => "qwen2_tiny",
            Family::Gemma2 => "gemma2_tiny",
            Family::Gemma3 => "gemma3_tiny",
            Family::Neox => "pythia_tiny",
            Family::TlAttnOnly => "attn_only_tiny",
            Family::TlShortformer => "attn_only_shortformer_tiny",
        }
    }
}

/// Load `dir` (config.json + weights) as `model::load` does for its family, then build the
/// `Model` (which runs TransformerLens processing over the loaded weights). The tokenizer
/// step of `model::load` is left out: it does not read these files, and building GPT-2's
/// tiktoken table on every input would cost most of the fuzzer's time.
fn load_family(fam: Family, dir: &Path, weights: &Path) -> Result<()> {
    let dev = &Device::Cpu;
    let (cfg, w) = match fam {
        Family::Gpt2 | Family::Gpt2HubLayout => load::load_gpt2_hf(dir, dev, Default::default())?,
        Family::Llama | Family::Qwen2 | Family::Gemma2 | Family::Gemma3 => {
            load::load_llama_hf(dir, dev, Default::default())?
        }
        Family::Neox => load::load_neox_hf(dir, dev, Default::default())?,
        Family::TlAttnOnly | Family::TlShortformer => {
            load::load_transformer_lens(&dir.join("config.json"), weights, dev, Default::default())?
        }
    };
    Model::from_parts(cfg, w, Processing::TL_DEFAULT, "fuzz".into())?;
    Ok(())
}

/// Encode and decode a few strings, and decode some ids near and past the vocabulary.
fn exercise(tok: &dyn Tokenizer, extra: &str) -> Result<()> {
    for text in [
        "Hello, world! When Mary and John went to the store,",
        " 12345 ünïcödé 日本語 \t\n<|endoftext|>",
        "",
        extra,
    ] {
        let ids = tok.encode_with_bos(text, true)?;
        tok.decode(&ids)?;
    }
    let n = tok.vocab_size() as u32;
    for id in [0, 1, n.saturating_sub(1), n, n.saturating_add(7), u32::MAX] {
        // Out-of-range ids must be an Err, never a panic.
        let _ = tok.decode(&[id]);
    }
    Ok(())
}

/// A fuzzed `model.safetensors` (header, tensor table, data) next to a real config.json of
/// the family the first byte picks, through that family's loader.
pub fn safetensors(data: &[u8]) -> Result<()> {
    let Some((&b, rest)) = data.split_first() else {
        return Ok(());
    };
    let fam = Family::pick(b);
    let dir = scratch(&format!("safetensors-{}", fam.fixture()));
    companion(
        &dir,
        "config.json",
        &fixtures().join(fam.fixture()).join("config.json"),
    );
    let w = dir.join("model.safetensors");
    write(&w, rest);
    load_family(fam, &dir, &w)
}

/// A fuzzed `model.safetensors.index.json` beside the sharded Llama fixture's config and
/// shards.
pub fn safetensors_index(data: &[u8]) -> Result<()> {
    let src = fixtures().join("llama_tiny_sharded");
    let dir = scratch("safetensors_index");
    for f in [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ] {
        companion(&dir, f, &src.join(f));
    }
    let w = dir.join("model.safetensors.index.json");
    write(&w, data);
    load_family(Family::Llama, &dir, &w)
}

/// A fuzzed GGUF file (header, metadata, tensor infos, quantised blocks, vocabulary)
/// through `model::load`, as `headcode discover model.gguf` reads it, then its tokenizer.
pub fn gguf(data: &[u8]) -> Result<()> {
    let p = scratch("gguf").join("model.gguf");
    write(&p, data);
    let (_, tok) = headcode::model::load(&ModelSpec::Gguf(p), &Default::default())?;
    exercise(tok.as_ref(), "")
}

/// A fuzzed TransformerLens `.pth` (a zip holding a pickle, read by candle's pickle
/// reader) next to the TL fixture's config.json.
pub fn tl_pth(data: &[u8]) -> Result<()> {
    let Some((&b, rest)) = data.split_first() else {
        return Ok(());
    };
    let fam = if b & 1 == 0 {
        Family::TlAttnOnly
    } else {
        Family::TlShortformer
    };
    let dir = scratch(&format!("tl_pth-{}", fam.fixture()));
    companion(
        &dir,
        "config.json",
        &fixtures().join(fam.fixture()).join("config.json"),
    );
    let w = dir.join("model.pth");
    write(&w, rest);
    load_family(fam, &dir, &w)
}

/// A fuzzed config.json next to the real weights of the family the first byte picks: the
/// folder is resolved as the CLI resolves a model argument, then loaded by the family's
/// loader.
pub fn hf_config(data: &[u8]) -> Result<()> {
    let Some((&b, rest)) = data.split_first() else {
        return Ok(());
    };
    let fam = Family::pick(b);
    let dir = scratch(&format!("hf_config-{}", fam.fixture()));
    let src = fixtures().join(fam.fixture()).join("model.safetensors");
    companion(&dir, "model.safetensors", &src);
    write(&dir.join("config.json"), rest);
    // `ModelSpec::resolve` reads the config to tell Hugging Face from TransformerLens.
    let _ = ModelSpec::resolve(dir.to_str().expect("scratch paths are UTF-8"));
    load_family(fam, &dir, &dir.join("model.safetensors"))
}

/// A fuzzed tokenizer.json, loaded as the HF folder loader loads it, then used.
pub fn tokenizer_json(data: &[u8]) -> Result<()> {
    let p = scratch("tokenizer_json").join("tokenizer.json");
    write(&p, data);
    let tok = HfTokenizer::from_file(&p, None)?;
    exercise(&tok, "")
}

/// The pre-tokenizer names llama.cpp writes, and one it does not.
const PRES: [&str; 8] = [
    "gpt2",
    "smollm",
    "qwen2",
    "llama-bpe",
    "olmo",
    "default",
    "",
    "no-such-pre",
];

/// GGUF vocabularies without the GGUF container: a byte-level BPE (`from_bpe_parts`) or a
/// SentencePiece vocabulary (`SpmTokenizer::new`) built from token lists derived from the
/// input, then used.
///
/// Layout: flags byte (bit 0: SentencePiece, bits 1-3: pre-tokenizer, bit 4: BOS present,
/// bit 5: add_space_prefix), BOS byte, then three NUL-separated sections: tokens (one per
/// line), merges (BPE: one per line) or per-token type/score bytes (SentencePiece), and a
/// text to encode.
pub fn gguf_vocab(data: &[u8]) -> Result<()> {
    if data.len() < 2 {
        return Ok(());
    }
    let (flags, bos) = (data[0], data[1]);
    let mut parts = data[2..].splitn(3, |&c| c == 0);
    let tokens_raw = parts.next().unwrap_or_default();
    let second = parts.next().unwrap_or_default();
    let text = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let tokens: Vec<String> = String::from_utf8_lossy(tokens_raw)
        .split('\n')
        .map(str::to_owned)
        .collect();
    let bos_id = (flags & 0x10 != 0).then_some(u32::from(bos));
    if flags & 1 == 0 {
        let merges: Vec<String> = String::from_utf8_lossy(second)
            .split('\n')
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
            .collect();
        let pre = PRES[usize::from((flags >> 1) & 7)];
        let tok = HfTokenizer::from_bpe_parts(&tokens, &merges, pre, bos_id, "fuzz".into())?;
        exercise(&tok, &text)
    } else {
        // One byte per token: its type (llama.cpp's 1..=6, and out-of-range ones) and a
        // score; a short section leaves the lists unequal, which must be an Err.
        let token_types: Vec<i32> = second.iter().map(|&c| i32::from(c % 8)).collect();
        let scores: Vec<f32> = second
            .iter()
            .map(|&c| f32::from(c) - 128.0)
            .take(tokens.len())
            .collect();
        let tok = SpmTokenizer::new(
            tokens,
            scores,
            token_types,
            bos_id,
            flags & 0x20 != 0,
            "fuzz".into(),
        )?;
        exercise(&tok, &text)
    }
}

fn utf8(data: &[u8]) -> Option<&str> {
    // The file readers reject non-UTF-8 before parsing; only text reaches the parsers.
    std::str::from_utf8(data).ok()
}

/// A fuzzed task file (`--task FILE.jsonl`).
pub fn task_jsonl(data: &[u8]) -> Result<()> {
    let Some(text) = utf8(data) else {
        return Ok(());
    };
    headcode::tasks::jsonl::parse_jsonl(text, Path::new("fuzz.jsonl"))?;
    Ok(())
}

/// A fuzzed auto-circuit prompt file (`--task auto-circuit FILE.json`).
pub fn auto_circuit(data: &[u8]) -> Result<()> {
    let Some(text) = utf8(data) else {
        return Ok(());
    };
    headcode::tasks::jsonl::parse_auto_circuit(text, Path::new("fuzz.json"))?;
    Ok(())
}

/// A fuzzed circuit JSON (a head list, `{"heads", "edges"}`, …), checked against a few
/// model sizes and turned into a mask, as `--circuit FILE.json` is used.
pub fn circuit_json(data: &[u8]) -> Result<()> {
    let Some(text) = utf8(data) else {
        return Ok(());
    };
    let c = headcode::tasks::Circuit::from_json_str(text, "fuzz")?;
    for (l, h) in [(0, 0), (1, 1), (2, 4), (12, 12), (30, 9)] {
        if c.validate(l, h).is_ok() {
            c.mask(l, h);
        }
    }
    Ok(())
}

/// `headcode score DIR`: a fuzzed codes.json and, after the first NUL byte, a fuzzed
/// scores.json (absent when there is no NUL), re-scored by the scorer the first byte picks
/// against the circuit saved in codes.json.
pub fn score_rescore(data: &[u8]) -> Result<()> {
    use headcode::score::ScoreMethod;
    let Some((&b, rest)) = data.split_first() else {
        return Ok(());
    };
    let dir = scratch("score_rescore");
    let mut parts = rest.splitn(2, |&c| c == 0);
    write(&dir.join("codes.json"), parts.next().unwrap_or_default());
    let scores = dir.join("scores.json");
    match parts.next() {
        Some(s) => write(&scores, s),
        None => {
            let _ = std::fs::remove_file(&scores);
        }
    }
    let (method, name) = match b % 5 {
        0 => (ScoreMethod::Node { normalise: false }, "sae"),
        1 => (ScoreMethod::Node { normalise: true }, "sae-normalised"),
        2 => (ScoreMethod::Edge { k: None }, "sae-edge"),
        3 => (
            ScoreMethod::Edge {
                k: Some(usize::from(b >> 3)),
            },
            "sae-edge",
        ),
        _ => (ScoreMethod::MutualInformation, "sae-mi"),
    };
    headcode::report::summary::rescore(&dir, &method, name, None)?;
    Ok(())
}

/// `headcode compare --rescore DIR`: a fuzzed compare.json, parsed as the CLI parses it
/// (the reader is the CLI's `serde_json::from_str::<CompareResult>`; there is no library
/// reader), re-scored against a fixed circuit with edges, then written out as the CLI does.
pub fn compare_rescore(data: &[u8]) -> Result<()> {
    let Some(text) = utf8(data) else {
        return Ok(());
    };
    // The library's reader, as `compare --rescore` calls it.
    let saved = headcode::pipeline::CompareResult::from_json(text, Path::new("compare.json"))?;
    let circuit = headcode::tasks::Circuit::from_json_str(
        r#"{"heads": ["L0H1", "L1H0"], "edges": ["L0H1->L1H0.q"]}"#,
        "fuzz",
    )?;
    let r = saved.rescore(circuit)?;
    let _ = r.markdown();
    let mut out = headcode::report::out::OutDir::prepare(&scratch("compare_rescore"), true)?;
    headcode::report::compare::write_compare(&mut out, &r)?;
    Ok(())
}

/// A fuzzed MIB circuit file (EAP-IG's graph JSON), read as `--circuit FILE.json` and as
/// scores to evaluate: `mib::MibGraph::from_json`, then what `evaluate` does with it
/// (checked against a model, top-n + prune at the edge and node level), and the round trip
/// `to_json` → `from_json`, which must give the same graph back (a panic here is a finding).
pub fn mib_json(data: &[u8]) -> Result<()> {
    use headcode::mib::{MibGraph, MibLevel};
    use headcode::model::graph::CircuitGraph;
    let Some(text) = utf8(data) else {
        return Ok(());
    };
    let source = Path::new("fuzz.json");
    // `--circuit` takes the same file (and any other circuit format).
    if let Ok(c) = headcode::tasks::Circuit::from_json_str(text, "fuzz") {
        let _ = c.validate(12, 12);
    }
    let g = MibGraph::from_json(text, source)?;
    let own = g.cfg.graph();
    g.check_model(&own, g.cfg.d_model, source)?;
    let _ = g.check_model(&CircuitGraph::new(12, 12, true, true, false), 768, source);
    let _ = g.check_model(&CircuitGraph::new(2, 3, true, false, false), 16, source);
    for level in [MibLevel::Edge, MibLevel::Node] {
        let Ok(items) = g.n_items(level) else {
            continue;
        };
        for n in [0, 1, items / 2, items, items + 1] {
            for absolute in [true, false] {
                if let Ok(sel) = g.apply_topn(n, absolute, level) {
                    assert!(n <= items, "top-{n} of {items} accepted");
                    assert!(sel.n_edges() as f64 <= sel.weighted_edge_count);
                }
            }
        }
    }
    let _ = g.heads_in_graph();
    let _ = g.edge_labels_in_graph();
    let text2 = g.to_json();
    let back = MibGraph::from_json(&text2, source)
        .unwrap_or_else(|e| panic!("our own file does not read back: {e}"));
    let bits = |g: &MibGraph| {
        (
            g.scores
                .edges
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>(),
            g.scores
                .nodes
                .as_ref()
                .map(|n| n.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        )
    };
    assert!(
        back.cfg == g.cfg
            && bits(&back) == bits(&g)
            && back.edges_in_graph == g.edges_in_graph
            && back.nodes_in_graph == g.nodes_in_graph,
        "write → read is not the identity"
    );
    assert_eq!(
        back.to_json(),
        text2,
        "write → read → write changed the file"
    );
    Ok(())
}

/// With `HEADCODE_FUZZ_DEBUG` set, print each input's result (to check that the seeds
/// load, i.e. that the fuzzer starts from files the parser accepts).
pub fn show(r: Result<()>) {
    if std::env::var_os("HEADCODE_FUZZ_DEBUG").is_some() {
        match r {
            Ok(()) => eprintln!("headcode-fuzz: Ok"),
            Err(e) => eprintln!("headcode-fuzz: Err: {e}"),
        }
    }
}

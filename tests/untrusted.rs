//! Files and settings from strangers (issue 26): sizes that would size an allocation are
//! checked first, against the file or this machine's memory; values that would make
//! results meaningless are refused, each in one line naming the file or the flag.
mod common;

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use common::fixture_path;

const BIN: &str = env!("CARGO_BIN_EXE_headcode");

/// Run headcode; (success, stderr).
fn run(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Fails with exactly one line on stderr, mentioning every `must`, and no panic.
fn one_line_error(args: &[&str], must: &[&str]) -> String {
    let (ok, err) = run(args);
    assert!(!ok, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(
        !err.contains("memory allocation"),
        "{args:?} aborted in an allocation: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    for m in must {
        assert!(err.contains(m), "{args:?}: {err:?} does not mention {m:?}");
    }
    err
}

/// A copy of the fixture folder `name`.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(fixture_path(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

/// A copy of a fixture folder with `config.json` edited by `edit`.
fn with_config(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = copy_fixture(name);
    let p = dir.path().join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    edit(&mut c);
    std::fs::write(&p, c.to_string()).unwrap();
    dir
}

#[test]
fn config_sizes_are_bounded_by_the_checkpoint() {
    let t0 = Instant::now();
    for (fixture, key, value) in [
        ("llama_tiny", "num_hidden_layers", 1_000_000_000u64),
        ("llama_tiny", "num_hidden_layers", 1000),
        ("gpt2_tiny", "n_layer", 1u64 << 40),
        ("gpt2_tiny", "n_embd", 1u64 << 62),
        ("qwen2_tiny", "intermediate_size", 1u64 << 40),
        ("pythia_tiny", "vocab_size", 1u64 << 30),
        ("gemma3_tiny", "num_attention_heads", 1u64 << 20),
    ] {
        let dir = with_config(fixture, |c| c[key] = value.into());
        let p = dir.path().to_str().unwrap();
        one_line_error(&["inspect", p], &["config.json"]);
    }
    // Each refusal comes before anything the size would allocate.
    assert!(t0.elapsed() < Duration::from_secs(20));
}

#[test]
fn a_shard_outside_its_folder_is_refused() {
    let dir = copy_fixture("llama_tiny_sharded");
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {"model.embed_tokens.weight": "../../etc/passwd"}}"#,
    )
    .unwrap();
    one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["model.safetensors.index.json", "../../etc/passwd"],
    );
}

#[test]
fn non_finite_weights_are_refused_by_name() {
    let mut name = String::new();
    let dir = common::broken_gpt2(|t| {
        name = t
            .keys()
            .find(|k| k.ends_with("h.1.mlp.c_fc.weight"))
            .unwrap()
            .clone();
        let w = &t[&name];
        let mut v: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        v[7] = f32::NAN;
        let nan = Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap();
        t.insert(name.clone(), nan);
    });
    one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["model.safetensors", &name, "NaN"],
    );
}

/// A GGUF v3 header with the given u32 metadata and no tensors.
fn gguf_with(kvs: &[(&str, u32)]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(0x4655_4747u32.to_le_bytes());
    b.extend(3u32.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    b.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        b.extend((k.len() as u64).to_le_bytes());
        b.extend(k.as_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(v.to_le_bytes());
    }
    b
}

#[test]
fn hostile_gguf_headers_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.gguf");
    std::fs::write(&p, gguf_with(&[("general.alignment", 0)])).unwrap();
    one_line_error(&["inspect", p.to_str().unwrap()], &["m.gguf", "alignment"]);

    // A 1 KB file claiming a 2^40-element tensor: refused at once.
    let mut b = gguf_with(&[("general.alignment", 32)]);
    b[8..16].copy_from_slice(&1u64.to_le_bytes()); // one tensor
    let name = b"token_embd.weight";
    b.extend((name.len() as u64).to_le_bytes());
    b.extend(name);
    b.extend(2u32.to_le_bytes()); // dims
    b.extend((1u64 << 20).to_le_bytes());
    b.extend((1u64 << 20).to_le_bytes());
    b.extend(0u32.to_le_bytes()); // F32
    b.extend(0u64.to_le_bytes()); // offset
    b.resize(1024, 0);
    std::fs::write(&p, &b).unwrap();
    let t0 = Instant::now();
    one_line_error(
        &["inspect", p.to_str().unwrap()],
        &["m.gguf", "token_embd.weight"],
    );
    assert!(t0.elapsed() < Duration::from_secs(5));
}

/// A `.pth` (a zip of stored entries) holding `pickle` as its state dict.
fn pth_with(path: &Path, pickle: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opts).unwrap();
    z.write_all(pickle).unwrap();
    z.finish().unwrap();
}

#[test]
fn pickles_run_no_code_and_nest_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture_path("attn_only_tiny/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let p = dir.path().join("model.pth");
    // pickle.dumps(os.system) (protocol 2) inside an otherwise valid call.
    pth_with(
        &p,
        b"\x80\x02cposix\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85q\x02Rq\x03.",
    );
    let dirs = dir.path().to_str().unwrap();
    one_line_error(&["inspect", dirs], &["model.pth", "posix.system"]);

    let mut deep = vec![0x80, 2, b']'];
    deep.extend(std::iter::repeat_n(0x85u8, 100_000)); // TUPLE1, 10⁵ deep
    deep.push(b'.');
    pth_with(&p, &deep);
    one_line_error(&["inspect", dirs], &["model.pth", "deeper"]);
}

#[test]
fn a_truncated_or_edited_codes_json_is_an_error_not_a_panic() {
    // A run's codes.json, written by the library from hand-made codes.
    let dir = tempfile::tempdir().unwrap();
    let codes = serde_json::json!({
        "n_layers": 2, "n_heads": 2,
        "labels": ["L0H0", "L0H1", "L1H0", "L1H1"],
        "circuit": null,
        "trials": [{"codes": [0, 1, 2, 3, 1, 1, 1, 1], "examples": 2, "heads": 4,
                    "n_codes": 4, "is_pos": [true, false]}]
    });
    let p = dir.path().join("codes.json");
    let d = dir.path().to_str().unwrap();
    std::fs::write(&p, codes.to_string()).unwrap();
    assert!(run(&["score", d]).0, "the hand-made codes should score");
    for (edit, must) in [
        (r#"["labels"] = 3 labels"#, "labels"),
        ("trial heads", "heads"),
        ("is_pos short", "labels"),
        ("code out of range", "out of range"),
        ("no trials", "trials"),
    ] {
        let mut c = codes.clone();
        match edit {
            r#"["labels"] = 3 labels"# => c["labels"] = serde_json::json!(["a", "b", "c"]),
            "trial heads" => c["n_heads"] = 3.into(),
            "is_pos short" => c["trials"][0]["is_pos"] = serde_json::json!([true]),
            "code out of range" => c["trials"][0]["codes"][0] = 9.into(),
            _ => c["trials"] = serde_json::json!([]),
        }
        std::fs::write(&p, c.to_string()).unwrap();
        one_line_error(&["score", d], &["codes.json", must]);
    }
    let text = codes.to_string();
    std::fs::write(&p, &text[..text.len() / 2]).unwrap();
    one_line_error(&["score", d], &["codes.json"]);
}

#[test]
fn settings_that_mean_nothing_are_refused_before_work() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    let m = model.to_str().unwrap();
    let out = tmp.path().join("out");
    let o = out.to_str().unwrap();
    let base = ["discover", m, "--task", "ioi", "--quiet", "--out", o];
    for (extra, must) in [
        (&["--n", "1000000000"][..], "--n 1000000000"),
        (&["--n", "10", "--features", "1000000000"][..], "--features"),
        (&["--n", "10", "--lambda=-1"][..], "--lambda"),
        (
            &["--n", "10", "--circuit", "patching:threshold=NaN"][..],
            "threshold",
        ),
        (&["--n", "10", "--circuit", "patching:top=0"][..], "top"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        one_line_error(&args, &[must]);
    }
    one_line_error(
        &[
            "patch",
            m,
            "--task",
            "ioi",
            "--n",
            "2",
            "--threshold",
            "NaN",
            "--out",
            o,
        ],
        &["threshold"],
    );
}

#[test]
fn multi_token_answers_are_refused_with_their_pair() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    let task = tmp.path().join("task.jsonl");
    std::fs::write(
        &task,
        concat!(
            r#"{"clean": "When Mary and John went out, John gave it to", "corrupt": "When Mary and John went out, Anna gave it to", "answer": " Mary", "wrong_answers": [" John"]}"#,
            "\n",
            r#"{"clean": "When Mary and John went out, John gave it to", "corrupt": "When Mary and John went out, Anna gave it to", "answer": " Maryanne Smith", "wrong_answers": [" John"]}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    one_line_error(
        &[
            "discover",
            model.to_str().unwrap(),
            "--task",
            task.to_str().unwrap(),
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ],
        &["task.jsonl", "pair 1", "Maryanne Smith", "one token"],
    );
}

//! Bad input gives a one-line error naming the file (and tensor), a non-zero exit code,
//! and never a panic.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::{DType, Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], must_contain: &[&str]) {
    let (ok, _out, err) = run(args);
    assert!(!ok, "{args:?} should fail");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: expected one line, got {err:?}");
    for m in must_contain {
        assert!(err.contains(m), "{args:?}: {err:?} does not mention {m:?}");
    }
}

#[test]
fn missing_model_file() {
    assert_one_line_error(
        &["inspect", "/no/such/model.safetensors"],
        &["/no/such/model.safetensors"],
    );
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "bert", "hidden_size": 8}"#,
    )
    .unwrap();
    let p = dir.path().to_str().unwrap();
    assert_one_line_error(&["inspect", p], &["bert", "config.json"]);
}

#[test]
fn missing_tensor() {
    let dir = common::broken_gpt2(|t| {
        t.remove("transformer.h.1.attn.c_proj.weight");
    });
    assert_one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &[
            "model.safetensors",
            "transformer.h.1.attn.c_proj.weight",
            "missing",
        ],
    );
}

#[test]
fn wrong_shape() {
    let dir = common::broken_gpt2(|t| {
        t.insert(
            "transformer.h.0.mlp.c_fc.weight".into(),
            Tensor::zeros((80, 81), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    assert_one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["transformer.h.0.mlp.c_fc.weight", "[80, 81]"],
    );
}

#[test]
fn wrong_dtype() {
    let dir = common::broken_gpt2(|t| {
        t.insert(
            "transformer.ln_f.bias".into(),
            Tensor::zeros(80, DType::I64, &Device::Cpu).unwrap(),
        );
    });
    assert_one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["transformer.ln_f.bias", "dtype"],
    );
}

#[test]
fn truncated_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("gpt2_tiny/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let bytes = std::fs::read(fixture("gpt2_tiny/model.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("model.safetensors"),
        &bytes[..bytes.len() / 2],
    )
    .unwrap();
    assert_one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["model.safetensors"],
    );
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.gguf");
    std::fs::write(&p, b"GGUF\x03\x00\x00\x00\x01").unwrap();
    assert_one_line_error(&["inspect", p.to_str().unwrap()], &["broken.gguf"]);
}

#[test]
fn malformed_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
    assert_one_line_error(
        &["inspect", dir.path().to_str().unwrap()],
        &["config.json", "JSON"],
    );
}

#[test]
fn empty_prompt() {
    let p = fixture("gpt2_tiny");
    assert_one_line_error(
        &["predict", p.to_str().unwrap(), "--prompt", ""],
        &["empty prompt"],
    );
}

#[test]
fn token_outside_vocabulary() {
    // gpt2_tiny has a 300-token vocabulary but the GPT-2 tokenizer: real words fall outside it.
    let p = fixture("gpt2_tiny");
    assert_one_line_error(
        &["predict", p.to_str().unwrap(), "--prompt", "Hello world"],
        &["vocabulary"],
    );
}

#[test]
fn inspect_and_hooks_work_on_a_fixture() {
    let p = fixture("gpt2_tiny");
    let (ok, out, err) = run(&["inspect", p.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("layers        3") && out.contains("fold_ln=true"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("h.safetensors");
    // ids < 300 under GPT-2 BPE: "!" = 0, "\"" = 1 ...
    let (ok, _out, err) = run(&[
        "hooks",
        p.to_str().unwrap(),
        "--prompt",
        "a!",
        "--prompt",
        "#",
        "--hook",
        "z",
        "--reduce",
        "mean",
        "--no-bos",
        "--out",
        f.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let t = candle_core::safetensors::load(&f, &Device::Cpu).unwrap();
    assert_eq!(t["z"].dims(), &[2, 15, 16]);
    assert_eq!(t["logits"].dims(), &[2, 300]);
    assert_eq!(t["tokens"].dims(), &[2, 2]);
}

/// Built without `hub`, a repo id says what is missing (with it: tests/hub.rs).
#[test]
#[cfg(not(feature = "hub"))]
fn hub_name_without_hub_feature_says_so() {
    assert_one_line_error(&["inspect", "gpt2"], &["gpt2", "hub downloads"]);
}

/// A copy of a fixture folder with its tensors and config edited.
fn broken_family(
    name: &str,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
    edit_cfg: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap())
            .unwrap();
    edit_cfg(&mut c);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let mut t =
        candle_core::safetensors::load(fixture(name).join("model.safetensors"), &Device::Cpu)
            .unwrap();
    edit(&mut t);
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn family_checkpoints_with_missing_or_misshapen_tensors() {
    let inspect = |d: &tempfile::TempDir, must: &[&str]| {
        let p = d.path().to_str().unwrap().to_owned();
        assert_one_line_error(&["inspect", &p], must);
    };
    // Qwen2 always has q/k/v biases: one missing is an error, not a zero.
    let key = "model.layers.1.self_attn.k_proj.bias";
    let d = broken_family("qwen2_tiny", |t| drop(t.remove(key)), |_| {});
    inspect(&d, &["model.safetensors", key]);
    let key = "model.layers.0.self_attn.q_norm.weight";
    let d = broken_family(
        "gemma3_tiny",
        |t| {
            t.insert(
                key.into(),
                Tensor::ones(7, DType::F32, &Device::Cpu).unwrap(),
            );
        },
        |_| {},
    );
    inspect(&d, &["model.safetensors", key, "[7]"]);
    let key = "model.layers.2.post_feedforward_layernorm.weight";
    let d = broken_family("gemma2_tiny", |t| drop(t.remove(key)), |_| {});
    inspect(&d, &["model.safetensors", key]);
    let key = "gpt_neox.layers.0.attention.query_key_value.weight";
    let d = broken_family(
        "pythia_tiny",
        |t| {
            let w = t[key].narrow(0, 0, 200).unwrap();
            t.insert(key.into(), w);
        },
        |_| {},
    );
    inspect(&d, &["model.safetensors", key]);
}

#[test]
fn family_configs_asking_for_what_we_do_not_implement() {
    let cases: [(&str, &str, serde_json::Value, &str); 5] = [
        (
            "llama_tiny",
            "rope_scaling",
            serde_json::json!({"rope_type": "yarn", "factor": 4.0}),
            "yarn",
        ),
        (
            "gemma3_tiny",
            "rope_scaling",
            serde_json::json!({"rope_type": "dynamic", "factor": 2.0}),
            "dynamic",
        ),
        (
            "gemma2_tiny",
            "layer_types",
            serde_json::json!(["sliding_attention", "chunked_attention", "full_attention"]),
            "chunked_attention",
        ),
        (
            "pythia_tiny",
            "rotary_pct",
            serde_json::json!(1.5),
            "rotary_pct",
        ),
        (
            "qwen2_tiny",
            "hidden_act",
            serde_json::json!("swiglu_oai"),
            "swiglu_oai",
        ),
    ];
    for (name, key, value, says) in cases {
        let d = broken_family(
            name,
            |_| {},
            |c| {
                c[key] = value.clone();
            },
        );
        let p = d.path().to_str().unwrap().to_owned();
        assert_one_line_error(&["inspect", &p], &["config.json", says]);
    }
}

#[test]
fn patch_writes_effects_on_a_user_task() {
    // gpt2_tiny's vocabulary is 300 tokens: build prompts from single ASCII characters.
    let dir = tempfile::tempdir().unwrap();
    let task = dir.path().join("t.jsonl");
    std::fs::write(&task, "{\"clean\": \"a!b\", \"corrupt\": \"c!d\", \"answer\": \"e\", \"wrong_answers\": [\"f\"]}\n{\"clean\": \"g#h\", \"corrupt\": \"i#j\", \"answer\": \"k\", \"wrong_answers\": [\"l\"]}\n").unwrap();
    let out = dir.path().join("p");
    let p = fixture("gpt2_tiny");
    let (ok, stdout, err) = run(&[
        "patch",
        p.to_str().unwrap(),
        "--task",
        task.to_str().unwrap(),
        "--top",
        "3",
        "--no-bos",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("patched 15 heads"), "{stdout}");
    let c: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(out.join("circuit.json")).unwrap()).unwrap();
    assert_eq!(c.len(), 3);
    let rows = csv::Reader::from_path(out.join("patching.csv"))
        .unwrap()
        .records()
        .count();
    assert_eq!(rows, 15);
}

#[test]
fn gpu_flags_without_a_gpu_say_so() {
    let model = fixture("gpt2_tiny");
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    assert_one_line_error(
        &["discover", m, "--task", "ioi", "--out", o, "--tf32"],
        &["--tf32", "--device cuda"],
    );
    if !headcode::gpu::compiled_with_cuda() {
        assert_one_line_error(
            &[
                "discover", m, "--task", "ioi", "--out", o, "--device", "cuda",
            ],
            &["CUDA"],
        );
    }
    assert!(!out.exists(), "a refused run wrote {out:?}");
}

#[test]
fn missing_model_is_said_once() {
    let (ok, _out, err) = run(&["inspect", "/nonexistent/model-dir"]);
    assert!(!ok);
    assert_eq!(
        err.matches("no such model file or folder").count(),
        1,
        "{err}"
    );
    assert_one_line_error(
        &["bench", "--model", "/nonexistent/model-dir", "--reps", "1"],
        &["/nonexistent/model-dir"],
    );
}

#[test]
fn bench_steps_and_prompts_reach_the_cpu_stages() {
    let model = fixture("gpt2_tiny");
    let m = model.to_str().unwrap();
    let (ok, out, err) = run(&[
        "bench",
        "--model",
        m,
        "--reps",
        "1",
        "--steps",
        "3",
        "--prompts",
        "5",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("3 steps"), "{out}");
    assert!(out.contains("(5 prompts x 18 tokens)"), "{out}");
    assert!(!out.contains("20 steps"), "{out}");
    let (ok, _out, err) = run(&["bench", "--model", m, "--steps", "0"]);
    assert!(!ok);
    assert!(
        err.contains("--steps") && !err.contains("panicked"),
        "{err}"
    );
}

/// `headcode ... | head` closes the pipe early: the report lines that no longer fit are
/// dropped, and the command still succeeds instead of panicking on the failed write.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    use std::process::Stdio;
    // A pipe whose only reader has already exited, so every write to it fails (EPIPE).
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let dead = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    let model = fixture("gpt2_tiny");
    let out = Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args(["inspect", model.to_str().unwrap()])
        .stdout(Stdio::from(dead))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
}

#[test]
fn zero_batch_size_is_refused() {
    let model = fixture("gpt2_tiny");
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    for cmd in ["discover", "compare"] {
        assert_one_line_error(
            &[
                cmd,
                m,
                "--task",
                "ioi",
                "--circuit",
                "ioi",
                "--out",
                o,
                "--batch-size",
                "0",
            ],
            &["--batch-size"],
        );
    }
    assert_one_line_error(
        &[
            "compare",
            m,
            "--task",
            "ioi",
            "--circuit",
            "ioi",
            "--out",
            o,
            "--eap-batch",
            "0",
        ],
        &["--eap-batch"],
    );
    assert!(!out.exists(), "a refused run wrote {out:?}");
}

/// A GGUF (v3) with one string key and one 4×4 tensor of ggml type `ty`.
fn tiny_gguf(path: &Path, ty: u32) {
    let mut b = Vec::new();
    let s = |b: &mut Vec<u8>, x: &str| {
        b.extend((x.len() as u64).to_le_bytes());
        b.extend(x.as_bytes());
    };
    b.extend(b"GGUF");
    b.extend(3u32.to_le_bytes());
    b.extend(1u64.to_le_bytes()); // tensors
    b.extend(1u64.to_le_bytes()); // metadata
    s(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes()); // string
    s(&mut b, "llama");
    s(&mut b, "token_embd.weight");
    b.extend(2u32.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(4u64.to_le_bytes());
    b.extend(ty.to_le_bytes());
    b.extend(0u64.to_le_bytes());
    while b.len() % 32 != 0 {
        b.push(0);
    }
    b.extend([0u8; 64]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn unknown_gguf_quant_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("odd-quant.gguf");
    tiny_gguf(&p, 99);
    assert_one_line_error(&["inspect", p.to_str().unwrap()], &["odd-quant.gguf", "99"]);
}

/// `predict --top k` shows tokens that hold part of a UTF-8 character as their bytes
/// instead of failing (GPT-2's vocabulary has one token per byte 0x80-0xFF, 128 of them).
#[test]
fn predict_shows_partial_characters() {
    let fx = fixture("gpt2_tiny");
    let (ok, out, err) = run(&[
        "predict",
        fx.to_str().unwrap(),
        "--prompt",
        "a",
        "--no-bos",
        "--top",
        "300",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 301, "{out}");
    assert!(out.contains("\"<0x"), "{out}");
}

/// `evaluate`'s bad input: a missing score file, scores for another model, NaN scores and
/// circuit sizes out of order, each one line naming the file or the value.
#[test]
fn evaluate_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("gpt2_tiny");
    let m = model.to_str().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    assert_one_line_error(
        &[
            "evaluate",
            m,
            "--task",
            "ioi",
            "--scores",
            "/no/such/importances.json",
            "--out",
            o,
        ],
        &["/no/such/importances.json"],
    );
    // A graph of another shape.
    let other = headcode::model::graph::CircuitGraph::new(3, 2, true, true, false);
    let scores = headcode::mib::MibScores::from_importance(&vec![0.5; other.n_edges()], None);
    let g = headcode::mib::MibGraph::new(&other, 8, scores).unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, g.to_json()).unwrap();
    assert_one_line_error(
        &[
            "evaluate",
            m,
            "--task",
            "ioi",
            "--scores",
            wrong.to_str().unwrap(),
            "--out",
            o,
        ],
        &["wrong.json"],
    );
    // NaN in an edge score of the right graph (Python's json writes NaN as a bare token).
    let tiny = common::fixture("gpt2_tiny");
    let right = headcode::model::graph::CircuitGraph::for_model(&tiny, true);
    let scores = headcode::mib::MibScores::from_importance(&vec![0.5; right.n_edges()], None);
    let good = headcode::mib::MibGraph::new(&right, tiny.cfg.d_model, scores).unwrap();
    let nan = dir.path().join("nan.json");
    let text = good.to_json();
    let i = text.find("\"score\": ").unwrap() + "\"score\": ".len();
    let j = i + text[i..].find([',', '}']).unwrap();
    std::fs::write(&nan, format!("{}NaN{}", &text[..i], &text[j..])).unwrap();
    assert_one_line_error(
        &[
            "evaluate",
            m,
            "--task",
            "ioi",
            "--scores",
            nan.to_str().unwrap(),
            "--out",
            o,
        ],
        &["nan.json", "score"],
    );
    assert_one_line_error(
        &[
            "evaluate",
            m,
            "--task",
            "ioi",
            "--scores",
            wrong.to_str().unwrap(),
            "--percentages",
            "0,50,20,100",
            "--out",
            o,
        ],
        &["increase"],
    );
}

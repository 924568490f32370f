//! Every reproducer the fuzzers found (`tests/fuzz_regressions/<target>/*.bin`, listed in
//! fuzz/CRASHES.md) through the same driver as its fuzz target: each must give `Ok` or
//! `Err`, never a panic or an allocation abort.
//!
//! Each file runs in a child process (this test binary re-run with `HEADCODE_FUZZ_ONE`), so
//! an abort fails one file's check instead of killing the test binary, and under a 2 GiB
//! address-space limit, so a length field that asks for terabytes fails here as it fails
//! under the fuzzer's `-malloc_limit_mb` instead of passing on an overcommitting machine.
#[path = "../fuzz/src/drivers.rs"]
mod drivers;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The child's side: run one file through one driver, then leave.
fn child() -> bool {
    let Ok(spec) = std::env::var("HEADCODE_FUZZ_ONE") else {
        return false;
    };
    let (target, file) = spec.split_once('=').expect("HEADCODE_FUZZ_ONE=target=file");
    let data = std::fs::read(file).expect("reading the reproducer");
    let r = drivers::run(target, &data);
    drivers::remove_scratch();
    println!(
        "headcode-fuzz-result: {}",
        if r.is_ok() { "Ok" } else { "Err" }
    );
    true
}

/// The test the child runs; does nothing in a normal test run.
#[test]
fn zz_child_entry() {
    child();
}

fn check(target: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
        // No crash found for this target: nothing to re-run.
        Err(_) => return,
    };
    files.sort();
    let exe = std::env::current_exe().unwrap();
    let mut failed = Vec::new();
    for f in &files {
        // `ulimit -v` in KiB: 2 GiB of address space, as the fuzzers' 2048 MB RSS limit.
        let out = Command::new("sh")
            .arg("-c")
            .arg(r#"ulimit -v 2097152; exec "$0" "$@""#)
            .arg(&exe)
            .args([
                "zz_child_entry",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "HEADCODE_FUZZ_ONE",
                format!("{target}={}", f.to_str().unwrap()),
            )
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("headcode-fuzz-result:") {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // The panic message (the line after "panicked at"), else the allocator's
            // complaint, else the last line.
            let lines: Vec<&str> = stderr.lines().collect();
            let why = lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .map(|i| format!("{} {}", lines[i], lines.get(i + 1).unwrap_or(&"")))
                .or_else(|| {
                    let l = lines.iter().find(|l| l.contains("memory allocation"));
                    l.map(|l| l.to_string())
                })
                .or_else(|| lines.last().map(|l| l.to_string()))
                .unwrap_or_else(|| "no message".into());
            failed.push(format!("{}: {} ({why})", f.display(), out.status));
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} reproducers still crash:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn safetensors() {
    check("safetensors");
}

#[test]
fn safetensors_index() {
    check("safetensors_index");
}

#[test]
fn gguf() {
    check("gguf");
}

#[test]
fn tl_pth() {
    check("tl_pth");
}

#[test]
fn hf_config() {
    check("hf_config");
}

#[test]
fn tokenizer_json() {
    check("tokenizer_json");
}

#[test]
fn gguf_vocab() {
    check("gguf_vocab");
}

#[test]
fn task_jsonl() {
    check("task_jsonl");
}

#[test]
fn auto_circuit() {
    check("auto_circuit");
}

#[test]
fn circuit_json() {
    check("circuit_json");
}

#[test]
fn score_rescore() {
    check("score_rescore");
}

#[test]
fn compare_rescore() {
    check("compare_rescore");
}

#[test]
fn mib_json() {
    check("mib_json");
}

/// Every fuzz target has a test above (a new target needs one).
#[test]
fn every_target_is_checked() {
    let src = include_str!("fuzz_regressions.rs");
    for t in drivers::TARGETS {
        assert!(
            src.contains(&format!("fn {t}() {{\n    check(\"{t}\");")),
            "no test for fuzz target {t}"
        );
    }
}

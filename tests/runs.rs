//! Runs are never lost or silently mixed (docs/runs.md): `--out` is checked before any
//! work, a folder holding a run is refused unless `--force` (which then leaves no stale
//! file), Ctrl-C stops a run within about a second with exit code 130, and a run killed at
//! any point leaves no truncated file under a final name.
mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_headcode");

/// A `discover` on the wide model whose time goes mostly to `steps` SAE steps (500: about
/// 1.5 s on one core), writing many files (the SAEs, the activations).
fn discover_args(model: &Path, out: &Path, steps: usize) -> Vec<String> {
    let mut a: Vec<String> = [
        "discover",
        model.to_str().unwrap(),
        "--task",
        "ioi",
        "--n",
        "40",
        "--steps",
        &steps.to_string(),
        "--trials",
        "2",
        "--faithfulness",
        "none",
        "--save-sae",
        "--save-activations",
        "--quiet",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(out.to_str().unwrap().to_string());
    a
}

fn run(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn is_tmp(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name.starts_with('.') && name.contains(".tmp-")
}

/// Every file under a final name is whole: JSON parses, safetensors load, CSV has rows.
fn assert_whole(dir: &Path) {
    for f in files(dir).iter().filter(|f| !is_tmp(f)) {
        let p = dir.join(f);
        let bytes = std::fs::read(&p).unwrap();
        assert!(!bytes.is_empty(), "{f} is empty");
        if f.ends_with(".json") {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .unwrap_or_else(|e| panic!("{f} is not whole JSON: {e}"));
        } else if f.ends_with(".safetensors") {
            candle_core::safetensors::load(&p, &candle_core::Device::Cpu)
                .unwrap_or_else(|e| panic!("{f} is not a whole safetensors file: {e}"));
        } else if f.ends_with(".svg") {
            assert!(
                bytes.ends_with(b"</svg>\n") || bytes.ends_with(b"</svg>"),
                "{f}"
            );
        }
    }
}

#[test]
fn bad_out_fails_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a folder").unwrap();
    // A model that does not exist: the error names --out, so --out was checked first.
    let model = tmp.path().join("no-such-model");
    for (cmd, extra) in [
        ("discover", &["--task", "ioi"][..]),
        ("compare", &["--task", "ioi", "--circuit", "ioi"][..]),
        ("patch", &["--task", "ioi"][..]),
    ] {
        for (out, says) in [
            (file.join("run"), "is a file"),
            (file.clone(), "not a folder"),
        ] {
            let t0 = Instant::now();
            let o = Command::new(BIN)
                .arg(cmd)
                .arg(&model)
                .args(extra)
                .arg("--out")
                .arg(&out)
                .output()
                .unwrap();
            let dt = t0.elapsed();
            let err = stderr(&o);
            assert!(!o.status.success(), "{cmd}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{cmd}: {err}");
            assert!(
                err.contains(out.to_str().unwrap()) && err.contains(says),
                "{cmd}: {err}"
            );
            assert!(!err.contains("no-such-model"), "{cmd}: {err}");
            assert!(dt < Duration::from_secs(2), "{cmd} took {dt:?}");
        }
    }
    // A folder we may not write to (skipped as root, who may write anywhere).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = tmp.path().join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), "").is_err() {
            let o = Command::new(BIN)
                .args([
                    "discover",
                    model.to_str().unwrap(),
                    "--task",
                    "ioi",
                    "--out",
                ])
                .arg(&ro)
                .output()
                .unwrap();
            let err = stderr(&o);
            assert!(err.contains("cannot write here"), "{err}");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn an_existing_run_is_refused_and_force_replaces_it_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    let out = tmp.path().join("run");
    let quick = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "discover",
            model.to_str().unwrap(),
            "--task",
            "ioi",
            "--n",
            "12",
            "--steps",
            "20",
            "--faithfulness",
            "none",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // An empty folder is fine.
    std::fs::create_dir_all(&out).unwrap();
    let o = run(&quick(&["--save-sae", "--save-activations"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let first = files(&out);
    assert!(first.iter().any(|f| f == "activations.safetensors"));
    assert!(first.iter().any(|f| f.starts_with("saes/")));
    // `headcode score` leaves a file of the run there too, and the user one of their own.
    let o = Command::new(BIN)
        .args(["score", out.to_str().unwrap(), "--mi"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(out.join("my-notes.txt"), "keep me").unwrap();
    std::fs::write(out.join("saes/my-notes.txt"), "keep me too").unwrap();
    let before = files(&out);

    // Refused, untouched, before any work: a one-line error naming the folder and --force.
    let t0 = Instant::now();
    let o = run(&quick(&[]));
    let err = stderr(&o);
    assert!(!o.status.success());
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    for says in [
        out.to_str().unwrap(),
        "already holds a headcode run",
        "--force",
    ] {
        assert!(err.contains(says), "{err}");
    }
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(files(&out), before);
    // `compare` and `patch` refuse it too.
    for args in [
        &["compare", "--task", "ioi", "--circuit", "ioi"][..],
        &["patch", "--task", "ioi"][..],
    ] {
        let o = Command::new(BIN)
            .arg(args[0])
            .arg(&model)
            .args(&args[1..])
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    }

    // --force, without the SAEs and activations: none of the old run's files survive.
    let o = run(&quick(&["--force", "--seed", "7"]));
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("note: --force: replaced the earlier run"),
        "{err}"
    );
    assert!(err.contains("activations.safetensors"), "{err}");
    let after = files(&out);
    for gone in ["activations.safetensors", "rescore-sae-mi.csv"] {
        assert!(
            !after.iter().any(|f| f == gone),
            "{gone} survived: {after:?}"
        );
    }
    assert!(
        !after
            .iter()
            .any(|f| f.starts_with("saes/") && f != "saes/my-notes.txt"),
        "{after:?}"
    );
    assert!(after.iter().any(|f| f == "my-notes.txt"), "{after:?}");
    assert!(after.iter().any(|f| f == "saes/my-notes.txt"), "{after:?}");
    assert!(!after.iter().any(|f| is_tmp(f)), "{after:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    assert_eq!(m["seeds"][0], 7);
    assert_whole(&out);
}

/// Sends SIGINT to a running `discover`: it stops within about a second, exits 130, says
/// nothing was written, and leaves neither results nor temporary files.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_a_run_quickly() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    let out = tmp.path().join("run");
    let mut child = Command::new(BIN)
        .args(discover_args(&model, &out, 5000))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended too soon"
    );
    let t0 = Instant::now();
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let o = child.wait_with_output().unwrap();
    let dt = t0.elapsed();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(dt < Duration::from_millis(1500), "took {dt:?} to stop");
    assert_eq!(
        err.trim(),
        format!("interrupted: nothing written to {}", out.display()),
        "{err}"
    );
    assert!(!out.exists() || files(&out).is_empty(), "{:?}", files(&out));
    eprintln!("stopped {dt:?} after SIGINT");
}

/// Kills (SIGKILL) a real `discover` at seeded random points over its run time, each into a
/// fresh folder or over an earlier complete run with --force: the folder then holds either
/// no run (no marker, no truncated file under a final name) or one complete run, the
/// earlier or the new, exactly its files and all whole (plus `.tmp-` leftovers).
#[cfg(unix)]
#[test]
fn a_killed_run_leaves_no_truncated_file() {
    let tmp = tempfile::tempdir().unwrap();
    let model = common::wide_gpt2(tmp.path());
    // The earlier run (seed 9), twice: the faster time is the closer to a run alone, as
    // the killed ones mostly run (the first shares the cores with the other tests).
    let full = tmp.path().join("full");
    let mut total = Duration::MAX;
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&full);
        let mut args = discover_args(&model, &full, 500);
        args.extend(["--seed".into(), "9".into()]);
        let t0 = Instant::now();
        let o = run(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        total = total.min(t0.elapsed());
    }
    assert_whole(&full);
    let run_files = files(&full);
    eprintln!("full run: {total:?}");
    let seed_of = |dir: &Path| -> u64 {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("scores.json")).unwrap()).unwrap();
        m["seeds"][0].as_u64().unwrap()
    };
    let mut s = 2024u64;
    let kills = 10;
    for i in 0..kills {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        // One point in each tenth of 5-95 % of the run.
        let frac = (i as f64 + ((s >> 40) as f64 / (1u64 << 24) as f64)) / kills as f64;
        let at = total.mul_f64(0.05 + 0.9 * frac);
        let out = tmp.path().join(format!("k{i}"));
        let force = i % 2 == 1;
        let mut args = discover_args(&model, &out, 500);
        if force {
            std::fs::create_dir_all(&out).unwrap();
            for f in &run_files {
                let d = out.join(f);
                std::fs::create_dir_all(d.parent().unwrap()).unwrap();
                std::fs::copy(full.join(f), d).unwrap();
            }
            args.push("--force".into());
        }
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(at);
        let _ = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status();
        let _ = child.wait();
        assert_whole(&out);
        let left: Vec<String> = files(&out).into_iter().filter(|f| !is_tmp(f)).collect();
        let state = if left.iter().any(|f| f == "scores.json") {
            // One complete run, nothing of another mixed in.
            assert_eq!(left, run_files, "kill {i} at {at:?}");
            match seed_of(&out) {
                0 => "the new run",
                9 => "the earlier run",
                s => panic!("kill {i}: seed {s}"),
            }
        } else {
            "no run"
        };
        eprintln!(
            "kill {i} at {at:?} (force {force}): {state}, {} .tmp- files",
            files(&out).len() - left.len()
        );
    }
}

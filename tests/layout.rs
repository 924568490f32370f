//! The layering the code is organised by (docs/layout.md), checked on the sources: the GPU
//! backend imports nothing above it, the library never imports the CLI, and the binary
//! stays thin.
use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Lines of `dir`'s sources that name one of `modules` as `crate::<module>`.
fn uses(dir: &Path, modules: &[&str]) -> Vec<String> {
    let mut hits = Vec::new();
    for p in sources(dir) {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for m in modules {
                if code.contains(&format!("crate::{m}")) {
                    hits.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                }
            }
        }
    }
    hits
}

#[test]
fn the_gpu_backend_imports_nothing_above_it() {
    let hits = uses(
        &root().join("gpu"),
        &["pipeline", "report", "check", "bench", "cli"],
    );
    assert!(hits.is_empty(), "{hits:#?}");
}

#[test]
fn the_pipeline_and_report_do_not_import_the_checks_or_benches() {
    for d in ["pipeline", "report"] {
        let hits = uses(&root().join(d), &["check", "bench", "cli"]);
        assert!(hits.is_empty(), "{hits:#?}");
    }
}

#[test]
fn the_binary_is_thin() {
    let main = std::fs::read_to_string(root().join("main.rs")).unwrap();
    assert!(main.lines().count() <= 400);
    // The library never reaches into the CLI.
    let lib = std::fs::read_to_string(root().join("lib.rs")).unwrap();
    assert!(!lib.contains("mod cli"));
}

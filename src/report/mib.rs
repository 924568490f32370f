//! MIB submission folders (`--mib DIR`): `DIR/<method>/<task>_<model>/importances.json`, one
//! EAP-IG graph file per method (the layout MIB-circuit-track's evaluation reads). Edge-level
//! methods (EAP, EAP-IG, ACDC's edge modes) write edge scores with nothing `in_graph`, as
//! EAP-IG's `attribute` leaves a graph; head-only methods write node scores with every edge
//! `in_graph`, as MIB's node-level examples do.
use super::out::OutDir;
use crate::error::Result;
use crate::mib::{submission_file, MibGraph, MibLevel, MibScores};
use crate::model::graph::CircuitGraph;

/// A name as one part of MIB's `<task>_<model>` (MIB splits on `_`): lower case, `_` and
/// anything but letters, digits, `-` and `.` replaced by `-`.
pub fn mib_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// The folder name of a method: what `compare --methods` (or the scorer) calls it, without
/// the setting in brackets (`sae (sae)` → `sae`, `acdc (heads)` → `acdc`).
pub fn mib_method(row: &str) -> String {
    mib_part(row.split(" (").next().unwrap_or(row).trim())
}

/// Writes one importances.json per method into `out` and commits; returns the paths
/// written (relative to `out`).
pub fn write_mib(
    out: &mut OutDir,
    task: &str,
    model: &str,
    graph: &CircuitGraph,
    d_model: usize,
    methods: &[(String, MibScores, MibLevel)],
) -> Result<Vec<String>> {
    let mut files = Vec::with_capacity(methods.len());
    for (name, scores, level) in methods {
        let mut g = MibGraph::new(graph, d_model, scores.clone())?;
        if *level == MibLevel::Node {
            g.include_all();
        }
        let rel = submission_file(
            std::path::Path::new(""),
            &mib_method(name),
            &mib_part(task),
            &mib_part(model),
        );
        out.write(&rel, g.to_json())?;
        files.push(rel.display().to_string());
    }
    out.commit()?;
    Ok(files)
}

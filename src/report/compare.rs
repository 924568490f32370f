//! The files `compare` leaves: `compare.json` (everything), `compare.md` (the table),
//! `roc.svg` (every method's ROC over heads) and, with ACDC, `acdc_circuits.json` (each
//! threshold's heads, edges and metric, with labels).
use super::out::OutDir;
use super::svg;
use crate::error::Result;
use crate::pipeline::CompareResult;

/// Write the run's files into `out` and commit them (`compare.json`, the marker, last);
/// returns their names.
pub fn write_compare(out: &mut OutDir, r: &CompareResult) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut j = serde_json::to_value(r)?;
    j["headcode_version"] = env!("CARGO_PKG_VERSION").into();
    out.write("compare.json", serde_json::to_string_pretty(&j)?)?;
    files.push("compare.json".to_string());
    out.write("compare.md", r.markdown())?;
    files.push("compare.md".to_string());
    let series: Vec<(String, Vec<(f32, f32)>)> = r
        .rows
        .iter()
        .filter_map(|row| {
            r.roc.get(&row.method).map(|c| {
                (
                    format!("{} ({:.3})", row.method, row.node_auc),
                    c.fpr
                        .iter()
                        .zip(&c.tpr)
                        .map(|(&x, &y)| (x as f32, y as f32))
                        .collect(),
                )
            })
        })
        .collect();
    out.write(
        "roc.svg",
        svg::lines(
            &format!(
                "ROC over heads against {}",
                super::short_name(&r.circuit.name)
            ),
            "false positive rate",
            "true positive rate",
            &series,
            true,
        ),
    )?;
    files.push("roc.svg".to_string());
    if let Some(a) = &r.acdc {
        let labels = &r.labels;
        let graph = a.graph();
        let runs: Vec<serde_json::Value> = a
            .runs
            .iter()
            .map(|run| {
                serde_json::json!({
                    "threshold": run.threshold,
                    "metric": run.metric,
                    "metric_recomputed": run.metric_recomputed,
                    "heads": run.heads.iter().map(|&(l, h)| labels[l * a.n_heads + h].clone()).collect::<Vec<_>>(),
                    "edges": graph.as_ref().map(|g| run.kept_edges.iter().map(|&e| g.edge_label(e as usize)).collect::<Vec<_>>()),
                })
            })
            .collect();
        let j = serde_json::json!({
            "granularity": a.config.granularity,
            "metric": a.config.metric,
            "metric_full": a.metric_full,
            "metric_all_cut": a.metric_all_cut,
            "runs": runs,
        });
        out.write("acdc_circuits.json", serde_json::to_string_pretty(&j)?)?;
        files.push("acdc_circuits.json".to_string());
    }
    out.commit()?;
    Ok(files)
}

//! The files `evaluate` leaves: `evaluation.json` (both curves, CPR, CMD, edge counts, the
//! settings) and `faithfulness.svg` (faithfulness against the circuit's edge fraction).
use super::out::OutDir;
use super::svg;
use crate::error::Result;
use crate::pipeline::evaluate::{Evaluation, MethodCurves};

/// The two curves of one or more methods as SVG series.
pub fn curve_series(curves: &[(&str, &MethodCurves)]) -> Vec<(String, Vec<(f32, f32)>)> {
    let mut series = Vec::new();
    for (name, c) in curves {
        for (curve, what, area) in [
            (&c.signed, "signed, CPR", c.cpr),
            (&c.absolute, "|score|, CMD", c.cmd),
        ] {
            series.push((
                format!("{name} ({what} {area:.3})"),
                curve
                    .points
                    .iter()
                    .map(|p| (p.edge_fraction as f32, p.faithfulness as f32))
                    .collect(),
            ));
        }
    }
    series
}

/// Write `evaluation.json` and `faithfulness.svg` into `out` and commit; returns their names.
pub fn write_evaluation(out: &mut OutDir, e: &Evaluation, name: &str) -> Result<Vec<String>> {
    let mut j = serde_json::to_value(e)?;
    j["headcode_version"] = env!("CARGO_PKG_VERSION").into();
    out.write("evaluation.json", serde_json::to_string_pretty(&j)?)?;
    out.write(
        "faithfulness.svg",
        svg::lines(
            &format!(
                "Faithfulness of {name}'s circuits ({} ablation, {} pairs)",
                e.ablation.name(),
                e.pairs
            ),
            "edges in the circuit (fraction of all edges)",
            "faithfulness",
            &curve_series(&[(name, &e.curves)]),
            false,
        ),
    )?;
    out.commit()?;
    Ok(vec!["evaluation.json".into(), "faithfulness.svg".into()])
}

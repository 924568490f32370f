//! Small self-contained SVG plots (no fonts or system libraries needed): a layers × heads
//! heatmap with circuit heads outlined, ROC curves, and line plots.
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Sequential colour ramp (white → dark blue) for t in [0, 1].
fn ramp(t: f32) -> String {
    let t = t.clamp(0.0, 1.0);
    let (r0, g0, b0) = (247.0, 251.0, 255.0);
    let (r1, g1, b1) = (8.0, 48.0, 107.0);
    let m = |a: f32, b: f32| (a + (b - a) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", m(r0, r1), m(g0, g1), m(b0, b1))
}

/// Heatmap of `values` (layer-major, `n_layers` × `n_heads`); `outlined` heads get a red
/// border (the ground-truth circuit).
pub fn heatmap(
    title: &str,
    values: &[f32],
    n_layers: usize,
    n_heads: usize,
    outlined: &[bool],
) -> String {
    let cell = (560.0 / n_heads.max(1) as f32).clamp(10.0, 40.0);
    let (ml, mt) = (50.0, 40.0);
    let w = ml + cell * n_heads as f32 + 90.0;
    let h = mt + cell * n_layers as f32 + 40.0;
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{ml}" y="20" font-size="14">{}</text>"#,
        esc(title)
    );
    for l in 0..n_layers {
        let y = mt + l as f32 * cell;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">L{l}</text>"#,
            ml - 4.0,
            y + cell * 0.65
        );
        for hd in 0..n_heads {
            let i = l * n_heads + hd;
            let v = values.get(i).copied().unwrap_or(0.0);
            let x = ml + hd as f32 * cell;
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{}"><title>L{l}H{hd}: {v:.4}</title></rect>"#,
                ramp((v - lo) / span)
            );
            if outlined.get(i).copied().unwrap_or(false) {
                let _ = write!(
                    s,
                    r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#d62728" stroke-width="2"/>"##,
                    x + 1.0,
                    y + 1.0,
                    cell - 2.0,
                    cell - 2.0
                );
            }
        }
    }
    for hd in 0..n_heads {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{hd}</text>"#,
            ml + (hd as f32 + 0.5) * cell,
            mt - 4.0
        );
    }
    let bx = ml + cell * n_heads as f32 + 20.0;
    for k in 0..20 {
        let t = 1.0 - k as f32 / 19.0;
        let _ = write!(
            s,
            r#"<rect x="{bx}" y="{}" width="14" height="{}" fill="{}"/>"#,
            mt + k as f32 * 8.0,
            8.0,
            ramp(t)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}">{hi:.3}</text>"#,
        bx + 18.0,
        mt + 8.0
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}">{lo:.3}</text>"#,
        bx + 18.0,
        mt + 160.0
    );
    let _ = write!(
        s,
        r#"<text x="{ml}" y="{}">red outline: ground-truth circuit</text>"#,
        h - 10.0
    );
    s.push_str("</svg>");
    s
}

const COLOURS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// Line plot of several named series of (x, y) points.
pub fn lines(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f32, f32)>)],
    diagonal: bool,
) -> String {
    let (w, h, ml, mr, mt, mb) = (560.0f32, 420.0f32, 60.0f32, 170.0f32, 40.0f32, 50.0f32);
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if x.is_finite() && y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if diagonal {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    y0 = y0.min(0.0);
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let sx = |x: f32| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f32| mt + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        s,
        r#"<text x="{ml}" y="22" font-size="14">{}</text>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=4 {
        let fx = x0 + (x1 - x0) * k as f32 / 4.0;
        let fy = y0 + (y1 - y0) * k as f32 / 4.0;
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{fx:.2}</text>"#,
            sx(fx),
            mt + ph + 15.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{fy:.2}</text>"#,
            ml - 4.0,
            sy(fy) + 4.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        ml + pw / 2.0,
        h - 10.0,
        esc(xlabel)
    );
    let _ = write!(
        s,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(ylabel)
    );
    if diagonal {
        let _ = write!(
            s,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#aaa" stroke-dasharray="4 3"/>"##,
            sx(0.0),
            sy(0.0),
            sx(1.0),
            sy(1.0)
        );
    }
    for (k, (name, p)) in series.iter().enumerate() {
        let c = COLOURS[k % COLOURS.len()];
        let path: Vec<String> = p
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = mt + 14.0 + k as f32 * 16.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/>"#,
            w - mr + 10.0,
            w - mr + 30.0
        );
        let _ = write!(
            s,
            r#"<text x="{}" y="{}">{}</text>"#,
            w - mr + 34.0,
            ly + 4.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_has_one_cell_per_head_and_outlines() {
        let v: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let mut o = vec![false; 12];
        o[5] = true;
        let s = heatmap("t <x>", &v, 3, 4, &o);
        assert_eq!(s.matches("<title>").count(), 12);
        assert_eq!(s.matches("stroke=\"#d62728\"").count(), 1);
        assert!(s.contains("t &lt;x&gt;"));
    }

    #[test]
    fn lines_plot_every_series() {
        let s = lines(
            "roc",
            "fpr",
            "tpr",
            &[
                ("a".into(), vec![(0.0, 0.0), (1.0, 1.0)]),
                ("b".into(), vec![]),
            ],
            true,
        );
        assert_eq!(s.matches("<polyline").count(), 2);
    }
}

//! Small self-contained SVG plots (no fonts or system libraries needed): a layers × heads
//! heatmap with circuit heads outlined, ROC curves, and line plots.
use std::fmt::Write as _;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Average glyph width of the sans-serif text, as a fraction of the font size: enough to
/// keep a title inside the picture without measuring fonts.
const GLYPH: f32 = 0.6;

/// `text` broken at spaces into lines no wider than `width` pixels at `size` px; a word
/// longer than a line is cut with an ellipsis.
fn wrap(text: &str, width: f32, size: f32) -> Vec<String> {
    let max = ((width / (GLYPH * size)).floor() as usize).max(8);
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let word: String = if word.chars().count() > max {
            word.chars().take(max - 1).chain(['…']).collect()
        } else {
            word.to_string()
        };
        if !cur.is_empty() && cur.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&word);
    }
    if !cur.is_empty() || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

/// The title as `<text>` lines from baseline `y`, 14 px, wrapped to `width`; returns the
/// height it takes.
fn title(s: &mut String, text: &str, x: f32, y: f32, width: f32) -> f32 {
    let size = 14.0;
    let lines = wrap(text, width, size);
    for (i, line) in lines.iter().enumerate() {
        let _ = write!(
            s,
            r#"<text x="{x}" y="{}" font-size="{size}">{}</text>"#,
            y + i as f32 * (size + 3.0),
            esc(line)
        );
    }
    lines.len() as f32 * (size + 3.0)
}

/// Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about `n` of them.
/// Returns the ticks; the first and last bound the axis.
fn nice_ticks(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    let (lo, hi) = if hi > lo { (lo, hi) } else { (lo, lo + 1.0) };
    let raw = (hi - lo) / n.max(1) as f32;
    let mag = 10f32.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&st| st >= raw * 0.999)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).floor() as i64;
    let last = (hi / step).ceil() as i64;
    (first..=last).map(|i| i as f32 * step).collect()
}

/// A tick label with no more decimals than the step needs.
fn tick_label(v: f32, step: f32) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    };
    let v = if v.abs() < step * 1e-3 { 0.0 } else { v };
    format!("{v:.decimals$}")
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
    let ml = 50.0;
    let w = (ml + cell * n_heads as f32 + 90.0).max(300.0);
    // The title wraps to the picture's width; the grid starts below it.
    let title_lines = wrap(title, w - ml - 10.0, 14.0).len() as f32;
    let mt = 23.0 + title_lines * 17.0;
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
    self::title(&mut s, title, ml, 20.0, w - ml - 10.0);
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

/// Ten distinct colours (matplotlib's tab10); past ten, the colours repeat with a dash
/// pattern, so no two curves look alike.
const COLOURS: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
const DASHES: [&str; 3] = ["", "7 3", "2 2"];

/// Colour and dash pattern of series `k`.
fn style(k: usize) -> (&'static str, &'static str) {
    (
        COLOURS[k % COLOURS.len()],
        DASHES[(k / COLOURS.len()) % DASHES.len()],
    )
}

/// Line plot of several named series of (x, y) points.
pub fn lines(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f32, f32)>)],
    diagonal: bool,
) -> String {
    let (w, ml, mr, mb) = (560.0f32, 60.0f32, 170.0f32, 50.0f32);
    let title_h = wrap(title, w - ml - 10.0, 14.0).len() as f32 * 17.0;
    let mt = 23.0 + title_h;
    let h = 380.0 + title_h;
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
    // Axes end on round ticks.
    let xt = nice_ticks(x0, x1, 5);
    let yt = nice_ticks(y0, y1, 5);
    let (x0, x1) = (xt[0], xt[xt.len() - 1]);
    let (y0, y1) = (yt[0], yt[yt.len() - 1]);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let sx = |x: f32| ml + (x - x0) / (x1 - x0) * pw;
    let sy = |y: f32| mt + ph - (y - y0) / (y1 - y0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    self::title(&mut s, title, ml, 22.0, w - ml - 10.0);
    let _ = write!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    let xstep = xt.get(1).map_or(1.0, |v| v - xt[0]);
    for &fx in &xt {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            sx(fx),
            mt + ph + 15.0,
            tick_label(fx, xstep)
        );
    }
    let ystep = yt.get(1).map_or(1.0, |v| v - yt[0]);
    for &fy in &yt {
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            ml - 4.0,
            sy(fy) + 4.0,
            tick_label(fy, ystep)
        );
        if y0 < 0.0 && fy == 0.0 {
            let _ = write!(
                s,
                r##"<line x1="{ml}" y1="{0}" x2="{1}" y2="{0}" stroke="#ccc"/>"##,
                sy(0.0),
                ml + pw
            );
        }
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
        let (c, dash) = style(k);
        let dash = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let path: Vec<String> = p
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| format!("{:.2},{:.2}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2"{dash} points="{}"/>"#,
            path.join(" ")
        );
        let ly = mt + 14.0 + k as f32 * 16.0;
        let _ = write!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"{dash}/>"#,
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

    #[test]
    fn every_curve_of_twelve_looks_different() {
        let styles: Vec<_> = (0..12).map(style).collect();
        for i in 0..12 {
            for j in 0..i {
                assert_ne!(styles[i], styles[j], "series {i} and {j}");
            }
        }
    }

    #[test]
    fn ticks_are_round() {
        // the faithfulness curve that was ticked at -0.68, -0.26, 0.16, 0.58
        let t = nice_ticks(-0.68, 1.0, 5);
        let step = t[1] - t[0];
        let labels: Vec<String> = t.iter().map(|&v| tick_label(v, step)).collect();
        assert_eq!(labels, ["-1.0", "-0.5", "0.0", "0.5", "1.0"]);
        let t = nice_ticks(-0.68, 1.0, 10);
        let labels: Vec<String> = t.iter().map(|&v| tick_label(v, t[1] - t[0])).collect();
        assert_eq!(
            labels,
            ["-0.8", "-0.6", "-0.4", "-0.2", "0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
        );
        assert_eq!(nice_ticks(0.0, 270.0, 5), [0.0, 100.0, 200.0, 300.0]);
        assert_eq!(nice_ticks(0.0, 1.0, 5), [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
    }

    #[test]
    fn long_titles_wrap_inside_the_picture() {
        let long = "sae score per head (ioi on SmolLM2-135M-Instruct.Q4_1, a name that goes on and on and on)";
        let s = heatmap(long, &[0.0; 270], 30, 9, &[false; 270]);
        let width: f32 = s
            .split("width=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        for line in wrap(long, width - 60.0, 14.0) {
            assert!(
                line.chars().count() as f32 * GLYPH * 14.0 <= width - 50.0,
                "{line}"
            );
        }
        assert!(wrap(long, width - 60.0, 14.0).len() >= 2);
        assert!(s.contains("and on)"));
    }
}

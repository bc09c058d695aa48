//! A small SVG writer and the report's three chart kinds. Charts are static markup (no script),
//! so the HTML page needs nothing but a browser; `<title>` children give hover tooltips.
use super::{fmt_num, fmt_pct};
use crate::report::model::{ArmCell, MetricDiff};
use crate::report::stats::{Summary, Verdict};
use std::fmt::Write;

/// Escapes text for XML content and attribute values; control characters (not allowed in XML,
/// and terminal escapes for whoever views the file as text) become visible `\u{..}` escapes.
pub fn esc(s: &str) -> String {
    let s = crate::util::term::printable(s);
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An SVG document under construction; coordinates in CSS pixels.
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

impl Svg {
    pub fn new(width: f64, height: f64) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    fn tooltip(tip: Option<&str>) -> String {
        tip.map(|t| format!("<title>{}</title>", esc(t)))
            .unwrap_or_default()
    }

    /// A rectangle; `area` is (x, y, width, height).
    pub fn rect(
        &mut self,
        area: (f64, f64, f64, f64),
        class: &str,
        fill: Option<&str>,
        tip: Option<&str>,
    ) {
        let (x, y, w, h) = area;
        let fill = fill
            .map(|f| format!(" fill=\"{}\"", esc(f)))
            .unwrap_or_default();
        let _ = write!(
            self.body,
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"{fill}>{}</rect>",
            w.max(0.0),
            h.max(0.0),
            Self::tooltip(tip)
        );
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        let _ = write!(
            self.body,
            "<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>"
        );
    }

    pub fn circle(&mut self, cx: f64, cy: f64, r: f64, class: &str, tip: Option<&str>) {
        let _ = write!(
            self.body,
            "<circle class=\"{class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r:.1}\">{}</circle>",
            Self::tooltip(tip)
        );
    }

    /// `anchor`: start, middle or end.
    pub fn text(&mut self, x: f64, y: f64, anchor: &str, class: &str, text: &str) {
        let _ = write!(
            self.body,
            "<text class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
            esc(text)
        );
    }

    /// The finished element; `label` is its accessible name.
    pub fn finish(self, class: &str, label: &str) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart {class}\" role=\"img\" aria-label=\"{}\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">{}</svg>",
            esc(label),
            self.body,
            w = self.width,
            h = self.height,
        )
    }
}

/// About `count` round tick values covering [lo, hi] (1, 2, 2.5, 5 × 10^k steps).
pub fn ticks(lo: f64, hi: f64, count: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / count.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        // Snap values like 0.30000000000000004 for clean labels.
        out.push((t / step).round() * step);
        t += step;
    }
    out
}

/// Colour of an arm by its position in the manifest (colour-blind-safe Okabe–Ito palette).
pub fn arm_color(index: usize) -> &'static str {
    const PALETTE: [&str; 8] = [
        "#7f7f7f", "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#d55e00", "#56b4e9", "#f0e442",
    ];
    PALETTE[index % PALETTE.len()]
}

fn verdict_class(v: Verdict) -> &'static str {
    match v {
        Verdict::Faster => "faster",
        Verdict::Slower => "slower",
        Verdict::WithinNoise => "noise",
        Verdict::NoNoiseEstimate => "single",
    }
}

const FONT_GAP: f64 = 14.0;

/// A generous estimate of a text's rendered width at `font_px` (0.62 em per character covers
/// bold system-ui digits and lower case), so charts are sized to hold their own titles and labels
/// instead of clipping them at the SVG edge.
pub fn text_width(text: &str, font_px: f64) -> f64 {
    text.chars().count() as f64 * font_px * 0.62
}

/// Vertical bars of one metric per arm (median), interval whiskers and one dot per trial.
/// Arms without data get a labelled empty slot, so a failure is visible, not missing.
pub fn bars_by_arm(cells: &[(usize, &ArmCell)], key: &str, unit: &str, label: &str) -> String {
    let title = format!("{label} ({unit}), median with interval");
    let (left, right, top, bottom) = (52.0, 8.0, 22.0, 44.0);
    // Wide enough for the title and for each arm's name under its bar.
    let slot_w = cells
        .iter()
        .map(|(_, c)| text_width(&c.arm, 11.0) + 10.0)
        .fold(70.0, f64::max);
    let w =
        (left + right + slot_w * cells.len() as f64).max(left + text_width(&title, 12.0) + right);
    let h = 230.0;
    let plot_h = h - top - bottom;
    let summaries: Vec<Option<&Summary>> = cells
        .iter()
        .map(|(_, c)| c.metrics.get(key).map(|m| &m.summary))
        .collect();
    let max = cells
        .iter()
        .zip(&summaries)
        .filter_map(|((_, c), s)| {
            let s = (*s)?;
            let trial_max = c
                .metrics
                .get(key)?
                .values
                .iter()
                .map(|v| v.value)
                .fold(0.0, f64::max);
            Some(s.ci_high.unwrap_or(s.median).max(trial_max))
        })
        .fold(0.0, f64::max);
    let mut svg = Svg::new(w, h);
    svg.text(left, 14.0, "start", "title", &title);
    let y_of = |v: f64| top + plot_h * (1.0 - if max > 0.0 { v / max } else { 0.0 });
    for t in ticks(0.0, max, 4) {
        let y = y_of(t);
        svg.line(left, y, w - right, y, "grid");
        svg.text(left - 4.0, y + 4.0, "end", "tick", &fmt_num(t));
    }
    let slot = (w - left - right) / cells.len().max(1) as f64;
    for (i, ((arm_index, cell), summary)) in cells.iter().zip(&summaries).enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let bw = slot * 0.6;
        svg.text(
            x + bw / 2.0,
            h - bottom + FONT_GAP,
            "middle",
            "label",
            &cell.arm,
        );
        match summary {
            Some(s) => {
                let tip = format!(
                    "{}: median {} {unit} over {} trial(s)",
                    cell.arm,
                    fmt_num(s.median),
                    s.n
                );
                svg.rect(
                    (x, y_of(s.median), bw, y_of(0.0) - y_of(s.median)),
                    "bar",
                    Some(arm_color(*arm_index)),
                    Some(&tip),
                );
                if let (Some(lo), Some(hi)) = (s.ci_low, s.ci_high) {
                    let cx = x + bw / 2.0;
                    svg.line(cx, y_of(lo), cx, y_of(hi), "whisker");
                    svg.line(cx - 6.0, y_of(lo), cx + 6.0, y_of(lo), "whisker");
                    svg.line(cx - 6.0, y_of(hi), cx + 6.0, y_of(hi), "whisker");
                }
                for v in &cell.metrics[key].values {
                    let tip = format!("trial {}: {} {unit}", v.trial, fmt_num(v.value));
                    svg.circle(x + bw * 0.8, y_of(v.value), 2.5, "dot", Some(&tip));
                }
                svg.text(
                    x + bw / 2.0,
                    h - bottom + 2.0 * FONT_GAP,
                    "middle",
                    "value",
                    &fmt_num(s.median),
                );
            }
            None => {
                let why = super::fmt_status(cell);
                svg.text(x + bw / 2.0, y_of(0.0) - 6.0, "middle", "missing", &why);
            }
        }
    }
    svg.line(left, y_of(0.0), w - right, y_of(0.0), "axis");
    svg.finish("bars", &format!("{label} by arm"))
}

/// Horizontal diverging bars of differences (percent, positive = better), sorted by the caller,
/// with interval whiskers and colour by verdict.
pub fn diff_bars(rows: &[(String, &MetricDiff)], title: &str) -> String {
    let row_h = 20.0;
    let (right, top, bottom) = (70.0, 26.0, 30.0);
    // Row labels are right-aligned before the plot: make room for the longest.
    let left = rows
        .iter()
        .map(|(l, _)| text_width(l, 11.0) + 12.0)
        .fold(150.0, f64::max);
    let w = (left + 420.0 + right).max(8.0 + text_width(title, 12.0) + 8.0);
    let h = top + bottom + row_h * rows.len().max(1) as f64;
    let ext = rows
        .iter()
        .flat_map(|(_, d)| {
            [
                d.diff_pct,
                d.ci_low_pct.unwrap_or(d.diff_pct),
                d.ci_high_pct.unwrap_or(d.diff_pct),
            ]
        })
        .filter(|v| v.is_finite())
        .fold(1.0_f64, |m, v| m.max(v.abs()));
    let plot_w = w - left - right;
    let x_of = |v: f64| left + plot_w * (v + ext) / (2.0 * ext);
    let mut svg = Svg::new(w, h);
    svg.text(8.0, 16.0, "start", "title", title);
    for t in ticks(-ext, ext, 6) {
        let x = x_of(t);
        svg.line(x, top, x, h - bottom, "grid");
        svg.text(x, h - bottom + FONT_GAP, "middle", "tick", &fmt_pct(t));
    }
    for (i, (label, d)) in rows.iter().enumerate() {
        let y = top + row_h * i as f64;
        svg.text(left - 6.0, y + row_h * 0.7, "end", "label", label);
        let (x0, x1) = (x_of(0.0), x_of(d.diff_pct));
        let tip = format!(
            "{label}: {} ({})",
            super::fmt_diff(d),
            super::fmt_verdict(d)
        );
        svg.rect(
            (x0.min(x1), y + 4.0, (x1 - x0).abs(), row_h - 8.0),
            &format!("bar {}", verdict_class(d.verdict)),
            None,
            Some(&tip),
        );
        if let (Some(lo), Some(hi)) = (d.ci_low_pct, d.ci_high_pct) {
            let cy = y + row_h / 2.0;
            svg.line(x_of(lo), cy, x_of(hi), cy, "whisker");
            svg.line(x_of(lo), cy - 4.0, x_of(lo), cy + 4.0, "whisker");
            svg.line(x_of(hi), cy - 4.0, x_of(hi), cy + 4.0, "whisker");
        }
        svg.text(
            w - right + 6.0,
            y + row_h * 0.7,
            "start",
            "value",
            &fmt_pct(d.diff_pct),
        );
    }
    svg.line(x_of(0.0), top - 4.0, x_of(0.0), h - bottom, "axis");
    svg.finish("diffs", title)
}

/// Horizontal box plots of per-request samples per arm: box p25–p75, median line, whiskers
/// p5–p95, a tick at p99.
pub fn boxes_by_arm(cells: &[(usize, &ArmCell)], key: &str, title: &str) -> Option<String> {
    let rows: Vec<(usize, &ArmCell, &crate::report::model::Distribution)> = cells
        .iter()
        .filter_map(|(i, c)| c.distributions.get(key).map(|d| (*i, *c, d)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    let row_h = 26.0;
    let (right, top, bottom) = (16.0, 24.0, 30.0);
    let left = rows
        .iter()
        .map(|(_, c, _)| text_width(&c.arm, 11.0) + 12.0)
        .fold(110.0, f64::max);
    let w = (left + 294.0 + right).max(8.0 + text_width(title, 12.0) + 8.0);
    let h = top + bottom + row_h * rows.len() as f64;
    let max = rows.iter().map(|(_, _, d)| d.p99).fold(0.0, f64::max);
    let x_of = |v: f64| left + (w - left - right) * if max > 0.0 { v.min(max) / max } else { 0.0 };
    let mut svg = Svg::new(w, h);
    svg.text(8.0, 16.0, "start", "title", title);
    for t in ticks(0.0, max, 4) {
        let x = x_of(t);
        svg.line(x, top, x, h - bottom, "grid");
        svg.text(x, h - bottom + FONT_GAP, "middle", "tick", &fmt_num(t));
    }
    for (row, (arm_index, cell, d)) in rows.iter().enumerate() {
        let y = top + row_h * row as f64;
        let cy = y + row_h / 2.0;
        svg.text(left - 6.0, cy + 4.0, "end", "label", &cell.arm);
        let tip = format!(
            "{}: n={} p5={} p25={} p50={} p75={} p95={} p99={} ms",
            cell.arm,
            d.n,
            fmt_num(d.p5),
            fmt_num(d.p25),
            fmt_num(d.p50),
            fmt_num(d.p75),
            fmt_num(d.p95),
            fmt_num(d.p99)
        );
        svg.line(x_of(d.p5), cy, x_of(d.p95), cy, "whisker");
        svg.rect(
            (
                x_of(d.p25),
                y + 5.0,
                x_of(d.p75) - x_of(d.p25),
                row_h - 10.0,
            ),
            "box",
            Some(arm_color(*arm_index)),
            Some(&tip),
        );
        svg.line(x_of(d.p50), y + 4.0, x_of(d.p50), y + row_h - 4.0, "median");
        svg.line(x_of(d.p99), cy - 5.0, x_of(d.p99), cy + 5.0, "p99");
    }
    Some(svg.finish("boxes", title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(ticks(0.0, 100.0, 4), vec![0.0, 25.0, 50.0, 75.0, 100.0]);
        assert_eq!(ticks(0.0, 8080.0, 4), vec![0.0, 2500.0, 5000.0, 7500.0]);
        assert_eq!(ticks(-5.0, 5.0, 6), vec![-4.0, -2.0, 0.0, 2.0, 4.0]);
        assert_eq!(ticks(0.0, 0.0, 4), vec![0.0]);
    }

    #[test]
    fn text_is_escaped() {
        let mut s = Svg::new(10.0, 10.0);
        s.text(0.0, 0.0, "start", "t", "<a & \"b\">");
        let out = s.finish("x", "l<");
        assert!(out.contains("&lt;a &amp; &quot;b&quot;&gt;"), "{out}");
        assert!(out.contains("aria-label=\"l&lt;\""));
    }
}

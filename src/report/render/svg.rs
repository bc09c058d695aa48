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

    /// An open polyline through `points` (at least two), stroked in `stroke`.
    pub fn path(&mut self, points: &[(f64, f64)], class: &str, stroke: &str, tip: Option<&str>) {
        let d: Vec<String> = points
            .iter()
            .enumerate()
            .map(|(i, (x, y))| format!("{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" }))
            .collect();
        let _ = write!(
            self.body,
            "<path class=\"{class}\" d=\"{}\" stroke=\"{}\" fill=\"none\">{}</path>",
            d.join(" "),
            esc(stroke),
            Self::tooltip(tip)
        );
    }

    /// A circle with its own fill and stroke (a hollow one has a white fill).
    #[allow(clippy::too_many_arguments)]
    pub fn marker(
        &mut self,
        cx: f64,
        cy: f64,
        r: f64,
        class: &str,
        fill: &str,
        stroke: &str,
        tip: Option<&str>,
    ) {
        let _ = write!(
            self.body,
            "<circle class=\"{class}\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r:.1}\" fill=\"{}\" stroke=\"{}\">{}</circle>",
            esc(fill),
            esc(stroke),
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

/// A y axis: linear from 0, or logarithmic (decades) when the values span more than 20×.
struct YAxis {
    lo: f64,
    hi: f64,
    log: bool,
}

impl YAxis {
    fn new(values: &[f64]) -> Option<YAxis> {
        let positive: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && *v > 0.0)
            .collect();
        let max = positive.iter().copied().fold(f64::NAN, f64::max);
        let min = positive.iter().copied().fold(f64::NAN, f64::min);
        if !max.is_finite() {
            return None;
        }
        Some(if max / min > 20.0 {
            YAxis {
                lo: 10f64.powf(min.log10().floor()),
                hi: 10f64.powf(max.log10().ceil()),
                log: true,
            }
        } else {
            YAxis {
                lo: 0.0,
                hi: max * 1.08,
                log: false,
            }
        })
    }

    /// 0 at the bottom, 1 at the top.
    fn frac(&self, v: f64) -> f64 {
        if self.log {
            (v.max(self.lo).log10() - self.lo.log10()) / (self.hi.log10() - self.lo.log10())
        } else {
            v / self.hi
        }
    }

    fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (
                self.lo.log10().round() as i32,
                self.hi.log10().round() as i32,
            );
            (a..=b).map(|e| 10f64.powi(e)).collect()
        } else {
            ticks(0.0, self.hi, 4)
        }
    }
}

/// One latency's throughput–latency chart of a commit: per arm (colour by manifest position)
/// its fixed load points joined by a solid p50 path and a dashed p99 path, its search probes at
/// their p99 (filled: passed, hollow: failed), and the SLO as a horizontal line. `latency` is
/// `ttft`, `tpot` or `e2el`; `arm_index` gives an arm's position. `None` without any value.
/// Every latency a curve chart draws (its y range) and the highest throughput (its x range).
fn curve_extent(commit: &crate::report::model::CommitReport, latency: &str) -> (Vec<f64>, f64) {
    let mut ys: Vec<f64> = Vec::new();
    let mut xmax: f64 = 0.0;
    for c in &commit.curves {
        for p in &c.points {
            let (p50, p99) = p.latency.of(latency);
            ys.extend(p50.into_iter().chain(p99));
            xmax = xmax.max(p.request_throughput);
        }
        for p in &c.probes {
            if let (Some(x), (_, Some(y))) = (p.request_throughput, p.latency.of(latency)) {
                ys.push(y);
                xmax = xmax.max(x);
            }
        }
    }
    (ys, xmax)
}

pub fn curve_chart(
    commit: &crate::report::model::CommitReport,
    latency: &str,
    label: &str,
    arm_index: &dyn Fn(&str) -> usize,
) -> Option<String> {
    let slo = commit.slo.and_then(|s| match latency {
        "ttft" => s.ttft_ms,
        "tpot" => s.tpot_ms,
        _ => s.e2el_ms,
    });
    let (mut ys, xmax) = curve_extent(commit, latency);
    if ys.is_empty() {
        return None;
    }
    ys.extend(slo);
    let y = YAxis::new(&ys)?;
    let title = format!("{label} (ms) vs achieved req/s");
    let legend: Vec<&str> = commit.curves.iter().map(|c| c.arm.as_str()).collect();
    let key = "solid p50, dashed p99; probes at p99: filled passed, hollow failed";
    let (left, right, top) = (52.0, 12.0, 22.0);
    let plot_h = 150.0;
    let w = [
        left + 300.0 + right,
        8.0 + text_width(&title, 12.0) + 8.0,
        8.0 + text_width(key, 10.0) + 8.0,
    ]
    .into_iter()
    .chain(
        legend
            .iter()
            .map(|a| left + 24.0 + text_width(a, 11.0) + 8.0),
    )
    .fold(0.0, f64::max);
    // Below the tick labels and the axis title.
    let legend_top = top + plot_h + 3.0 * FONT_GAP + 4.0;
    let h = legend_top + FONT_GAP * (legend.len() as f64 + 1.0) + 4.0;
    let xmax = if xmax > 0.0 { xmax * 1.08 } else { 1.0 };
    let x_of = |v: f64| left + (w - left - right) * v / xmax;
    let y_of = |v: f64| top + plot_h * (1.0 - y.frac(v));
    let mut svg = Svg::new(w, h);
    svg.text(8.0, 14.0, "start", "title", &title);
    for t in y.ticks() {
        let yy = y_of(t);
        svg.line(left, yy, w - right, yy, "grid");
        svg.text(left - 4.0, yy + 4.0, "end", "tick", &fmt_num(t));
    }
    for t in ticks(0.0, xmax, 4) {
        svg.text(
            x_of(t),
            top + plot_h + FONT_GAP,
            "middle",
            "tick",
            &fmt_num(t),
        );
    }
    svg.text(
        (left + w - right) / 2.0,
        top + plot_h + 2.0 * FONT_GAP,
        "middle",
        "tick",
        "achieved request throughput (req/s)",
    );
    svg.line(left, top + plot_h, w - right, top + plot_h, "axis");
    svg.line(left, top, left, top + plot_h, "axis");
    if let Some(slo) = slo {
        let yy = y_of(slo);
        svg.line(left, yy, w - right, yy, "slo");
        svg.text(
            w - right - 2.0,
            yy - 3.0,
            "end",
            "slo-label",
            &format!("SLO {} ms", crate::report::metric::p_word(slo)),
        );
    }
    for c in &commit.curves {
        let color = arm_color(arm_index(&c.arm));
        for (pct, class) in [("p50", "curve p50"), ("p99", "curve p99")] {
            let pts: Vec<(f64, f64)> = c
                .points
                .iter()
                .filter_map(|p| {
                    let (p50, p99) = p.latency.of(latency);
                    let v = if pct == "p50" { p50 } else { p99 }?;
                    Some((p.request_throughput, v))
                })
                .collect();
            for (x, v) in &pts {
                let tip = format!(
                    "{} {pct}: {} ms at {} req/s",
                    c.arm,
                    fmt_num(*v),
                    fmt_num(*x)
                );
                svg.marker(x_of(*x), y_of(*v), 2.5, "pt", color, color, Some(&tip));
            }
            if pts.len() >= 2 {
                let xy: Vec<(f64, f64)> = pts.iter().map(|(x, v)| (x_of(*x), y_of(*v))).collect();
                svg.path(&xy, class, color, Some(&format!("{} {pct}", c.arm)));
            }
        }
        for p in &c.probes {
            let (Some(x), (p50, Some(v))) = (p.request_throughput, p.latency.of(latency)) else {
                continue;
            };
            let tip = format!(
                "{} trial {} probe {}: {} — p50 {} ms, p99 {} ms at {} req/s",
                c.arm,
                p.trial,
                fmt_num(p.value),
                if p.passed { "passed" } else { "failed" },
                p50.map(fmt_num).unwrap_or("-".into()),
                fmt_num(v),
                fmt_num(x)
            );
            let (class, fill) = if p.passed {
                ("probe passed", color)
            } else {
                ("probe failed", "#fff")
            };
            svg.marker(x_of(x), y_of(v), 3.5, class, fill, color, Some(&tip));
        }
    }
    svg.text(8.0, legend_top, "start", "tick", key);
    for (i, c) in commit.curves.iter().enumerate() {
        let ly = legend_top + FONT_GAP * (i as f64 + 1.0);
        let color = arm_color(arm_index(&c.arm));
        svg.path(
            &[(left, ly - 4.0), (left + 18.0, ly - 4.0)],
            "legend",
            color,
            None,
        );
        svg.text(left + 24.0, ly, "start", "label", &c.arm);
    }
    Some(svg.finish("curves", &format!("{label} against throughput by arm")))
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
    fn y_axis_turns_logarithmic_beyond_a_20x_span() {
        let linear = YAxis::new(&[10.0, 150.0, 0.0]).unwrap();
        assert!(!linear.log && linear.lo == 0.0 && linear.hi > 150.0);
        assert_eq!(linear.ticks()[0], 0.0);
        let log = YAxis::new(&[20.0, 1340.0]).unwrap();
        assert!(log.log, "67× spans decades");
        assert_eq!((log.lo, log.hi), (10.0, 10000.0));
        assert_eq!(log.ticks(), vec![10.0, 100.0, 1000.0, 10000.0]);
        assert!((log.frac(100.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!(YAxis::new(&[0.0, f64::NAN]).is_none());
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

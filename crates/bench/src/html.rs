//! The `--html` page: the report's table and two inline SVG charts
//! (throughput per run, latency by percentile), with no script and nothing
//! fetched from elsewhere.

use std::fmt::Write as _;

use crate::report::Report;

/// Percentiles plotted on the latency chart, spaced evenly by "nines".
const CURVE: [f64; 9] = [0.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99];

const COLORS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// Escapes text for HTML and SVG.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of `(label, value)`.
pub fn bar_chart(title: &str, unit: &str, bars: &[(String, f64)]) -> String {
    let row_h = 26.0;
    let (left, width) = (260.0, 720.0);
    let height = 40.0 + row_h * bars.len() as f64;
    let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<text x="4" y="16" font-weight="bold">{}</text>
"##,
        escape(title)
    );
    for (i, (label, value)) in bars.iter().enumerate() {
        let y = 28.0 + row_h * i as f64;
        let w = (width - left - 110.0) * value / max;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{left}" y="{y}" width="{w:.1}" height="18" fill="{color}"/><text x="{}" y="{}">{} {}</text>"#,
            left - 6.0,
            y + 13.0,
            escape(label),
            left + w + 4.0,
            y + 13.0,
            human(*value),
            escape(unit)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A latency-by-percentile chart: one line per series of `(percentile, µs)`.
pub fn percentile_chart(title: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let (width, height) = (720.0, 320.0);
    let (left, right, top, bottom) = (60.0, 180.0, 30.0, 40.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1e-9);
    let x_of = |i: usize| left + plot_w * i as f64 / (CURVE.len() - 1) as f64;
    let y_of = |v: f64| top + plot_h * (1.0 - v / max);
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<text x="4" y="16" font-weight="bold">{}</text>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#888"/><line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#888"/>
"##,
        escape(title),
        top + plot_h,
        top + plot_h,
        left + plot_w,
        top + plot_h
    );
    for (i, p) in CURVE.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">p{p}</text>"#,
            x_of(i),
            top + plot_h + 16.0
        );
    }
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{} µs</text><line x1="{left}" y1="{:.1}" x2="{}" y2="{:.1}" stroke="#eee"/>"##,
            left - 4.0,
            y_of(v) + 4.0,
            human(v),
            y_of(v),
            left + plot_w,
            y_of(v)
        );
    }
    for (n, (label, points)) in series.iter().enumerate() {
        let color = COLORS[n % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter_map(|(p, v)| {
                let i = CURVE.iter().position(|c| c == p)?;
                Some(format!("{:.1},{:.1}", x_of(i), y_of(*v)))
            })
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/><text x="{}" y="{}" fill="{color}">{}</text>"#,
            path.join(" "),
            left + plot_w + 8.0,
            top + 14.0 * (n + 1) as f64,
            escape(label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Three significant figures with k/M suffixes.
pub fn human(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The whole page for one report.
pub fn page(report: &Report) -> String {
    let bars: Vec<(String, f64)> = report
        .rows
        .iter()
        .map(|r| (r.name.clone(), r.rate()))
        .collect();
    let series: Vec<(String, Vec<(f64, f64)>)> = report
        .rows
        .iter()
        .filter_map(|r| {
            let h = r.latency.as_ref().filter(|h| !h.is_empty())?;
            let pts = CURVE
                .iter()
                .map(|&p| (p, h.value_at_percentile(p) as f64 / 1000.0))
                .collect();
            Some((r.name.clone(), pts))
        })
        .collect();
    let mut out = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>duplex bench {mode}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f5f5f5;padding:1em}}</style></head><body>\n\
         <h1>duplex bench {mode}</h1>\n<p>{url}</p>\n<pre>{table}</pre>\n",
        mode = report.mode,
        url = escape(&report.url),
        table = escape(&report.to_table())
    );
    out.push_str(&bar_chart(
        &format!("Throughput ({}/s)", report.unit),
        "/s",
        &bars,
    ));
    if !series.is_empty() {
        out.push_str(&percentile_chart("Latency by percentile (µs)", &series));
    }
    let _ = write!(
        out,
        "<details><summary>JSON</summary><pre>{}</pre></details>\n</body></html>\n",
        escape(&serde_json::to_string_pretty(&report.to_json()).unwrap_or_default())
    );
    out
}

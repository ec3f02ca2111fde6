//! Inline SVG charts for the HTML report: stacked bars per day and ranked horizontal bars. Drawn
//! here rather than by a charting crate because the two shapes need a hundred lines, while the
//! crates draw to files or need a canvas. Heights are floating point because they are pixels;
//! every number a reader sees is the exact text it was given.

use std::fmt::Write as _;

use super::html::escape;

/// Okabe and Ito's palette, distinguishable with every common colour-vision deficiency; the last
/// is for "everything else".
pub(super) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#999999",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 280.0;
const LEFT: f64 = 80.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 12.0;

/// One segment of a stack: which series, its size, and its exact value as shown.
pub(super) struct Segment {
    pub(super) series: usize,
    pub(super) value: f64,
    pub(super) text: String,
}

/// One bar of a stacked chart.
pub(super) struct Stack {
    pub(super) label: String,
    pub(super) segments: Vec<Segment>,
}

/// A stacked bar chart with a y axis of round numbers; `series` name the colours (legend).
pub(super) fn stacked(title: &str, stacks: &[Stack], series: &[String]) -> String {
    let highest = stacks
        .iter()
        .map(|s| s.segments.iter().map(|g| g.value).sum::<f64>())
        .fold(0.0, f64::max);
    let top = round_up(highest);
    let plot_height = HEIGHT - BOTTOM - TOP;
    let slot = (WIDTH - LEFT) / pixels(stacks.len().max(1) as u64);
    let bar = (slot * 0.8).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="t-{id}"><title id="t-{id}">{title}</title>"#,
        id = slug(title),
        title = escape(title)
    );
    for step in 0..=4 {
        let value = top * f64::from(step) / 4.0;
        let y = TOP + plot_height - plot_height * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" x2="{WIDTH}" y1="{y:.1}" y2="{y:.1}"/><text class="axis" x="{x:.1}" y="{ty:.1}" text-anchor="end">{label}</text>"#,
            x = LEFT - 6.0,
            ty = y + 4.0,
            label = axis_label(value)
        );
    }
    let label_every = stacks.len().div_ceil(10).max(1);
    for (i, stack) in stacks.iter().enumerate() {
        let x = LEFT + slot * pixels(i as u64) + (slot - bar) / 2.0;
        let mut y = TOP + plot_height;
        for segment in &stack.segments {
            if segment.value <= 0.0 || top <= 0.0 {
                continue;
            }
            let h = plot_height * segment.value / top;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}" fill="{color}"><title>{label}: {name} {text}</title></rect>"#,
                color = PALETTE[segment.series.min(PALETTE.len() - 1)],
                label = escape(&stack.label),
                name = escape(series.get(segment.series).map_or("", String::as_str)),
                text = escape(&segment.text),
            );
        }
        if i % label_every == 0 {
            let _ = write!(
                svg,
                r#"<text class="axis" x="{cx:.1}" y="{ty:.1}" text-anchor="middle">{label}</text>"#,
                cx = x + bar / 2.0,
                ty = HEIGHT - BOTTOM + 16.0,
                label = escape(&stack.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg.push_str(&legend(series));
    svg
}

/// Horizontal bars, largest first: a label, a bar and the exact value on each row.
pub(super) fn ranked(title: &str, rows: &[(String, f64, String)]) -> String {
    let highest = rows.iter().map(|r| r.1).fold(0.0, f64::max);
    let mut html = format!(
        r#"<figure class="ranked"><figcaption>{}</figcaption><ol>"#,
        escape(title)
    );
    for (label, value, text) in rows {
        let share = if highest > 0.0 {
            (value / highest * 100.0).clamp(0.0, 100.0)
        } else {
            0.0
        };
        let _ = write!(
            html,
            r#"<li><span class="name">{}</span><span class="bar"><span style="width:{share:.1}%"></span></span><span class="value">{}</span></li>"#,
            escape(label),
            escape(text)
        );
    }
    html.push_str("</ol></figure>");
    html
}

fn legend(series: &[String]) -> String {
    let mut html = String::from(r#"<ul class="legend">"#);
    for (i, name) in series.iter().enumerate() {
        let _ = write!(
            html,
            r#"<li><span class="swatch" style="background:{}"></span>{}</li>"#,
            PALETTE[i.min(PALETTE.len() - 1)],
            escape(name)
        );
    }
    html.push_str("</ul>");
    html
}

/// A count as a drawing coordinate: a chart is a few hundred pixels, so the rounding of a count
/// beyond 2^53 could never show.
#[expect(
    clippy::cast_precision_loss,
    reason = "drawing coordinates, not amounts"
)]
pub(super) fn pixels(n: u64) -> f64 {
    n as f64
}

/// The smallest 1, 2 or 5 times a power of ten at least `value`.
fn round_up(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(value.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&candidate| candidate >= value)
        .unwrap_or(10.0 * power)
}

/// An axis value without noise: `1.5M`, `20k`, `0.05`.
fn axis_label(value: f64) -> String {
    let trim = |text: String| {
        if text.contains('.') {
            text.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            text
        }
    };
    if value >= 1e6 {
        format!("{}M", trim(format!("{:.2}", value / 1e6)))
    } else if value >= 1e3 {
        format!("{}k", trim(format!("{:.2}", value / 1e3)))
    } else {
        trim(format!("{value:.4}"))
    }
}

fn slug(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[expect(
        clippy::float_cmp,
        reason = "1, 2 and 5 times a power of ten are the values compared"
    )]
    fn axes_end_on_round_numbers() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(7.0), 10.0);
        assert_eq!(round_up(143_966.0), 200_000.0);
        assert_eq!(round_up(0.338), 0.5);
        assert_eq!(axis_label(1_500_000.0), "1.5M");
        assert_eq!(axis_label(50_000.0), "50k");
        assert_eq!(axis_label(0.125), "0.125");
        assert_eq!(axis_label(0.0), "0");
    }
}

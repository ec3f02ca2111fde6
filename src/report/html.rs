//! The report as one self-contained HTML page: no script, no external style, font or image, and a
//! Content-Security-Policy that forbids loading anything, so it opens offline and from a mail
//! attachment. Per currency: the totals, tokens and cost per day stacked by app, the top users and
//! models, and the full table of the keys asked for.

use std::collections::HashMap;
use std::fmt::Write as _;

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

use super::chart::{self, Segment, Stack};
use super::{Currency, Report, Sums, thousands};

/// Apps with their own colour in the day charts; the rest are summed as "other apps".
const NAMED_APPS: usize = 7;
/// Rows of the top-users and top-models bars.
pub(crate) const TOP_ROWS: usize = 10;

/// What one page shows: the table asked for, and the groupings its charts need (all of the same
/// days).
pub(crate) struct Page<'a> {
    pub(crate) table: &'a Report,
    /// By day and app.
    pub(crate) days: &'a Report,
    /// By user, the top [`TOP_ROWS`].
    pub(crate) users: &'a Report,
    /// By model, the top [`TOP_ROWS`].
    pub(crate) models: &'a Report,
}

const STYLE: &str = "
body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1b1b;background:#fff;margin:0}
main{max-width:980px;margin:0 auto;padding:16px}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.25em;margin:1.4em 0 .4em;border-bottom:2px solid #0072B2}
h3{font-size:1em;margin:1.2em 0 .3em}
.totals{display:flex;flex-wrap:wrap;gap:12px;margin:0;padding:0}
.totals div{border:1px solid #ccc;border-radius:6px;padding:6px 12px;min-width:120px}
.totals dt{font-size:.85em;color:#555}.totals dd{margin:0;font-size:1.2em;font-variant-numeric:tabular-nums}
.chart{width:100%;height:auto;display:block}.grid{stroke:#ddd}.axis{font-size:11px;fill:#444}
.legend{list-style:none;display:flex;flex-wrap:wrap;gap:4px 14px;padding:0;margin:4px 0 0;font-size:.9em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:4px;vertical-align:-1px;border-radius:2px}
.ranked{margin:0}.ranked figcaption{font-weight:600;margin:1em 0 .3em}.ranked ol{list-style:none;padding:0;margin:0}
.ranked li{display:grid;grid-template-columns:minmax(6em,14em) 1fr 13em;gap:8px;align-items:center;margin:3px 0}
.ranked .name{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.ranked .bar{background:#eef3f8;height:.9em;border-radius:2px}.ranked .bar span{display:block;height:100%;background:#0072B2;border-radius:2px}
.ranked .value{font-variant-numeric:tabular-nums}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:0 24px}@media (max-width:700px){.cols{grid-template-columns:1fr}}
.scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid #e4e4e4;text-align:left;white-space:nowrap}th{background:#f4f6f8}
td.n,th.n{text-align:right}tr.total td{font-weight:600;border-top:2px solid #999}
";

/// The page.
pub(crate) fn html(page: &Page<'_>) -> String {
    let report = page.table;
    let keys: Vec<&str> = report.keys.iter().map(|k| <&str>::from(*k)).collect();
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'"><title>Dify usage {first} to {last}</title><style>{STYLE}</style></head><body><main><h1>Dify usage</h1><p>Exported usage of {first} to {last} (UTC days), by {keys}. Made by dify-usage-exporter {version} from its ledger: what the sinks were given.</p>"#,
        first = report.first,
        last = report.last,
        keys = escape(&keys.join(", ")),
        version = env!("CARGO_PKG_VERSION"),
    );
    if report.currencies.is_empty() {
        html.push_str("<p>The ledger holds no usage in these days.</p>");
    }
    for currency in &report.currencies {
        section(&mut html, page, currency);
    }
    html.push_str("</main></body></html>\n");
    html
}

fn section(html: &mut String, page: &Page<'_>, currency: &Currency) {
    let code = &currency.code;
    let total = &currency.total;
    let _ = write!(
        html,
        r#"<section><h2>{code}</h2><dl class="totals"><div><dt>Cost</dt><dd>{cost} {code}</dd></div><div><dt>Tokens</dt><dd>{tokens}</dd></div><div><dt>Input / output</dt><dd>{input} / {output}</dd></div><div><dt>Requests</dt><dd>{requests}</dd></div></dl>"#,
        code = escape(code),
        cost = money(total.cost),
        tokens = thousands(total.total_tokens),
        input = thousands(total.input_tokens),
        output = thousands(total.output_tokens),
        requests = thousands(total.requests),
    );
    if let Some(days) = of(page.days, code) {
        let (apps, tokens, cost) = day_stacks(page.days, days);
        let _ = write!(
            html,
            "<h3>Tokens per day, by app</h3>{}<h3>Cost per day, by app ({})</h3>{}",
            chart::stacked(&format!("Tokens per day by app, {code}"), &tokens, &apps),
            escape(code),
            chart::stacked(&format!("Cost per day by app, {code}"), &cost, &apps),
        );
    }
    html.push_str(r#"<div class="cols">"#);
    for (title, report) in [
        ("Top users by cost", page.users),
        ("Top models by cost", page.models),
    ] {
        if let Some(groups) = of(report, code) {
            let rows: Vec<(String, f64, String)> = groups
                .groups
                .iter()
                .map(|g| {
                    let label = match report.shown(0, g) {
                        "" => "(none)".to_owned(),
                        label => label.to_owned(),
                    };
                    (
                        label,
                        g.sums.cost.to_f64().unwrap_or(0.0),
                        format!(
                            "{} · {} tokens",
                            money(g.sums.cost),
                            thousands(g.sums.total_tokens)
                        ),
                    )
                })
                .collect();
            html.push_str(&chart::ranked(title, &rows));
        }
    }
    html.push_str("</div>");
    table(html, page.table, currency);
    html.push_str("</section>");
}

fn of<'r>(report: &'r Report, code: &str) -> Option<&'r Currency> {
    report.currencies.iter().find(|c| c.code == code)
}

/// The stacks of tokens and of cost per day of the window, one segment per named app.
fn day_stacks(report: &Report, currency: &Currency) -> (Vec<String>, Vec<Stack>, Vec<Stack>) {
    // Apps ranked by their cost (then tokens) over the window.
    let mut per_app: HashMap<&str, Sums> = HashMap::new();
    for group in &currency.groups {
        per_app
            .entry(group.labels[1].as_str())
            .or_default()
            .add_sums(&group.sums);
    }
    let mut ranked: Vec<(&str, Sums)> = per_app.into_iter().collect();
    ranked.sort_by(|a, b| {
        b.1.cost
            .cmp(&a.1.cost)
            .then(b.1.total_tokens.cmp(&a.1.total_tokens))
            .then(a.0.cmp(b.0))
    });
    let series_of: HashMap<&str, usize> = ranked
        .iter()
        .enumerate()
        .map(|(i, (app, _))| (*app, i.min(NAMED_APPS)))
        .collect();
    let mut names: Vec<String> = ranked
        .iter()
        .take(NAMED_APPS)
        .map(|(app, _)| {
            report
                .app_names
                .get(*app)
                .cloned()
                .unwrap_or_else(|| (*app).to_owned())
        })
        .collect();
    if ranked.len() > NAMED_APPS {
        names.push("other apps".to_owned());
    }
    let mut by_day: HashMap<NaiveDate, Vec<(usize, Sums)>> = HashMap::new();
    for group in &currency.groups {
        let Ok(day) = group.labels[0].parse::<NaiveDate>() else {
            continue;
        };
        let series = series_of[group.labels[1].as_str()];
        let parts = by_day.entry(day).or_default();
        match parts.iter_mut().find(|(s, _)| *s == series) {
            Some((_, sums)) => sums.add_sums(&group.sums),
            None => parts.push((series, group.sums.clone())),
        }
    }
    let (mut tokens, mut cost) = (Vec::new(), Vec::new());
    let mut day = report.first;
    while day <= report.last {
        let mut parts = by_day.remove(&day).unwrap_or_default();
        parts.sort_by_key(|(series, _)| *series);
        let label = day.format("%m-%d").to_string();
        tokens.push(Stack {
            label: label.clone(),
            segments: parts
                .iter()
                .map(|(series, sums)| Segment {
                    series: *series,
                    value: chart::pixels(sums.total_tokens),
                    text: format!("{} tokens", thousands(sums.total_tokens)),
                })
                .collect(),
        });
        cost.push(Stack {
            label,
            segments: parts
                .iter()
                .map(|(series, sums)| Segment {
                    series: *series,
                    value: sums.cost.to_f64().unwrap_or(0.0),
                    text: format!("{} {}", money(sums.cost), currency.code),
                })
                .collect(),
        });
        day = day + Days::new(1);
    }
    (names, tokens, cost)
}

fn table(html: &mut String, report: &Report, currency: &Currency) {
    let _ = write!(
        html,
        r#"<h3>All groups ({})</h3><div class="scroll"><table><thead><tr>"#,
        currency.group_count
    );
    for key in &report.keys {
        let _ = write!(html, "<th>{}</th>", <&str>::from(*key));
    }
    html.push_str(r#"<th class="n">input</th><th class="n">output</th><th class="n">tokens</th><th class="n">requests</th><th class="n">cost</th></tr></thead><tbody>"#);
    for group in &currency.groups {
        html.push_str("<tr>");
        for i in 0..report.keys.len() {
            let label = match report.shown(i, group) {
                "" => "(none)",
                label => label,
            };
            let _ = write!(html, "<td>{}</td>", escape(label));
        }
        numbers(html, &group.sums);
        html.push_str("</tr>");
    }
    let _ = write!(
        html,
        r#"<tr class="total"><td colspan="{}">total</td>"#,
        report.keys.len()
    );
    numbers(html, &currency.total);
    html.push_str("</tr></tbody></table></div>");
}

fn numbers(html: &mut String, sums: &Sums) {
    for value in [
        thousands(sums.input_tokens),
        thousands(sums.output_tokens),
        thousands(sums.total_tokens),
        thousands(sums.requests),
        money(sums.cost),
    ] {
        let _ = write!(html, r#"<td class="n">{value}</td>"#);
    }
}

fn money(cost: Decimal) -> String {
    super::table::money(cost, 0)
}

/// Text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_become_markup() {
        assert_eq!(
            escape(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
    }
}

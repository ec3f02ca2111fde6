//! The report for a person at a terminal: one block per currency, labels left, numbers right with
//! thousands separators, a total line. At a terminal the table is fitted to its width by shortening
//! the longest labels in the middle (`…`); written elsewhere it is plain ASCII at full width, so a
//! file or a mail holds every name whole.

use std::fmt::Write as _;

use rust_decimal::Decimal;
use unicode_width::UnicodeWidthStr as _;

use super::{Report, Sums, thousands};

/// Where the table goes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Width {
    /// A terminal of this many columns.
    Terminal(usize),
    /// A file or a pipe: nothing is shortened.
    Unlimited,
}

/// How an empty label reads: usage Dify attributes to no user, or a source that knows no workspace.
const NONE: &str = "(none)";

/// A label column never gets narrower than this.
const MIN_LABEL: usize = 8;

const NUMBER_HEADERS: [&str; 5] = ["input", "output", "tokens", "requests", "cost"];

/// The report as text.
pub(crate) fn table(report: &Report, width: Width) -> String {
    let mut out = String::new();
    let keys: Vec<&str> = report.keys.iter().map(|k| <&str>::from(*k)).collect();
    let _ = writeln!(
        out,
        "Usage exported {} to {}, by {}",
        report.first,
        report.last,
        keys.join(", ")
    );
    if report.currencies.is_empty() {
        let _ = writeln!(out, "\nThe ledger holds no usage in these days.");
        return out;
    }
    for currency in &report.currencies {
        // Every cost of the block with as many decimals as the longest, so the points align.
        let decimals = currency
            .groups
            .iter()
            .map(|g| g.sums.cost.normalize().scale())
            .chain([currency.total.cost.normalize().scale()])
            .max()
            .unwrap_or(0);
        let mut rows: Vec<(Vec<String>, [String; 5])> = currency
            .groups
            .iter()
            .map(|group| {
                let labels = (0..report.keys.len())
                    .map(|i| match report.shown(i, group) {
                        "" => NONE.to_owned(),
                        label => label.to_owned(),
                    })
                    .collect();
                (labels, numbers(&group.sums, decimals))
            })
            .collect();
        let shown = if currency.groups.len() < currency.group_count {
            format!(
                "total ({} of {} shown)",
                currency.groups.len(),
                currency.group_count
            )
        } else {
            "total".to_owned()
        };
        let mut total_labels = vec![String::new(); report.keys.len()];
        total_labels[0] = shown;
        rows.push((total_labels, numbers(&currency.total, decimals)));

        let mut label_widths: Vec<usize> = keys.iter().map(|k| k.width()).collect();
        let mut number_widths: Vec<usize> = NUMBER_HEADERS.iter().map(|h| h.width()).collect();
        for (labels, numbers) in &rows {
            for (w, label) in label_widths.iter_mut().zip(labels) {
                *w = (*w).max(label.width());
            }
            for (w, number) in number_widths.iter_mut().zip(numbers) {
                *w = (*w).max(number.width());
            }
        }
        if let Width::Terminal(columns) = width {
            let fixed: usize = number_widths.iter().map(|w| w + 2).sum::<usize>() + 2;
            fit(&mut label_widths, columns.saturating_sub(fixed));
        }
        let ellipsis = match width {
            Width::Terminal(_) => "…",
            Width::Unlimited => "...",
        };

        let _ = writeln!(out, "\n{}", currency.code);
        let header: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        let headers = NUMBER_HEADERS.map(str::to_owned);
        line(
            &mut out,
            &header,
            &headers,
            &label_widths,
            &number_widths,
            ellipsis,
        );
        let rule: usize = label_widths.iter().map(|w| w + 2).sum::<usize>()
            + number_widths.iter().map(|w| w + 2).sum::<usize>();
        let total_row = rows.len() - 1;
        for (i, (labels, numbers)) in rows.iter().enumerate() {
            if i == total_row {
                let _ = writeln!(out, "  {}", "-".repeat(rule.saturating_sub(2)));
            }
            line(
                &mut out,
                labels,
                numbers,
                &label_widths,
                &number_widths,
                ellipsis,
            );
        }
    }
    out
}

fn numbers(sums: &Sums, decimals: u32) -> [String; 5] {
    [
        thousands(sums.input_tokens),
        thousands(sums.output_tokens),
        thousands(sums.total_tokens),
        thousands(sums.requests),
        money(sums.cost, decimals),
    ]
}

/// An exact amount with `decimals` decimals (at least its own) and thousands separators in its
/// whole part: `12345.6789` as `12,345.6789`.
pub(super) fn money(cost: Decimal, decimals: u32) -> String {
    let cost = cost.normalize();
    let mut text = cost.to_string();
    let missing = decimals.saturating_sub(cost.scale()) as usize;
    if missing > 0 {
        if cost.scale() == 0 {
            text.push('.');
        }
        text.push_str(&"0".repeat(missing));
    }
    let (sign, unsigned) = text
        .strip_prefix('-')
        .map_or(("", text.as_str()), |rest| ("-", rest));
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let whole = whole
        .parse::<u64>()
        .map_or_else(|_| whole.to_owned(), thousands);
    if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    }
}

/// Narrows the widest label columns until they fit in `room` (never below [`MIN_LABEL`]).
fn fit(widths: &mut [usize], room: usize) {
    let gaps = widths.len() * 2;
    while widths.iter().sum::<usize>() + gaps > room {
        let Some(widest) = widths
            .iter_mut()
            .filter(|w| **w > MIN_LABEL)
            .max_by_key(|w| **w)
        else {
            return;
        };
        *widest -= 1;
    }
}

fn line(
    out: &mut String,
    labels: &[String],
    numbers: &[String],
    label_widths: &[usize],
    number_widths: &[usize],
    ellipsis: &str,
) {
    out.push_str("  ");
    for (label, width) in labels.iter().zip(label_widths) {
        let label = shorten(label, *width, ellipsis);
        out.push_str(&label);
        out.push_str(&" ".repeat(width.saturating_sub(label.width()) + 2));
    }
    for (number, width) in numbers.iter().zip(number_widths) {
        out.push_str(&" ".repeat(width.saturating_sub(number.width())));
        out.push_str(number);
        out.push_str("  ");
    }
    let trimmed = out.trim_end_matches(' ').len();
    out.truncate(trimmed);
    out.push('\n');
}

/// `text` in at most `width` columns, its middle replaced by `ellipsis` when it is longer.
fn shorten(text: &str, width: usize, ellipsis: &str) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    let room = width.saturating_sub(ellipsis.width());
    let (head_room, tail_room) = (room - room / 2, room / 2);
    let mut head = String::new();
    for c in text.chars() {
        if (head.clone() + &c.to_string()).width() > head_room {
            break;
        }
        head.push(c);
    }
    let mut tail: Vec<char> = Vec::new();
    for c in text.chars().rev() {
        let candidate: String = std::iter::once(c)
            .chain(tail.iter().rev().copied())
            .collect();
        if candidate.width() > tail_room {
            break;
        }
        tail.push(c);
    }
    let tail: String = tail.iter().rev().collect();
    format!("{head}{ellipsis}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_labels_lose_their_middle() {
        assert_eq!(shorten("short", 8, "..."), "short");
        assert_eq!(
            shorten("customer-0042@example.com", 12, "..."),
            "custo....com"
        );
        assert_eq!(shorten("abcdefghij", 5, "…"), "ab…ij");
        assert_eq!(shorten("模型模型模型", 7, "…"), "模…型");
    }

    #[test]
    fn money_keeps_every_decimal() {
        assert_eq!(money("12345.6789000".parse().unwrap(), 0), "12,345.6789");
        assert_eq!(money("0.0000001".parse().unwrap(), 3), "0.0000001");
        assert_eq!(money("-1000".parse().unwrap(), 0), "-1,000");
        assert_eq!(money("0.5".parse().unwrap(), 3), "0.500");
        assert_eq!(money("2".parse().unwrap(), 2), "2.00");
    }

    #[test]
    fn widest_labels_narrow_first() {
        let mut widths = vec![30, 10];
        fit(&mut widths, 30);
        assert_eq!(widths, [16, 10]);
        let mut widths = vec![9, 9];
        fit(&mut widths, 5);
        assert_eq!(widths, [8, 8], "never below the minimum");
    }
}

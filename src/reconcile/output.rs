//! How `exporter reconcile` prints: one line per app-day that does not agree, then the counts
//! (text), or every compared app-day (JSON).

use std::fmt::Write as _;

use anyhow::Result;
use rust_decimal::Decimal;
use serde_json::json;

use super::{AppDay, Reconciliation, Verdict};

/// The app-days that do not agree, one per line, and a summary line.
pub(crate) fn text(reconciliation: &Reconciliation) -> String {
    let mut out = String::new();
    for day in reconciliation
        .app_days
        .iter()
        .filter(|d| d.verdict != Verdict::Agrees)
    {
        let _ = writeln!(
            out,
            "{} {} ({}): ledger {} tokens {}, Dify {} tokens {}, difference {} tokens{}: {}",
            day.day,
            day.app_name,
            day.app_id,
            day.ledger.tokens,
            cost(day.ledger.cost),
            day.dify.tokens,
            cost(day.dify.cost),
            signed(i128::from(day.ledger.tokens) - i128::from(day.dify.tokens)),
            difference_cost(day),
            <&str>::from(day.verdict),
        );
    }
    let total = reconciliation.app_days.len();
    let disagreeing = reconciliation.disagreeing();
    let agreeing = reconciliation.agreeing();
    let _ = writeln!(
        out,
        "{} to {}: {total} app-days compared, {agreeing} agree, {} explained, {disagreeing} disagree",
        reconciliation.from,
        reconciliation.to,
        total - agreeing - disagreeing,
    );
    out
}

/// One JSON document: the window, the counts and every compared app-day.
pub(crate) fn json(reconciliation: &Reconciliation) -> Result<String> {
    let document = json!({
        "from": reconciliation.from,
        "to": reconciliation.to,
        "app_days": reconciliation.app_days.len(),
        "agreeing": reconciliation.agreeing(),
        "disagreeing": reconciliation.disagreeing(),
        "days": reconciliation.app_days,
    });
    Ok(serde_json::to_string_pretty(&document)? + "\n")
}

fn cost(cost: Option<Decimal>) -> String {
    cost.map_or_else(
        || "(no cost)".to_owned(),
        |c| format!("cost {}", c.normalize()),
    )
}

fn difference_cost(day: &AppDay) -> String {
    match (day.ledger.cost, day.dify.cost) {
        (Some(ours), Some(theirs)) => {
            let difference = (ours - theirs).normalize();
            let sign = if difference.is_sign_positive() && !difference.is_zero() {
                "+"
            } else {
                ""
            };
            format!(" cost {sign}{difference}")
        }
        _ => String::new(),
    }
}

fn signed(n: i128) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

//! `exporter report`: who consumed what, from the ledger alone (`docs/report.md`).
//!
//! The ledger holds what was exported, so the report shows exactly what the sinks were given, not
//! what Dify shows today. One pass over the ledger's rows of the window feeds each [`Grouping`]
//! (the keys asked for; the HTML page adds its charts' groupings); sums are exact (integers and
//! `Decimal`), kept apart per currency because amounts in different currencies never add up.

mod chart;
mod html;
mod table;
mod text;

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::state::{LedgerLabel, LedgerScan, LedgerView, State};

pub(crate) use html::{Page, TOP_ROWS, html};
pub(crate) use table::{Width, table};
pub(crate) use text::{csv, json};

/// A label rows are summed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "lowercase")]
pub(crate) enum Key {
    Day,
    /// By app id, shown by its name.
    App,
    User,
    Customer,
    Model,
    Provider,
    Workspace,
}

impl Key {
    /// The ledger column it reads.
    fn label(self) -> LedgerLabel {
        match self {
            Key::Day => LedgerLabel::Day,
            Key::App => LedgerLabel::AppId,
            Key::User => LedgerLabel::User,
            Key::Customer => LedgerLabel::Customer,
            Key::Model => LedgerLabel::Model,
            Key::Provider => LedgerLabel::Provider,
            Key::Workspace => LedgerLabel::WorkspaceId,
        }
    }
}

/// Sums over ledger rows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Sums {
    /// Ledger rows summed.
    pub(crate) records: u64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) requests: u64,
    #[serde(with = "rust_decimal::serde::str")]
    pub(crate) cost: Decimal,
}

impl Sums {
    fn add(&mut self, row: &LedgerView<'_>) {
        self.records += 1;
        self.input_tokens += row.input_tokens;
        self.output_tokens += row.output_tokens;
        self.total_tokens += row.total_tokens;
        self.requests += row.request_count;
        self.cost += row.cost;
    }

    fn add_sums(&mut self, other: &Sums) {
        self.records += other.records;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.total_tokens += other.total_tokens;
        self.requests += other.requests;
        self.cost += other.cost;
    }
}

/// One group: its labels (in key order) and sums.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) labels: Vec<String>,
    pub(crate) sums: Sums,
}

/// The groups of one currency, largest cost first (then most tokens, then labels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Currency {
    pub(crate) code: String,
    /// The groups shown (all of them, or the top N).
    pub(crate) groups: Vec<Group>,
    /// How many groups there are in all.
    pub(crate) group_count: usize,
    /// Over every group, shown or not.
    pub(crate) total: Sums,
}

/// Joins a group's labels in its lookup key: the ASCII unit separator, which no label holds.
const SEPARATOR: u8 = 0x1f;

/// The ledger summed by some keys.
#[derive(Debug, Default, Clone)]
struct Grouping {
    /// Where each key's label is in the scanned [`LedgerView`].
    positions: Vec<usize>,
    /// The currency and the labels, joined by [`SEPARATOR`] → sums. Looked up once per ledger row,
    /// so with a fast hash: the keys are the ledger's own labels, not an attacker's input.
    sums: HashMap<Vec<u8>, Sums, foldhash::fast::RandomState>,
    /// The lookup buffer.
    key: Vec<u8>,
}

impl Grouping {
    fn new(positions: Vec<usize>) -> Self {
        Grouping {
            positions,
            ..Grouping::default()
        }
    }

    fn add(&mut self, row: &LedgerView<'_>) {
        // One buffer for the lookup: only a new group allocates its key.
        self.key.clear();
        self.key.extend_from_slice(row.currency);
        for &position in &self.positions {
            self.key.push(SEPARATOR);
            self.key.extend_from_slice(row.label_bytes(position));
        }
        if let Some(sums) = self.sums.get_mut(&self.key) {
            sums.add(row);
        } else {
            let mut sums = Sums::default();
            sums.add(row);
            self.sums.insert(self.key.clone(), sums);
        }
    }

    /// Adds the sums of `other`, a grouping by the same keys of other rows.
    fn merge(&mut self, other: Grouping) {
        for (key, sums) in other.sums {
            self.sums.entry(key).or_default().add_sums(&sums);
        }
    }

    /// Per currency (sorted by code), the groups largest first, at most `top` of them.
    fn currencies(self, top: Option<usize>) -> Result<Vec<Currency>> {
        let mut by_currency: HashMap<String, Vec<Group>> = HashMap::new();
        for (joined, sums) in self.sums {
            let joined = String::from_utf8(joined).context("a ledger label is not UTF-8 text")?;
            let mut parts = joined.split(char::from(SEPARATOR)).map(str::to_owned);
            let currency = parts.next().unwrap_or_default();
            let labels: Vec<String> = parts.collect();
            by_currency
                .entry(currency)
                .or_default()
                .push(Group { labels, sums });
        }
        let mut currencies: Vec<Currency> = by_currency
            .into_iter()
            .map(|(code, mut groups)| {
                groups.sort_by(|a, b| {
                    b.sums
                        .cost
                        .cmp(&a.sums.cost)
                        .then(b.sums.total_tokens.cmp(&a.sums.total_tokens))
                        .then_with(|| a.labels.cmp(&b.labels))
                });
                let mut total = Sums::default();
                for group in &groups {
                    total.add_sums(&group.sums);
                }
                let group_count = groups.len();
                groups.truncate(top.unwrap_or(usize::MAX));
                Currency {
                    code,
                    groups,
                    group_count,
                    total,
                }
            })
            .collect();
        currencies.sort_by(|a, b| a.code.cmp(&b.code));
        Ok(currencies)
    }
}

/// What a report shows.
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) first: NaiveDate,
    pub(crate) last: NaiveDate,
    pub(crate) keys: Vec<Key>,
    pub(crate) currencies: Vec<Currency>,
    /// The name of each app id, as the ledger last recorded it.
    pub(crate) app_names: HashMap<String, String>,
}

impl Report {
    /// The label of `group` under `keys[index]` as a person reads it: an app by its name.
    pub(crate) fn shown<'g>(&'g self, index: usize, group: &'g Group) -> &'g str {
        let label = group.labels[index].as_str();
        match self.keys[index] {
            Key::App => self.app_names.get(label).map_or(label, String::as_str),
            _ => label,
        }
    }
}

/// Sums the ledger's rows of `first..=last` by `keys`, keeping the `top` largest groups of each
/// currency when asked.
pub(crate) fn summarize(
    state: &State,
    first: NaiveDate,
    last: NaiveDate,
    keys: Vec<Key>,
    top: Option<usize>,
) -> Result<Report> {
    let mut reports = summarize_many(state, first, last, vec![(keys, top)])?;
    Ok(reports.remove(0))
}

/// Several reports of the same days from one pass over the ledger, one per (keys, top).
pub(crate) fn summarize_many(
    state: &State,
    first: NaiveDate,
    last: NaiveDate,
    asked: Vec<(Vec<Key>, Option<usize>)>,
) -> Result<Vec<Report>> {
    // Each label column is read once, whichever groupings use it; app names only for app keys.
    let mut labels: Vec<LedgerLabel> = Vec::new();
    let mut position = |label: LedgerLabel| {
        labels.iter().position(|l| *l == label).unwrap_or_else(|| {
            labels.push(label);
            labels.len() - 1
        })
    };
    let groupings: Vec<Grouping> = asked
        .iter()
        .map(|(keys, _)| Grouping::new(keys.iter().map(|key| position(key.label())).collect()))
        .collect();
    let names = asked
        .iter()
        .any(|(keys, _)| keys.contains(&Key::App))
        .then(|| (position(LedgerLabel::AppId), position(LedgerLabel::AppName)));
    let init = || (groupings.clone(), HashMap::<String, String>::new());
    let parts = state.fold_ledger(
        LedgerScan::new(first, last, &labels),
        init,
        |(groupings, app_names), row| {
            if let Some((id, name)) = names {
                let id = row.label(id)?;
                if !app_names.contains_key(id) {
                    app_names.insert(id.to_owned(), row.label(name)?.to_owned());
                }
            }
            for grouping in groupings.iter_mut() {
                grouping.add(row);
            }
            Ok(())
        },
    )?;
    let mut parts = parts.into_iter();
    let (mut groupings, mut app_names) = parts.next().unwrap_or_else(init);
    for (part_groupings, part_names) in parts {
        for (grouping, part) in groupings.iter_mut().zip(part_groupings) {
            grouping.merge(part);
        }
        for (id, name) in part_names {
            app_names.entry(id).or_insert(name);
        }
    }
    groupings
        .into_iter()
        .zip(asked)
        .map(|(grouping, (keys, top))| {
            Ok(Report {
                first,
                last,
                keys,
                currencies: grouping.currencies(top).with_context(|| {
                    format!("the ledger in {} cannot be read", state.path().display())
                })?,
                app_names: app_names.clone(),
            })
        })
        .collect()
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}

//! The ledger as `report` and `reconcile` read it: every row of a window, only the label columns
//! asked for, folded by the caller.
//!
//! A year of ledger is millions of rows, and most of the time goes to SQLite producing them
//! (`docs/benchmarks.md`), so the window is split into parts read side by side: one thread and one
//! read-only connection each. The parts must read one state of the ledger, although the report takes
//! no lock and a run may commit while it starts. Every part begins its read transaction between two
//! readings of `PRAGMA data_version`, which changes whenever another connection commits: equal
//! readings mean that no commit came in between, so every part reads the same snapshot. Otherwise
//! the window is read by one statement on one connection, which is consistent by itself.

use std::num::NonZeroUsize;
use std::path::Path;
use std::thread;

use anyhow::{Context as _, Result};
use chrono::{Days, NaiveDate};
use rusqlite::{Connection, OpenFlags, Row, params};
use rust_decimal::Decimal;

use super::{State, unreadable};

/// A label column of the ledger, as `report` and `reconcile` group by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum LedgerLabel {
    Day,
    AppId,
    AppName,
    WorkspaceId,
    User,
    Customer,
    Provider,
    Model,
}

/// At most this many labels per scan: one of each [`LedgerLabel`].
const LABELS: usize = 8;

/// A ledger row as a scan reads it: the labels asked for (in the order asked, a missing workspace
/// as empty), the currency and the figures, borrowed from the database row, so that a year of ledger
/// is read without a copy per row. Labels are the stored bytes: a caller that keeps only a few of
/// them (the report's groups) checks their UTF-8 once per group instead of once per row.
#[derive(Debug)]
pub(crate) struct LedgerView<'r> {
    labels: [&'r [u8]; LABELS],
    pub(crate) currency: &'r [u8],
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) total_tokens: u64,
    pub(crate) request_count: u64,
    pub(crate) cost: Decimal,
}

impl<'r> LedgerView<'r> {
    /// The stored bytes of the label at `index` of the scan's `labels`.
    pub(crate) fn label_bytes(&self, index: usize) -> &'r [u8] {
        self.labels[index]
    }

    /// The label at `index` of the scan's `labels` as text.
    pub(crate) fn label(&self, index: usize) -> Result<&'r str> {
        std::str::from_utf8(self.labels[index]).context("a ledger label is not UTF-8 text")
    }
}

/// Parts read side by side at most: beyond the cores a part only waits.
const MAX_PARTS: usize = 4;

/// The rows one part reads.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// By rowid, for a window over every day the ledger holds: the table in its own order.
    Rowids(i64, i64),
    /// The days', through the day index.
    Days(NaiveDate, NaiveDate),
}

/// What a scan reads: the ledger rows of the days `first..=last`, with the `labels` asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LedgerScan<'a> {
    first: NaiveDate,
    last: NaiveDate,
    labels: &'a [LedgerLabel],
    /// How many parts are read side by side at most: one per core, up to [`MAX_PARTS`].
    parts: usize,
}

impl<'a> LedgerScan<'a> {
    pub(crate) fn new(first: NaiveDate, last: NaiveDate, labels: &'a [LedgerLabel]) -> Self {
        let cores = thread::available_parallelism().map_or(1, NonZeroUsize::get);
        LedgerScan {
            first,
            last,
            labels,
            parts: cores.min(MAX_PARTS),
        }
    }
}

impl State {
    /// Folds every row the scan reads into values made by `init`, one per part of the window,
    /// reading only the labels asked for (each at most once) beside the currency and the figures.
    /// The rows come in no particular order; the first error `fold` returns (a row it cannot read)
    /// ends the scan. The caller merges the values.
    pub(crate) fn fold_ledger<T: Send>(
        &self,
        asked: LedgerScan<'_>,
        init: impl Fn() -> T + Sync,
        fold: impl Fn(&mut T, &LedgerView<'_>) -> Result<()> + Sync,
    ) -> Result<Vec<T>> {
        let LedgerScan {
            first,
            last,
            labels,
            parts: count,
        } = asked;
        anyhow::ensure!(
            labels.len() <= LABELS,
            "at most {LABELS} ledger labels per scan"
        );
        let before = self.data_version()?;
        let parts = self.parts(first, last, count)?;
        if parts.len() > 1 {
            let readers = self.readers(parts.len())?;
            if self.data_version()? == before {
                let path = self.path.as_path();
                return thread::scope(|scope| {
                    let scans: Vec<_> = readers
                        .into_iter()
                        .zip(parts)
                        .map(|(reader, part)| {
                            let (init, fold) = (&init, &fold);
                            scope.spawn(move || {
                                let mut value = init();
                                scan(&reader, path, part, labels, &mut value, fold)?;
                                Ok(value)
                            })
                        })
                        .collect();
                    scans
                        .into_iter()
                        .map(|scan| {
                            scan.join()
                                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                        })
                        .collect()
                });
            }
        }
        let whole = match self.parts(first, last, 1)?[..] {
            [part] => part,
            _ => Part::Days(first, last),
        };
        let mut value = init();
        scan(&self.conn, &self.path, whole, labels, &mut value, &fold)?;
        Ok(vec![value])
    }

    /// The window in at most `count` parts of about equal size, together covering it exactly.
    fn parts(&self, first: NaiveDate, last: NaiveDate, count: usize) -> Result<Vec<Part>> {
        let Some((held_first, held_last)) = self.ledger_days()? else {
            return Ok(vec![Part::Days(first, last)]);
        };
        let count = i64::try_from(count.max(1)).unwrap_or(1);
        if first <= held_first && last >= held_last {
            // Both ends of the table's b-tree: two lookups (one `MIN(rowid), MAX(rowid)` would scan).
            let (low, high): (i64, i64) = self
                .conn
                .query_row(
                    "SELECT (SELECT MIN(rowid) FROM ledger), (SELECT MAX(rowid) FROM ledger)",
                    [],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .with_context(|| unreadable(&self.path))?;
            let bounds = split(low, high, count);
            // Open outer ends: a part never misses a row for lying outside the bounds read first.
            return Ok(bounds
                .windows(2)
                .enumerate()
                .map(|(i, pair)| {
                    let from = if i == 0 { i64::MIN } else { pair[0] + 1 };
                    let to = if i + 2 == bounds.len() {
                        i64::MAX
                    } else {
                        pair[1]
                    };
                    Part::Rowids(from, to)
                })
                .collect());
        }
        let (from, to) = (first.max(held_first), last.min(held_last));
        if from > to {
            return Ok(vec![Part::Days(first, last)]);
        }
        let offset = |day: NaiveDate| (day - from).num_days();
        let bounds = split(0, offset(to), count);
        let day = |offset: i64| from + Days::new(u64::try_from(offset).unwrap_or(0));
        Ok(bounds
            .windows(2)
            .enumerate()
            .map(|(i, pair)| {
                let start = if i == 0 { first } else { day(pair[0] + 1) };
                let end = if i + 2 == bounds.len() {
                    last
                } else {
                    day(pair[1])
                };
                Part::Days(start, end)
            })
            .collect())
    }

    /// `count` read-only connections, each inside a read transaction that has begun.
    fn readers(&self, count: usize) -> Result<Vec<Connection>> {
        (0..count)
            .map(|_| {
                let reader = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                reader.busy_timeout(std::time::Duration::from_secs(10))?;
                // A deferred transaction takes its snapshot at its first read.
                reader.execute_batch("BEGIN")?;
                let _: bool =
                    reader
                        .query_row("SELECT EXISTS (SELECT 1 FROM ledger)", [], |row| row.get(0))?;
                Ok(reader)
            })
            .collect::<rusqlite::Result<_>>()
            .with_context(|| unreadable(&self.path))
    }

    /// Changes whenever another connection commits to the database.
    fn data_version(&self) -> Result<i64> {
        self.conn
            .query_row("PRAGMA data_version", [], |row| row.get(0))
            .with_context(|| unreadable(&self.path))
    }
}

/// `low..=high` cut into at most `count` ranges: the bounds `low - 1 = b0 < b1 < … = high`, range
/// `i` being `b[i] + 1 ..= b[i + 1]`.
fn split(low: i64, high: i64, count: i64) -> Vec<i64> {
    let span = i128::from(high) - i128::from(low) + 1;
    let count = i128::from(count).min(span.max(1));
    (0..=count)
        .map(|i| {
            let bound = i128::from(low) - 1 + span * i / count;
            i64::try_from(bound).unwrap_or(i64::MAX)
        })
        .collect()
}

/// Folds the rows of `part` into `value`.
fn scan<T>(
    conn: &Connection,
    path: &Path,
    part: Part,
    labels: &[LedgerLabel],
    value: &mut T,
    fold: &impl Fn(&mut T, &LedgerView<'_>) -> Result<()>,
) -> Result<()> {
    let mut columns: Vec<&str> = labels.iter().map(|&label| <&str>::from(label)).collect();
    columns.extend([
        "currency",
        "input_tokens",
        "output_tokens",
        "total_tokens",
        "request_count",
        "cost",
    ]);
    let filter = match part {
        Part::Rowids(..) => "rowid",
        Part::Days(..) => "day",
    };
    let sql = format!(
        "SELECT {} FROM ledger WHERE {filter} BETWEEN ?1 AND ?2",
        columns.join(", ")
    );
    let mut statement = conn
        .prepare_cached(&sql)
        .with_context(|| unreadable(path))?;
    let mut rows = match part {
        Part::Rowids(from, to) => statement.query(params![from, to]),
        Part::Days(from, to) => statement.query(params![from.to_string(), to.to_string()]),
    }
    .with_context(|| unreadable(path))?;
    while let Some(row) = rows.next().with_context(|| unreadable(path))? {
        let view = view(row, labels.len()).with_context(|| unreadable(path))?;
        fold(value, &view).with_context(|| unreadable(path))?;
    }
    Ok(())
}

fn view<'r>(row: &'r Row<'_>, labels: usize) -> Result<LedgerView<'r>> {
    let bytes = |i: usize| -> Result<&'r [u8]> {
        Ok(row.get_ref(i)?.as_bytes_or_null()?.unwrap_or_default())
    };
    let number = |i: usize| -> Result<u64> {
        let n = row.get_ref(labels + i)?.as_i64()?;
        u64::try_from(n).with_context(|| format!("a ledger figure holds the negative number {n}"))
    };
    let mut view = LedgerView {
        labels: [&[]; LABELS],
        currency: bytes(labels)?,
        input_tokens: number(1)?,
        output_tokens: number(2)?,
        total_tokens: number(3)?,
        request_count: number(4)?,
        cost: Decimal::ZERO,
    };
    for (index, label) in view.labels.iter_mut().take(labels).enumerate() {
        *label = bytes(index)?;
    }
    let cost = row.get_ref(labels + 5)?.as_str()?;
    view.cost = cost
        .parse()
        .with_context(|| format!("the ledger holds the cost `{cost}`, not a decimal"))?;
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_cut_into_adjoining_parts_that_cover_it() {
        assert_eq!(split(1, 10, 2), vec![0, 5, 10]);
        assert_eq!(split(1, 10, 3), vec![0, 3, 6, 10]);
        assert_eq!(split(5, 5, 4), vec![4, 5]);
        assert_eq!(split(i64::MIN + 1, i64::MAX, 2).len(), 3);
    }

    /// A ledger of days 2025-01-01..=10 with `day * 10 + n` tokens in row `n` (0..3) of each day.
    fn ledger() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        for day in 1..=10 {
            for n in 0..3 {
                state
                    .conn
                    .execute(
                        "INSERT INTO ledger VALUES (?1, ?2, 'app', 'App', NULL, ?3, ?3, 'p', 'm', 'USD', \
                         0, 0, ?4, 1, '0.01', 0, 1, '2025-01-01T00:00:00Z')",
                        params![format!("{day}-{n}"), format!("2025-01-{day:02}"), format!("u{n}"), day * 10 + n],
                    )
                    .unwrap();
            }
        }
        (dir, state)
    }

    /// Rows, tokens and cost of the window, read in at most `count` parts.
    fn totals(
        state: &State,
        count: usize,
        first: &str,
        last: &str,
    ) -> (usize, u64, Decimal, usize) {
        let (first, last) = (first.parse().unwrap(), last.parse().unwrap());
        let asked = LedgerScan {
            parts: count,
            ..LedgerScan::new(first, last, &[LedgerLabel::User])
        };
        let parts = state
            .fold_ledger(asked, Vec::new, |rows, row| {
                rows.push((row.total_tokens, row.cost, row.label(0)?.to_owned()));
                Ok(())
            })
            .unwrap();
        let rows: Vec<_> = parts.iter().flatten().collect();
        let tokens = rows.iter().map(|row| row.0).sum();
        let cost = rows.iter().map(|row| row.1).sum();
        (rows.len(), tokens, cost, parts.len())
    }

    #[test]
    fn parts_read_every_row_of_the_window_once() {
        let (_dir, state) = ledger();
        let day_tokens = |day: u64| day * 30 + 3;
        let whole: u64 = (1..=10).map(day_tokens).sum();
        let cents = |n: i64| Decimal::new(n, 2);
        for count in [1, 2, 3, 4] {
            let parts = count.min(4);
            assert_eq!(
                totals(&state, count, "2024-12-01", "2025-12-31"),
                (30, whole, cents(30), parts)
            );
            let some: u64 = (3..=7).map(day_tokens).sum();
            assert_eq!(
                totals(&state, count, "2025-01-03", "2025-01-07"),
                (15, some, cents(15), parts)
            );
            assert_eq!(
                totals(&state, count, "2025-01-10", "2025-02-07"),
                (3, day_tokens(10), cents(3), 1)
            );
            assert_eq!(
                totals(&state, count, "2025-02-01", "2025-02-07"),
                (0, 0, cents(0), 1)
            );
        }
    }
}

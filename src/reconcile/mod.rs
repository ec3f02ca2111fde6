//! `exporter reconcile`: the ledger beside Dify's own statistics, per app and UTC day
//! (`docs/reconcile.md`).
//!
//! The report says what was exported; this says whether that still matches what Dify counts. Each
//! app-day gets a [`Verdict`] by the rules `docs/reconcile.md` documents: equal figures agree;
//! a ledger above Dify is explained when the ledger is known to keep what Dify no longer shows
//! (`USAGE_DECREASES=keep`) or Dify's statistic is known to leave it out (a workflow app's triggered
//! runs); anything else — above all a ledger below Dify — is a disagreement, the exit status and the
//! metric. Sums are exact: tokens are integers, costs `Decimal`.

mod console;
mod database;
mod output;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;

use crate::ledger::DecreasePolicy;
use crate::source::AppMode;
use crate::state::{LedgerLabel, LedgerScan, State};

pub(crate) use console::dify_figures as console_figures;
pub(crate) use database::dify_figures as database_figures;
pub(crate) use output::{json, text};

/// Which of Dify's statistics an app-day is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Statistic {
    /// `statistics/token-costs` (chat, agent-chat, completion apps): tokens and price.
    TokenCosts,
    /// `workflow/statistics/token-costs` (workflow, advanced-chat apps): tokens of `app-run` runs.
    WorkflowTokenCosts,
}

/// How an app-day compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub(crate) enum Verdict {
    /// Tokens (and cost, where Dify gives one) are equal.
    Agrees,
    /// The ledger is above Dify and `USAGE_DECREASES=keep`: it kept exported usage Dify no longer
    /// shows (a deleted conversation, an archived or deleted run, a deleted app).
    KeptDecrease,
    /// A workflow app's ledger is above Dify's workflow statistic, which counts `app-run` runs only:
    /// the ledger also holds the runs a webhook, schedule or plugin triggered.
    TriggeredRuns,
    /// The ledger is below Dify: usage the exporter missed, or that Dify gained since the last run
    /// that collected the day.
    LedgerBelowDify,
    /// The ledger is above Dify with nothing to explain it (`USAGE_DECREASES=follow`), or one figure
    /// is above and the other below.
    LedgerAboveDify,
}

impl Verdict {
    /// Whether the app-day counts as disagreeing (the exit status, the metric).
    pub(crate) fn disagrees(self) -> bool {
        matches!(self, Verdict::LedgerBelowDify | Verdict::LedgerAboveDify)
    }
}

/// What one side counts for an app-day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Figures {
    pub(crate) tokens: u64,
    /// `None` where Dify gives no price (its workflow statistic).
    #[serde(with = "rust_decimal::serde::str_option")]
    pub(crate) cost: Option<Decimal>,
}

/// One app's statistics over the window, as Dify answered them.
#[derive(Debug, Clone)]
pub(crate) struct DifyApp {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) mode: AppMode,
    pub(crate) statistic: Statistic,
    pub(crate) days: BTreeMap<NaiveDate, Figures>,
}

/// One compared app-day.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct AppDay {
    pub(crate) day: NaiveDate,
    pub(crate) app_id: String,
    pub(crate) app_name: String,
    /// `None` for an app Dify no longer lists.
    pub(crate) statistic: Option<Statistic>,
    pub(crate) ledger: Figures,
    pub(crate) dify: Figures,
    pub(crate) verdict: Verdict,
}

/// The whole comparison.
#[derive(Debug, Serialize)]
pub(crate) struct Reconciliation {
    pub(crate) from: NaiveDate,
    pub(crate) to: NaiveDate,
    /// Every app-day with usage on either side, by day then app id.
    pub(crate) app_days: Vec<AppDay>,
}

impl Reconciliation {
    pub(crate) fn disagreeing(&self) -> usize {
        self.app_days
            .iter()
            .filter(|d| d.verdict.disagrees())
            .count()
    }

    pub(crate) fn agreeing(&self) -> usize {
        self.app_days
            .iter()
            .filter(|d| d.verdict == Verdict::Agrees)
            .count()
    }
}

/// The ledger's tokens and cost (all currencies: Dify's price sums them too) per (app id, day),
/// and each app's name as the ledger last recorded it.
type LedgerSums = BTreeMap<(String, NaiveDate), (String, u64, Decimal)>;

fn ledger_sums(state: &State, from: NaiveDate, to: NaiveDate) -> Result<LedgerSums> {
    let labels = [LedgerLabel::AppId, LedgerLabel::Day, LedgerLabel::AppName];
    let parts = state.fold_ledger(
        LedgerScan::new(from, to, &labels),
        LedgerSums::new,
        |sums, row| {
            let (app_id, day, app_name) = (row.label(0)?, row.label(1)?, row.label(2)?);
            let Ok(day) = day.parse::<NaiveDate>() else {
                anyhow::bail!("a ledger row's day `{day}` is not a YYYY-MM-DD day");
            };
            let entry = sums
                .entry((app_id.to_owned(), day))
                .or_insert_with(|| (app_name.to_owned(), 0, Decimal::ZERO));
            entry.1 += row.total_tokens;
            entry.2 += row.cost;
            Ok(())
        },
    )?;
    let mut sums = LedgerSums::new();
    for part in parts {
        for (key, (app_name, tokens, cost)) in part {
            let entry = sums.entry(key).or_insert((app_name, 0, Decimal::ZERO));
            entry.1 += tokens;
            entry.2 += cost;
        }
    }
    Ok(sums)
}

/// Compares the ledger's `from..=to` with Dify's statistics of the listed apps.
pub(crate) fn reconcile(
    state: &State,
    from: NaiveDate,
    to: NaiveDate,
    dify: &[DifyApp],
    policy: DecreasePolicy,
) -> Result<Reconciliation> {
    let mut ledger = ledger_sums(state, from, to)?;
    let mut app_days = Vec::new();
    for app in dify {
        let held = ledger
            .range((app.id.clone(), from)..=(app.id.clone(), to))
            .map(|((_, day), _)| *day);
        let days: BTreeSet<NaiveDate> = app.days.keys().copied().chain(held).collect();
        for day in days {
            let theirs = app.days.get(&day).copied().unwrap_or(Figures {
                tokens: 0,
                cost: match app.statistic {
                    Statistic::TokenCosts => Some(Decimal::ZERO),
                    Statistic::WorkflowTokenCosts => None,
                },
            });
            let ours = ledger
                .remove(&(app.id.clone(), day))
                .map_or((0, Decimal::ZERO), |(_, tokens, cost)| (tokens, cost));
            let ledger_figures = Figures {
                tokens: ours.0,
                cost: Some(ours.1),
            };
            app_days.push(AppDay {
                day,
                app_id: app.id.clone(),
                app_name: app.name.clone(),
                statistic: Some(app.statistic),
                verdict: verdict(
                    ledger_figures,
                    theirs,
                    app.mode == AppMode::Workflow,
                    policy,
                ),
                ledger: ledger_figures,
                dify: theirs,
            });
        }
    }
    // What is left is the usage of apps Dify no longer lists: Dify counts nothing for them.
    for ((app_id, day), (app_name, tokens, cost)) in ledger {
        let ours = Figures {
            tokens,
            cost: Some(cost),
        };
        let theirs = Figures {
            tokens: 0,
            cost: None,
        };
        app_days.push(AppDay {
            day,
            app_id,
            app_name,
            statistic: None,
            verdict: verdict(ours, theirs, false, policy),
            ledger: ours,
            dify: theirs,
        });
    }
    let nonzero = |f: &Figures| f.tokens != 0 || f.cost.is_some_and(|c| !c.is_zero());
    app_days.retain(|d| nonzero(&d.ledger) || nonzero(&d.dify));
    app_days.sort_by(|a, b| (a.day, &a.app_id).cmp(&(b.day, &b.app_id)));
    Ok(Reconciliation { from, to, app_days })
}

/// The rule of `docs/reconcile.md#when-an-app-day-agrees`. `triggered_runs`: the app is a
/// workflow app, whose triggered runs the ledger holds and Dify's workflow statistic leaves out.
fn verdict(
    ledger: Figures,
    dify: Figures,
    triggered_runs: bool,
    policy: DecreasePolicy,
) -> Verdict {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let tokens = ledger.tokens.cmp(&dify.tokens);
    // Where Dify gives no price, the cost is not compared.
    let cost = match (ledger.cost, dify.cost) {
        (Some(ours), Some(theirs)) => ours.cmp(&theirs),
        _ => Equal,
    };
    if tokens == Equal && cost == Equal {
        Verdict::Agrees
    } else if tokens != Greater && cost != Greater {
        Verdict::LedgerBelowDify
    } else if tokens == Less || cost == Less {
        Verdict::LedgerAboveDify
    } else if triggered_runs {
        Verdict::TriggeredRuns
    } else if policy == DecreasePolicy::Keep {
        Verdict::KeptDecrease
    } else {
        Verdict::LedgerAboveDify
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(tokens: u64, cost: Option<&str>) -> Figures {
        Figures {
            tokens,
            cost: cost.map(|c| c.parse().unwrap()),
        }
    }

    #[test]
    fn the_verdicts_follow_the_documented_rule() {
        let (messages, runs) = (false, true);
        let keep = DecreasePolicy::Keep;
        let follow = DecreasePolicy::Follow;
        let v = |l, d, s, p| verdict(l, d, s, p);
        let ledger = figures(100, Some("0.0100"));
        assert_eq!(
            v(ledger, figures(100, Some("0.01")), messages, follow),
            Verdict::Agrees
        );
        assert_eq!(v(ledger, figures(100, None), runs, follow), Verdict::Agrees);
        assert_eq!(
            v(ledger, figures(101, Some("0.01")), messages, keep),
            Verdict::LedgerBelowDify
        );
        assert_eq!(
            v(ledger, figures(100, Some("0.0101")), messages, keep),
            Verdict::LedgerBelowDify
        );
        assert_eq!(
            v(ledger, figures(99, Some("0.01")), messages, keep),
            Verdict::KeptDecrease
        );
        assert_eq!(
            v(ledger, figures(99, Some("0.01")), messages, follow),
            Verdict::LedgerAboveDify
        );
        assert_eq!(
            v(ledger, figures(99, None), runs, follow),
            Verdict::TriggeredRuns
        );
        assert_eq!(
            v(ledger, figures(0, None), messages, keep),
            Verdict::KeptDecrease
        );
        assert_eq!(
            v(ledger, figures(101, None), runs, keep),
            Verdict::LedgerBelowDify
        );
        assert_eq!(
            v(ledger, figures(99, Some("0.02")), messages, keep),
            Verdict::LedgerAboveDify
        );
    }
}

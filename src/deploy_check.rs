//! `validate-config --check-deploy DIR`: do the Kubernetes CronJob and the crontab files carry the
//! configured schedule?
//!
//! Schedules are compared by meaning (`@daily` equals `0 0 * * *`), not as text. The layout looked
//! at is the one this repository ships: `DIR/kubernetes/*.yaml|*.yml` (every document of kind
//! `CronJob`) and every file in `DIR/crontab/` except Markdown (every schedule line).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use serde::Deserialize;

use crate::schedule::Schedule;

/// The time zone a CronJob must declare: the exporter's days are UTC days.
const UTC_ZONES: [&str; 2] = ["Etc/UTC", "UTC"];

/// One schedule found in a deployment file.
#[derive(Debug)]
pub(crate) struct DeployFinding {
    pub(crate) file: PathBuf,
    /// The schedule text as written.
    pub(crate) schedule: String,
    /// What is wrong with it, if anything.
    pub(crate) problem: Option<String>,
}

/// Checks every deployment file under `dir` against `expected`.
///
/// # Errors
/// When a file cannot be read or parsed, or no schedule is found at all.
pub(crate) fn check(dir: &Path, expected: &Schedule) -> Result<Vec<DeployFinding>> {
    let mut findings = Vec::new();
    for file in files_in(&dir.join("kubernetes"))?
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "yaml" || e == "yml"))
    {
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        for (schedule, zone) in cronjob_schedules(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))?
        {
            let mut finding = compare(&file, schedule, expected);
            if finding.problem.is_none() && !zone.as_deref().is_some_and(|z| UTC_ZONES.contains(&z))
            {
                finding.problem = Some(format!(
                    "CronJob timeZone is {}; set `timeZone: Etc/UTC` so it fires in UTC like CRON_SCHEDULE",
                    zone.as_deref()
                        .unwrap_or("unset (the controller's local zone)")
                ));
            }
            findings.push(finding);
        }
    }
    for file in files_in(&dir.join("crontab"))?
        .into_iter()
        .filter(|f| f.extension().is_none_or(|e| e != "md"))
    {
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        findings.extend(crontab_schedules(&text).map(|s| compare(&file, s, expected)));
    }
    if findings.is_empty() {
        bail!(
            "no CronJob in {0}/kubernetes/*.yaml and no crontab line in {0}/crontab/ was found",
            dir.display()
        );
    }
    Ok(findings)
}

fn compare(file: &Path, schedule: String, expected: &Schedule) -> DeployFinding {
    let problem = match Schedule::parse(&schedule) {
        Ok(found) if found.same_meaning(expected) => None,
        Ok(_) => Some(format!(
            "schedule `{schedule}` differs from CRON_SCHEDULE `{}`",
            expected.expression()
        )),
        Err(err) => Some(format!("schedule `{schedule}` is not portable: {err}")),
    };
    DeployFinding {
        file: file.to_path_buf(),
        schedule,
        problem,
    }
}

/// Regular files directly in `dir`, sorted; a missing directory has none.
fn files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("cannot list {}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot list {}", dir.display()))?
            .path();
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[derive(Deserialize)]
struct Manifest {
    kind: Option<String>,
    spec: Option<CronJobSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CronJobSpec {
    schedule: Option<String>,
    time_zone: Option<String>,
}

/// (schedule, timeZone) of every CronJob document in a multi-document YAML file.
fn cronjob_schedules(text: &str) -> Result<Vec<(String, Option<String>)>> {
    let mut found = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        let Some(manifest) = Option::<Manifest>::deserialize(document)? else {
            continue;
        };
        if manifest.kind.as_deref() == Some("CronJob") {
            let spec = manifest.spec.context("a CronJob without spec")?;
            found.push((
                spec.schedule.context("a CronJob without spec.schedule")?,
                spec.time_zone,
            ));
        }
    }
    Ok(found)
}

/// The schedule of every job line: comments, blank lines and `NAME=value` lines are skipped.
fn crontab_schedules(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines().filter_map(|line| {
        let line = line.trim();
        let first = line.split_whitespace().next()?;
        if line.starts_with('#') || first.contains('=') {
            return None;
        }
        if first.starts_with('@') {
            return Some(first.to_owned());
        }
        Some(
            line.split_whitespace()
                .take(5)
                .collect::<Vec<_>>()
                .join(" "),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crontab_lines_skip_comments_and_assignments() {
        let text = "# m h dom mon dow\nSHELL=/bin/sh\nCRON_TZ=UTC\n\n15 0 * * * app /usr/bin/exporter run\n@daily exporter run\n";
        assert_eq!(
            crontab_schedules(text).collect::<Vec<_>>(),
            ["15 0 * * *", "@daily"]
        );
    }

    #[test]
    fn cronjob_documents_are_found_among_others() {
        let text = "kind: Secret\nmetadata: {name: x}\n---\nkind: CronJob\nspec:\n  schedule: \"@daily\"\n  timeZone: Etc/UTC\n";
        assert_eq!(
            cronjob_schedules(text).unwrap(),
            [("@daily".to_owned(), Some("Etc/UTC".to_owned()))]
        );
    }
}

//! `exporter validate-config`: every check `run` makes, with the effective configuration (secrets
//! masked) as the product, and optionally the deployment files' schedules compared with it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{SecondsFormat, Utc};
use serde_json::json;
use tracing::{error, info};

use crate::cli::{OutputFormat, ValidateConfigArgs};
use crate::config::Config;
use crate::deploy_check::{self, DeployFinding};
use crate::environment::Environment;
use crate::exit::Exit;

#[must_use]
pub(super) fn validate_config(environment: &Environment, args: &ValidateConfigArgs) -> Exit {
    let config = Config::from_env(environment);
    let deploy = match (&config, &args.check_deploy) {
        (Ok(config), Some(dir)) => Some(deploy_check::check(dir, &config.schedule)),
        _ => None,
    };

    let report = match args.output {
        OutputFormat::Text => text_report(&config, deploy.as_ref(), environment),
        OutputFormat::Json => json_report(&config, deploy.as_ref(), environment),
    };
    if let Err(err) = crate::stdout::print(&report) {
        error!(error = %err, "cannot write to stdout");
        return Exit::Failure;
    }

    let deploy_ok = match &deploy {
        None => true,
        Some(Ok(findings)) => findings.iter().all(|f| f.problem.is_none()),
        Some(Err(_)) => false,
    };
    match (&config, deploy_ok) {
        (Ok(_), true) => {
            info!("configuration is valid");
            Exit::Success
        }
        (Ok(_), false) => {
            error!("deployment files do not match CRON_SCHEDULE");
            Exit::Failure
        }
        (Err(problems), _) => {
            super::log_problems(problems);
            Exit::Failure
        }
    }
}

type ConfigResult = Result<Config, crate::config::Problems>;
type DeployResult = anyhow::Result<Vec<DeployFinding>>;

fn next_fire_time(config: &Config) -> Option<String> {
    config
        .schedule
        .fire_times_after(Utc::now())
        .next()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

/// What is worth a second look although it does not make the configuration invalid.
fn warnings(environment: &Environment) -> Vec<String> {
    environment
        .missing_example_keys
        .iter()
        .map(|key| format!("{key} is listed in .env.example but not set"))
        .chain(crate::config::placeholders(environment))
        .collect()
}

fn text_report(
    config: &ConfigResult,
    deploy: Option<&DeployResult>,
    environment: &Environment,
) -> String {
    let mut out = String::new();
    match config {
        Ok(config) => {
            out.push_str("configuration is valid\n");
            let _ = writeln!(out, "  {:<26} {}", "(usage source)", config.source.name());
            for (variable, value) in config.masked() {
                let _ = writeln!(out, "  {variable:<26} {value}");
            }
            if let Some(next) = next_fire_time(config) {
                let _ = writeln!(out, "  {:<26} {next}", "(next fire time, UTC)");
            }
        }
        Err(problems) => {
            let n = problems.0.len();
            let _ = writeln!(
                out,
                "configuration is invalid ({n} problem{}):",
                if n == 1 { "" } else { "s" }
            );
            for problem in &problems.0 {
                let _ = writeln!(out, "  {problem}");
            }
        }
    }
    for warning in warnings(environment) {
        let _ = writeln!(out, "warning: {warning}");
    }
    match deploy {
        None => {}
        Some(Ok(findings)) => {
            for finding in findings {
                match &finding.problem {
                    None => {
                        let _ = writeln!(
                            out,
                            "deploy: {} schedule `{}` matches",
                            finding.file.display(),
                            finding.schedule
                        );
                    }
                    Some(problem) => {
                        let _ = writeln!(out, "deploy: {}: {problem}", finding.file.display());
                    }
                }
            }
        }
        Some(Err(err)) => {
            let _ = writeln!(out, "deploy: {err:#}");
        }
    }
    out
}

fn json_report(
    config: &ConfigResult,
    deploy: Option<&DeployResult>,
    environment: &Environment,
) -> String {
    let mut report = match config {
        Ok(config) => {
            let masked: BTreeMap<_, _> = config.masked().iter().cloned().collect();
            json!({
                "valid": true,
                "source": config.source.name(),
                "config": masked,
                "next_fire_time": next_fire_time(config),
            })
        }
        Err(problems) => {
            let problems: Vec<_> = problems
                .0
                .iter()
                .map(|p| json!({ "variable": p.variable, "message": p.message }))
                .collect();
            json!({ "valid": false, "problems": problems })
        }
    };
    report["warnings"] = warnings(environment).into();
    match deploy {
        None => {}
        Some(Ok(findings)) => {
            report["deploy"] = findings
                .iter()
                .map(|f| json!({ "file": f.file, "schedule": f.schedule, "problem": f.problem }))
                .collect();
        }
        Some(Err(err)) => report["deploy_error"] = format!("{err:#}").into(),
    }
    format!("{report}\n")
}

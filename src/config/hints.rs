//! Values that are valid or nearly so but almost certainly not what the operator meant: a value
//! still wrapped in quotes, and a value still `.env.example`'s placeholder.
//!
//! `docker run --env-file` and Kubernetes take a value literally, so `CRON_SCHEDULE="15 0 * * *"`
//! copied from `.env.example` arrives with its quotes; the rule's own message (`minute "15 …`)
//! would not say why, so the quotes are named instead. A placeholder is only a warning: the
//! unedited example must be checkable, and `validate-config` is how a person finds what is left to
//! fill in.

use super::variables::{Secrecy, VARIABLES, Variable};
use super::{Problem, masked_value};
use crate::environment::Environment;

/// Text that marks a value of `.env.example` (or of the Secret example) as one to replace.
const PLACEHOLDER_WORDS: [&str; 2] = ["change-me", "replace_me"];
/// Domains reserved for examples (RFC 2606): no real Dify or meter lives there.
const EXAMPLE_DOMAINS: [&str; 3] = ["example.com", "example.org", "example.net"];
/// The workspace id of `.env.example`.
const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// A problem for every variable whose whole value is wrapped in matching quotes.
pub(super) fn quoted(env: &Environment) -> Vec<Problem> {
    VARIABLES
        .iter()
        .filter_map(|variable| {
            let value = env.get(variable.name)?.trim();
            let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''))?;
            (value.len() >= 2 && value.ends_with(quote)).then(|| Problem {
                variable: variable.name,
                message: format!(
                    "{} is wrapped in quotes, which `docker run --env-file` and Kubernetes keep as part of \
                     the value: remove the quotes",
                    shown(variable, value)
                ),
            })
        })
        .collect()
}

/// A warning for every variable that still holds a placeholder.
pub(crate) fn placeholders(env: &Environment) -> Vec<String> {
    VARIABLES
        .iter()
        .filter_map(|variable| {
            let value = env.get(variable.name)?.trim();
            is_placeholder(value).then(|| {
                format!(
                    "{} is still a placeholder of .env.example ({}): set your own value",
                    variable.name,
                    shown(variable, value)
                )
            })
        })
        .collect()
}

fn is_placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    PLACEHOLDER_WORDS.iter().any(|word| lower.contains(word))
        || lower == NIL_UUID
        || lower
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            .any(|word| {
                EXAMPLE_DOMAINS.iter().any(|domain| {
                    word == *domain
                        || word
                            .strip_suffix(domain)
                            .is_some_and(|host| host.ends_with('.'))
                })
            })
}

/// The value as output may show it: a secret as `***`, a URL without its password.
fn shown(variable: &Variable, value: &str) -> String {
    match variable.secrecy {
        Secrecy::Secret => masked_value(variable, value),
        Secrecy::Public | Secrecy::UrlPassword => format!("`{}`", masked_value(variable, value)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value `.env.example` ships, commented out or not.
    fn example_values() -> Vec<(String, String)> {
        include_str!("../../.env.example")
            .lines()
            .map(|line| line.trim_start_matches('#').trim())
            .filter_map(|line| line.split_once('='))
            .filter(|(key, _)| VARIABLES.iter().any(|v| v.name == *key))
            .map(|(key, value)| (key.to_owned(), value.trim_matches('"').to_owned()))
            .collect()
    }

    #[test]
    fn every_address_and_secret_of_the_example_is_a_placeholder() {
        let values = example_values();
        let flagged: Vec<&str> = values
            .iter()
            .filter(|(_, value)| is_placeholder(value))
            .map(|(key, _)| key.as_str())
            .collect();
        assert_eq!(
            flagged,
            [
                "DIFY_API_URL",
                "DIFY_API_TOKEN",
                "DIFY_WORKSPACE_ID",
                "DIFY_EMAIL",
                "DIFY_PASSWORD",
                "DIFY_DATABASE_URL",
                "EXTERNAL_API_URL",
                "EXTERNAL_API_TOKEN",
                "SINK_POSTGRES_URL",
                "SINK_CLOUDEVENTS_URL",
                "SINK_CLOUDEVENTS_TOKEN",
                "SINK_CLOUDEVENTS_SOURCE",
            ]
        );
    }

    #[test]
    fn real_values_are_not_placeholders() {
        for value in [
            "https://dify.internal.corp",
            "https://notexample.com/v1",
            "15 0 * * *",
            "a-long-real-token-value",
            "0190a1b2-0000-7000-8000-000000000001",
        ] {
            assert!(!is_placeholder(value), "{value}");
        }
    }

    #[test]
    fn only_values_wholly_in_matching_quotes_are_quoted() {
        let env = Environment::from_pairs([
            ("CRON_SCHEDULE", "\"15 0 * * *\""),
            ("DIFY_API_TOKEN", "'secret-token-value'"),
            ("EXTERNAL_API_TENANT_ID", "\"half"),
            ("LOG_LEVEL", "\""),
        ]);
        let problems: Vec<String> = quoted(&env).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "DIFY_API_TOKEN: *** is wrapped in quotes, which `docker run --env-file` and Kubernetes keep as part of the value: remove the quotes",
                "CRON_SCHEDULE: `\"15 0 * * *\"` is wrapped in quotes, which `docker run --env-file` and Kubernetes keep as part of the value: remove the quotes",
            ]
        );
    }
}

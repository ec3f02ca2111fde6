//! Dify's answers as typed structs.
//!
//! Every struct ignores fields it does not name, so a newer Dify that adds fields still parses. The
//! variants not seen on a running Dify but possible in its code are accepted too: token counts as numbers or numeric strings,
//! prices as decimal strings, numbers or `null`, in plain or exponent form (`"0E-7"`). A negative
//! token count or price, and a currency that is not three ASCII letters, are refused with the JSON
//! path of the field: they would silently corrupt every total they touch, or have the meter reject
//! (and dead-letter) a whole day.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::source::AppMode;

/// A page of a list: page-numbered (`/apps`, `workflow-app-logs`, `chat-conversations`, with
/// `total`) or cursor-paged (`workflow-runs`, `chat-messages`, without).
#[derive(Debug, Deserialize)]
pub(super) struct Page<T> {
    pub(crate) data: Vec<T>,
    pub(crate) has_more: bool,
    #[serde(default, deserialize_with = "optional_tokens")]
    pub(crate) total: Option<u64>,
}

/// One app as listed, with its model when it is a chat-type app.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct App {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The mode as Dify names it; [`App::mode`] interprets it. Kept as text so that an app of a
    /// mode this version does not know can be named in the log.
    #[serde(rename = "mode")]
    pub(crate) mode_name: String,
    #[serde(default)]
    pub(crate) model_config: Option<ModelConfig>,
}

impl App {
    #[must_use]
    pub(crate) fn mode(&self) -> AppMode {
        AppMode::from_name(&self.mode_name)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ModelConfig {
    #[serde(default)]
    pub(crate) model: Option<ModelRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ModelRef {
    #[serde(default)]
    pub(crate) provider: String,
    #[serde(default)]
    pub(crate) name: String,
}

/// `GET /account/profile`: the timezone the statistics endpoints group days by.
#[derive(Debug, Deserialize)]
pub(super) struct Profile {
    #[serde(default)]
    pub(crate) timezone: Option<String>,
}

/// Who started a run: the fields the app logs, the run list and every node execution carry.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Creator {
    #[serde(default)]
    pub(crate) created_by_account: Option<Account>,
    #[serde(default)]
    pub(crate) created_by_end_user: Option<EndUser>,
}

impl Creator {
    /// The user a record is attributed to: end-user session id, else account email, else empty.
    #[must_use]
    pub(super) fn user(&self) -> String {
        let session = self
            .created_by_end_user
            .as_ref()
            .and_then(|u| u.session_id.as_deref());
        let email = self
            .created_by_account
            .as_ref()
            .and_then(|a| a.email.as_deref());
        session
            .filter(|s| !s.is_empty())
            .or(email)
            .unwrap_or_default()
            .to_owned()
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Account {
    #[serde(default)]
    pub(crate) email: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EndUser {
    #[serde(default)]
    pub(crate) session_id: Option<String>,
}

/// One entry of `workflow-app-logs`.
#[derive(Debug, Deserialize)]
pub(super) struct WorkflowAppLog {
    pub(crate) workflow_run: RunRef,
    #[serde(flatten)]
    pub(crate) creator: Creator,
}

#[derive(Debug, Deserialize)]
pub(super) struct RunRef {
    pub(crate) id: String,
    #[serde(deserialize_with = "timestamp")]
    pub(crate) created_at: i64,
}

/// One row of `workflow-archived-logs` (Dify 1.12): an archived run, when its app log was made.
#[derive(Debug, Deserialize)]
pub(super) struct ArchivedLog {
    pub(crate) id: String,
    /// `log_created_at`, null for a run archived without an app log.
    #[serde(default)]
    pub(crate) created_at: Option<i64>,
}

/// One row of `workflow-runs`.
#[derive(Debug, Deserialize)]
pub(super) struct WorkflowRun {
    pub(crate) id: String,
    #[serde(deserialize_with = "timestamp")]
    pub(crate) created_at: i64,
    #[serde(flatten)]
    pub(crate) creator: Creator,
}

/// `node-executions`.
#[derive(Debug, Deserialize)]
pub(super) struct NodeExecutions {
    pub(crate) data: Vec<NodeExecution>,
}

#[derive(Debug, Deserialize)]
pub(super) struct NodeExecution {
    pub(crate) node_type: String,
    /// The run's creator, which real Dify's run list rows lack for end users.
    #[serde(flatten)]
    pub(crate) creator: Creator,
    #[serde(default)]
    pub(crate) process_data: Option<ProcessData>,
    #[serde(default)]
    pub(crate) process_data_truncated: bool,
    #[serde(default)]
    pub(crate) execution_metadata: Option<ExecutionMetadata>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ProcessData {
    #[serde(default)]
    pub(crate) model_provider: Option<String>,
    #[serde(default)]
    pub(crate) model_name: Option<String>,
    #[serde(default)]
    pub(crate) usage: Option<Usage>,
}

/// The usage object of a model call (`docs/console-api.md#the-usage-object`).
#[derive(Debug, Deserialize)]
pub(crate) struct Usage {
    #[serde(deserialize_with = "tokens")]
    pub(crate) prompt_tokens: u64,
    #[serde(deserialize_with = "tokens")]
    pub(crate) completion_tokens: u64,
    #[serde(default, deserialize_with = "price")]
    pub(crate) total_price: Decimal,
    #[serde(default, deserialize_with = "currency")]
    pub(crate) currency: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ExecutionMetadata {
    #[serde(default, deserialize_with = "optional_tokens")]
    pub(crate) total_tokens: Option<u64>,
    #[serde(default, deserialize_with = "price")]
    pub(crate) total_price: Decimal,
    #[serde(default, deserialize_with = "currency")]
    pub(crate) currency: Option<String>,
}

/// `statistics/token-costs`. Its `currency` is always the literal `"USD"` whatever the prices' own
/// currencies (`docs/console-api.md#values-in-answers`), so it is not read. Also
/// `workflow/statistics/token-costs`, whose rows carry no price.
#[derive(Debug, Deserialize)]
pub(super) struct TokenCosts {
    pub(crate) data: Vec<TokenCostRow>,
}

#[derive(Debug, Deserialize)]
pub(super) struct TokenCostRow {
    #[serde(deserialize_with = "tokens")]
    pub(crate) token_count: u64,
    #[serde(default, deserialize_with = "price")]
    pub(crate) total_price: Decimal,
}

/// `statistics/daily-messages`.
#[derive(Debug, Deserialize)]
pub(super) struct DailyMessages {
    pub(crate) data: Vec<DailyMessagesRow>,
}

#[derive(Debug, Deserialize)]
pub(super) struct DailyMessagesRow {
    #[serde(deserialize_with = "tokens")]
    pub(crate) message_count: u64,
}

/// One row of `chat-conversations` (`conversation_with_summary_fields` in Dify's
/// `api/fields/conversation_fields.py`).
#[derive(Debug, Deserialize)]
pub(super) struct Conversation {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) from_end_user_session_id: Option<String>,
    #[serde(deserialize_with = "timestamp")]
    pub(crate) updated_at: i64,
    #[serde(default)]
    pub(crate) model_config: Option<ModelConfig>,
}

/// One message of `chat-messages` (`message_detail_fields`).
#[derive(Debug, Deserialize)]
pub(super) struct Message {
    pub(crate) id: String,
    #[serde(deserialize_with = "timestamp")]
    pub(crate) created_at: i64,
    #[serde(
        default,
        rename = "message_tokens",
        deserialize_with = "tokens_or_null"
    )]
    pub(crate) input_tokens: u64,
    #[serde(default, rename = "answer_tokens", deserialize_with = "tokens_or_null")]
    pub(crate) output_tokens: u64,
    #[serde(default)]
    pub(crate) from_end_user_id: Option<String>,
    #[serde(default)]
    pub(crate) metadata: Option<MessageMetadata>,
}

#[derive(Debug, Deserialize)]
pub(super) struct MessageMetadata {
    #[serde(default)]
    pub(crate) usage: Option<MessagePrice>,
}

/// The part of a message's `metadata.usage` the exporter takes: the tokens come from the message.
#[derive(Debug, Deserialize)]
pub(super) struct MessagePrice {
    #[serde(default, deserialize_with = "price")]
    pub(crate) total_price: Decimal,
    #[serde(default, deserialize_with = "currency")]
    pub(crate) currency: Option<String>,
}

/// A count: a non-negative integer, or a string holding one.
fn tokens<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(Lenient::<u64>::new("a non-negative whole number"))
}

fn optional_tokens<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    deserializer.deserialize_any(Lenient::<Option<u64>>::new(
        "a non-negative whole number or null",
    ))
}

/// A count that Dify may write as `null` (a message that failed before the model answered).
fn tokens_or_null<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(optional_tokens(deserializer)?.unwrap_or(0))
}

/// A price: a non-negative decimal string (also `"0E-7"`), a number, or `null` (zero).
fn price<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    deserializer.deserialize_any(Lenient::<Decimal>::new("a non-negative decimal price"))
}

/// A currency: three ASCII letters (ISO 4217, upper-cased here so that `usd` and `USD` are one
/// record), or `null`/missing (Dify's default `USD` applies downstream).
fn currency<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    match text {
        None => Ok(None),
        Some(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) => {
            Ok(Some(code.to_ascii_uppercase()))
        }
        Some(code) => Err(de::Error::invalid_value(
            de::Unexpected::Str(&code),
            &"a currency of three ASCII letters such as \"USD\"",
        )),
    }
}

/// Unix seconds, as a number or a numeric string.
fn timestamp<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    deserializer.deserialize_any(Lenient::<i64>::new("Unix seconds"))
}

/// One visitor for the lenient scalar forms; `T` says what the text must parse to.
struct Lenient<T> {
    expected: &'static str,
    target: std::marker::PhantomData<T>,
}

impl<T> Lenient<T> {
    fn new(expected: &'static str) -> Self {
        Lenient {
            expected,
            target: std::marker::PhantomData,
        }
    }
}

/// What the lenient visitor can produce.
trait LenientValue: Sized {
    fn from_text(text: &str) -> Option<Self>;
    fn from_null() -> Option<Self> {
        None
    }
}

impl LenientValue for u64 {
    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

impl LenientValue for i64 {
    fn from_text(text: &str) -> Option<Self> {
        text.trim().parse().ok()
    }
}

impl LenientValue for Option<u64> {
    fn from_text(text: &str) -> Option<Self> {
        u64::from_text(text).map(Some)
    }
    fn from_null() -> Option<Self> {
        Some(None)
    }
}

impl LenientValue for Decimal {
    fn from_text(text: &str) -> Option<Self> {
        let text = text.trim();
        Decimal::from_str(text)
            .or_else(|_| Decimal::from_scientific(text))
            .ok()
            .filter(|price| !price.is_sign_negative() || price.is_zero())
    }
    fn from_null() -> Option<Self> {
        Some(Decimal::ZERO)
    }
}

impl<T: LenientValue> Visitor<'_> for Lenient<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        // serde_json hands over non-integers as f64; its shortest round-trip text is the decimal
        // that was written, so parsing that text loses nothing a 7-decimal price has.
        self.visit_str(&v.to_string())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_text(v).ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self))
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        T::from_null().ok_or_else(|| E::invalid_type(de::Unexpected::Unit, &self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_accepts_strings_exponents_and_null() {
        let usage: Usage = serde_json::from_str(
            r#"{"prompt_tokens":"1033","completion_tokens":128,"total_tokens":1161,"total_price":"0E-7","currency":"USD"}"#,
        )
        .unwrap();
        assert_eq!((usage.prompt_tokens, usage.completion_tokens), (1033, 128));
        assert_eq!(usage.total_price, Decimal::ZERO);
        let row: TokenCostRow =
            serde_json::from_str(r#"{"token_count":5,"total_price":null}"#).unwrap();
        assert_eq!(row.total_price, Decimal::ZERO);
        let row: TokenCostRow =
            serde_json::from_str(r#"{"token_count":5,"total_price":"0.0039254"}"#).unwrap();
        assert_eq!(row.total_price.to_string(), "0.0039254");
        let row: TokenCostRow =
            serde_json::from_str(r#"{"token_count":5,"total_price":0.0001}"#).unwrap();
        assert_eq!(row.total_price.to_string(), "0.0001");
    }

    #[test]
    fn negative_tokens_are_refused() {
        let err = serde_json::from_str::<TokenCostRow>(r#"{"token_count":-3}"#).unwrap_err();
        assert!(
            err.to_string().contains("a non-negative whole number"),
            "{err}"
        );
    }

    #[test]
    fn prices_must_not_be_negative_and_currencies_are_three_letters() {
        let usage = |price: &str, currency: &str| {
            serde_json::from_str::<Usage>(&format!(
                r#"{{"prompt_tokens":1,"completion_tokens":1,"total_price":{price},"currency":{currency}}}"#
            ))
        };
        assert_eq!(
            usage(r#""0""#, r#""rmb""#).unwrap().currency.as_deref(),
            Some("RMB")
        );
        assert_eq!(usage(r#""-0""#, "null").unwrap().total_price, Decimal::ZERO);
        for (price, currency, reason) in [
            (r#""-0.1""#, r#""USD""#, "a non-negative decimal price"),
            ("-0.1", r#""USD""#, "a non-negative decimal price"),
            (r#""0.1""#, r#""usd$""#, "a currency of three ASCII letters"),
            (r#""0.1""#, r#""""#, "a currency of three ASCII letters"),
            (r#""0.1""#, r#""US""#, "a currency of three ASCII letters"),
        ] {
            let error = usage(price, currency).unwrap_err();
            assert!(
                error.to_string().contains(reason),
                "{price} {currency}: {error}"
            );
        }
    }

    #[test]
    fn the_user_is_session_then_email_then_empty() {
        let both: Creator = serde_json::from_str(
            r#"{"created_by_account":{"email":"a@x"},"created_by_end_user":{"session_id":"s1"}}"#,
        )
        .unwrap();
        assert_eq!(both.user(), "s1");
        let account: Creator = serde_json::from_str(
            r#"{"created_by_account":{"email":"a@x"},"created_by_end_user":null}"#,
        )
        .unwrap();
        assert_eq!(account.user(), "a@x");
        assert_eq!(Creator::default().user(), "");
    }
}

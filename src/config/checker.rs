//! Turning the deserialized variables into typed values, collecting every problem on the way.
//!
//! Each method takes its [`Variable`] from the table, so the default, the range and the secrecy of a
//! value are written once. A method that finds a problem records it and returns `None` (or the
//! default), so checking goes on and `validate-config` lists everything wrong at once.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use url::Url;

use super::Problem;
use super::variables::{MIN_SECRET_CHARS, Rule, Variable};
use crate::secret::{
    Secret, has_url_delimiter, mask_userinfo, masked_url, raw_password, shown_url,
};

/// A value envy read as text and parsed as `T`, or the text that did not parse, kept so that the
/// problem can quote it. Deserializing never fails, so one bad value cannot hide the others.
#[derive(Debug)]
pub(crate) enum Parsed<T> {
    Valid(T),
    Invalid { text: String, reason: String },
}

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let text = text.trim();
        Ok(match text.parse() {
            Ok(value) => Parsed::Valid(value),
            Err(err) => Parsed::Invalid {
                text: text.to_owned(),
                reason: err.to_string(),
            },
        })
    }
}

/// `true` or `false`, in any case.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flag(pub(crate) bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" => Ok(Flag(true)),
            "false" => Ok(Flag(false)),
            _ => Err("is not a boolean".to_owned()),
        }
    }
}

/// Collects problems while converting values.
#[derive(Default)]
pub(super) struct Checker {
    pub(super) problems: Vec<Problem>,
}

impl Checker {
    pub(super) fn problem(&mut self, variable: &Variable, message: impl Into<String>) {
        self.problems.push(Problem {
            variable: variable.name,
            message: message.into(),
        });
    }

    /// A whole number in the variable's range, or its default when unset.
    pub(super) fn whole<T>(&mut self, variable: &Variable, value: Option<&Parsed<T>>) -> T
    where
        T: FromStr + TryFrom<u32> + PartialOrd + fmt::Display + Copy,
    {
        let Rule::Whole { min, max } = variable.rule else {
            unreachable!("{} is not a whole-number variable", variable.name)
        };
        let in_range = |n: &T| {
            T::try_from(min).is_ok_and(|min| *n >= min)
                && T::try_from(max).is_ok_and(|max| *n <= max)
        };
        let fallback = table_default(variable);
        match value {
            None => fallback,
            Some(Parsed::Valid(n)) if in_range(n) => *n,
            Some(parsed) => {
                let shown = shown(parsed);
                self.problem(
                    variable,
                    format!("`{shown}` is not a whole number from {min} to {max}"),
                );
                fallback
            }
        }
    }

    /// Whole seconds from 1 to the variable's maximum, or its default when unset.
    pub(super) fn seconds(
        &mut self,
        variable: &Variable,
        value: Option<&Parsed<u64>>,
    ) -> Option<Duration> {
        let Rule::Seconds { max } = variable.rule else {
            unreachable!("{} is not a seconds variable", variable.name)
        };
        match value {
            None => Some(Duration::from_secs(table_default(variable))),
            Some(Parsed::Valid(n)) if (1..=u64::from(max)).contains(n) => {
                Some(Duration::from_secs(*n))
            }
            Some(parsed) => {
                let shown = shown(parsed);
                self.problem(
                    variable,
                    format!("`{shown}` is not a whole number from 1 to {max}"),
                );
                None
            }
        }
    }

    /// One of the variable's words, or its default when unset.
    pub(super) fn one_of<T: FromStr + Copy>(
        &mut self,
        variable: &Variable,
        value: Option<&Parsed<T>>,
    ) -> T {
        let Rule::OneOf(allowed) = variable.rule else {
            unreachable!("{} is not a choice variable", variable.name)
        };
        match value {
            Some(Parsed::Valid(choice)) => *choice,
            None => table_default(variable),
            Some(Parsed::Invalid { text, .. }) => {
                self.problem(
                    variable,
                    format!("`{text}` is not allowed; allowed: {}", allowed.join(", ")),
                );
                table_default(variable)
            }
        }
    }

    /// A value whose parse error is the rule itself (a UUID, a schedule).
    pub(super) fn parsed<T: Clone>(
        &mut self,
        variable: &Variable,
        value: Option<&Parsed<T>>,
        rule: &str,
    ) -> Option<T> {
        match value? {
            Parsed::Valid(value) => Some(value.clone()),
            Parsed::Invalid { text, reason } => {
                let reason = if rule.is_empty() {
                    reason.as_str()
                } else {
                    rule
                };
                self.problem(variable, format!("`{text}` {reason}"));
                None
            }
        }
    }

    /// A value that must be set.
    pub(super) fn required<'v>(
        &mut self,
        variable: &Variable,
        value: Option<&'v str>,
        what: &str,
    ) -> Option<&'v str> {
        if value.is_none() {
            self.problem(variable, format!("is required and not set{what}"));
        }
        value
    }

    /// A secret, taken as given: at least [`MIN_SECRET_CHARS`] long, and fit for an HTTP header
    /// when the rule says it travels in one. The value itself is never shown, only its length or the
    /// position of the bad character.
    pub(super) fn secret(&mut self, variable: &Variable, value: &str) -> Option<Secret> {
        let long_enough = self.long_enough(variable, value.chars().count());
        if variable.rule == Rule::HeaderValue
            && let Some(index) = value.bytes().position(|b| !is_header_byte(b))
        {
            self.problem(
                variable,
                format!(
                    "contains a character that cannot be sent in an HTTP header (character {} of {}: a line \
                     break, a control character or non-ASCII); allowed: visible ASCII, spaces and tabs",
                    value[..index].chars().count() + 1,
                    value.chars().count()
                ),
            );
            return None;
        }
        long_enough.then(|| Secret::new(value.to_owned()))
    }

    fn long_enough(&mut self, variable: &Variable, chars: usize) -> bool {
        if chars >= MIN_SECRET_CHARS {
            return true;
        }
        self.problem(
            variable,
            format!(
                "holds a secret of {chars} character(s); at least {MIN_SECRET_CHARS} are required, since every \
                 output masks the secret as `***` wherever it appears and a short one would blank out ordinary words"
            ),
        );
        false
    }

    /// The password inside a URL, when there is one, must be as long as any other secret, and
    /// percent-encoded where a URL parser would end it early.
    pub(super) fn url_password(&mut self, variable: &Variable, text: &str) -> bool {
        if raw_password(text).is_some_and(has_url_delimiter) {
            self.problem(
                variable,
                format!(
                    "`{}` has a password holding `/`, `?` or `#` unencoded, which ends the address early; \
                     percent-encode them as %2F, %3F and %23",
                    mask_userinfo(text)
                ),
            );
            return false;
        }
        match Url::parse(text)
            .ok()
            .and_then(|url| url.password().map(percent_decoded_len))
        {
            Some(chars) => self.long_enough(variable, chars),
            None => true,
        }
    }

    /// An absolute http(s) URL.
    pub(super) fn url(
        &mut self,
        variable: &Variable,
        value: &str,
        allow_insecure: bool,
    ) -> Option<Url> {
        let value = value.trim();
        match parse_url(value, allow_insecure) {
            Ok(url) => self.url_password(variable, value).then_some(url),
            // A password that ends the address early is the cause, whatever else seems wrong.
            Err(_) if raw_password(value).is_some_and(has_url_delimiter) => {
                self.url_password(variable, value);
                None
            }
            Err(rule) => {
                // The value may carry a password; show it only in masked form.
                self.problem(variable, format!("`{}` {rule}", shown_url(value)));
                None
            }
        }
    }

    /// A URL whose requests carry a bearer token (`token_variable`) must not carry `user:password@`
    /// too: the HTTP client would send both as two `Authorization` headers, and a server refusing
    /// the pair makes the token look wrong.
    pub(super) fn no_userinfo(
        &mut self,
        variable: &Variable,
        url: Option<Url>,
        token_variable: &str,
    ) -> Option<Url> {
        let url = url?;
        if url.username().is_empty() && url.password().is_none() {
            return Some(url);
        }
        self.problem(
            variable,
            format!(
                "`{}` carries `user:password@` while requests authenticate with {token_variable}; a request \
                 carries one Authorization header: remove the credentials from the URL",
                masked_url(&url)
            ),
        );
        None
    }

    /// The state directory: missing is fine (it is created), a file is not.
    pub(super) fn directory(
        &mut self,
        variable: &Variable,
        value: Option<&PathBuf>,
    ) -> Option<PathBuf> {
        let path = value
            .cloned()
            .unwrap_or_else(|| table_default::<PathBuf>(variable));
        if path.exists() && !path.is_dir() {
            self.problem(
                variable,
                format!("`{}` exists and is not a directory", path.display()),
            );
            return None;
        }
        Some(path)
    }
}

/// The table's default of `variable`, parsed. Every default is checked against its own rule by a
/// unit test, so this cannot fail on a released table.
pub(super) fn table_default<T: FromStr>(variable: &Variable) -> T {
    variable
        .default
        .and_then(|text| text.parse().ok())
        .unwrap_or_else(|| unreachable!("{} has no valid default in the table", variable.name))
}

fn shown<T: fmt::Display>(parsed: &Parsed<T>) -> String {
    match parsed {
        Parsed::Valid(value) => value.to_string(),
        Parsed::Invalid { text, .. } => text.clone(),
    }
}

fn percent_decoded_len(text: &str) -> usize {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .chars()
        .count()
}

/// What `http::HeaderValue` accepts, narrowed to ASCII (a token never needs more): visible
/// characters, space and tab.
fn is_header_byte(byte: u8) -> bool {
    byte == b'\t' || (b' '..=b'~').contains(&byte)
}

fn parse_url(text: &str, allow_insecure: bool) -> Result<Url, String> {
    let mut url = Url::parse(text).map_err(|e| {
        format!("is not an absolute URL ({e}); expected e.g. https://dify.example.com")
    })?;
    match url.scheme() {
        "https" => {}
        "http" if allow_insecure || is_loopback(&url) => {}
        "http" => {
            return Err(
                "uses plain http to a non-loopback host, which would send tokens in clear text; \
                        use https, or set ALLOW_INSECURE_HTTP=true if the network is trusted"
                    .to_owned(),
            );
        }
        other => {
            return Err(format!(
                "has scheme `{other}`; only http and https are allowed"
            ));
        }
    }
    if url.host().is_none() {
        return Err("has no host".to_owned());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query string or fragment".to_owned());
    }
    // A trailing slash is ignored so that `https://dify/` and `https://dify` mean the same.
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        // `localhost.` is the same name written fully qualified.
        Some(url::Host::Domain(domain)) => domain
            .strip_suffix('.')
            .unwrap_or(domain)
            .eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

//! A string that must never reach any output.
//!
//! Tokens and passwords live in [`Secret`] from the moment they are read from the environment, so a
//! stray `{:?}` in a log line, an error chain or a panic message prints `***` instead of the value.

use std::fmt;

/// What every secret prints as.
pub const MASK: &str = "***";

/// A secret value; `Debug` and `Display` print [`MASK`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from the environment.
    #[must_use]
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that must send it (an HTTP header).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

/// The variables whose values are secrets.
pub const SECRET_VARIABLES: [&str; 3] = ["DIFY_API_TOKEN", "DIFY_PASSWORD", "EXTERNAL_API_TOKEN"];
/// The URL variables, whose `user:password@` part is a secret too.
pub const URL_VARIABLES: [&str; 3] = ["DIFY_API_URL", "EXTERNAL_API_URL", "PUSHGATEWAY_URL"];

/// Replaces every configured secret in text that came from elsewhere (a server's answer, an error
/// chain) with [`MASK`] before it is logged, stored or printed.
///
/// A server that echoes the request back (a debugging proxy, an error page listing the headers)
/// would otherwise put the token into `run failed`, `last_error` and `exporter status`. Each secret
/// is searched in every form it travels in: as configured and trimmed, base64 (passwords to Dify
/// >= 1.11.2, `Basic` credentials of a URL), JSON-escaped, and percent-encoded inside a URL.
#[derive(Clone, Default)]
pub struct Masker {
    /// The forms to replace, longest first so that a longer form is never half-masked.
    needles: Vec<String>,
}

impl Masker {
    /// Learns the secrets of the environment, whether or not the configuration is valid.
    #[must_use]
    pub fn from_env(env: &crate::environment::Environment) -> Masker {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

        let mut secrets: Vec<String> = Vec::new();
        for name in SECRET_VARIABLES {
            if let Some(value) = env.get(name) {
                secrets.push(value.to_owned());
                secrets.push(value.trim().to_owned());
            }
        }
        let mut needles = Vec::new();
        for name in URL_VARIABLES {
            let Some(url) = env.get(name).and_then(|v| url::Url::parse(v.trim()).ok()) else {
                continue;
            };
            if let Some(password) = url.password() {
                needles.push(password.to_owned());
                if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
                    needles.push(STANDARD.encode(format!("{}:{decoded}", url.username())));
                    secrets.push(decoded.into_owned());
                }
            }
        }
        for secret in secrets {
            // The JSON string form without its two enclosing quotes (and only those).
            let json = serde_json::to_string(&secret).unwrap_or_default();
            needles.push(
                json.get(1..json.len().saturating_sub(1))
                    .unwrap_or_default()
                    .to_owned(),
            );
            needles.push(STANDARD.encode(&secret));
            needles.push(URL_SAFE_NO_PAD.encode(&secret));
            needles.push(secret);
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        Masker { needles }
    }

    /// `text` with every secret replaced by [`MASK`].
    #[must_use]
    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_owned();
        for needle in &self.needles {
            if masked.contains(needle.as_str()) {
                masked = masked.replace(needle.as_str(), MASK);
            }
        }
        masked
    }
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masker({} forms of secrets)", self.needles.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;

    #[test]
    fn every_form_of_every_secret_is_masked() {
        let env = Environment::from_pairs([
            ("DIFY_PASSWORD", " pa\"ss\" "),
            ("EXTERNAL_API_TOKEN", "meter-tok"),
            ("EXTERNAL_API_URL", "https://me:p%40ss@meter.example.com/x"),
            ("LOG_LEVEL", "info"),
        ]);
        let masker = Masker::from_env(&env);
        let text = "Authorization: Bearer meter-tok; password cGEic3Mi; json \"pa\\\"ss\\\"\"; \
                    url p%40ss; basic bWU6cEBzcw==; level info";
        assert_eq!(
            masker.mask(text),
            "Authorization: Bearer ***; password ***; json \"***\"; url ***; basic ***; level info"
        );
    }
}

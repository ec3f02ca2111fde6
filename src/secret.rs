//! A string that must never reach any output.
//!
//! Tokens and passwords live in [`Secret`] from the moment they are read from the environment, so a
//! stray `{:?}` in a log line, an error chain or a panic message prints `***` instead of the value.

use std::fmt;

/// What every secret prints as.
pub(crate) const MASK: &str = "***";

/// A secret value; `Debug` and `Display` print [`MASK`].
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a value read from the environment.
    #[must_use]
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// The value itself, for the one place that must send it (an HTTP header).
    #[must_use]
    pub(crate) fn expose(&self) -> &str {
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

/// Replaces every configured secret in text that came from elsewhere (a server's answer, an error
/// chain) with [`MASK`] before it is logged, stored or printed.
///
/// A server that echoes the request back (a debugging proxy, an error page listing the headers)
/// would otherwise put the token into `run failed`, `last_error` and `exporter status`. Each secret
/// is searched in every form it travels in: as configured and trimmed, base64 (passwords to Dify
/// >= 1.11.2, `Basic` credentials of a URL), JSON-escaped, and percent-encoded inside a URL.
#[derive(Clone, Default)]
pub(crate) struct Masker {
    /// The forms to replace, longest first so that a longer form is never half-masked.
    needles: Vec<String>,
}

impl Masker {
    /// Learns a secret value (as configured and trimmed, in every form it travels in).
    pub(crate) fn learn(&mut self, value: &str) {
        self.add_forms(value);
        self.add_forms(value.trim());
    }

    /// Learns the password inside a URL, if it has one: percent-encoded as written, decoded, and
    /// as the `Basic` credentials of its user.
    pub(crate) fn learn_url(&mut self, text: &str) {
        use base64::Engine as _;
        // As written, whether or not a URL parser reads the same password out of it.
        if let Some(raw) = raw_password(text.trim()) {
            self.add_forms(raw);
            if let Ok(decoded) = percent_encoding::percent_decode_str(raw).decode_utf8() {
                self.add_forms(&decoded);
            }
        }
        let Some(url) = url::Url::parse(text.trim()).ok() else {
            return;
        };
        let Some(password) = url.password() else {
            return;
        };
        self.needles.push(password.to_owned());
        if let Ok(decoded) = percent_encoding::percent_decode_str(password).decode_utf8() {
            self.needles.push(
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{decoded}", url.username())),
            );
            self.add_forms(&decoded);
        }
    }

    fn add_forms(&mut self, secret: &str) {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        // The JSON string form without its two enclosing quotes (and only those).
        let json = serde_json::to_string(secret).unwrap_or_default();
        self.needles.push(
            json.get(1..json.len().saturating_sub(1))
                .unwrap_or_default()
                .to_owned(),
        );
        self.needles.push(STANDARD.encode(secret));
        self.needles.push(URL_SAFE_NO_PAD.encode(secret));
        self.needles.push(secret.to_owned());
    }

    /// Orders the forms longest first, so that a longer form is never half-masked.
    #[must_use]
    pub(crate) fn finish(mut self) -> Masker {
        self.needles.retain(|n| !n.is_empty());
        self.needles
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.needles.dedup();
        self
    }

    /// `text` with every secret replaced by [`MASK`].
    #[must_use]
    pub(crate) fn mask(&self, text: &str) -> String {
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

/// A URL for display: a password inside it is a secret too.
pub(crate) fn masked_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        // Setting a password only fails on URLs that cannot have one, and this one has one.
        let _ = shown.set_password(Some(MASK));
    }
    shown.to_string().trim_end_matches('/').to_owned()
}

/// The password of a `user:password@` part as written, read up to the last `@`, so that a password
/// holding an unencoded `/`, `?` or `#` (where a URL parser ends the authority, and finds another
/// host or none) is still found: what may be a secret is masked rather than shown.
pub(crate) fn raw_password(text: &str) -> Option<&str> {
    let authority_start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[authority_start..];
    let userinfo = &rest[..rest.rfind('@')?];
    userinfo.split_once(':').map(|(_, password)| password)
}

/// Masks a `user:password@` part of text that did not parse as a URL, or parsed as another one.
pub(crate) fn mask_userinfo(text: &str) -> String {
    let Some(password) = raw_password(text) else {
        return text.to_owned();
    };
    // `password` is a slice of `text`: its position is known exactly.
    let start = password.as_ptr() as usize - text.as_ptr() as usize;
    format!(
        "{}{MASK}{}",
        &text[..start],
        &text[start + password.len()..]
    )
}

/// The URL for display, its password masked however it was written.
pub(crate) fn shown_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(url) if !raw_password(text).is_some_and(has_url_delimiter) => masked_url(&url),
        _ => mask_userinfo(text),
    }
}

/// Whether a password holds a character that ends a URL's authority unless percent-encoded.
pub(crate) fn has_url_delimiter(password: &str) -> bool {
    password.contains(['/', '?', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_every_secret_is_masked() {
        let mut masker = Masker::default();
        masker.learn(" pa\"ss\" ");
        masker.learn("meter-tok");
        masker.learn_url("https://me:p%40ss@meter.example.com/x");
        let masker = masker.finish();
        let text = "Authorization: Bearer meter-tok; password cGEic3Mi; json \"pa\\\"ss\\\"\"; \
                    url p%40ss; basic bWU6cEBzcw==; level info";
        assert_eq!(
            masker.mask(text),
            "Authorization: Bearer ***; password ***; json \"***\"; url ***; basic ***; level info"
        );
    }

    #[test]
    fn userinfo_is_masked_even_in_text_that_is_not_a_url() {
        assert_eq!(
            mask_userinfo("https://u:p@w@host name/x"),
            "https://u:***@host name/x"
        );
        assert_eq!(mask_userinfo("u:p@host"), "u:***@host");
        assert_eq!(mask_userinfo("https://host/a@b"), "https://host/a@b");
        assert_eq!(
            shown_url("postgres://u:p/a?b#c@db:5432/dify"),
            "postgres://u:***@db:5432/dify"
        );
        assert_eq!(shown_url("https://u:p%2Fq@h/x"), "https://u:***@h/x");
    }

    #[test]
    fn a_url_password_with_unencoded_delimiters_is_learnt_as_written() {
        let mut masker = Masker::default();
        masker.learn_url("https://u:pw/canary#x?y@host/x");
        let masker = masker.finish();
        assert_eq!(masker.mask("echo pw/canary#x?y end"), "echo *** end");
    }
}

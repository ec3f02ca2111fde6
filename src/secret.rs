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

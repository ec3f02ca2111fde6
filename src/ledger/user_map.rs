//! `USER_MAP_FILE`: which customer, cost centre or billing account a Dify user's usage belongs to.
//!
//! A CSV file with the header `user,customer`, one Dify user (an end-user session id or an
//! account email, as the records name them) per line. Users the file does not name are their own
//! customer. The file is read once, when the configuration is checked, so a malformed one stops
//! the run before anything is collected or queued.

use std::collections::HashMap;
use std::path::Path;

/// The identity map; empty (every user its own customer) when no file is configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct UserMap {
    customers: HashMap<String, String>,
    configured: bool,
}

impl UserMap {
    /// Reads the file at `path`. The error names the file and the line and says what is allowed.
    pub(crate) fn load(path: &Path) -> Result<UserMap, String> {
        let text = std::fs::read(path).map_err(|err| {
            format!(
                "cannot read `{}`: {}",
                path.display(),
                crate::environment::io_cause(&err)
            )
        })?;
        Self::parse(&text).map_err(|problem| format!("`{}` {problem}", path.display()))
    }

    pub(super) fn parse(text: &[u8]) -> Result<UserMap, String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(text);
        let header = reader
            .headers()
            .map_err(|err| format!("line 1: {}", csv_cause(&err)))?;
        if header.iter().collect::<Vec<_>>() != ["user", "customer"] {
            return Err(format!(
                "line 1: the header is `{}`; it must be `user,customer`",
                header.iter().collect::<Vec<_>>().join(",")
            ));
        }
        let mut customers: HashMap<String, String> = HashMap::new();
        let mut lines: HashMap<String, u64> = HashMap::new();
        for row in reader.records() {
            let row = row.map_err(|err| {
                let line = err.position().map_or(0, csv::Position::line);
                format!("line {line}: {}", csv_cause(&err))
            })?;
            let line = row.position().map_or(0, csv::Position::line);
            let (user, customer) = (&row[0], &row[1]);
            if customer.is_empty() {
                return Err(format!(
                    "line {line}: the customer of user `{user}` is empty"
                ));
            }
            if let Some(first) = lines.get(user) {
                return Err(format!(
                    "line {line}: user `{user}` is mapped again (first on line {first}); name each user once"
                ));
            }
            lines.insert(user.to_owned(), line);
            customers.insert(user.to_owned(), customer.to_owned());
        }
        Ok(UserMap {
            customers,
            configured: true,
        })
    }

    /// The customer of `user`, when the map names one.
    pub(crate) fn customer(&self, user: &str) -> Option<&str> {
        self.customers.get(user).map(String::as_str)
    }

    /// Whether a file was configured (unmapped users are counted only then).
    pub(crate) fn is_configured(&self) -> bool {
        self.configured
    }
}

/// What is wrong with a CSV line, without the csv crate's position prefix.
fn csv_cause(err: &csv::Error) -> String {
    match err.kind() {
        csv::ErrorKind::UnequalLengths { len, .. } => {
            format!(
                "has {len} fields; each line must be `user,customer` (quote a value that holds a comma)"
            )
        }
        csv::ErrorKind::Utf8 { .. } => "is not UTF-8".to_owned(),
        _ => err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_map_to_customers_and_unmapped_users_to_nothing() {
        let map = UserMap::parse(
            b"user,customer\nalice@example.com,Finance\n\"sess,1\",\"ACME, Inc.\"\n",
        )
        .unwrap();
        assert_eq!(map.customer("alice@example.com"), Some("Finance"));
        assert_eq!(map.customer("sess,1"), Some("ACME, Inc."));
        assert_eq!(map.customer("bob"), None);
        assert!(map.is_configured());
        assert!(!UserMap::default().is_configured());
    }

    #[test]
    fn malformed_files_name_the_line() {
        let cases: [(&[u8], &str); 5] = [
            (
                b"name,customer\na,b\n",
                "line 1: the header is `name,customer`; it must be `user,customer`",
            ),
            (
                b"user,customer\na,b\nc\n",
                "line 3: has 1 fields; each line must be `user,customer` (quote a value that holds a comma)",
            ),
            (
                b"user,customer\na,b\na,c\n",
                "line 3: user `a` is mapped again (first on line 2); name each user once",
            ),
            (
                b"user,customer\na,\n",
                "line 2: the customer of user `a` is empty",
            ),
            (b"user,customer\na,\xff\n", "line 2: is not UTF-8"),
        ];
        for (text, expected) in cases {
            assert_eq!(UserMap::parse(text).unwrap_err(), expected);
        }
    }
}

//! The login guard's verdict: the last credentials Dify refused (see
//! `source::console::login_guard`).

use anyhow::{Context as _, Result};
use rusqlite::{OptionalExtension as _, params};

use super::{State, unreadable, unwritable};

/// Dify's refusal of a login, as the login guard keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoginVerdictRecord {
    /// `DIFY_API_URL` of the refusal (masked).
    pub(crate) dify_url: String,
    pub(crate) email: String,
    /// PHC string of the salted argon2id hash of URL, email and password.
    pub(crate) credentials_hash: String,
    /// `wrong_password` or `account_locked`.
    pub(crate) verdict: String,
    /// Dify's answer, for the operator.
    pub(crate) detail: String,
    /// RFC 3339 UTC.
    pub(crate) recorded_at: String,
}

impl State {
    /// The login guard's verdict, if Dify refused the last credentials tried.
    pub(crate) fn login_verdict(&self) -> Result<Option<LoginVerdictRecord>> {
        self.conn
            .query_row(
                "SELECT dify_url, email, credentials_hash, verdict, detail, recorded_at FROM login_verdict WHERE id = 1",
                [],
                |row| {
                    Ok(LoginVerdictRecord {
                        dify_url: row.get(0)?,
                        email: row.get(1)?,
                        credentials_hash: row.get(2)?,
                        verdict: row.get(3)?,
                        detail: row.get(4)?,
                        recorded_at: row.get(5)?,
                    })
                },
            )
            .optional()
            .with_context(|| unreadable(&self.path))
    }

    /// Replaces the login guard's verdict.
    pub(crate) fn set_login_verdict(&self, record: &LoginVerdictRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO login_verdict (id, dify_url, email, credentials_hash, verdict, detail, recorded_at) \
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.dify_url,
                    record.email,
                    record.credentials_hash,
                    record.verdict,
                    record.detail,
                    record.recorded_at
                ],
            )
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }

    /// Forgets the login guard's verdict (new credentials, or a successful login).
    pub(crate) fn clear_login_verdict(&self) -> Result<()> {
        self.conn
            .execute("DELETE FROM login_verdict", [])
            .with_context(|| unwritable(&self.path))?;
        Ok(())
    }
}

//! Which source the variables select, and its credentials: the console API (`DIFY_API_URL` with a
//! token or a login) or the database (`DIFY_DATABASE_URL`), never both.

use std::time::Duration;

use url::Url;

use super::RawEnv;
use super::checker::Checker;
use super::variables as v;
use crate::secret::mask_userinfo;
use crate::source::console::{DifyAuth, PasswordEncoding};
use crate::source::database::DatabaseSource;

/// Where a run reads usage from: one source per run.
#[derive(Debug, Clone)]
pub(crate) enum SourceConfig {
    /// Dify's console API (`DIFY_API_URL` and a token or login).
    Console {
        /// Base URL of Dify, without a trailing slash; console paths are appended to it.
        url: Url,
        /// How to authenticate to the console API.
        auth: DifyAuth,
    },
    /// Dify's database (`DIFY_DATABASE_URL`).
    Database(DatabaseSource),
}

impl SourceConfig {
    /// The name `validate-config` and the logs use.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            SourceConfig::Console { .. } => "console-api",
            SourceConfig::Database(_) => "database",
        }
    }
}

/// The console API, or the database when `DIFY_DATABASE_URL` is set.
pub(super) fn select(
    check: &mut Checker,
    raw: &RawEnv,
    allow_insecure_http: bool,
    connect_timeout: Duration,
) -> Option<SourceConfig> {
    let Some(database_url) = raw.dify_database_url.as_deref() else {
        let url = check
            .required(
                &v::DIFY_API_URL,
                raw.dify_api_url.as_deref(),
                " (an absolute http(s) URL)",
            )
            .and_then(|url| check.url(&v::DIFY_API_URL, url, allow_insecure_http));
        let url = check.no_userinfo(
            &v::DIFY_API_URL,
            url,
            "DIFY_API_TOKEN (or the token the login returns)",
        );
        let auth = console_auth(check, raw);
        return Some(SourceConfig::Console {
            url: url?,
            auth: auth?,
        });
    };
    let mut ok = true;
    for (variable, value) in [
        (&v::DIFY_API_URL, &raw.dify_api_url),
        (&v::DIFY_API_TOKEN, &raw.dify_api_token),
        (&v::DIFY_EMAIL, &raw.dify_email),
        (&v::DIFY_PASSWORD, &raw.dify_password),
    ] {
        if value.is_some() {
            check.problem(
                variable,
                "is set together with DIFY_DATABASE_URL; a run reads one source: unset DIFY_DATABASE_URL to use the console API, or the console settings to read the database",
            );
            ok = false;
        }
    }
    let workspace_id = check.parsed(
        &v::DIFY_WORKSPACE_ID,
        raw.dify_workspace_id.as_ref(),
        UUID_RULE,
    );
    ok &= raw.dify_workspace_id.is_none() || workspace_id.is_some();
    let connections = check.whole(
        &v::DIFY_DATABASE_CONNECTIONS,
        raw.dify_database_connections.as_ref(),
    );
    let text = database_url.trim();
    ok &= check.url_password(&v::DIFY_DATABASE_URL, text);
    match DatabaseSource::parse(text, workspace_id, connect_timeout) {
        Ok(mut source) if ok => {
            source.connections = connections;
            Some(SourceConfig::Database(source))
        }
        Ok(_) => None,
        Err(rule) => {
            check.problem(
                &v::DIFY_DATABASE_URL,
                format!("`{}` {rule}", mask_userinfo(text)),
            );
            None
        }
    }
}

const UUID_RULE: &str = "is not a UUID (like 0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47)";

/// A token (an admin API key with `DIFY_WORKSPACE_ID`, else a console access token) or the login
/// pair; exactly one of them.
fn console_auth(check: &mut Checker, raw: &RawEnv) -> Option<DifyAuth> {
    let token = raw.dify_api_token.as_deref();
    let email = raw.dify_email.as_deref();
    let password = raw.dify_password.as_deref();
    let workspace_id = check.parsed(
        &v::DIFY_WORKSPACE_ID,
        raw.dify_workspace_id.as_ref(),
        UUID_RULE,
    );
    let workspace_set = raw.dify_workspace_id.is_some();
    let encoding: PasswordEncoding = check.one_of(
        &v::DIFY_PASSWORD_ENCODING,
        raw.dify_password_encoding.as_ref(),
    );

    match (email, password) {
        (Some(_), None) => {
            check.problem(
                &v::DIFY_PASSWORD,
                "must be set together with DIFY_EMAIL (both or neither)",
            );
            return None;
        }
        (None, Some(_)) => {
            check.problem(
                &v::DIFY_EMAIL,
                "must be set together with DIFY_PASSWORD (both or neither)",
            );
            return None;
        }
        _ => {}
    }

    match (token, email.zip(password)) {
        (Some(_), Some(_)) => {
            check.problem(
                &v::DIFY_API_TOKEN,
                "is set together with DIFY_EMAIL and DIFY_PASSWORD; set either the token or the login pair, not both",
            );
            None
        }
        (None, None) => {
            check.problem(
                &v::DIFY_API_TOKEN,
                "is required unless DIFY_EMAIL and DIFY_PASSWORD are set (an admin API key with DIFY_WORKSPACE_ID, or a console access token)",
            );
            None
        }
        (None, Some((email, password))) => {
            if workspace_set {
                check.problem(
                    &v::DIFY_WORKSPACE_ID,
                    "selects admin-API-key authentication and needs DIFY_API_TOKEN; unset it to log in with DIFY_EMAIL",
                );
                return None;
            }
            if !email.contains('@') {
                check.problem(&v::DIFY_EMAIL, format!("`{email}` is not an email address"));
                return None;
            }
            // The password is sent as typed, spaces included.
            let password = check.secret(&v::DIFY_PASSWORD, password)?;
            Some(DifyAuth::Login {
                email: email.trim().to_owned(),
                password,
                encoding,
            })
        }
        (Some(token), None) => {
            let key = check.secret(&v::DIFY_API_TOKEN, token.trim())?;
            match workspace_id {
                Some(workspace_id) => Some(DifyAuth::AdminKey { key, workspace_id }),
                None if !workspace_set => Some(DifyAuth::ConsoleToken(key)),
                None => None,
            }
        }
    }
}

//! A console session: how each request proves who it is, and how a login session logs in and
//! renews itself (`docs/console-api.md#authentication`).
//!
//! Email and password: `POST /login`. Dify ≤ 1.9.1 answers with tokens in the body (then Bearer);
//! 1.9.2+ only sets cookies (`access_token`, `refresh_token`, `csrf_token`, possibly with the
//! `__Host-` prefix), and every call must then carry the access cookie and the CSRF token as both a
//! header and a cookie. The cookies are read from `Set-Cookie` by hand, not by a cookie jar, because
//! a jar refuses to send `Secure` `__Host-` cookies over plain http. An expired session is refreshed
//! (`POST /refresh-token`), or logged in again when the refresh is refused.
//!
//! The password encoding (1.11.2+ wants base64) is chosen without spending the account's lockout
//! budget; see [`PasswordEncoding`] and `encodings_to_try`. Dify's answers are matched before they
//! are masked for output, so a secret that happens to appear in "Invalid encrypted data" cannot
//! hide the answer.

use anyhow::{Result, anyhow, bail};
use base64::Engine as _;
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Mutex, RwLock};
use tracing::{info, warn};

use super::credentials::{DifyAuth, PasswordEncoding};
use super::login_guard::{LoginRefused, LoginVerdict};
use crate::http::{HttpClient, RequestError};
use crate::secret::Secret;

/// The tokens of a logged-in session.
#[derive(Debug, Clone)]
enum Tokens {
    /// Dify ≤ 1.9.1: Bearer access token; refresh with the refresh token in a JSON body.
    Body { access: Secret, refresh: Secret },
    /// Dify ≥ 1.9.2: cookies, each kept with the name the server used.
    Cookies {
        access: Cookie,
        refresh: Cookie,
        csrf: Cookie,
    },
}

#[derive(Debug, Clone)]
struct Cookie {
    name: String,
    value: Secret,
}

/// The live credentials of one run, shared by all concurrent requests.
pub(super) struct Session {
    auth: DifyAuth,
    console_url: String,
    /// The current login tokens and a generation number that grows with every renewal, so that
    /// concurrent requests failing on the same expired token renew it once.
    tokens: RwLock<(u64, Option<Tokens>)>,
    renewing: Mutex<()>,
    /// The encoding that worked, so a second login in the same run does not probe again.
    learned: std::sync::Mutex<Option<PasswordEncoding>>,
}

impl Session {
    pub(super) fn new(auth: DifyAuth, console_url: String) -> Self {
        Session {
            auth,
            console_url,
            tokens: RwLock::new((0, None)),
            renewing: Mutex::new(()),
            learned: std::sync::Mutex::new(None),
        }
    }

    /// Whether a 401 can be cured by renewing (only login sessions can).
    pub(super) fn renewable(&self) -> bool {
        matches!(self.auth, DifyAuth::Login { .. })
    }

    /// Logs in if this is a login session that has no tokens yet.
    pub(super) async fn ensure(&self, http: &HttpClient) -> Result<()> {
        if self.renewable() && self.tokens.read().await.1.is_none() {
            self.renew(http, 0).await?;
        }
        Ok(())
    }

    /// Adds the credentials to a request; returns the token generation used.
    pub(super) async fn authorize(&self, request: RequestBuilder) -> (RequestBuilder, u64) {
        match &self.auth {
            DifyAuth::AdminKey { key, workspace_id } => (
                request
                    .bearer_auth(key.expose())
                    .header("X-WORKSPACE-ID", workspace_id.to_string()),
                0,
            ),
            DifyAuth::ConsoleToken(token) => (request.bearer_auth(token.expose()), 0),
            DifyAuth::Login { .. } => {
                let guard = self.tokens.read().await;
                let request = match &guard.1 {
                    Some(Tokens::Body { access, .. }) => request.bearer_auth(access.expose()),
                    Some(Tokens::Cookies { access, csrf, .. }) => request
                        .header(
                            reqwest::header::COOKIE,
                            format!(
                                "{}={}; {}={}",
                                access.name,
                                access.value.expose(),
                                csrf.name,
                                csrf.value.expose()
                            ),
                        )
                        .header("X-CSRF-Token", csrf.value.expose()),
                    None => request,
                };
                (request, guard.0)
            }
        }
    }

    /// Renews the session after a 401 on a request made with token generation `used`: refreshes,
    /// or logs in again if the refresh is refused. Concurrent callers renew once.
    pub(super) async fn renew(&self, http: &HttpClient, used: u64) -> Result<()> {
        let _one_at_a_time = self.renewing.lock().await;
        let (generation, current) = self.tokens.read().await.clone();
        if generation != used {
            return Ok(()); // someone else renewed while we waited
        }
        let DifyAuth::Login {
            email,
            password,
            encoding,
        } = &self.auth
        else {
            bail!("this Dify credential cannot be renewed");
        };
        let renewed = match current {
            Some(tokens) => match self.refresh(http, &tokens).await {
                Ok(tokens) => {
                    info!("Dify session refreshed");
                    tokens
                }
                Err(err) => {
                    warn!(
                        error = format!("{err:#}"),
                        "Dify session refresh refused; logging in again"
                    );
                    self.login(http, email, password, *encoding).await?
                }
            },
            None => self.login(http, email, password, *encoding).await?,
        };
        *self.tokens.write().await = (generation + 1, Some(renewed));
        Ok(())
    }

    async fn refresh(&self, http: &HttpClient, tokens: &Tokens) -> Result<Tokens> {
        let url = format!("{}/refresh-token", self.console_url);
        let endpoint = "POST /console/api/refresh-token";
        let answer = http
            .send(endpoint, || {
                let request = http.client().post(&url);
                match tokens {
                    Tokens::Body { refresh, .. } => {
                        request.json(&json!({"refresh_token": refresh.expose()}))
                    }
                    Tokens::Cookies { refresh, .. } => request.header(
                        reqwest::header::COOKIE,
                        format!("{}={}", refresh.name, refresh.value.expose()),
                    ),
                }
            })
            .await?;
        tokens_from(endpoint, &answer.headers, &answer.body)
    }

    async fn login(
        &self,
        http: &HttpClient,
        email: &str,
        password: &Secret,
        configured: PasswordEncoding,
    ) -> Result<Tokens> {
        let learned = *self
            .learned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let encodings = encodings_to_try(learned.unwrap_or(configured), password.expose());
        let url = format!("{}/login", self.console_url);
        let endpoint = "POST /console/api/login";
        let mut last_failure = None;
        // A 401 to a password Dify did check, when another encoding was still to come.
        let mut refused = None;
        for (i, encoding) in encodings.iter().enumerate() {
            let sent = match encoding {
                PasswordEncoding::Base64 => {
                    base64::engine::general_purpose::STANDARD.encode(password.expose())
                }
                _ => password.expose().to_owned(),
            };
            let body = json!({"email": email, "password": sent, "remember_me": false});
            let outcome = http
                .send_with(endpoint, is_retryable_login_failure, || {
                    http.client().post(&url).json(&body)
                })
                .await;
            match outcome {
                Ok(answer) => {
                    let tokens = tokens_from(endpoint, &answer.headers, &answer.body)?;
                    *self
                        .learned
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(*encoding);
                    info!(password_encoding = %encoding, "logged in to Dify");
                    return Ok(tokens);
                }
                Err(RequestError::Status { status, answer, .. })
                    if status == StatusCode::UNAUTHORIZED
                        && answer.contains("Invalid encrypted data") =>
                {
                    // Dify 1.11.2+ refuses a password that is not base64 before checking it, so this
                    // answer cost no attempt; the next encoding is base64.
                    last_failure = Some(anyhow!(
                        "Dify wants the password base64-encoded (Dify >= 1.11.2): set DIFY_PASSWORD_ENCODING=base64 or auto"
                    ));
                }
                Err(answer @ RequestError::Status { status, .. })
                    if status == StatusCode::UNAUTHORIZED
                        && i + 1 < encodings.len()
                        && encodings[i + 1] == PasswordEncoding::Plain =>
                {
                    // Only reached by a password that is itself valid base64, sent encoded first:
                    // a pre-1.11.2 Dify took the encoded text as the password. The plain password
                    // is a different string, so nothing wrong is sent twice.
                    refused = Some(answer);
                }
                Err(err) => return Err(explain_login_failure(err, &self.console_url)),
            }
        }
        // Plain was then refused as "not base64": the Dify is 1.11.2+ and the encoded password was wrong.
        if let Some(answer) = refused {
            return Err(explain_login_failure(answer, &self.console_url));
        }
        Err(last_failure.unwrap_or_else(|| anyhow!("Dify refused the login for DIFY_EMAIL")).context(
            "check DIFY_EMAIL and DIFY_PASSWORD (Dify locks the account for a day after 5 wrong passwords)",
        ))
    }
}

/// The encodings to try, in order. A password that is not valid base64 text is sent plain first: a
/// 1.11.2+ Dify answers "Invalid encrypted data" without counting an attempt, and base64 follows. A
/// password that is itself valid base64 cannot be probed for free, so base64 (current Dify) goes
/// first and plain second: at most one failed attempt, and never the same wrong string twice.
fn encodings_to_try(encoding: PasswordEncoding, password: &str) -> Vec<PasswordEncoding> {
    match encoding {
        PasswordEncoding::Plain => vec![PasswordEncoding::Plain],
        PasswordEncoding::Base64 => vec![PasswordEncoding::Base64],
        PasswordEncoding::Auto if is_base64_text(password) => {
            vec![PasswordEncoding::Base64, PasswordEncoding::Plain]
        }
        PasswordEncoding::Auto => vec![PasswordEncoding::Plain, PasswordEncoding::Base64],
    }
}

/// Whether Dify 1.11.2+ would accept `text` as an encoded password (decodes to UTF-8).
fn is_base64_text(text: &str) -> bool {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .is_ok_and(|bytes| String::from_utf8(bytes).is_ok())
}

/// Login retries only what cannot have been a password check: network errors, 5xx, and a 429 that
/// is not the account lockout.
fn is_retryable_login_failure(error: &RequestError) -> bool {
    match error {
        RequestError::Status { status, answer, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
            !answer.contains("email_code_login_limit")
        }
        RequestError::Status { status, .. } => status.is_server_error(),
        RequestError::Transport { .. } => true,
        RequestError::Cancelled { .. } | RequestError::Unreadable { .. } => false,
    }
}

fn explain_login_failure(error: RequestError, console_url: &str) -> anyhow::Error {
    // The address as configured (DIFY_API_URL, password masked): a wrong host is the usual cause
    // of an unreachable Dify or of a login that is not there.
    let dify_url = url::Url::parse(console_url.trim_end_matches("/console/api")).map_or_else(
        |_| crate::secret::mask_userinfo(console_url),
        |url| crate::secret::masked_url(&url),
    );
    let (hint, verdict) = match &error {
        RequestError::Status { status, answer, .. } if *status == StatusCode::TOO_MANY_REQUESTS => {
            (
                "the Dify account of DIFY_EMAIL is locked after too many wrong passwords (for a day); fix DIFY_PASSWORD and wait, or unlock it in Dify".to_owned(),
                answer
                    .contains("email_code_login_limit")
                    .then_some(LoginVerdict::AccountLocked),
            )
        }
        RequestError::Status { status, .. } if *status == StatusCode::UNAUTHORIZED => (
            "check DIFY_EMAIL and DIFY_PASSWORD (Dify locks the account for a day after 5 wrong passwords)".to_owned(),
            Some(LoginVerdict::WrongPassword),
        ),
        RequestError::Status { status, .. }
            if *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED =>
        {
            (
                format!(
                    "check DIFY_API_URL: {dify_url} has no Dify console login; it must be the base URL of Dify, the host that serves /console/api"
                ),
                None,
            )
        }
        RequestError::Transport { .. } => (
            format!("check DIFY_API_URL ({dify_url}) and that Dify is reachable"),
            None,
        ),
        _ => return error.into(),
    };
    match verdict {
        Some(verdict) => anyhow::Error::new(LoginRefused {
            verdict,
            answer: error,
        }),
        None => anyhow::Error::new(error),
    }
    .context(hint)
}

#[derive(Deserialize)]
struct LoginAnswer {
    result: String,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

/// Tokens from a login or refresh answer: in the body (≤ 1.9.1) or as cookies (1.9.2+).
fn tokens_from(endpoint: &str, headers: &HeaderMap, body: &str) -> Result<Tokens> {
    let answer: LoginAnswer = serde_json::from_str(body).map_err(|e| {
        anyhow!("{endpoint} answered with a body that is not the expected JSON: {e}")
    })?;
    if answer.result != "success" {
        // e.g. {"result":"fail","data":"workspace not found"}: an account without a workspace.
        let reason = answer
            .data
            .as_ref()
            .and_then(|d| d.as_str())
            .unwrap_or("no reason given");
        bail!("{endpoint} refused: {reason}; the account of DIFY_EMAIL must belong to a workspace");
    }
    let data = answer.data.as_ref();
    let field = |name: &str| {
        data.and_then(|d| d.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    if let (Some(access), Some(refresh)) = (field("access_token"), field("refresh_token")) {
        return Ok(Tokens::Body {
            access: Secret::new(access),
            refresh: Secret::new(refresh),
        });
    }
    let cookie = |base: &str| {
        headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next()?.trim().split_once('='))
            .find(|(name, _)| name.strip_prefix("__Host-").unwrap_or(name) == base)
            .map(|(name, value)| Cookie {
                name: name.to_owned(),
                value: Secret::new(value.to_owned()),
            })
    };
    match (
        cookie("access_token"),
        cookie("refresh_token"),
        cookie("csrf_token"),
    ) {
        (Some(access), Some(refresh), Some(csrf)) => Ok(Tokens::Cookies {
            access,
            refresh,
            csrf,
        }),
        _ => bail!(
            "{endpoint} succeeded but returned no tokens (neither in the body nor as cookies)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_probes_for_free_unless_the_password_is_base64_text() {
        use PasswordEncoding::{Auto, Base64, Plain};
        assert_eq!(encodings_to_try(Auto, "p@ss word!"), [Plain, Base64]);
        // Decodes, but not to UTF-8: Dify 1.11.2+ would answer "Invalid encrypted data", so plain is safe first.
        assert_eq!(encodings_to_try(Auto, "Password1234"), [Plain, Base64]);
        assert_eq!(encodings_to_try(Auto, "c2VjcmV0MTIz"), [Base64, Plain]);
        assert_eq!(encodings_to_try(Plain, "Password1234"), [Plain]);
        assert_eq!(encodings_to_try(Base64, "x"), [Base64]);
    }

    #[test]
    fn cookies_are_read_with_or_without_the_host_prefix() {
        let mut headers = HeaderMap::new();
        for cookie in [
            "__Host-access_token=a1; Path=/; Secure; HttpOnly",
            "__Host-refresh_token=r1; Path=/; Secure; HttpOnly",
            "__Host-csrf_token=c1; Path=/; Secure",
        ] {
            headers.append(SET_COOKIE, cookie.parse().unwrap());
        }
        let Tokens::Cookies { access, csrf, .. } =
            tokens_from("x", &headers, r#"{"result":"success"}"#).unwrap()
        else {
            panic!("cookies expected");
        };
        assert_eq!(
            (access.name.as_str(), access.value.expose()),
            ("__Host-access_token", "a1")
        );
        assert_eq!(csrf.value.expose(), "c1");
    }

    #[test]
    fn an_account_without_workspace_is_explained() {
        let err = tokens_from(
            "POST /console/api/login",
            &HeaderMap::new(),
            r#"{"result":"fail","data":"workspace not found"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("workspace not found"), "{err}");
    }
}

//! The login guard: Dify's lockout budget (5 wrong passwords lock an account for a day) is spent
//! at most once per wrong password across runs (`docs/run.md#login-guard`).
//!
//! A login Dify refuses as a wrong password or a locked account ends the run as
//! [`JobError::LoginRefused`](crate::run::JobError); the run keeps the verdict in the state
//! database with a salted argon2id hash of URL, email and password (a stolen state file gives away
//! neither the password nor a fast digest to guess it against), and [`login_guard`] stops later
//! runs with the same credentials before any request.

use anyhow::{Result, anyhow};
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use tracing::info;

use super::credentials::DifyAuth;
use crate::http::RequestError;
use crate::secret::{Secret, masked_url};
use crate::state::{LoginVerdictRecord, State, now_text};

/// Why Dify refused a login in a way that trying the same credentials again cannot cure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub(crate) enum LoginVerdict {
    /// "Invalid email or password": each try costs one of the 5 attempts before the lockout.
    WrongPassword,
    /// Too many wrong passwords: Dify refuses every login of the account for a day.
    AccountLocked,
}

/// A login that Dify refused with a [`LoginVerdict`]: the session's error, which the console source
/// turns into [`JobError::LoginRefused`](crate::run::JobError) ([`LoginRefused::find`]).
#[derive(Debug, thiserror::Error)]
#[error("{}", match .verdict {
    LoginVerdict::WrongPassword => "Dify refused the password of DIFY_EMAIL",
    LoginVerdict::AccountLocked => "Dify has locked the account of DIFY_EMAIL after too many wrong passwords",
})]
pub(crate) struct LoginRefused {
    pub(super) verdict: LoginVerdict,
    #[source]
    pub(super) answer: RequestError,
}

/// How long Dify locks an account after too many wrong passwords; after it the guard lets one
/// login through.
const LOCKOUT_HOURS: i64 = 24;

/// Before any request to Dify: whether the configured login is one Dify already refused. Returns
/// the message for the operator when the run must not log in. A verdict on other credentials (or
/// another Dify, or a token instead of a login) is cleared when `writable`; so is a lockout older
/// than a day, or any verdict when the operator asked to `retry`.
pub(crate) fn login_guard(
    state: &State,
    url: &url::Url,
    auth: &DifyAuth,
    retry: bool,
    writable: bool,
) -> Result<Option<String>> {
    let Some(record) = state.login_verdict()? else {
        return Ok(None);
    };
    let same = match auth {
        DifyAuth::Login {
            email, password, ..
        } => argon2::password_hash::phc::PasswordHash::new(&record.credentials_hash).is_ok_and(
            |hash| {
                argon2::Argon2::default()
                    .verify_password(credentials(url, email, password).as_bytes(), &hash)
                    .is_ok()
            },
        ),
        DifyAuth::AdminKey { .. } | DifyAuth::ConsoleToken(_) => false,
    };
    let verdict = record.verdict.parse::<LoginVerdict>().ok();
    let lockout_over = verdict == Some(LoginVerdict::AccountLocked)
        && chrono::DateTime::parse_from_rfc3339(&record.recorded_at).is_ok_and(|at| {
            chrono::Utc::now() - at.to_utc() >= chrono::Duration::hours(LOCKOUT_HOURS)
        });
    let why = match (same, retry, lockout_over, verdict) {
        (false, ..) => "the credentials or DIFY_API_URL changed",
        (true, true, ..) => "--retry-login",
        (true, false, true, _) => "Dify's lockout of a day is over",
        (true, false, false, Some(verdict)) => return Ok(Some(refusal(&record, verdict))),
        (true, false, false, None) => "the stored verdict is unknown to this exporter",
    };
    if writable {
        state.clear_login_verdict()?;
        info!(reason = why, "login guard cleared; logging in to Dify");
    }
    Ok(None)
}

/// What the operator reads when the guard stops a run.
fn refusal(record: &LoginVerdictRecord, verdict: LoginVerdict) -> String {
    let (email, at) = (&record.email, &record.recorded_at);
    match verdict {
        LoginVerdict::WrongPassword => format!(
            "login guard: Dify refused the password of DIFY_EMAIL {email} at {at} ({}); this run did not try again, \
             to spare the account (5 wrong passwords lock it for a day). Set the right DIFY_PASSWORD (new credentials \
             clear the guard); if the password in Dify was changed to this one, run `exporter run --retry-login` once",
            record.detail
        ),
        LoginVerdict::AccountLocked => format!(
            "login guard: Dify locked the account of DIFY_EMAIL {email} at {at} after too many wrong passwords ({}); \
             this run did not try to log in. Wait a day (the first run after {LOCKOUT_HOURS} h tries once), or unlock \
             the account in Dify and run `exporter run --retry-login`, and make sure DIFY_PASSWORD is right",
            record.detail
        ),
    }
}

/// What the guard keeps of a refused login.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) verdict: LoginVerdict,
    /// Dify's answer, for the operator (secrets masked).
    pub(crate) detail: String,
}

impl LoginRefused {
    /// The [`LoginRefused`] in `error`'s chain, if a refused login is why the work failed.
    pub(crate) fn find(error: &anyhow::Error) -> Option<Refusal> {
        let refused = error
            .chain()
            .find_map(|cause| cause.downcast_ref::<LoginRefused>())?;
        Some(Refusal {
            verdict: refused.verdict,
            detail: refused.answer.to_string(),
        })
    }
}

/// Keeps `refusal` of the configured login as the guard's verdict. Returns whether the
/// credentials are a login (only those are kept).
pub(crate) fn keep_refusal(
    state: &State,
    url: &url::Url,
    auth: &DifyAuth,
    refusal: &Refusal,
) -> Result<bool> {
    let DifyAuth::Login {
        email, password, ..
    } = auth
    else {
        return Ok(false);
    };
    // Argon2id with its default cost (19 MiB, 2 passes) and a random salt per verdict.
    let hash = argon2::Argon2::default()
        .hash_password(credentials(url, email, password).as_bytes())
        .map_err(|e| anyhow!("cannot hash the refused credentials: {e}"))?
        .to_string();
    let verdict: &'static str = refusal.verdict.into();
    state.set_login_verdict(&LoginVerdictRecord {
        dify_url: masked_url(url),
        email: email.clone(),
        credentials_hash: hash,
        verdict: verdict.to_owned(),
        detail: refusal.detail.clone(),
        recorded_at: now_text(),
    })?;
    Ok(true)
}

/// What the guard hashes: the same password on another Dify is other credentials.
fn credentials(url: &url::Url, email: &str, password: &Secret) -> String {
    format!("{url}\n{email}\n{}", password.expose())
}

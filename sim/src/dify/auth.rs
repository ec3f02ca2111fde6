//! Dify's console authentication as it differs between versions (docs/console-api.md#authentication): login with tokens in
//! the body (1.9.1) or only as cookies (1.9.2+), base64 passwords (1.11.2+), CSRF on every console call, the
//! admin API key, refresh with rotation, token expiry after N requests and the lockout after 5 wrong passwords.
//!
//! It owns the issued tokens; `routes` calls [`authenticate`] before serving any console data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Deserialize;
use serde_json::json;

use super::SimState;
use super::faults::LoginAttempt;
use super::routes::ApiError;

/// Dify locks the account once the failure count is above this.
const MAX_LOGIN_ERRORS: u32 = 5;

#[derive(Debug)]
pub(crate) struct AuthState {
    inner: std::sync::Mutex<AuthInner>,
}

#[derive(Debug)]
struct AuthInner {
    rng: ChaCha8Rng,
    /// Access token -> requests it has served.
    access: HashMap<String, u64>,
    refresh: HashSet<String>,
    csrf: HashSet<String>,
    /// Lower-case email -> wrong passwords since the last successful login.
    failed_logins: HashMap<String, u32>,
}

/// A fresh access/refresh/CSRF triple.
struct Issued {
    access: String,
    refresh: String,
    csrf: String,
}

impl AuthState {
    pub(crate) fn new(rng: ChaCha8Rng) -> Self {
        let inner = AuthInner {
            rng,
            access: HashMap::new(),
            refresh: HashSet::new(),
            csrf: HashSet::new(),
            failed_logins: HashMap::new(),
        };
        AuthState {
            inner: std::sync::Mutex::new(inner),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AuthInner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues an access token outside any login, for [`super::Credentials::console_token`].
    pub(crate) fn preissue_access_token(&self) -> String {
        let mut inner = self.lock();
        let token = inner.token("at");
        inner.access.insert(token.clone(), 0);
        token
    }

    fn issue(&self) -> Issued {
        let mut inner = self.lock();
        let issued = Issued {
            access: inner.token("at"),
            refresh: inner.token("rt"),
            csrf: inner.token("csrf"),
        };
        inner.access.insert(issued.access.clone(), 0);
        inner.refresh.insert(issued.refresh.clone());
        inner.csrf.insert(issued.csrf.clone());
        issued
    }
}

impl AuthInner {
    /// JWT-looking opaque tokens; only the simulator has to recognise them.
    fn token(&mut self, kind: &str) -> String {
        let bytes: [u8; 24] = self.rng.random();
        format!(
            "eyJzaW0iOiJ{kind}In0.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )
    }
}

fn cookie_name(state: &SimState, base: &str) -> String {
    if state.config.host_prefixed_cookies {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// The value of cookie `name`, looked up in every `Cookie` header.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Checks a console request as the configured Dify version would.
pub(crate) fn authenticate(state: &SimState, headers: &HeaderMap) -> Result<(), ApiError> {
    let mode = state.config.auth;
    let bearer = bearer(headers);
    if mode == super::AuthMode::AdminKey && bearer == Some(state.credentials.admin_api_key.as_str())
    {
        let workspace = headers.get("x-workspace-id").and_then(|v| v.to_str().ok());
        // The admin key acts as the workspace owner only with the right workspace; CSRF is skipped (1.11+).
        return if workspace.is_some_and(|w| w.eq_ignore_ascii_case(&state.credentials.workspace_id))
        {
            Ok(())
        } else {
            Err(unauthorized("Invalid Authorization token."))
        };
    }
    // 1.9.1 reads only the Authorization header; later versions prefer the cookie.
    let token = if mode.uses_cookies() {
        cookie(headers, &cookie_name(state, "access_token")).or(bearer)
    } else {
        bearer
    };
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(unauthorized("Invalid Authorization token."));
    };
    let mut inner = state.auth.lock();
    let Some(&uses) = inner.access.get(token) else {
        return Err(unauthorized("Invalid Authorization token."));
    };
    if state
        .config
        .faults
        .expire_token_after_requests
        .is_some_and(|n| uses >= n)
    {
        return Err(unauthorized("Token has expired."));
    }
    if mode.uses_cookies() {
        let header = headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let cookie = cookie(headers, &cookie_name(state, "csrf_token"));
        let valid =
            matches!((header, cookie), (Some(h), Some(c)) if h == c && inner.csrf.contains(h));
        if !valid {
            return Err(unauthorized("CSRF token is missing or invalid."));
        }
    }
    if let Some(uses) = inner.access.get_mut(token) {
        *uses += 1;
    }
    Ok(())
}

fn set_cookie(
    state: &SimState,
    response: &mut Response,
    base: &str,
    value: &str,
    max_age: u64,
    http_only: bool,
) {
    let name = cookie_name(state, base);
    let mut cookie = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        cookie.push_str("; HttpOnly");
    }
    if state.config.host_prefixed_cookies {
        // Browsers and cookie jars only accept `__Host-` cookies marked Secure, and then send them over https only.
        cookie.push_str("; Secure");
    }
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The success answer of login and refresh: tokens in the body (1.9.1) or as three cookies (1.9.2+).
fn tokens_response(state: &SimState, issued: &Issued) -> Response {
    if !state.config.auth.uses_cookies() {
        return axum::Json(json!({
            "result": "success",
            "data": {"access_token": issued.access, "refresh_token": issued.refresh},
        }))
        .into_response();
    }
    let mut response = axum::Json(json!({"result": "success"})).into_response();
    set_cookie(
        state,
        &mut response,
        "access_token",
        &issued.access,
        3600,
        true,
    );
    set_cookie(
        state,
        &mut response,
        "refresh_token",
        &issued.refresh,
        30 * 86_400,
        true,
    );
    set_cookie(
        state,
        &mut response,
        "csrf_token",
        &issued.csrf,
        3600,
        false,
    );
    response
}

#[derive(Deserialize)]
struct LoginBody {
    email: String,
    password: String,
}

/// `POST /console/api/login`.
pub(crate) async fn login(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<LoginBody>(&body) else {
        return ApiError::invalid_param(
            "Login body must be JSON with string fields email and password.",
        )
        .into_response();
    };
    let response = check_login(&state, &body.email, &body.password);
    let response = match response {
        Ok(issued) => tokens_response(&state, &issued),
        Err(error) => error.into_response(),
    };
    state.counters.record_login(LoginAttempt {
        email: body.email,
        password: body.password,
        status: response.status().as_u16(),
    });
    response
}

fn check_login(state: &SimState, email: &str, password: &str) -> Result<Issued, ApiError> {
    let key = email.to_lowercase();
    if state
        .auth
        .lock()
        .failed_logins
        .get(&key)
        .is_some_and(|&n| n > MAX_LOGIN_ERRORS)
    {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "email_code_login_limit",
            "Too many incorrect password attempts. Please try again later.",
        ));
    }
    let password = if state.config.auth.base64_password() {
        // Undecodable input is rejected before the password is checked, so it costs no attempt.
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(password)
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        match decoded {
            Some(p) => p,
            None => {
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "authentication_failed",
                    "Invalid encrypted data",
                ));
            }
        }
    } else {
        password.to_owned()
    };
    if key == state.credentials.email.to_lowercase() && password == state.credentials.password {
        state.auth.lock().failed_logins.remove(&key);
        Ok(state.auth.issue())
    } else {
        *state.auth.lock().failed_logins.entry(key).or_default() += 1;
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_failed",
            "Invalid email or password.",
        ))
    }
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh_token: String,
}

/// `POST /console/api/refresh-token`: no CSRF check; the old refresh token is revoked (rotation).
pub(crate) async fn refresh(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let presented = if state.config.auth.uses_cookies() {
        cookie(&headers, &cookie_name(&state, "refresh_token")).map(str::to_owned)
    } else {
        serde_json::from_slice::<RefreshBody>(&body)
            .ok()
            .map(|b| b.refresh_token)
    };
    let Some(presented) = presented else {
        return unauthorized("Invalid refresh token").into_response();
    };
    if !state.auth.lock().refresh.remove(&presented) {
        return unauthorized("Invalid refresh token").into_response();
    }
    state.counters.refreshes.fetch_add(1, Ordering::SeqCst);
    let issued = state.auth.issue();
    tokens_response(&state, &issued)
}

//! The auth variants: tokens in the body or cookies, CSRF, host-prefixed cookies, base64 passwords and the
//! lockout, admin keys, and tokens that expire.

use std::collections::BTreeMap;

use dify_sim::{AuthMode, DifySim, Faults, SimConfig};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, SET_COOKIE};
use serde_json::{Value, json};

use crate::support::{api, body, config, start};

/// Set-Cookie headers as name -> whole header line.
fn set_cookies(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|line| {
            line.split_once('=')
                .map(|(name, _)| (name.to_owned(), line.to_owned()))
        })
        .collect()
}

fn cookie_value(line: &str) -> String {
    line.split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

async fn login(sim: &DifySim, password: &str) -> reqwest::Response {
    let body =
        json!({"email": sim.credentials().email, "password": password, "remember_me": false});
    reqwest::Client::new()
        .post(api(sim, "/login"))
        .json(&body)
        .send()
        .await
        .expect("login answers")
}

/// GET with a raw Cookie header and optional CSRF header and bearer.
async fn get_with(
    sim: &DifySim,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
    bearer: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().get(api(sim, path));
    if let Some(cookie) = cookie {
        request = request.header("Cookie", cookie);
    }
    if let Some(csrf) = csrf {
        request = request.header("X-CSRF-Token", csrf);
    }
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    body(request.send().await.expect("answers")).await
}

#[tokio::test]
async fn v1_9_1_tokens_in_body_and_bearer_without_csrf() {
    let sim = start(config(AuthMode::V1_9_1));
    let (status, value) = body(login(&sim, &sim.credentials().password.clone()).await).await;
    assert_eq!(status, 200);
    assert_eq!(value["result"], "success");
    let token = value["data"]["access_token"]
        .as_str()
        .expect("access token in body")
        .to_owned();
    assert!(value["data"]["refresh_token"].is_string());
    let (status, profile) = get_with(&sim, "/account/profile", None, None, Some(&token)).await;
    assert_eq!(status, 200);
    assert_eq!(profile["timezone"], "Asia/Tokyo");
    let (status, _) = get_with(
        &sim,
        "/apps",
        None,
        None,
        Some(&sim.credentials().console_token.clone()),
    )
    .await;
    assert_eq!(status, 200, "the pre-issued token works as Bearer on 1.9.1");
    let (status, error) = get_with(&sim, "/apps", None, None, None).await;
    assert_eq!(status, 401);
    assert_eq!(
        error,
        json!({"code": "unauthorized", "message": "Invalid Authorization token.", "status": 401})
    );
    let (status, error) = body(login(&sim, "wrong").await).await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (401, Some("authentication_failed"))
    );
}

#[tokio::test]
async fn v1_9_2_cookies_and_csrf_on_every_call() {
    let sim = start(config(AuthMode::V1_9_2));
    let response = login(&sim, &sim.credentials().password.clone()).await;
    let cookies = set_cookies(response.headers());
    let (status, value) = body(response).await;
    assert_eq!(status, 200);
    assert_eq!(
        value,
        json!({"result": "success"}),
        "no tokens in the body from 1.9.2 on"
    );
    for name in ["access_token", "refresh_token", "csrf_token"] {
        assert!(cookies.contains_key(name), "cookie {name} set: {cookies:?}");
        assert!(!cookies[name].contains("Secure"));
    }
    assert!(!cookies["csrf_token"].contains("HttpOnly"));
    let access = cookie_value(&cookies["access_token"]);
    let csrf = cookie_value(&cookies["csrf_token"]);
    let jar = format!("access_token={access}; csrf_token={csrf}");
    let csrf_error = json!({"code": "unauthorized", "message": "CSRF token is missing or invalid.", "status": 401});

    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), Some(&csrf), None)
            .await
            .0,
        200
    );
    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), None, None).await,
        (StatusCode::UNAUTHORIZED, csrf_error.clone())
    );
    let only_access = format!("access_token={access}");
    assert_eq!(
        get_with(&sim, "/apps", Some(&only_access), Some(&csrf), None)
            .await
            .0,
        401,
        "CSRF cookie required"
    );
    assert_eq!(
        get_with(&sim, "/apps", Some(&jar), Some("other"), None)
            .await
            .0,
        401,
        "header must equal cookie"
    );
    // A bare console token as Bearer: real Dify answers the CSRF 401, which the exporter must explain.
    let console = sim.credentials().console_token.clone();
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&console)).await,
        (StatusCode::UNAUTHORIZED, csrf_error)
    );
    let csrf_only = format!("csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/apps", Some(&csrf_only), Some(&csrf), Some(&console))
            .await
            .0,
        200
    );

    // Refresh reads the refresh cookie, rotates it and answers three new cookies.
    let refresh = cookie_value(&cookies["refresh_token"]);
    let client = reqwest::Client::new();
    let response = client
        .post(api(&sim, "/refresh-token"))
        .header("Cookie", format!("refresh_token={refresh}"))
        .send()
        .await
        .expect("refresh answers");
    assert_eq!(response.status(), 200);
    assert_eq!(set_cookies(response.headers()).len(), 3);
    let again = client
        .post(api(&sim, "/refresh-token"))
        .header("Cookie", format!("refresh_token={refresh}"))
        .send()
        .await
        .expect("refresh answers");
    assert_eq!(again.status(), 401, "a used refresh token is revoked");
    assert_eq!(sim.stats().refreshes, 1);
}

#[tokio::test]
async fn v1_9_2_cookie_jar_works_when_cookies_are_not_host_prefixed() {
    let sim = start(config(AuthMode::V1_9_2));
    let client = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .expect("client");
    let body_json =
        json!({"email": sim.credentials().email, "password": sim.credentials().password});
    let response = client
        .post(api(&sim, "/login"))
        .json(&body_json)
        .send()
        .await
        .expect("login");
    let csrf = cookie_value(&set_cookies(response.headers())["csrf_token"]);
    let apps = client
        .get(api(&sim, "/apps"))
        .header("X-CSRF-Token", csrf)
        .send()
        .await
        .expect("apps");
    assert_eq!(apps.status(), 200);
}

#[tokio::test]
async fn host_prefixed_cookies_are_secure_and_only_their_names_count() {
    let sim = start(SimConfig {
        host_prefixed_cookies: true,
        ..config(AuthMode::V1_9_2)
    });
    let response = login(&sim, &sim.credentials().password.clone()).await;
    let cookies = set_cookies(response.headers());
    for name in [
        "__Host-access_token",
        "__Host-refresh_token",
        "__Host-csrf_token",
    ] {
        assert!(
            cookies[name].contains("Secure") && cookies[name].contains("Path=/"),
            "{name}: {cookies:?}"
        );
    }
    let access = cookie_value(&cookies["__Host-access_token"]);
    let csrf = cookie_value(&cookies["__Host-csrf_token"]);
    let prefixed = format!("__Host-access_token={access}; __Host-csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/account/profile", Some(&prefixed), Some(&csrf), None)
            .await
            .0,
        200
    );
    let plain = format!("access_token={access}; csrf_token={csrf}");
    assert_eq!(
        get_with(&sim, "/account/profile", Some(&plain), Some(&csrf), None)
            .await
            .0,
        401
    );
}

#[tokio::test]
async fn v1_11_2_base64_passwords_and_lockout() {
    use base64::Engine as _;
    let sim = start(config(AuthMode::V1_11_2));
    let password = sim.credentials().password.clone();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&password);
    // Not base64 at all: rejected before the password check, so it never counts toward the lockout.
    for _ in 0..8 {
        let (status, error) = body(login(&sim, &password).await).await;
        assert_eq!(status, 401);
        assert_eq!(error["code"], "authentication_failed");
        assert_eq!(error["message"], "Invalid encrypted data");
    }
    assert_eq!(login(&sim, &encoded).await.status(), 200);
    // A plain password that happens to be valid base64 of UTF-8 ("Zm9vYmFy" is "foobar"): a wrong one that counts.
    for _ in 0..6 {
        let (status, error) = body(login(&sim, "Zm9vYmFy").await).await;
        assert_eq!(
            (status.as_u16(), error["message"].as_str()),
            (401, Some("Invalid email or password."))
        );
    }
    let (status, error) = body(login(&sim, &encoded).await).await;
    assert_eq!(
        (status.as_u16(), error["code"].as_str()),
        (429, Some("email_code_login_limit"))
    );
    let attempts = sim.stats().login_attempts;
    assert_eq!(attempts.len(), 16);
    assert_eq!(
        attempts[0].password, password,
        "the password is recorded exactly as received"
    );
    assert_eq!(attempts[8].password, encoded);
    assert_eq!(attempts[8].status, 200);
}

#[tokio::test]
async fn admin_key_needs_the_workspace_header_and_skips_csrf() {
    let sim = start(config(AuthMode::AdminKey));
    let c = sim.credentials().clone();
    let client = reqwest::Client::new();
    let ok = client
        .get(api(&sim, "/apps"))
        .bearer_auth(&c.admin_api_key)
        .header("X-WORKSPACE-ID", &c.workspace_id)
        .send()
        .await
        .expect("answers");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&c.admin_api_key))
            .await
            .0,
        401
    );
    // The key means nothing where the server has not enabled it.
    let other = start(config(AuthMode::V1_11_2));
    let refused = client
        .get(api(&other, "/apps"))
        .bearer_auth(&other.credentials().admin_api_key)
        .header("X-WORKSPACE-ID", &other.credentials().workspace_id)
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn tokens_expire_after_n_requests_until_refreshed() {
    let faults = Faults {
        expire_token_after_requests: Some(3),
        ..Faults::default()
    };
    let sim = start(SimConfig {
        faults,
        ..config(AuthMode::V1_9_1)
    });
    let (_, value) = body(login(&sim, &sim.credentials().password.clone()).await).await;
    let token = value["data"]["access_token"]
        .as_str()
        .expect("token")
        .to_owned();
    for _ in 0..3 {
        assert_eq!(
            get_with(&sim, "/apps", None, None, Some(&token)).await.0,
            200
        );
    }
    let (status, error) = get_with(&sim, "/apps", None, None, Some(&token)).await;
    assert_eq!(
        (status.as_u16(), error["message"].as_str()),
        (401, Some("Token has expired."))
    );
    let refresh = value["data"]["refresh_token"].clone();
    let response = reqwest::Client::new()
        .post(api(&sim, "/refresh-token"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .expect("refresh");
    let (status, value) = body(response).await;
    assert_eq!(status, 200);
    let fresh = value["data"]["access_token"]
        .as_str()
        .expect("new token")
        .to_owned();
    assert_eq!(
        get_with(&sim, "/apps", None, None, Some(&fresh)).await.0,
        200
    );
}

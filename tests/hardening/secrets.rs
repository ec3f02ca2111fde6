//! Secrets (items 1 and 5): a token that cannot be an HTTP header is refused before any request, and a
//! server that echoes the token or the password back finds them masked in logs, `status` and `state.db`.

use base64::Engine as _;
use wiremock::matchers::{any, method};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::deliver::{dify, exporter, meter, state_dir};
use crate::support::{
    CANARIES, DIFY_TOKEN, EXTERNAL_TOKEN, Exporter, PASSWORD, database_bytes, status,
};

/// Answers `status` with the request's headers and body in its own body: a debugging proxy or an
/// error page that echoes what it was sent, secrets included.
pub(crate) struct Echo(pub(crate) u16);

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let headers: Vec<String> = request
            .headers
            .iter()
            .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap_or("?")))
            .collect();
        // Headers first: the receiver's answer is kept to its first 4 KiB, and the body is long.
        let echoed = format!(
            "request was: {} | {}",
            headers.join(" | "),
            String::from_utf8_lossy(&request.body)
        );
        ResponseTemplate::new(self.0).set_body_json(serde_json::json!({ "message": echoed }))
    }
}

// Item 1: a value that cannot be an HTTP header.

#[tokio::test]
async fn a_token_that_cannot_be_a_header_is_refused_before_any_request() {
    let dify = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&dify)
        .await;
    let injected = format!("{DIFY_TOKEN}\nX-Injected: 1");

    let validate = Exporter::configured(&dify.uri())
        .env("DIFY_API_TOKEN", &injected)
        .args(["validate-config"])
        .run();
    validate.code(1);
    assert!(
        validate.stdout.contains(
            "DIFY_API_TOKEN: contains a character that cannot be sent in an HTTP header (character 21 of 34"
        ),
        "{}",
        validate.stdout
    );

    let run = Exporter::configured(&dify.uri())
        .env("DIFY_API_TOKEN", &injected)
        .env("EXTERNAL_API_TOKEN", &format!("{EXTERNAL_TOKEN}\u{1}x"))
        .args(["run"])
        .run();
    run.code(1);
    let problems = run
        .stdout_lines()
        .into_iter()
        .chain(run.stderr_lines())
        .find(|l| {
            l["message"] == "configuration is invalid; fix the variables named in `problems`"
        });
    let problems = problems.expect("a configuration error line")["context"]["problems"].to_string();
    assert!(
        problems.contains("DIFY_API_TOKEN: contains a character"),
        "{problems}"
    );
    assert!(
        problems.contains("EXTERNAL_API_TOKEN: contains a character"),
        "{problems}"
    );
}

// Item 5: secrets echoed back by a server.

#[tokio::test]
async fn a_dify_error_that_echoes_the_token_or_the_password_is_masked() {
    let dify = MockServer::start().await;
    Mock::given(any())
        .respond_with(Echo(500))
        .mount(&dify)
        .await;

    let token = Exporter::configured(&dify.uri())
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    token.code(1);
    let error = token.failure();
    assert!(
        error.contains("answered 500 Internal Server Error"),
        "{error}"
    );
    assert!(error.contains("authorization: Bearer ***"), "{error}");

    // The login sends the password base64-encoded (Dify >= 1.11.2): that form is a secret too.
    let encoded = base64::engine::general_purpose::STANDARD.encode(PASSWORD);
    let login = Exporter::configured(&dify.uri())
        .env_remove("DIFY_API_TOKEN")
        .env("DIFY_EMAIL", "owner@example.com")
        .env("DIFY_PASSWORD", PASSWORD)
        .env("DIFY_PASSWORD_ENCODING", "base64")
        .env("MAX_RETRY", "0")
        .args(["run"])
        .run();
    login.code(1);
    let error = login.failure();
    assert!(error.contains("\"password\":\"***\""), "{error}");
    assert!(!login.stdout.contains(&encoded), "{}", login.stdout);
}

#[tokio::test]
async fn a_meter_rejection_that_echoes_the_token_is_masked_in_logs_status_and_the_database() {
    let dify = dify();
    let echoing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Echo(400))
        .mount(&echoing)
        .await;
    let (_dir, state) = state_dir();
    let run = exporter(&dify, &meter(), &state)
        .env("EXTERNAL_API_URL", &format!("{}/usage", echoing.uri()))
        .args(["run"])
        .run();
    run.code(1);
    let dead = run.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    let reason = dead["context"]["reason"].as_str().unwrap();
    assert!(reason.contains("answered 400 Bad Request"), "{reason}");
    assert!(reason.contains("authorization: Bearer ***"), "{reason}");

    let text = status(&state, "text");
    assert!(text.contains("Bearer ***"), "{text}");
    status(&state, "json");
    let stored = String::from_utf8_lossy(&database_bytes(&state)).into_owned();
    assert!(stored.contains("Bearer ***"), "the error is stored");
    for canary in CANARIES {
        assert!(!stored.contains(canary), "{canary} in state.db");
    }
}

//! Issue 18 class 4: secrets the configuration took, however they were written, never reach an
//! output: a URL password holding `/`, `?` or `#` unencoded, and a key spelled in lower case.

use base64::Engine as _;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer};

use super::secrets::Echo;
use crate::support::{DIFY_TOKEN, EXTERNAL_TOKEN, Exporter, Finished};

/// A password with every character that ends a URL's authority.
const URL_CANARY: &str = "pw/url#canary?x";

/// The canary in every form it could leak in: plain, percent-encoded, base64, JSON-escaped.
fn assert_no_canary(finished: &Finished, canary: &str) {
    let forms = [
        canary.to_owned(),
        percent_encoding::utf8_percent_encode(canary, percent_encoding::NON_ALPHANUMERIC)
            .to_string(),
        base64::engine::general_purpose::STANDARD.encode(canary),
        serde_json::to_string(canary)
            .unwrap()
            .trim_matches('"')
            .to_owned(),
        // What a parser that stopped at the delimiter would have taken for the password.
        canary.split(['/', '#', '?']).next().unwrap().to_owned(),
    ];
    for form in forms {
        assert!(
            !finished.stdout.contains(&form),
            "{form} in stdout:\n{}",
            finished.stdout
        );
        assert!(
            !finished.stderr.contains(&form),
            "{form} in stderr:\n{}",
            finished.stderr
        );
    }
}

#[test]
fn a_url_password_with_unencoded_delimiters_is_refused_masked_for_every_url_variable() {
    let database = format!("postgres://ro:{URL_CANARY}@127.0.0.1:5432/dify");
    let pushgateway = format!("https://ops:{URL_CANARY}@gw.example.com");
    let sink = format!("postgres://writer:{URL_CANARY}@127.0.0.1:5432/billing");
    for (variable, value, console) in [
        ("DIFY_DATABASE_URL", &database, false),
        ("PUSHGATEWAY_URL", &pushgateway, true),
        ("SINK_POSTGRES_URL", &sink, true),
    ] {
        for args in [&["validate-config"][..], &["run", "--dry-run"]] {
            let mut exporter = Exporter::new()
                .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
                .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
                .env(variable, value);
            if console {
                exporter = exporter
                    .env("DIFY_API_URL", "http://127.0.0.1:9")
                    .env("DIFY_API_TOKEN", DIFY_TOKEN);
            }
            let finished = exporter.args(args).run();
            finished.code(1);
            let shown = format!("{}{}", finished.stdout, finished.stderr);
            assert!(
                shown.contains(&format!(
                    "{variable}: `{}` has a password holding `/`, `?` or `#` unencoded, which ends the address early; percent-encode them as %2F, %3F and %23",
                    value.replace(URL_CANARY, "***")
                )),
                "{variable} {args:?}: {shown}"
            );
            assert_no_canary(&finished, URL_CANARY);
        }
    }
}

#[tokio::test]
async fn a_token_under_a_lower_case_key_is_the_token_and_masked_when_echoed() {
    let dify = MockServer::start().await;
    Mock::given(any())
        .respond_with(Echo(500))
        .mount(&dify)
        .await;
    let finished = Exporter::new()
        .file(
            ".env",
            &format!(
                "dify_api_url={}\ndify_api_token={DIFY_TOKEN}\nexternal_api_url=http://127.0.0.1:9/usage\n\
                 External_Api_Token={EXTERNAL_TOKEN}\nMAX_RETRY=0\n",
                dify.uri()
            ),
        )
        .args(["run"])
        .run();
    finished.code(1);
    let error = finished.failure();
    // The token was sent (the server echoed it) and is masked in what the server sent back.
    assert!(error.contains("authorization: Bearer ***"), "{error}");
    let sent = dify.received_requests().await.unwrap();
    assert_eq!(
        sent[0].headers["authorization"].to_str().unwrap(),
        format!("Bearer {DIFY_TOKEN}")
    );
    // `run starting` lists it under its own name, masked.
    let starting = finished.log("run starting");
    assert_eq!(
        starting["context"]["config"]["DIFY_API_TOKEN"], "***",
        "{starting}"
    );
}

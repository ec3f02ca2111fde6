//! One authenticated console session: every request carries the credentials, goes through the
//! shared retrying [`HttpClient`], and comes back parsed into a typed answer or an error that names
//! the endpoint, the status, Dify's message and what the operator should change.

use anyhow::{Result, anyhow, bail};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use url::Url;

use crate::config::DifyAuth;
use crate::http::{HttpClient, RequestError};

/// Every console path hangs off this prefix.
const CONSOLE_PREFIX: &str = "/console/api";

/// A console API client for one run.
pub struct DifyClient {
    http: HttpClient,
    /// `DIFY_API_URL` + `/console/api`, no trailing slash.
    console_url: String,
    auth: DifyAuth,
}

impl DifyClient {
    /// Builds the client; no request is made yet.
    pub fn new(base_url: &Url, auth: DifyAuth, http: HttpClient) -> Result<DifyClient> {
        if matches!(auth, DifyAuth::Login { .. }) {
            bail!(
                "console login with DIFY_EMAIL and DIFY_PASSWORD is not supported by this version; \
                 set DIFY_API_TOKEN (an admin API key with DIFY_WORKSPACE_ID, or a console access token) instead"
            );
        }
        Ok(DifyClient {
            http,
            console_url: format!(
                "{}{CONSOLE_PREFIX}",
                base_url.as_str().trim_end_matches('/')
            ),
            auth,
        })
    }

    /// `GET {console}/{path}` with `query`, parsed as `T`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let endpoint = format!("GET {CONSOLE_PREFIX}{path}");
        let url = format!("{}{path}", self.console_url);
        let answer = self
            .http
            .send(&endpoint, || {
                self.authorize(self.http.client().get(&url).query(query))
            })
            .await
            .map_err(explain)?;
        parse(&endpoint, &answer.body)
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            DifyAuth::AdminKey { key, workspace_id } => request
                .bearer_auth(key.expose())
                .header("X-WORKSPACE-ID", workspace_id.to_string()),
            DifyAuth::ConsoleToken(token) => request.bearer_auth(token.expose()),
            // Refused in `new`.
            DifyAuth::Login { .. } => request,
        }
    }
}

/// Parses a 2xx body, naming the endpoint and the JSON path that did not fit.
fn parse<T: DeserializeOwned>(endpoint: &str, body: &str) -> Result<T> {
    let mut deserializer = serde_json::Deserializer::from_str(body);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let start: String = body.trim_start().chars().take(60).collect();
        let hint = if start.starts_with('<') {
            " (an HTML page: is DIFY_API_URL the Dify API's base URL, not the web UI or a login proxy?)"
        } else {
            ""
        };
        anyhow!(
            "{endpoint} answered with a body that is not the expected JSON: {} at `{}`; the body starts with {start:?}{hint}",
            error.inner(),
            error.path()
        )
    })
}

/// Adds what to change to the errors an operator can fix.
fn explain(error: RequestError) -> anyhow::Error {
    let hint = match &error {
        RequestError::Status { status, detail, .. } if *status == StatusCode::UNAUTHORIZED => {
            if detail.contains("CSRF") {
                "Dify >= 1.9.2 requires a CSRF token for console sessions, which a bare access token \
                 lacks: set DIFY_EMAIL and DIFY_PASSWORD, or use an admin API key (DIFY_API_TOKEN with \
                 DIFY_WORKSPACE_ID; Dify >= 1.11.0)"
            } else {
                "check DIFY_API_TOKEN (and DIFY_WORKSPACE_ID when it is an admin API key)"
            }
        }
        RequestError::Status { status, .. } if *status == StatusCode::FORBIDDEN => {
            "the account or key lacks access to this workspace: check DIFY_API_TOKEN and DIFY_WORKSPACE_ID"
        }
        RequestError::Status { status, .. } if *status == StatusCode::NOT_FOUND => {
            "check DIFY_API_URL: it must be the base URL that serves /console/api"
        }
        RequestError::Transport { .. } => "check DIFY_API_URL and that Dify is reachable",
        _ => return error.into(),
    };
    anyhow::Error::new(error).context(hint)
}

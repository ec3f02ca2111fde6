//! One authenticated console session: every request carries the credentials, goes through the
//! shared retrying [`HttpClient`] (at most `DIFY_CONCURRENCY` in flight), and comes back parsed into
//! a typed answer or an error that names the endpoint, the status, Dify's message and what the
//! operator should change. A login session that meets a 401 renews itself once and tries again.

use anyhow::{Context as _, Result, anyhow};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use url::Url;

use super::credentials::DifyAuth;
use super::session::Session;
use crate::http::{HttpClient, RequestError};

/// How often one request may renew the session before its 401 is taken as final.
const MAX_RENEWALS: u32 = 3;

/// Every console path hangs off this prefix.
const CONSOLE_PREFIX: &str = "/console/api";

/// A console API client for one run.
pub(crate) struct DifyClient {
    http: HttpClient,
    /// `DIFY_API_URL` + `/console/api`, no trailing slash.
    console_url: String,
    session: Session,
}

impl DifyClient {
    /// Builds the client; no request is made yet. `concurrency` bounds the requests in flight.
    #[must_use]
    pub(crate) fn new(
        base_url: &Url,
        auth: DifyAuth,
        http: &HttpClient,
        concurrency: usize,
    ) -> DifyClient {
        let console_url = format!(
            "{}{CONSOLE_PREFIX}",
            base_url.as_str().trim_end_matches('/')
        );
        DifyClient {
            http: http.with_concurrency(concurrency),
            session: Session::new(auth, console_url.clone()),
            console_url,
        }
    }

    /// Requests made to Dify so far, and how many were retries.
    #[must_use]
    pub(crate) fn stats(&self) -> &crate::http::RequestStats {
        self.http.stats()
    }

    /// `GET {console}/{path}` with `query`, parsed as `T`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T> {
        let endpoint = endpoint_name(path);
        let url = format!("{}{path}", self.console_url);
        self.session.ensure(&self.http).await?;
        let mut renewals = 0;
        loop {
            let (request, generation) = self
                .session
                .authorize(self.http.client().get(&url).query(query))
                .await;
            // Built once, so that a value that cannot be sent is an error here rather than a panic
            // in a clone; `send` then copies it per attempt, with this pass's credentials.
            let request = request.build().with_context(|| {
                format!(
                    "{endpoint} could not be built: check DIFY_API_URL and the Dify credentials"
                )
            })?;
            let outcome = self
                .http
                .send(&endpoint, || {
                    self.http
                        .client()
                        .request(request.method().clone(), request.url().clone())
                        .headers(request.headers().clone())
                })
                .await;
            match outcome {
                Ok(answer) => return parse(&endpoint, &answer.body),
                Err(RequestError::Status { status, .. })
                    if status == StatusCode::UNAUTHORIZED
                        && self.session.renewable()
                        && renewals < MAX_RENEWALS =>
                {
                    // "Token has expired." after an hour of a long run: renew and try again. Other
                    // requests may use up a fresh token first, hence more than one renewal.
                    self.session.renew(&self.http, generation).await?;
                    renewals += 1;
                }
                Err(error) => return Err(explain(error, self.session.renewable())),
            }
        }
    }
}

/// How logs and errors name the console endpoint at `path`: `GET /console/api/apps/{id}/…`.
pub(super) fn endpoint_name(path: &str) -> String {
    format!("GET {CONSOLE_PREFIX}{}", endpoint_path(path))
}

/// The path for logs and errors, with ids folded so that messages group by endpoint.
fn endpoint_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() >= 32 && segment.contains('-') {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
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
fn explain(error: RequestError, login_session: bool) -> anyhow::Error {
    let hint = match &error {
        RequestError::Status { status, .. }
            if *status == StatusCode::UNAUTHORIZED && login_session =>
        {
            "Dify refused the session even after renewing it: check DIFY_EMAIL and DIFY_PASSWORD"
        }
        RequestError::Status { status, answer, .. } if *status == StatusCode::UNAUTHORIZED => {
            if answer.contains("CSRF") {
                "Dify >= 1.9.2 requires a CSRF token for console sessions, which a bare access token \
                 lacks: set DIFY_EMAIL and DIFY_PASSWORD instead of DIFY_API_TOKEN, or use an admin API key \
                 (DIFY_API_TOKEN with DIFY_WORKSPACE_ID; Dify >= 1.11.0)"
            } else {
                "check DIFY_API_TOKEN (and DIFY_WORKSPACE_ID when it is an admin API key)"
            }
        }
        RequestError::Status { status, .. } if *status == StatusCode::FORBIDDEN => {
            "the account or key lacks access to this workspace: check DIFY_API_TOKEN and DIFY_WORKSPACE_ID"
        }
        RequestError::Status { status, .. }
            if *status == StatusCode::NOT_FOUND || *status == StatusCode::METHOD_NOT_ALLOWED =>
        {
            "check DIFY_API_URL: it must be the base URL that serves /console/api"
        }
        RequestError::Transport { .. } => "check DIFY_API_URL and that Dify is reachable",
        _ => return error.into(),
    };
    anyhow::Error::new(error).context(hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_folded_in_endpoint_names() {
        assert_eq!(
            endpoint_path(
                "/apps/0d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47/workflow-runs/1d1c7a62-3c1f-4d6e-9a8b-5b2f1e0c9d47/node-executions"
            ),
            "/apps/{id}/workflow-runs/{id}/node-executions"
        );
        assert_eq!(endpoint_path("/apps"), "/apps");
    }
}

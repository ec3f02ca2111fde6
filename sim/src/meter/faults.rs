//! Fault injection and request logging, applied around every route except `GET /_meter/*`: delays, hangs,
//! connection resets, 503s, 400s and seeded 503/429 shares, then a log entry per request with its answer.
//!
//! It sits in front of authentication and validation on purpose: a proxy or an overloaded receiver fails a
//! request before the application reads it. Resetting a connection needs the socket itself, which a handler
//! never sees, so the listener here keeps a second handle on every accepted socket and hands it to the
//! request as connect info; shutting that handle down closes the connection under hyper without an answer
//! (also a kept-alive connection from the client's pool, which a reset at accept time would miss).

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use rand::Rng;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::MeterState;
use super::store::RequestLog;

/// Accepts TCP connections and keeps a second handle on each socket, for `reset_connections`.
#[derive(Debug)]
pub(crate) struct MeterListener(pub(crate) TcpListener);

/// A second handle on a connection's socket; shutting it down closes the connection without an answer.
#[derive(Debug, Clone)]
pub(crate) struct Conn(Arc<std::net::TcpStream>);

impl Conn {
    fn reset(&self) {
        // Errors mean the connection is already gone, which is what was asked for.
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// An accepted stream with its [`Conn`]; reads and writes go straight to the tokio stream.
#[derive(Debug)]
pub(crate) struct MeterStream {
    inner: TcpStream,
    conn: Conn,
}

impl Listener for MeterListener {
    type Io = MeterStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (MeterStream, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((stream, peer)) => {
                    // A socket that cannot be duplicated (out of descriptors) is dropped, as a full server would.
                    if let Ok(stream) = with_second_handle(stream) {
                        return (stream, peer);
                    }
                }
                // Accept errors (aborted connections, descriptor limits) are transient: pause, then go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn with_second_handle(stream: TcpStream) -> io::Result<MeterStream> {
    // `into_std` keeps the socket non-blocking, as `from_std` requires.
    let std_stream = stream.into_std()?;
    let second = std_stream.try_clone()?;
    Ok(MeterStream {
        inner: TcpStream::from_std(std_stream)?,
        conn: Conn(Arc::new(second)),
    })
}

impl Connected<IncomingStream<'_, MeterListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, MeterListener>) -> Self {
        stream.io().conn.clone()
    }
}

impl AsyncRead for MeterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeterStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Records count of a body, attached to the handler's response for the log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordCount(pub(crate) usize);

/// Logs its request when finished, or as unanswered when dropped first (the client gave up on a hung
/// request, or the server stopped).
struct Pending<'a> {
    state: &'a MeterState,
    entry: Option<(Option<String>, bool)>,
}

impl Pending<'_> {
    fn finish(&mut self, status: Option<u16>, record_count: Option<usize>) {
        if let Some((idempotency_key, is_post)) = self.entry.take() {
            self.state.store().log(
                RequestLog {
                    idempotency_key,
                    record_count,
                    status,
                },
                is_post,
            );
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.finish(None, None);
    }
}

enum Decision {
    Pass,
    Hang,
    Reset,
    Answer(Response),
}

/// Picks this request's fault, counting down `down_for_next` and `reject_next` under the faults' lock so two
/// concurrent requests never take the same slot.
fn decide(state: &MeterState) -> Decision {
    let mut decision = Decision::Pass;
    state.faults.send_if_modified(|f| {
        if f.hang {
            decision = Decision::Hang;
            return false;
        }
        if f.reset_connections {
            decision = Decision::Reset;
            return false;
        }
        if f.down_for_next > 0 {
            f.down_for_next -= 1;
            decision = Decision::Answer(unavailable());
            return true;
        }
        if f.reject_next > 0 {
            f.reject_next -= 1;
            decision = Decision::Answer(error(StatusCode::BAD_REQUEST, "rejected by test"));
            return true;
        }
        // Draw only when a share is set, so the seeded sequence depends on nothing else.
        if f.error_share > 0.0 || f.too_many_share > 0.0 {
            let draw: f64 = state.rng().random();
            if draw < f.error_share {
                decision = Decision::Answer(unavailable());
            } else if draw < f.error_share + f.too_many_share {
                decision = Decision::Answer(too_many(f.retry_after_secs));
            }
        }
        false
    });
    decision
}

/// The middleware: delay, maybe fail, else pass on; log the request either way.
pub(crate) async fn guard(
    State(state): State<Arc<MeterState>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path().starts_with("/_meter/") {
        return next.run(request).await;
    }
    let is_post = request.method() == Method::POST && request.uri().path() == "/v1/usage";
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut pending = Pending {
        state: &state,
        entry: Some((key, is_post)),
    };
    let delay = state.faults.borrow().delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    loop {
        match decide(&state) {
            Decision::Pass => break,
            Decision::Hang => {
                // Wakes when the faults change; the loop then decides afresh with the new faults.
                let mut changes = state.faults.subscribe();
                if changes.wait_for(|f| !f.hang).await.is_err() {
                    return unavailable();
                }
            }
            Decision::Reset => {
                let Some(ConnectInfo(conn)) = request.extensions().get::<ConnectInfo<Conn>>()
                else {
                    // Only reachable if the router is served without connect info: say so as a 503.
                    pending.finish(Some(503), None);
                    return unavailable();
                };
                // Logged before the reset: the client sees its connection end only after the log holds
                // the request, so a test that counts unanswered requests after its own error never races.
                pending.finish(None, None);
                conn.reset();
                // Never reaches the client: the socket is shut down in both directions.
                return unavailable();
            }
            Decision::Answer(response) => {
                pending.finish(Some(response.status().as_u16()), None);
                return response;
            }
        }
    }
    let response = next.run(request).await;
    let count = response.extensions().get::<RecordCount>().map(|c| c.0);
    pending.finish(Some(response.status().as_u16()), count);
    response
}

/// `{"error": reason}` with `status`, the receiver's error shape.
pub(crate) fn error(status: StatusCode, reason: &str) -> Response {
    (status, Json(json!({ "error": reason }))).into_response()
}

fn unavailable() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable")
}

fn too_many(retry_after_secs: u64) -> Response {
    let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

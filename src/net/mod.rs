//! The listeners' own accept loop: a cap on open connections, header-read,
//! body-read, whole-request and idle timeouts, and optional TLS.
//!
//! `axum::serve` runs hyper without a timer, so hyper's header-read timeout
//! never fires and a slow client holds a connection forever. Here every
//! connection is served by hyper-util's auto builder (HTTP/1.1 and HTTP/2)
//! with a Tokio timer, under a semaphore permit, watched for idleness.

pub mod redirect;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::config::ListenerLimits;

/// What one listener serves and how.
#[derive(Clone)]
pub struct Listener {
    pub name: &'static str,
    pub app: Router,
    pub limits: ListenerLimits,
    /// `Some` for HTTPS.
    pub tls: Option<tls::Acceptor>,
}

/// Accepts connections until `stop` turns true, then lets the open ones
/// finish their requests (HTTP/1.1 closes after the current response,
/// HTTP/2 sends GOAWAY) and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    served: Listener,
    stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = served.limits;
    let app = with_request_limits(served.app.clone(), limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .keep_alive_interval(None);
    let builder = Arc::new(builder);
    let mut accepting = stop.clone();
    loop {
        // At the cap, stop accepting: new clients wait in the kernel backlog
        // and connections already open are not touched.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopped(&mut accepting) => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(listener = served.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut accepting) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits,
            peer,
            stop: stop.clone(),
        };
        let acceptor = served.tls.clone();
        tokio::spawn(async move {
            conn.run(stream, acceptor).await;
            drop(permit);
        });
    }
    drop(listener);
    wait_for_connections(&permits, limits.max_connections).await;
    Ok(())
}

/// Resolves once the shutdown signal is set (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|s| *s).await;
}

/// Returns once every connection has given its permit back.
async fn wait_for_connections(permits: &Semaphore, max: usize) {
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
}

/// The body-read and whole-request timeouts, outside every other layer.
fn with_request_limits(app: Router, limits: ListenerLimits) -> Router {
    let request_timeout = limits.request_timeout;
    app.layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| async move {
                match tokio::time::timeout(request_timeout, next.run(req)).await {
                    Ok(response) => response,
                    Err(_) => refusal(
                        StatusCode::REQUEST_TIMEOUT,
                        "request_timeout",
                        "the request took too long",
                    ),
                }
            },
        ))
}

/// An error in the contract's shape, answered before or instead of the
/// application; the connection is closed after it.
fn refusal(status: StatusCode, code: &str, message: &str) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    let body = serde_json::json!({"error": {
        "code": code,
        "message": message,
        "request_id": id,
    }});
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    response
}

/// One accepted connection.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: ListenerLimits,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
}

impl Connection {
    async fn run(self, stream: TcpStream, acceptor: Option<tls::Acceptor>) {
        match acceptor {
            None => self.serve(stream).await,
            Some(acceptor) => {
                // The handshake is bounded like the headers: a client that
                // opens a socket and says nothing must not keep it.
                let handshake = acceptor.accept(stream);
                match tokio::time::timeout(self.limits.header_read_timeout, handshake).await {
                    Ok(Ok(tls)) => self.serve(tls).await,
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve<IO>(self, io: IO)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(Activity::default());
        let tracker = activity.clone();
        let app = self.app.clone();
        let peer = self.peer;
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let guard = tracker.begin();
                let app = app.clone();
                async move {
                    // Request smuggling needs two parsers that disagree on
                    // where a body ends. castellan's bodies are small JSON
                    // with a Content-Length, so any Transfer-Encoding (hyper
                    // lets a chunked one override Content-Length) is refused
                    // and the connection closed before another byte is parsed.
                    let response = if req.headers().contains_key(header::TRANSFER_ENCODING) {
                        Ok(refusal(
                            StatusCode::BAD_REQUEST,
                            "invalid_request",
                            "send the body with Content-Length; Transfer-Encoding is not accepted",
                        ))
                    } else {
                        app.oneshot(req.map(axum::body::Body::new)).await
                    };
                    drop(guard);
                    response
                }
            });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut stop = self.stop;
        let idle = self.limits.idle_timeout;
        let mut closing = false;
        loop {
            let deadline = activity.idle_deadline(idle);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = stopped(&mut stop), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(deadline), if !closing => {
                    if activity.is_idle_since(idle) {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// Requests in flight on one connection and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: std::sync::Mutex::new(Instant::now()),
        }
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut last) = self.0.last.lock() {
            *last = Instant::now();
        }
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    fn last(&self) -> Instant {
        self.last
            .lock()
            .map(|l| *l)
            .unwrap_or_else(|_| Instant::now())
    }

    fn idle_deadline(&self, idle: Duration) -> Instant {
        let from_last = self.last() + idle;
        // While a request runs, look again later; the request timeout bounds it.
        from_last.max(Instant::now() + Duration::from_millis(100))
    }

    fn is_idle_since(&self, idle: Duration) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0 && self.last().elapsed() >= idle
    }
}

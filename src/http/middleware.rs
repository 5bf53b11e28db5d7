//! Cross-cutting HTTP concerns: request ids and the request span, security
//! headers, the body-size cap, and the last-resort panic handler.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::error::ApiError;
use super::request_id::{REQUEST_ID, new_request_id, sane_request_id};
pub use super::request_id::{RequestId, X_REQUEST_ID, current_request_id};

/// Largest accepted request body (contract: 64 KiB, else 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The method as a label or log field, from a closed set: a client can
/// send any token as the method (20 KB of random letters), and each
/// distinct value would otherwise become a new metric series and a log
/// field of that size.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Keeps the in-flight gauge right and logs the request even when the
/// client hangs up and the request's future is dropped half way.
struct Finish {
    metrics: &'static crate::metrics::RouteMetrics,
    method: &'static str,
    span: tracing::Span,
    started: Instant,
    done: bool,
}

impl Finish {
    fn record(&mut self, status: u16) {
        self.done = true;
        let elapsed = self.started.elapsed();
        self.metrics.record(self.method, status, elapsed);
        self.span.in_scope(|| {
            tracing::info!(
                status,
                elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        });
    }
}

impl Drop for Finish {
    fn drop(&mut self) {
        crate::metrics::http_in_flight().decrement(1.0);
        if !self.done {
            // nginx's 499: the client closed the connection first.
            let elapsed = self.started.elapsed();
            self.metrics.record(self.method, 499, elapsed);
            self.span.in_scope(|| {
                tracing::info!(
                    elapsed_ms = elapsed.as_secs_f64() * 1000.0,
                    "request abandoned by the client"
                );
            });
        }
    }
}

/// Assigns the request id, opens the request span, writes the access log
/// line (path only: query strings may hold personal data) and echoes the id.
///
/// Every label and log field taken from the request comes from a closed
/// set: the method via [`method_label`], the route template (or
/// `unmatched`), never the raw path or method.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = sane_request_id(req.headers().get(&X_REQUEST_ID)).unwrap_or_else(new_request_id);
    let header = HeaderValue::from_str(&id).ok();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str);
    let metrics = crate::metrics::route(route);
    let method = method_label(req.method());
    let span = tracing::info_span!("request", request_id = %id, method, route);
    req.extensions_mut().insert(RequestId(id));
    crate::metrics::http_in_flight().increment(1.0);
    let mut finish = Finish {
        metrics,
        method,
        span: span.clone(),
        started: Instant::now(),
        done: false,
    };
    let scoped_id = header.clone().unwrap_or(HeaderValue::from_static(""));
    let mut response = if req.method().is_safe() {
        // Reads run inline: a hang-up drops them, and every storage write
        // they make (the once-a-minute activity stamp) is one statement.
        REQUEST_ID
            .scope(scoped_id, next.run(req))
            .instrument(span)
            .await
    } else {
        // A use case that writes runs to the end in its own task, so a
        // client hanging up cannot cut it between two of its writes (a
        // session created but its audit event not). Each transaction is
        // cancel-safe on its own (sqlx >= 0.9.1 rolls back a transaction
        // dropped even during BEGIN).
        let handler = tokio::spawn(
            REQUEST_ID
                .scope(scoped_id.clone(), next.run(req))
                .instrument(span),
        );
        match handler.await {
            Ok(response) => response,
            Err(_) => {
                REQUEST_ID
                    .scope(scoped_id, async { ApiError::Internal.into_response() })
                    .await
            }
        }
    };
    finish.record(response.status().as_u16());
    if let Some(value) = header {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

/// The route label of requests no route matched (404, and 405 fallbacks).
pub const UNMATCHED: &str = "unmatched";

/// Refuses bodies announced as larger than the cap before reading them.
pub async fn limit_body(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::PayloadTooLarge.into_response();
    }
    next.run(req).await
}

/// Headers every response carries (a handler may set a stricter value).
/// The state is whether to send HSTS (the production profile).
pub async fn security_headers(State(hsts): State<bool>, req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; sandbox",
    );
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::CACHE_CONTROL, "no-store");
    set(
        HeaderName::from_static("cross-origin-resource-policy"),
        "same-origin",
    );
    if hsts {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        );
    }
    response
}

/// Turns a panic in a handler into a 500 in the contract's shape; the
/// process keeps serving.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    // covers: ASVS-1.2.1, ASVS-1.3.3
    #[test]
    fn request_ids_are_echoed_only_when_sane() {
        let ok = HeaderValue::from_static("abc-123_x.y");
        assert_eq!(sane_request_id(Some(&ok)).as_deref(), Some("abc-123_x.y"));
        for bad in ["", "a b", "a\tb", "<script>"] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(sane_request_id(Some(&v)), None, "{bad:?}");
        }
        let long = HeaderValue::from_str(&"a".repeat(1024)).unwrap();
        assert_eq!(sane_request_id(Some(&long)), None);
    }

    proptest::proptest! {
        // Any header bytes: no panic; an echoed id is the input unchanged,
        // short, and made only of characters safe in logs and headers.
        #[test]
        fn echoed_request_ids_are_plain(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let Ok(v) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
            if let Some(id) = sane_request_id(Some(&v)) {
                proptest::prop_assert_eq!(id.as_bytes(), bytes.as_slice());
                proptest::prop_assert!(!id.is_empty() && id.len() <= 128);
                proptest::prop_assert!(id.bytes().all(|b| b.is_ascii_graphic()));
                proptest::prop_assert!(HeaderValue::from_str(&id).is_ok());
            }
        }
    }

    #[test]
    fn methods_outside_the_standard_nine_are_other() {
        for m in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ] {
            assert_eq!(method_label(&Method::from_bytes(m.as_bytes()).unwrap()), m);
        }
        for junk in ["get", "PROPFIND", "BREW", &"X".repeat(20 * 1024)] {
            let method = Method::from_bytes(junk.as_bytes()).unwrap();
            assert_eq!(
                method_label(&method),
                "other",
                "{}",
                &junk[..junk.len().min(10)]
            );
        }
    }

    #[test]
    fn generated_request_ids_are_distinct_and_sane() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let value = HeaderValue::from_str(&id).unwrap();
            assert_eq!(sane_request_id(Some(&value)), Some(id));
        }
    }
}

//! Cross-cutting HTTP concerns: request ids and the request span, security
//! headers, the body-size cap, and the last-resort panic handler.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;
use uuid::Uuid;

use super::AppState;
use super::error::ApiError;
use super::request_id::{REQUEST_ID, sane_request_id};
pub use super::request_id::{RequestId, X_REQUEST_ID, current_request_id};
use crate::config::Profile;

/// Largest accepted request body (contract: 64 KiB, else 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Assigns the request id, opens the request span, writes the access log
/// line (path only: query strings may hold personal data) and echoes the id.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = sane_request_id(req.headers().get(&X_REQUEST_ID))
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);
    let started = Instant::now();
    let in_flight = metrics::gauge!(crate::metrics::HTTP_IN_FLIGHT);
    in_flight.increment(1.0);
    // The handler runs in its own task, so a client hanging up cannot
    // cancel it half way (e.g. between BEGIN and COMMIT on a pooled
    // connection): work that started finishes, and its result is dropped.
    let handler = tokio::spawn(
        REQUEST_ID
            .scope(id.clone(), next.run(req))
            .instrument(span.clone()),
    );
    let mut response = match handler.await {
        Ok(response) => response,
        Err(_) => {
            REQUEST_ID
                .scope(id.clone(), async { ApiError::Internal.into_response() })
                .await
        }
    };
    in_flight.decrement(1.0);
    let class = crate::metrics::status_class(response.status().as_u16());
    metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route.clone(), "method" => method.to_string(), "status" => class)
        .increment(1);
    metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => route.clone(), "status" => class)
        .record(started.elapsed().as_secs_f64());
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request finished"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

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
pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
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
    if state.auth.config().profile == Profile::Production {
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
}

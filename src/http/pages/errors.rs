//! HTML error pages for HTML requests. Handlers (pages and API alike) fail
//! with the contract's JSON errors; for a request that asks for HTML
//! (`Accept: text/html`, as browsers send) outside the JSON API, this
//! middleware renders the same status, code and message as a page. API
//! clients and every `/v1/` route keep the JSON body.

use askama::Template;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{Nav, set_page_headers};
use crate::http::AppState;

/// Largest error body this middleware reads (the contract's are tiny).
const MAX_ERROR_BODY: usize = 16 * 1024;

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub nav: Nav,
    pub status: u16,
    pub title: &'static str,
    pub message: String,
    pub code: String,
    pub request_id: String,
    pub sign_in: bool,
}

fn wants_html(req: &Request) -> bool {
    let path = req.uri().path();
    let api = path.starts_with("/v1/")
        || path.starts_with("/health/")
        || path == "/openapi.json"
        || path == "/metrics";
    !api && req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn title(status: u16) -> &'static str {
    match status {
        400 => "That did not work",
        401 => "Please sign in",
        403 => "Not allowed",
        404 => "Page not found",
        405 => "Not allowed here",
        413 => "Too much data",
        415 => "Unsupported form",
        429 => "Too many attempts",
        503 => "Temporarily unavailable",
        _ => "Something went wrong",
    }
}

/// Turns JSON error responses into HTML pages for HTML requests.
pub async fn html_errors(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let html = wants_html(&req);
    let response = next.run(req).await;
    let is_json_error = response.status().as_u16() >= 400
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !html || !is_json_error {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let field = |name: &str| {
        value["error"][name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let status = parts.status.as_u16();
    let page = ErrorPage {
        nav: Nav::signed_out(),
        status,
        title: title(status),
        message: field("message"),
        code: field("code"),
        request_id: field("request_id"),
        sign_in: status == 401,
    };
    let Ok(text) = page.render() else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    let mut response = Response::from_parts(parts, Body::from(text));
    set_page_headers(&state, &mut response);
    response
}

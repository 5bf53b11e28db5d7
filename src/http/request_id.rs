//! The request id: taken from `X-Request-Id` when it is plain, else made
//! up, and kept in a task-local so error bodies built deep in the stack can
//! name it. A leaf of `http`, so `error` and `middleware` both use it
//! without depending on each other.

use axum::http::{HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The current request's id, for error bodies built deep in the stack.
    pub(super) static REQUEST_ID: String;
}

/// The id of the request being served, or an empty string outside one.
pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// The request id as a request extension, for extractors.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// An incoming id is echoed only if it is short and plain; anything else
/// (control characters, header injection, 1 KiB of junk) is replaced.
pub(super) fn sane_request_id(value: Option<&HeaderValue>) -> Option<String> {
    let text = value?.to_str().ok()?;
    let ok = !text.is_empty()
        && text.len() <= 128
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
    ok.then(|| text.to_string())
}

//! The request id: taken from `X-Request-Id` when it is plain, else made
//! up, and kept in a task-local so error bodies built deep in the stack can
//! name it. A leaf of `http`, so `error` and `middleware` both use it
//! without depending on each other.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::http::{HeaderName, HeaderValue};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    /// The current request's id, for error bodies built deep in the stack
    /// (a `HeaderValue`: cloning it only bumps a reference count).
    pub(super) static REQUEST_ID: HeaderValue;
}

/// The id of the request being served, or an empty string outside one.
pub fn current_request_id() -> String {
    REQUEST_ID
        .try_with(|id| id.to_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
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

/// A new request id: 16 hex digits drawn once per process from the OS
/// generator, then a counter. Unique across nodes and restarts without a
/// system call per request (a v4 UUID asks the OS for randomness each time).
pub(super) fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        crate::crypto::random_bytes::<8>()
            .map(u64::from_le_bytes)
            .unwrap_or_else(|_| u64::from(std::process::id()))
    });
    format!(
        "{prefix:016x}-{:x}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

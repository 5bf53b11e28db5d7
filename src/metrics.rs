//! Prometheus metrics: every name is declared here, labels are bounded
//! (route templates, status classes, event kinds), and the text format is
//! served on the admin listener's `/metrics`. No metric is a constant:
//! counters move where the work happens, gauges are read at scrape time.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// HTTP requests by route template, method and status class.
pub const HTTP_REQUESTS: &str = "castellan_http_requests_total";
/// HTTP request duration in seconds, by route template and status class.
pub const HTTP_DURATION: &str = "castellan_http_request_duration_seconds";
/// Requests being served right now.
pub const HTTP_IN_FLIGHT: &str = "castellan_http_requests_in_flight";
/// Security events by kind (logins by outcome, MFA outcomes, backup codes
/// used, sessions created/revoked/expired, throttling, ...).
pub const SECURITY_EVENTS: &str = "castellan_security_events_total";
/// Rate-limit and back-off rejections by bucket or limit.
pub const RATE_LIMITED: &str = "castellan_rate_limit_rejections_total";
/// Time to hash or verify one password, in seconds.
pub const HASH_DURATION: &str = "castellan_password_hash_duration_seconds";
/// Password hashes waiting for a hashing thread.
pub const HASH_QUEUE: &str = "castellan_password_hash_queue_depth";
/// Sessions deleted by the cleanup job.
pub const SESSIONS_PURGED: &str = "castellan_sessions_purged_total";
/// Database pool: open connections, idle connections, maximum.
pub const DB_POOL_SIZE: &str = "castellan_db_pool_connections";
pub const DB_POOL_IDLE: &str = "castellan_db_pool_idle_connections";
pub const DB_POOL_MAX: &str = "castellan_db_pool_max_connections";
/// Mail: messages sent, failed attempts, dropped after retries.
pub const MAIL_SENT: &str = "castellan_mail_sent_total";
pub const MAIL_FAILED_ATTEMPTS: &str = "castellan_mail_failed_attempts_total";
pub const MAIL_DROPPED: &str = "castellan_mail_dropped_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // A second install (several apps in one test process) keeps the first.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The status class label of a status code (`2xx`, `4xx`, ...).
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

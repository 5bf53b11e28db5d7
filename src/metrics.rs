//! Prometheus metrics: every name is declared here, labels are bounded
//! (route templates, status classes, event kinds), and the text format is
//! served on the admin listener's `/metrics`. No metric is a constant:
//! counters move where the work happens, gauges are read at scrape time.

use std::sync::OnceLock;

use std::time::Instant;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

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
/// Database pool: open connections, idle connections, in use (open minus
/// idle), maximum. Read from the pool at scrape time.
pub const DB_POOL_SIZE: &str = "castellan_db_pool_connections";
pub const DB_POOL_IDLE: &str = "castellan_db_pool_idle_connections";
pub const DB_POOL_IN_USE: &str = "castellan_db_pool_in_use_connections";
pub const DB_POOL_MAX: &str = "castellan_db_pool_max_connections";
/// Time from asking for a database connection until holding one (or giving
/// up), in seconds.
pub const DB_ACQUIRE_WAIT: &str = "castellan_db_pool_acquire_wait_seconds";
/// Requests for a database connection that gave up after the acquire timeout.
pub const DB_ACQUIRE_TIMEOUTS: &str = "castellan_db_pool_acquire_timeouts_total";
/// Duration of one storage operation, by `op` (a [`crate::store::Op`] name),
/// in seconds: from holding the connection until releasing it.
pub const DB_QUERY_DURATION: &str = "castellan_db_query_duration_seconds";
/// Mail: messages sent, failed attempts, dropped after retries.
pub const MAIL_SENT: &str = "castellan_mail_sent_total";
pub const MAIL_FAILED_ATTEMPTS: &str = "castellan_mail_failed_attempts_total";
pub const MAIL_DROPPED: &str = "castellan_mail_dropped_total";

/// Histogram buckets in seconds, for HTTP requests and password hashes.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Finer buckets for the database histograms: a pooled connection is handed
/// over in microseconds and an indexed lookup takes well under a millisecond,
/// while a wait that ends in a timeout lasts the acquire timeout (up to 60 s).
const DB_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Prefix("castellan_db_".into()), DB_BUCKETS)
                })
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

/// Times one database operation: created once the connection is held, it
/// records [`DB_QUERY_DURATION`] for its `op` when dropped, so every exit
/// (success, error, early return) is counted exactly once.
#[must_use = "the duration is recorded when the timer is dropped"]
pub struct QueryTimer {
    op: &'static str,
    started: Instant,
}

impl QueryTimer {
    pub fn start(op: &'static str) -> Self {
        Self {
            op,
            started: Instant::now(),
        }
    }
}

impl Drop for QueryTimer {
    fn drop(&mut self) {
        metrics::histogram!(DB_QUERY_DURATION, "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// Records one wait for a database connection that began at `started`.
pub fn record_acquire_wait(started: Instant) {
    metrics::histogram!(DB_ACQUIRE_WAIT).record(started.elapsed().as_secs_f64());
}

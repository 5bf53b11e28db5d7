//! Prometheus metrics: every name is declared here, labels are bounded
//! (route templates, status classes, event kinds), and the text format is
//! served on the admin listener's `/metrics`. No metric is a constant:
//! counters move where the work happens, gauges are read at scrape time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use metrics::{Counter, Gauge, Histogram};
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

/// How often histogram samples are folded into their buckets (the
/// exporter's own default for its upkeep task).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static UPKEEP_PASSES: AtomicU64 = AtomicU64::new(0);

/// Folds the histogram samples recorded since the last pass (or scrape)
/// into their buckets. The recorder is built without the exporter's task
/// (`build_recorder`), and it keeps every sample until this runs or
/// `/metrics` is read: a node nobody scraped grew with every request (a
/// soak measured about 0.7 MiB a minute per node).
pub fn run_upkeep() {
    handle().run_upkeep();
    UPKEEP_PASSES.fetch_add(1, Ordering::Relaxed);
}

/// Upkeep passes this process has run (a serving node runs one every
/// [`UPKEEP_INTERVAL`]).
pub fn upkeep_passes() -> u64 {
    UPKEEP_PASSES.load(Ordering::Relaxed)
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
        query_histogram(self.op).record(self.started.elapsed().as_secs_f64());
    }
}

/// The duration histogram of a storage operation (a closed set of names),
/// registered once per name.
fn query_histogram(op: &'static str) -> Histogram {
    static OPS: OnceLock<RwLock<HashMap<&'static str, Histogram>>> = OnceLock::new();
    let map = OPS.get_or_init(Default::default);
    if let Some(found) = map.read().ok().and_then(|m| m.get(op).cloned()) {
        return found;
    }
    let histogram = metrics::histogram!(DB_QUERY_DURATION, "op" => op);
    if let Ok(mut write) = map.write() {
        write.insert(op, histogram.clone());
    }
    histogram
}

/// Records one wait for a database connection that began at `started`.
pub fn record_acquire_wait(started: Instant) {
    static WAIT: OnceLock<Histogram> = OnceLock::new();
    WAIT.get_or_init(|| metrics::histogram!(DB_ACQUIRE_WAIT))
        .record(started.elapsed().as_secs_f64());
}

/// The methods of the `method` label, the closed set of
/// [`crate::http::middleware::method_label`].
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
/// Status classes, plus `499` for requests the client abandoned.
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "499"];

fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=498 => 3,
        499 => 5,
        _ => 4,
    }
}

/// The HTTP metric handles of one route template, registered with the
/// recorder the first time a label combination is used and kept, so a
/// request costs no label strings and no registry lookup.
pub struct RouteMetrics {
    route: &'static str,
    requests: [[OnceLock<Counter>; CLASSES.len()]; METHODS.len()],
    duration: [OnceLock<Histogram>; CLASSES.len()],
}

impl RouteMetrics {
    /// Counts one finished request and records its duration.
    pub fn record(&self, method: &str, status: u16, elapsed: Duration) {
        let m = METHODS
            .iter()
            .position(|&x| x == method)
            .unwrap_or(METHODS.len() - 1);
        let c = class_index(status);
        let route = self.route;
        self.requests[m][c]
            .get_or_init(|| {
                metrics::counter!(HTTP_REQUESTS, "route" => route, "method" => METHODS[m], "status" => CLASSES[c])
            })
            .increment(1);
        self.duration[c]
            .get_or_init(
                || metrics::histogram!(HTTP_DURATION, "route" => route, "status" => CLASSES[c]),
            )
            .record(elapsed.as_secs_f64());
    }
}

/// Handles by route template. Only templates the router matched (and
/// `unmatched`) ever get here, a set fixed at build time, so the map and
/// the leaked entries stay bounded.
static ROUTES: OnceLock<RwLock<HashMap<&'static str, &'static RouteMetrics>>> = OnceLock::new();

/// The handles of a route template.
pub fn route(template: &str) -> &'static RouteMetrics {
    let map = ROUTES.get_or_init(Default::default);
    if let Some(found) = map.read().ok().and_then(|m| m.get(template).copied()) {
        return found;
    }
    let mut write = match map.write() {
        Ok(w) => w,
        Err(poisoned) => poisoned.into_inner(),
    };
    if let Some(found) = write.get(template) {
        return found;
    }
    let name: &'static str = Box::leak(template.to_owned().into_boxed_str());
    let entry: &'static RouteMetrics = Box::leak(Box::new(RouteMetrics {
        route: name,
        requests: Default::default(),
        duration: Default::default(),
    }));
    write.insert(name, entry);
    entry
}

/// The in-flight gauge, registered once.
pub fn http_in_flight() -> &'static Gauge {
    static GAUGE: OnceLock<Gauge> = OnceLock::new();
    GAUGE.get_or_init(|| metrics::gauge!(HTTP_IN_FLIGHT))
}

//! Structured logs through `tracing`: pretty for people in dev, one JSON
//! object per line in production. Control characters in values are escaped
//! by both formats, so a crafted header cannot forge a log line.
//!
//! Lines are written by one background thread fed through a bounded queue
//! (`log_buffer_lines`): a request never waits for stdout. When the queue
//! is full, new lines are dropped rather than waited for.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; logs go to stdout, or to stderr when
/// stdout carries a command's output. Keep the returned guard alive until
/// the process ends: dropping it flushes the queued lines.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(
    format: LogFormat,
    filter: &str,
    to_stdout: bool,
    buffer_lines: usize,
) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = NonBlockingBuilder::default()
        .buffered_lines_limit(buffer_lines.max(1))
        .lossy(true)
        .thread_name("castellan-log");
    let (writer, guard) = if to_stdout {
        builder.finish(std::io::stdout())
    } else {
        builder.finish(std::io::stderr())
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_target(true);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
    };
    // A second init (tests) keeps the first subscriber and its writer.
    result.ok().map(|()| guard)
}

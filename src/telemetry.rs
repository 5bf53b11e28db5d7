//! Structured logs through `tracing`: pretty for people in dev, one JSON
//! object per line in production. Control characters in values are escaped
//! by both formats, so a crafted header cannot forge a log line.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::LogFormat;

/// Installs the global subscriber; logs go to stdout, or to stderr when
/// stdout carries a command's output.
pub fn init(format: LogFormat, filter: &str, to_stdout: bool) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let writer = if to_stdout {
        BoxMakeWriter::new(std::io::stdout)
    } else {
        BoxMakeWriter::new(std::io::stderr)
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
    // A second init (tests) keeps the first subscriber.
    drop(result);
}

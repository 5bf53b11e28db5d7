//! Structured logs through `tracing`: pretty for people in dev, one JSON
//! object per line in production. Control characters in values are escaped
//! by both formats (JSON by its string escapes; pretty by [`pretty_fields`],
//! since the stock formatter passes line breaks through), so a crafted
//! value cannot forge a log line or drive a terminal.
//!
//! Lines are written by one background thread fed through a bounded queue
//! (`log_buffer_lines`): a request never waits for stdout. When the queue
//! is full, new lines are dropped rather than waited for.

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; logs go to stdout, or to stderr when
/// stdout carries a command's output. Keep the returned guard alive until
/// the process ends: dropping it flushes the queued lines.
#[must_use = "dropping the guard stops the log writer"]
pub fn init(config: &LogConfig, to_stdout: bool) -> Option<WorkerGuard> {
    let filter = EnvFilter::try_new(&config.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = NonBlockingBuilder::default()
        .buffered_lines_limit(config.buffer_lines.max(1))
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
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder
            .with_ansi(false)
            .fmt_fields(pretty_fields())
            .try_init(),
    };
    // A second init (tests) keeps the first subscriber and its writer.
    result.ok().map(|()| guard)
}

/// `name=value` fields for the pretty format with every control character
/// (line breaks, ESC, C1 codes) written as an escape.
pub fn pretty_fields() -> impl for<'w> FormatFields<'w> + Send + Sync + 'static {
    tracing_subscriber::fmt::format::debug_fn(|w: &mut Writer<'_>, field, value| {
        let raw = format!("{value:?}");
        let mut text = String::with_capacity(raw.len());
        for c in raw.chars() {
            if c.is_control() {
                text.extend(c.escape_default());
            } else {
                text.push(c);
            }
        }
        if field.name() == "message" {
            w.write_str(&text)
        } else {
            write!(w, "{field}={text}")
        }
    })
    .delimited(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Self::Writer {
            self.clone()
        }
    }

    const FORGED: &str = "x\n{\"level\":\"INFO\",\"message\":\"forged\"}\u{1b}[31m\u{9b}2J\r";

    fn log_forged() {
        let span = tracing::info_span!("request", user_agent = %FORGED);
        let _in = span.enter();
        tracing::info!(user_agent = %FORGED, debugged = ?FORGED, "seen {}", FORGED);
    }

    // covers: ASVS-16.4.1
    #[test]
    fn both_formats_escape_control_characters() {
        let pretty = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(pretty.clone())
            .with_ansi(false)
            .fmt_fields(super::pretty_fields())
            .finish();
        tracing::subscriber::with_default(subscriber, log_forged);
        let text = String::from_utf8(pretty.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "one line per event: {text:?}");
        assert!(text.ends_with('\n'));
        assert!(!text.contains(['\u{1b}', '\u{9b}', '\r']), "{text:?}");
        assert!(
            text.contains("\\n{\"level\""),
            "escaped, not dropped: {text:?}"
        );

        let json = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(json.clone())
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .finish();
        tracing::subscriber::with_default(subscriber, log_forged);
        let text = String::from_utf8(json.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text.lines().count(),
            1,
            "one JSON object per event: {text:?}"
        );
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["user_agent"], FORGED, "the value survives, escaped");
        assert!(!text.contains(['\u{1b}', '\r']), "{text:?}");
    }
}

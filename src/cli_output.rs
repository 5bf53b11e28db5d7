//! The CLI's own output: the only place that prints instead of logging.

/// Prints a fatal error as one line on stderr.
#[allow(clippy::print_stderr)]
pub fn fatal(message: &str) {
    eprintln!("castellan: error: {message}");
}

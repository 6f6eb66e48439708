//! kiln's own log (`RUST_LOG`, default `info`) on stderr: human-readable text, or one JSON
//! object per line for log shippers (`--log-format json`). Colours only when stderr is a
//! terminal, so a file or a pipe never receives ANSI escape codes.

use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        "json" => builder.json().with_current_span(true).with_span_list(false).with_ansi(false).init(),
        _ => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

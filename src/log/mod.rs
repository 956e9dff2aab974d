//! Logging: JSON lines on stderr (`format.rs`), written by a background
//! thread in batches (`writer.rs`), and the one access line per request
//! (`access.rs`), which with the json format skips tracing's per-event
//! machinery. Key names, values, credentials and bodies are never logged.

pub mod access;
mod format;
mod writer;

pub use writer::Guard;

/// Starts the logger. Lines go to stderr from a background thread in
/// batches (`writer.rs`), so a request never waits on the terminal or the
/// log collector; the returned guard writes what is queued when dropped.
pub fn init(format: &str) -> Guard {
    // The NATS client logs every reconnect attempt at info; the store's own
    // warnings say what matters.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let (writer, guard) = writer::spawn(std::io::stderr());
    let access = writer.clone();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if format == "json" {
        access::install(move |line| access.write_line(line));
        builder.event_format(format::JsonLine).init();
    } else {
        builder.init();
    }
    guard
}

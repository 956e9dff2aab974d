//! The access log: one line per request (method, route template, status,
//! latency, request id: never a key, value or header). With the `json` log
//! format the line is formatted here and handed straight to the log writer,
//! the same JSON object `log::format` writes for a tracing event but without
//! tracing's per-event machinery, which cost more than the rest of the line;
//! with any other format it is an ordinary tracing event.

use std::cell::RefCell;
use std::fmt;
use std::sync::OnceLock;

use crate::clock::{now_ms, write_rfc3339};
use crate::json::write_str;

/// One request's line.
pub struct Access<'a> {
    pub method: &'static str,
    pub route: &'a str,
    pub status: u16,
    pub latency_us: u64,
    pub request_id: &'a str,
}

type Sink = Box<dyn Fn(&[u8]) + Send + Sync>;

static SINK: OnceLock<Sink> = OnceLock::new();

/// From now on, hands each line (whole, ending in a newline) to `sink`
/// instead of emitting a tracing event. The first call wins.
pub fn install(sink: impl Fn(&[u8]) + Send + Sync + 'static) {
    let _ = SINK.set(Box::new(sink));
}

/// Logs `access` at INFO under the `strongroom::access` target, which
/// `STRONGROOM_LOG` filters like any other.
pub fn record(access: &Access<'_>) {
    if !tracing::enabled!(target: "strongroom::access", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: "strongroom::access",
            method = access.method,
            route = %access.route,
            status = access.status,
            latency_us = access.latency_us,
            request_id = access.request_id,
            "request"
        );
        return;
    };
    thread_local! {
        static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        let _ = format_line(line, now_ms(), access);
        sink(line.as_bytes());
    });
}

/// The line as the json log format writes the equivalent tracing event.
pub fn format_line(out: &mut String, now_ms: i64, access: &Access<'_>) -> fmt::Result {
    out.push_str("{\"timestamp\":\"");
    write_rfc3339(out, now_ms)?;
    out.push_str("\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
    write_str(out, access.method)?;
    out.push_str(",\"route\":");
    write_str(out, access.route)?;
    out.push_str(",\"status\":");
    out.push_str(itoa::Buffer::new().format(access.status));
    out.push_str(",\"latency_us\":");
    out.push_str(itoa::Buffer::new().format(access.latency_us));
    out.push_str(",\"request_id\":");
    write_str(out, access.request_id)?;
    out.push_str("},\"target\":\"strongroom::access\"}\n");
    Ok(())
}

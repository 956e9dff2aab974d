//! The JSON log line: `{"timestamp","level","fields":{..},"target"}`, the
//! shape of tracing-subscriber's JSON format, written straight into the line
//! buffer by a field visitor instead of through serde. (The access line,
//! written on every request, is formatted in the same shape by
//! `access.rs` without going through tracing.)

use std::fmt::{self, Write};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::clock::{now_ms, write_rfc3339};
use crate::json::{write_str as write_json_str, Escaped};

/// Formats each event as one JSON object (spans are not recorded).
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_rfc3339(&mut writer, now_ms())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_str("\",\"fields\":{")?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("},\"target\":")?;
        write_json_str(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.out.write_char(',')?;
            }
            write_json_str(self.out, field.name())?;
            self.out.write_char(':')?;
            value(self.out)
        })();
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| write_json_str(out, value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| write!(out, "{value}"));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.field(field, |out| write!(out, "{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the json format writes for the events `emit` records.
    fn capture(emit: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLine)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = sink.0.lock().unwrap().clone();
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn a_line_is_one_json_object_with_the_fields() {
        let text = capture(|| {
            tracing::info!(method = "GET", status = 200u16, route = %"/secrets/{*key}", ok = true, "request \"x\"");
        });
        assert_eq!(text.lines().count(), 1);
        let line: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["fields"]["message"], "request \"x\"");
        assert_eq!(line["fields"]["method"], "GET");
        assert_eq!(line["fields"]["status"], 200);
        assert_eq!(line["fields"]["route"], "/secrets/{*key}");
        assert_eq!(line["fields"]["ok"], true);
        assert!(line["target"].as_str().unwrap().contains("log::format"));
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn the_access_line_written_directly_is_the_tracing_events_line() {
        use crate::log::access::{format_line, Access};
        let access = Access {
            method: "GET",
            route: "/secrets/{*key}",
            status: 200,
            latency_us: 1234,
            request_id: "1a2b3c4d-7f",
        };
        // The fallback of `log::access::record`, which no test installs a
        // sink for.
        let traced = capture(|| crate::log::access::record(&access));
        let mut direct = String::new();
        format_line(&mut direct, 0, &access).unwrap();
        // Equal but for the timestamp.
        let strip = |line: &str| line.split_once("\",\"level\"").unwrap().1.to_owned();
        assert_eq!(strip(&traced), strip(&direct));
        assert!(direct.starts_with("{\"timestamp\":\"1970-01-01T00:00:00.000Z\""));
        let parsed: serde_json::Value = serde_json::from_str(direct.trim_end()).unwrap();
        assert_eq!(parsed["fields"]["latency_us"], 1234);
        assert_eq!(parsed["target"], "strongroom::access");
    }
}

//! Prometheus counters and histograms kept in process and rendered as text.
//!
//! Labels come only from bounded sets: the route template (never the key),
//! the method, the status code and a fixed auth-failure reason. Recording a
//! request allocates nothing once its route has been seen.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::counters;

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

#[derive(Default)]
struct RouteStats {
    requests: BTreeMap<(&'static str, u16), u64>,
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, RouteStats>,
    auth_failures: BTreeMap<&'static str, u64>,
    auth_throttled: u64,
    rate_limited: u64,
    shed: u64,
    integrity_failures: u64,
}

/// The process's metrics registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Counts one request; `route` must be a route template.
    pub fn observe(&self, method: &'static str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let stats = match inner.routes.get_mut(route) {
            Some(stats) => stats,
            None => inner.routes.entry(route.to_owned()).or_default(),
        };
        *stats.requests.entry((method, status)).or_default() += 1;
        stats.count += 1;
        stats.sum += secs;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            stats.counts[i] += 1;
        }
    }

    pub fn auth_failure(&self, reason: &'static str) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        *inner.auth_failures.entry(reason).or_default() += 1;
    }

    /// Requests the failed-authentication limit refused.
    pub fn auth_throttled(&self, count: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.auth_throttled += count;
    }

    /// A request over its credential's `--rate-limit`.
    pub fn rate_limited(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rate_limited += 1;
    }

    /// A request refused at once for load (over `--max-in-flight`, or the
    /// write queue full).
    pub fn shed(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).shed += 1;
    }

    /// Stored data that failed its integrity check.
    pub fn integrity_failure(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .integrity_failures += 1;
    }

    /// The Prometheus text exposition format, version 0.0.4, with the
    /// trail's count of failed appends and the data dir's free bytes
    /// against the warning threshold.
    pub fn render(&self, audit_failures: u64, free: Option<u64>, warn_below: u64) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut routes: Vec<_> = inner.routes.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP strongroom_http_requests_total HTTP requests by method, route and status.\n",
        );
        out.push_str("# TYPE strongroom_http_requests_total counter\n");
        for (route, stats) in &routes {
            for ((method, status), n) in &stats.requests {
                let _ = writeln!(
                    out,
                    "strongroom_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str("# HELP strongroom_http_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE strongroom_http_request_duration_seconds histogram\n");
        for (route, h) in &routes {
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts.iter()) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "strongroom_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "strongroom_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP strongroom_auth_failures_total Refused authentications by reason.\n");
        out.push_str("# TYPE strongroom_auth_failures_total counter\n");
        for (reason, n) in &inner.auth_failures {
            let _ = writeln!(
                out,
                "strongroom_auth_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP strongroom_auth_throttled_total Requests refused (429) because their client address failed authentication too often.\n");
        out.push_str("# TYPE strongroom_auth_throttled_total counter\n");
        let _ = writeln!(
            out,
            "strongroom_auth_throttled_total {}",
            inner.auth_throttled
        );
        let counters = [
            ("strongroom_rate_limited_total", "Requests refused (429) because their credential was over --rate-limit.", inner.rate_limited),
            ("strongroom_requests_shed_total", "Requests refused (503) at once: more in flight than --max-in-flight, or the write queue full.", inner.shed),
            ("strongroom_connections_refused_total", "Connections closed at once: at --max-connections with none idle to close.", counters::CONNECTIONS_REFUSED.get()),
            ("strongroom_connections_evicted_total", "Silent connections closed to make room at --max-connections.", counters::CONNECTIONS_EVICTED.get()),
            ("strongroom_connections_timed_out_total", "Connections cut off by the header, keep-alive or handshake timeout.", counters::CONNECTIONS_TIMED_OUT.get()),
            ("strongroom_connections_stalled_total", "Connections cut off by the write timeout: the client stopped taking an answer.", counters::CONNECTIONS_STALLED.get()),
            ("strongroom_integrity_failures_total", "Stored values, data keys or records that failed their integrity check (answered 502).", inner.integrity_failures),
            ("strongroom_tls_handshake_failures_total", "TLS handshakes that failed.", counters::TLS_HANDSHAKE_FAILURES.get()),
            ("strongroom_secrets_expired_total", "Lapsed secrets the sweep marked deleted.", counters::SECRETS_EXPIRED.get()),
            ("strongroom_login_tokens_issued_total", "Login tokens issued.", counters::TOKENS_ISSUED.get()),
            ("strongroom_login_tokens_swept_total", "Expired login tokens the sweep removed.", counters::TOKENS_SWEPT.get()),
            ("strongroom_gateway_cache_hits_total", "Reads of a current version a nats gateway answered from its cache.", counters::GATEWAY_CACHE_HITS.get()),
            ("strongroom_gateway_cache_misses_total", "Reads of a current version a nats gateway sent to the stream leader.", counters::GATEWAY_CACHE_MISSES.get()),
            ("strongroom_backups_total", "Scheduled backups written.", counters::BACKUPS_WRITTEN.get()),
            ("strongroom_backups_failed_total", "Scheduled backups that failed (logged; the server goes on).", counters::BACKUPS_FAILED.get()),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out.push_str("# HELP strongroom_audit_write_failures_total Audit appends that failed (the requests answered 503).\n");
        out.push_str("# TYPE strongroom_audit_write_failures_total counter\n");
        let _ = writeln!(
            out,
            "strongroom_audit_write_failures_total {audit_failures}"
        );
        if let Some(free) = free {
            let _ = writeln!(
                out,
                "# HELP strongroom_data_dir_free_bytes Bytes free on the data dir's file system.\n# TYPE strongroom_data_dir_free_bytes gauge\nstrongroom_data_dir_free_bytes {free}"
            );
            let _ = writeln!(
                out,
                "# HELP strongroom_data_dir_low 1 while the data dir's free bytes are below --disk-warn-bytes.\n# TYPE strongroom_data_dir_low gauge\nstrongroom_data_dir_low {}",
                u8::from(free < warn_below)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.observe("GET", "/secrets/{*key}", 200, Duration::from_micros(300));
        m.observe("GET", "/secrets/{*key}", 200, Duration::from_millis(20));
        m.auth_failure("missing");
        let text = m.render(3, Some(10), 100);
        assert!(text.contains(
            "strongroom_http_requests_total{method=\"GET\",route=\"/secrets/{*key}\",status=\"200\"} 2"
        ));
        assert!(text.contains("le=\"0.0005\"} 1"));
        assert!(text.contains("le=\"0.025\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("strongroom_auth_failures_total{reason=\"missing\"} 1"));
        assert!(text.contains("strongroom_audit_write_failures_total 3\n"));
    }
}

//! The limits a server keeps per request and per tenant, set at start.

/// Size limits, configurable at start.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body accepted (413 `request too large` above).
    pub max_request_bytes: usize,
    /// Largest secret value accepted (413 `value too large` above).
    pub max_value_bytes: usize,
    /// Failed authentications per second per client address (0: no limit)
    /// and how many at once, before its requests answer 429.
    pub auth_failures_per_second: u32,
    /// Requests per second per credential (0: no limit) and how many at once.
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
    /// Requests handled at once; beyond it 503 at once.
    pub max_in_flight: usize,
    /// How long a request's body may take to arrive (408 beyond it).
    pub body_timeout: std::time::Duration,
    /// Bytes a second a body must average after a short grace (408 below;
    /// 0: no minimum).
    pub body_min_rate: u32,
    /// Requests one tenant, and one credential, may have in flight at once
    /// (429 beyond it), so no one takes every slot of `max_in_flight`.
    pub max_in_flight_per_tenant: usize,
    pub max_in_flight_per_credential: usize,
    pub auth_failure_burst: u32,
    /// How often an idle `/watch` stream sends a heartbeat comment.
    pub watch_heartbeat: std::time::Duration,
    /// Most bytes of keys and values one `POST /batch/get` answers with.
    pub max_batch_response_bytes: usize,
    /// Live API keys and data keys one tenant may hold (409 beyond).
    pub max_apikeys_per_tenant: usize,
    pub max_deks_per_tenant: usize,
    /// Free bytes on the data dir's file system below which `/readyz`, the
    /// log and a metric warn, well before writes fail.
    pub disk_warn_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 1024 * 1024,
            max_value_bytes: 64 * 1024,
            auth_failures_per_second: 10,
            auth_failure_burst: 20,
            rate_limit: 0,
            rate_limit_burst: 100,
            max_in_flight: 1024,
            body_timeout: std::time::Duration::from_secs(30),
            body_min_rate: 1024,
            max_in_flight_per_tenant: 256,
            max_in_flight_per_credential: 128,
            watch_heartbeat: super::watch::DEFAULT_HEARTBEAT,
            max_batch_response_bytes: 1024 * 1024,
            max_apikeys_per_tenant: 1000,
            max_deks_per_tenant: 1000,
            disk_warn_bytes: 1 << 30,
        }
    }
}

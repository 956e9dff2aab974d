//! strongroom: a secrets manager server that speaks the quiva.ai Gateway
//! secrets API, with versions, scopes and envelope encryption.
//!
//! Modules, and what each owns:
//! - `api`: HTTP routes, request parsing, error mapping. The only module that
//!   knows HTTP and JSON.
//! - `audit`: the hash-chained audit trail and its verifier.
//! - `auth`: API keys, JWTs, scopes; resolves a request to a `Principal`.
//! - `crypto`: the master key, per-tenant data keys, AES-256-GCM sealing.
//! - `store`: the `Store` handle over a backend (embedded `sqlite` with group
//!   commit, or `nats` JetStream KV); never sees a plaintext value or an
//!   unwrapped key.
//! - `server`: start-up and the serve loop (`Application::build`, `run`).
//! - `cli` and `config`: the `strongroom` command (server-side and client
//!   commands) and its flags.
//! - `accesslog`: the one log line per request.
//! - `metrics`, `clock`, `fsutil`, `hex`, `types`: Prometheus counters, time
//!   formats, owner-only files, hex, and the validated `SecretKey` and
//!   `TenantId`.

pub mod accesslog;
pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod fsutil;
pub mod hex;
pub mod http;
pub mod json;
pub mod metrics;
pub mod server;
pub mod store;
pub mod types;

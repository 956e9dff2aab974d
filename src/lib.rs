//! strongroom: a secrets manager server that speaks the quiva.ai Gateway
//! secrets API, with versions, scopes and envelope encryption.
//!
//! Modules, and what each owns:
//! - `api`: the quiva HTTP API, a front-end: routes (one table,
//!   `api::routes`), request parsing, rendering, error mapping. With `http`,
//!   the only module that knows HTTP.
//! - `vault`: the Vault-compatible API (KV v2 at one mount, token and JWT
//!   auth, `sys/health` and friends), a front-end beside `api` on the same
//!   router and the same operations.
//! - `ops`: every operation a caller can do, whichever front-end it came
//!   through: authorization, the audit line, sealing and opening, once.
//! - `audit`: what an audit line says, and the verifier of a whole trail.
//! - `auth`: API keys, JWTs, scopes; resolves a request to a `Principal`.
//! - `backup`: the backup file, backup, restore and migration, schedules.
//! - `crypto`: the master keys, per-tenant data keys, AES-256-GCM sealing,
//!   and their rotation.
//! - `expiry`: the sweep that marks lapsed secrets deleted, with their lines.
//! - `store`: the `Store` handle: the rules (`store::model`) over an engine
//!   (embedded `sqlite` with group commit, or `nats` JetStream KV), and the
//!   audit trail each engine keeps; never sees a plaintext value or an
//!   unwrapped key.
//! - `server`: start-up and the serve loop (`Application::build`, `run`).
//! - `cli` and `config`: the `strongroom` command (server-side and client
//!   commands) and its flags.
//! - `log`: JSON log lines on stderr and the one access line per request.
//! - `http`: the HTTP server under the router (per-core shards).
//! - `metrics`, `clock`, `json`, `fsutil`, `types`, `failpoint`:
//!   Prometheus counters, time formats, JSON string escaping, owner-only
//!   files, the validated `SecretKey` and `TenantId`, and crash points for
//!   the crash tests.

pub mod api;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod clock;
pub mod config;
pub mod counters;
pub mod crypto;
pub mod expiry;
pub mod failpoint;
pub mod fsutil;
pub mod http;
pub mod json;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod server;
pub mod store;
pub mod types;
pub mod vault;

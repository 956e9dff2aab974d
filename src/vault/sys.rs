//! The `sys/` endpoints Vault's clients ask before they start: health,
//! init and seal status (unauthenticated, as Vault's), and the mount table, which
//! describes the one KV version 2 mount (clients read `options.version` to
//! choose the KV v2 paths). None of them tells anything of a secret, so
//! none is audited, as `/healthz` is not.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::caller::{Known, Unwrapped};
use super::error::VaultError;
use super::wire::{self, envelope, respond};
use crate::api::AppState;

/// The version Vault's clients are shown: the Vault API level this
/// front-end follows, with strongroom's own version as build metadata
/// (clients compare versions to choose features).
const VERSION: &str = concat!("1.15.0+strongroom.", env!("CARGO_PKG_VERSION"));

const CLUSTER_NAME: &str = "strongroom";

/// 16 random bytes as a UUID's text.
fn random_uuid() -> String {
    let b = crate::crypto::seal::random_bytes::<16>();
    let hex = hex::encode(*b);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// This process's cluster id: Vault's is the cluster's, stable; a
/// strongroom gateway keeps none, so each process picks one.
fn cluster_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(random_uuid)
}

/// A status-code query parameter of `sys/health`.
fn code(query: Option<&str>, name: &str, default: u16) -> Result<StatusCode, VaultError> {
    match wire::query_param(query, name)? {
        None => Ok(StatusCode::from_u16(default).expect("a valid default")),
        Some(text) => text
            .trim()
            .parse::<u16>()
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .ok_or_else(|| VaultError::bad(format!("bad value for {name} parameter"))),
    }
}

/// `GET /v1/sys/health`: 200 when ready, else as sealed (503); Vault's
/// status-code parameters (`activecode`, `sealedcode`, ...) change those.
/// A gateway is never a standby, so the standby codes never apply.
pub async fn health(
    State(app): State<Arc<AppState>>,
    _: Unwrapped,
    uri: Uri,
) -> Result<Response, VaultError> {
    let query = uri.query();
    for name in ["standbyok", "perfstandbyok"] {
        if let Some(text) = wire::query_param(query, name)? {
            wire::parse_bool(&text)
                .ok_or_else(|| VaultError::bad(format!("bad value for {name} parameter")))?;
        }
    }
    let active = code(query, "activecode", 200)?;
    let sealed_code = code(query, "sealedcode", 503)?;
    for (name, default) in [
        ("uninitcode", 501),
        ("standbycode", 429),
        ("drsecondarycode", 472),
        ("performancestandbycode", 473),
        ("haunhealthycode", 474),
        ("removedcode", 530),
    ] {
        code(query, name, default)?;
    }
    let sealed = crate::api::probes::probe(&app).await.is_err();
    let body = json!({
        "initialized": true,
        "sealed": sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": crate::clock::now_ms() / 1000,
        "version": VERSION,
        "enterprise": false,
        "cluster_name": CLUSTER_NAME,
        "cluster_id": cluster_id(),
        "echo_duration_ms": 0,
        "clock_skew_ms": 0,
        "replication_primary_canary_age_ms": 0,
        "removed_from_cluster": false,
    });
    Ok(respond(if sealed { sealed_code } else { active }, &body))
}

/// `GET /v1/sys/init`: a strongroom store is initialized once it serves.
pub async fn init(_: Unwrapped) -> Response {
    respond(StatusCode::OK, &json!({ "initialized": true }))
}

/// `GET /v1/sys/seal-status`: strongroom has no seal to open; it reads as
/// sealed only while the store cannot serve.
pub async fn seal_status(
    State(app): State<Arc<AppState>>,
    _: Unwrapped,
) -> Result<Response, VaultError> {
    let sealed = crate::api::probes::probe(&app).await.is_err();
    let body = json!({
        "type": "shamir",
        "initialized": true,
        "sealed": sealed,
        "t": 1,
        "n": 1,
        "progress": 0,
        "nonce": "",
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "cluster_name": CLUSTER_NAME,
        "cluster_id": cluster_id(),
        "recovery_seal": false,
        "storage_type": "strongroom",
    });
    Ok(respond(StatusCode::OK, &body))
}

/// A stable short id for the mount (its accessor and uuid): FNV-1a of its
/// path, so every gateway shows the same.
fn mount_hash(mount: &str) -> u64 {
    mount.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The mount as Vault's mount table shows a KV version 2 mount.
fn mount_info(mount: &str) -> Value {
    let h = mount_hash(mount);
    json!({
        "accessor": format!("kv_{:08x}", h as u32),
        "config": {
            "default_lease_ttl": 0,
            "force_no_cache": false,
            "max_lease_ttl": 0,
        },
        "description": "key/value secret storage (strongroom)",
        "external_entropy_access": false,
        "local": false,
        "options": { "version": "2" },
        "plugin_version": "",
        "running_plugin_version": "",
        "running_sha256": "",
        "seal_wrap": false,
        "type": "kv",
        "uuid": format!("{:08x}-0000-4000-8000-{:012x}", (h >> 32) as u32, h & 0xffff_ffff_ffff),
    })
}

/// `GET /v1/sys/mounts`: the one mount, under `data` and, as Vault also
/// answers, at the top level.
pub async fn mounts(State(app): State<Arc<AppState>>, _: Known) -> Response {
    let mut table = serde_json::Map::new();
    table.insert(
        format!("{}/", app.vault_mount),
        mount_info(&app.vault_mount),
    );
    let mut body = envelope(&random_uuid(), "system", Value::Object(table.clone()));
    if let Some(body) = body.as_object_mut() {
        body.extend(table);
    }
    respond(StatusCode::OK, &body)
}

/// `GET /v1/sys/mounts/{mount}` and `.../tune`: the mount's configuration.
pub async fn mount(
    State(app): State<Arc<AppState>>,
    _: Known,
    uri: Uri,
) -> Result<Response, VaultError> {
    let rest = wire::decoded_rest(uri.path(), "/v1/sys/mounts/")?;
    let rest = rest.trim_matches('/');
    let mount = app.vault_mount.as_str();
    let data = if rest == mount {
        mount_info(mount)
    } else if rest.strip_suffix("/tune").map(|m| m.trim_end_matches('/')) == Some(mount) {
        json!({
            "default_lease_ttl": 2_764_800,
            "max_lease_ttl": 2_764_800,
            "force_no_cache": false,
            "description": "key/value secret storage (strongroom)",
            "options": { "version": "2" },
        })
    } else {
        return Err(VaultError::bad(format!(
            "no secrets engine is mounted there: strongroom serves KV version 2 at {mount}/"
        )));
    };
    Ok(respond(
        StatusCode::OK,
        &envelope(&random_uuid(), "system", data),
    ))
}

/// `GET /v1/sys/internal/ui/mounts/{path}`: the mount a path is under
/// (Vault's CLI asks this before every `kv` command). A path under no
/// mount is 403, as Vault answers so the mount table cannot be probed.
pub async fn ui_mount(
    State(app): State<Arc<AppState>>,
    _: Known,
    uri: Uri,
) -> Result<Response, VaultError> {
    let rest = wire::decoded_rest(uri.path(), "/v1/sys/internal/ui/mounts/")?;
    let path = format!("{}/", rest.trim_matches('/'));
    let mount = format!("{}/", app.vault_mount);
    if !path.starts_with(&mount) {
        let shown: String = path.chars().take(256).collect();
        return Err(VaultError::new(
            StatusCode::FORBIDDEN,
            vec![format!(
                "preflight capability check returned 403, please ensure client's policies grant access to path {shown:?}"
            )],
        ));
    }
    let mut data = mount_info(&app.vault_mount);
    data["path"] = Value::String(mount);
    Ok(respond(
        StatusCode::OK,
        &envelope(&random_uuid(), "system", data),
    ))
}

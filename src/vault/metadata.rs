//! KV v2's key metadata and listing: read (`GET metadata/{path}`), list
//! (`LIST metadata/{path}`, or `GET ...?list=true`), set
//! (`POST|PUT|PATCH metadata/{path}`), destroy every version
//! (`DELETE metadata/{path}`), and the mount's `config`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::caller::Vaulted;
use super::error::VaultError;
use super::kv::{change_key, custom_metadata, path_key};
use super::wire::{self, envelope, go_duration, go_time, go_time_or_empty, respond};
use crate::api::AppState;
use crate::auth::Principal;
use crate::ops::{Call, KvConfig, KvConfigChange, Operation, SettingsChange};
use crate::store::Change;
use crate::types::SecretKey;

/// `GET metadata/{path}`: the key's metadata, or with `list=true` (which
/// began the call as a listing) the names under it.
pub async fn read(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
) -> Result<Response, VaultError> {
    if call.operation() == Operation::List {
        return list_at(&app, &principal, &call, &uri).await;
    }
    if let Some(text) = wire::query_param(uri.query(), "list")? {
        wire::parse_bool(&text).ok_or_else(|| VaultError::bad("list must be a boolean"))?;
    }
    let key = path_key(&app, &uri, "metadata")?;
    call.key(key.as_str());
    let meta = app.ops.kv_metadata(&call, &principal, &key).await?;
    let versions: Map<String, Value> = meta
        .versions
        .iter()
        .map(|v| {
            let shown = json!({
                "created_time": go_time(v.created_at),
                "deletion_time": go_time_or_empty(v.deletion_time),
                "destroyed": v.destroyed,
            });
            (v.version.to_string(), shown)
        })
        .collect();
    let settings = &meta.settings;
    let data = json!({
        "cas_required": settings.cas_required,
        "created_time": go_time(meta.created_at),
        "current_version": meta.current_version,
        "custom_metadata": custom_metadata(&settings.custom_metadata),
        "delete_version_after": go_duration(settings.delete_version_after_secs),
        "max_versions": settings.max_versions,
        "oldest_version": meta.oldest_version,
        "updated_time": go_time(meta.updated_at),
        "versions": versions,
    });
    Ok(respond(
        StatusCode::OK,
        &envelope(&call.request_id(), "kv", data),
    ))
}

/// `LIST metadata/` and `LIST metadata`: the names at the top.
pub async fn list(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
) -> Result<Response, VaultError> {
    list_at(&app, &principal, &call, &uri).await
}

/// The names directly under the path (a folder ends in `/`); 404 with no
/// errors when there are none, as Vault answers an empty listing.
async fn list_at(
    app: &AppState,
    principal: &Principal,
    call: &Call,
    uri: &Uri,
) -> Result<Response, VaultError> {
    let rest = wire::decoded_rest(uri.path(), &format!("/v1/{}/metadata", app.vault_mount))?;
    let path = rest.strip_prefix('/').unwrap_or(&rest);
    let path = path.strip_suffix('/').unwrap_or(path);
    // Vault lists `a` as the folder `a/`.
    let prefix = if path.is_empty() {
        String::new()
    } else {
        SecretKey::parse(path).map_err(|e| VaultError::bad(e.to_string()))?;
        format!("{path}/")
    };
    let keys = app.ops.list_children(call, principal, &prefix).await?;
    if keys.is_empty() {
        return Err(VaultError::not_found());
    }
    let data = json!({ "keys": keys });
    Ok(respond(
        StatusCode::OK,
        &envelope(&call.request_id(), "kv", data),
    ))
}

/// The settings a metadata body names; `patch`: a null resets a field
/// (JSON merge patch), where a plain write refuses it.
fn settings_change(body: &Map<String, Value>, patch: bool) -> Result<SettingsChange, VaultError> {
    let mut change = SettingsChange::default();
    let reset = |value: &Value| patch && value.is_null();
    if let Some(value) = body.get("max_versions") {
        change.max_versions = Some(match reset(value) {
            true => 0,
            false => wire::loose_u64(value)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| VaultError::bad("max_versions must be a whole number"))?,
        });
    }
    if let Some(value) = body.get("cas_required") {
        change.cas_required = Some(match reset(value) {
            true => false,
            false => wire::loose_bool(value)
                .ok_or_else(|| VaultError::bad("cas_required must be a boolean"))?,
        });
    }
    if let Some(value) = body.get("delete_version_after") {
        change.delete_version_after_secs = Some(match reset(value) {
            true => 0,
            false => delete_version_after(value)?,
        });
    }
    if let Some(value) = body.get("custom_metadata") {
        change.custom_metadata = Some(custom(value, patch)?);
    }
    Ok(change)
}

/// `delete_version_after`: a Go duration or whole seconds, not negative.
fn delete_version_after(value: &Value) -> Result<u64, VaultError> {
    let secs = wire::duration_secs(value).ok_or_else(|| {
        VaultError::bad("delete_version_after must be a duration such as \"1h30m\" or seconds")
    })?;
    u64::try_from(secs).map_err(|_| VaultError::bad("delete_version_after must not be negative"))
}

/// `custom_metadata`: an object of strings (in a patch, a key whose value
/// is null is left out here: `patch` removes it from what the key has).
fn custom(value: &Value, patch: bool) -> Result<BTreeMap<String, String>, VaultError> {
    let bad = || {
        VaultError::bad(
            "custom_metadata validation failed: custom_metadata must be an object of strings",
        )
    };
    match value {
        Value::Null if patch => Ok(BTreeMap::new()),
        Value::Object(map) => map
            .iter()
            .filter(|(_, v)| !(patch && v.is_null()))
            .map(|(k, v)| Ok((k.clone(), v.as_str().ok_or_else(bad)?.to_owned())))
            .collect(),
        _ => Err(bad()),
    }
}

/// `POST|PUT metadata/{path}`: sets what the body names (a body naming
/// nothing makes the key's metadata, if it has none, as Vault does).
pub async fn write(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let key = path_key(&app, &uri, "metadata")?;
    call.key(key.as_str());
    let body = wire::json_object(&app, &headers, body).await?;
    let change = settings_change(&body, false)?;
    app.ops
        .set_settings(&call, &principal, &key, change)
        .await?;
    Ok(wire::no_content())
}

/// `PATCH metadata/{path}` (a JSON merge patch): the key's metadata must
/// exist (404 otherwise, as Vault answers), and `custom_metadata` merges
/// into what the key has.
pub async fn patch(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let key = path_key(&app, &uri, "metadata")?;
    call.key(key.as_str());
    wire::require_merge_patch(&headers)?;
    let body = wire::json_object(&app, &headers, body).await?;
    let mut change = settings_change(&body, true)?;
    change.must_exist = true;
    // Custom metadata merges into what the key has: a null removes one.
    match (change.custom_metadata.take(), body.get("custom_metadata")) {
        (Some(_), Some(Value::Object(patch))) => {
            let merge = patch
                .iter()
                .map(|(name, value)| (name.clone(), value.as_str().map(str::to_owned)))
                .collect();
            change.custom_metadata_patch = Some(merge);
        }
        (_, Some(Value::Null)) => change.custom_metadata = Some(BTreeMap::new()),
        _ => {}
    }
    app.ops
        .set_settings(&call, &principal, &key, change)
        .await?;
    Ok(wire::no_content())
}

/// `DELETE metadata/{path}`: every version destroyed for good; a key that
/// does not exist is 204, as Vault answers it.
pub async fn destroy(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
) -> Result<Response, VaultError> {
    let key = path_key(&app, &uri, "metadata")?;
    change_key(&app, &call, &principal, &key, Change::Destroy).await
}

fn config_view(config: &KvConfig) -> Value {
    json!({
        "cas_required": config.cas_required,
        "delete_version_after": go_duration(config.delete_version_after_secs),
        "max_versions": config.max_versions,
    })
}

/// `GET config`: the tenant's KV configuration.
pub async fn config(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
) -> Result<Response, VaultError> {
    let config = app.ops.kv_config(&call, &principal).await?;
    let body = envelope(&call.request_id(), "kv", config_view(&config));
    Ok(respond(StatusCode::OK, &body))
}

/// `POST|PUT config`: sets the fields the body names and keeps the rest.
pub async fn set_config(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let body = wire::json_object(&app, &headers, body).await?;
    let change = settings_change(&body, false)?;
    let change = KvConfigChange {
        max_versions: change.max_versions,
        cas_required: change.cas_required,
        delete_version_after_secs: change.delete_version_after_secs,
    };
    app.ops.set_kv_config(&call, &principal, change).await?;
    Ok(wire::no_content())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(body: Value, patch: bool) -> Result<SettingsChange, VaultError> {
        settings_change(body.as_object().unwrap(), patch)
    }

    #[test]
    fn metadata_fields_take_vaults_types() {
        let c = change(
            json!({"max_versions": "5", "cas_required": "true",
                   "delete_version_after": "1h30m", "custom_metadata": {"a": "b"}}),
            false,
        )
        .unwrap();
        assert_eq!(c.max_versions, Some(5));
        assert_eq!(c.cas_required, Some(true));
        assert_eq!(c.delete_version_after_secs, Some(5400));
        assert_eq!(c.custom_metadata.unwrap()["a"], "b");
        let c = change(json!({"delete_version_after": 3600}), false).unwrap();
        assert_eq!(c.delete_version_after_secs, Some(3600));
        for bad in [
            json!({"delete_version_after": "-1h"}),
            json!({"delete_version_after": -5}),
            json!({"max_versions": "x"}),
            json!({"custom_metadata": {"a": 1}}),
            json!({"custom_metadata": null}),
        ] {
            assert_eq!(change(bad.clone(), false).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn a_patch_null_resets_a_field() {
        let c = change(
            json!({"max_versions": null, "custom_metadata": {"a": null, "b": "c"}}),
            true,
        )
        .unwrap();
        assert_eq!(c.max_versions, Some(0));
        assert_eq!(c.custom_metadata.unwrap().len(), 1);
    }
}

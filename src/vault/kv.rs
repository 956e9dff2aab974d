//! KV v2's secret data: read a version (`GET data/{path}`), write one
//! (`POST|PUT data/{path}`, with `options.cas`), merge into the current one
//! (`PATCH`), soft-delete the newest (`DELETE data/{path}`), and delete,
//! undelete or destroy named versions (`POST delete|undelete|destroy/{path}`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::caller::Vaulted;
use super::error::VaultError;
use super::wire::{self, envelope, go_time, go_time_or_empty, respond};
use crate::api::AppState;
use crate::auth::Principal;
use crate::ops::{Call, Expiry, KvVersion, OpError, Operation, PutRequest, VersionsChange};
use crate::store::{Change, Precondition};
use crate::types::SecretKey;

/// The key the path names after `/v1/<mount>/<section>/`.
pub(super) fn path_key(app: &AppState, uri: &Uri, section: &str) -> Result<SecretKey, VaultError> {
    wire::key_at(uri.path(), &format!("/v1/{}/{section}/", app.vault_mount))
}

/// Vault shows no custom metadata as null, not `{}`.
pub(super) fn custom_metadata(custom: &BTreeMap<String, String>) -> Value {
    if custom.is_empty() {
        Value::Null
    } else {
        json!(custom)
    }
}

/// A version's metadata as a read shows it.
fn version_metadata(v: &KvVersion, custom: &BTreeMap<String, String>) -> Value {
    json!({
        "created_time": go_time(v.created_at),
        "custom_metadata": custom_metadata(custom),
        "deletion_time": go_time_or_empty(v.deletion_time),
        "destroyed": v.destroyed,
        "version": v.version,
    })
}

pub async fn read(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
) -> Result<Response, VaultError> {
    let key = path_key(&app, &uri, "data")?;
    call.key(key.as_str());
    // Vault reads version 0 as the current one.
    let version = match wire::query_param(uri.query(), "version")? {
        None => None,
        Some(text) => match text.trim().parse::<u64>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(VaultError::bad("version must be a whole number")),
        },
    };
    let read = app.ops.read(&call, &principal, &key, version).await?;
    let metadata = version_metadata(&read.meta, &read.custom_metadata);
    let request_id = call.request_id();
    let Some(text) = &read.value else {
        // A deleted or destroyed version: Vault's 404 with its metadata.
        let body = envelope(
            &request_id,
            "kv",
            json!({ "data": null, "metadata": metadata }),
        );
        return Ok(respond(StatusCode::NOT_FOUND, &body));
    };
    Ok(wire::respond_json(
        StatusCode::OK,
        read_body(&request_id, text, read.kv, &metadata),
    ))
}

/// A read's answer, written out by hand: the hot path of every Vault
/// client, where building it as a `Value` cost a third more than a quiva
/// GET (`MODES="get vault" bench/instructions`). KV data is stored as the
/// compact JSON text of its object (`write` made it), so it goes in as it
/// is; a value written through the quiva API goes in as `{"value": text}`.
fn read_body(request_id: &str, text: &str, kv: bool, metadata: &Value) -> Vec<u8> {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len() + 400);
    out.push_str("{\"request_id\":");
    let _ = crate::json::write_str(&mut out, request_id);
    out.push_str(",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":{\"data\":");
    let object = text.starts_with('{') && text.ends_with('}');
    if kv && object {
        out.push_str(text);
    } else {
        out.push_str("{\"value\":");
        let _ = crate::json::write_str(&mut out, text);
        out.push('}');
    }
    let _ = write!(out, ",\"metadata\":{metadata}}}");
    out.push_str(",\"wrap_info\":null,\"warnings\":null,\"auth\":null,\"mount_type\":\"kv\"}");
    out.into_bytes()
}

/// The `data` object of a write or patch body.
fn data_field(body: &mut Map<String, Value>) -> Result<Map<String, Value>, VaultError> {
    match body.remove("data") {
        None | Some(Value::Null) => Err(VaultError::bad("no data provided")),
        Some(Value::Object(data)) => Ok(data),
        Some(_) => Err(VaultError::bad(
            "error converting input for field \"data\": a JSON object is expected",
        )),
    }
}

/// `options.cas` of a write or patch body, if given.
fn cas_option(body: &Map<String, Value>) -> Result<Option<u64>, VaultError> {
    let options = match body.get("options") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(options)) => options,
        Some(_) => {
            return Err(VaultError::bad(
                "error converting input for field \"options\": a JSON object is expected",
            ))
        }
    };
    match options.get("cas") {
        None | Some(Value::Null) => Ok(None),
        Some(cas) => wire::loose_u64(cas)
            .map(Some)
            .ok_or_else(|| VaultError::bad("error parsing check-and-set parameter")),
    }
}

/// A written version as Vault answers a write: its creation time is the
/// answer's (the version was written just before), with no deletion time
/// and no custom metadata shown.
fn written(request_id: &str, version: u64) -> Response {
    let data = json!({
        "created_time": go_time(crate::clock::now_ms()),
        "custom_metadata": null,
        "deletion_time": "",
        "destroyed": false,
        "version": version,
    });
    respond(StatusCode::OK, &envelope(request_id, "kv", data))
}

/// A write's or patch's key, `data` object and `options.cas`; a patch's
/// body must be a merge patch (checked once the call names the key).
async fn data_request(
    app: &AppState,
    call: &Call,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    merge_patch: bool,
) -> Result<(SecretKey, Map<String, Value>, Option<u64>), VaultError> {
    let key = path_key(app, uri, "data")?;
    call.key(key.as_str());
    if merge_patch {
        wire::require_merge_patch(headers)?;
    }
    let mut body = wire::json_object(app, headers, body).await?;
    let data = data_field(&mut body)?;
    let cas = cas_option(&body)?;
    Ok((key, data, cas))
}

pub async fn write(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let (key, data, cas) = data_request(&app, &call, &uri, &headers, body, false).await?;
    let value = Zeroizing::new(
        serde_json::to_string(&Value::Object(data))
            .map_err(|e| OpError::Internal(format!("serialising KV data: {e}")))?,
    );
    let put = PutRequest {
        key,
        value,
        expiry: Expiry::Never,
        precondition: cas.map_or(Precondition::None, Precondition::Cas),
        kv: true,
    };
    let done = app.ops.put(&call, &principal, put).await?;
    Ok(written(&call.request_id(), done.version))
}

pub async fn patch(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let (key, data, cas) = data_request(&app, &call, &uri, &headers, body, true).await?;
    let done = app.ops.patch(&call, &principal, &key, data, cas).await?;
    Ok(written(&call.request_id(), done.version))
}

/// Soft-deletes the newest version. A key that does not exist is 204, as
/// Vault answers it.
pub async fn delete_latest(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
) -> Result<Response, VaultError> {
    let key = path_key(&app, &uri, "data")?;
    change_key(&app, &call, &principal, &key, Change::Delete).await
}

/// A change of the whole key (soft delete of its newest version, destroy
/// of all), 204 whether or not the key exists, as Vault answers both.
pub(super) async fn change_key(
    app: &AppState,
    call: &Call,
    principal: &Principal,
    key: &SecretKey,
    change: Change,
) -> Result<Response, VaultError> {
    call.key(key.as_str());
    let changed = app
        .ops
        .change(call, principal, key, change, Precondition::None)
        .await;
    match changed {
        Ok(()) | Err(OpError::NotFound) => Ok(wire::no_content()),
        Err(e) => Err(e.into()),
    }
}

/// The `versions` of a body: a list of numbers (or of digit strings), or
/// one comma-separated string, as Vault's `TypeCommaIntSlice` takes them.
fn versions(body: &Map<String, Value>) -> Result<Vec<u64>, VaultError> {
    let bad = || VaultError::bad("versions must be a list of version numbers");
    let versions = match body.get("versions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| wire::loose_u64(v).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(Value::String(text)) => text
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?,
        Some(one @ Value::Number(_)) => vec![wire::loose_u64(one).ok_or_else(bad)?],
        Some(_) => return Err(bad()),
    };
    if versions.is_empty() {
        return Err(VaultError::bad("no version number provided"));
    }
    Ok(versions)
}

/// `POST delete|undelete|destroy/{path}`: which one, the route's operation
/// says. A key that does not exist is 204, as Vault answers it.
pub async fn change_versions(
    State(app): State<Arc<AppState>>,
    Vaulted { principal, call }: Vaulted,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, VaultError> {
    let (section, change) = match call.operation() {
        Operation::Delete => ("delete", VersionsChange::Delete),
        Operation::Undelete => ("undelete", VersionsChange::Undelete),
        Operation::Destroy => ("destroy", VersionsChange::Destroy),
        other => {
            return Err(OpError::Internal(format!("{other:?} is not a change of versions")).into())
        }
    };
    let key = path_key(&app, &uri, section)?;
    call.key(key.as_str());
    let body = wire::json_object(&app, &headers, body).await?;
    let versions = versions(&body)?;
    let changed = app
        .ops
        .change_versions(&call, &principal, &key, change, &versions)
        .await;
    match changed {
        Ok(()) | Err(OpError::NotFound) => Ok(wire::no_content()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn versions_come_as_vaults_comma_int_slice() {
        assert_eq!(
            versions(&body(json!({"versions": [1, "2"]}))).unwrap(),
            [1, 2]
        );
        assert_eq!(
            versions(&body(json!({"versions": "3, 4"}))).unwrap(),
            [3, 4]
        );
        assert_eq!(versions(&body(json!({"versions": 5}))).unwrap(), [5]);
        for empty in [json!({}), json!({"versions": []}), json!({"versions": ""})] {
            let e = versions(&body(empty)).unwrap_err();
            assert_eq!(e.errors, ["no version number provided"]);
        }
        assert_eq!(
            versions(&body(json!({"versions": ["x"]})))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn cas_is_optional_and_must_be_a_number() {
        assert_eq!(cas_option(&body(json!({}))).unwrap(), None);
        assert_eq!(cas_option(&body(json!({"options": {}}))).unwrap(), None);
        assert_eq!(
            cas_option(&body(json!({"options": {"cas": 0}}))).unwrap(),
            Some(0)
        );
        assert_eq!(
            cas_option(&body(json!({"options": {"cas": "2"}}))).unwrap(),
            Some(2)
        );
        let e = cas_option(&body(json!({"options": {"cas": "x"}}))).unwrap_err();
        assert_eq!(e.errors, ["error parsing check-and-set parameter"]);
    }
}

//! `VaultError`: every way a Vault request can fail, as Vault answers it:
//! a status and `{"errors":[...]}` (an empty list for a plain 404). The one
//! place an operation's error becomes a Vault status; internal causes are
//! logged here and never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::api::error::Tally;
use crate::api::ApiError;
use crate::ops::OpError;

/// Vault's text for a failed check-and-set.
pub const CAS_MISMATCH: &str = "check-and-set parameter did not match the current version";

pub struct VaultError {
    pub status: StatusCode,
    pub errors: Vec<String>,
    /// Answered with `Retry-After: 1`.
    retry: bool,
    tally: Option<Tally>,
    /// Logged, never sent.
    cause: Option<String>,
}

impl VaultError {
    pub fn new(status: StatusCode, errors: Vec<String>) -> Self {
        VaultError {
            status,
            errors,
            retry: false,
            tally: None,
            cause: None,
        }
    }

    /// A 400 with one text.
    pub fn bad(text: impl Into<String>) -> Self {
        VaultError::new(StatusCode::BAD_REQUEST, vec![text.into()])
    }

    /// Vault's 403 for a missing, unknown or insufficient credential.
    pub fn denied() -> Self {
        VaultError::new(StatusCode::FORBIDDEN, vec!["permission denied".into()])
    }

    /// Vault's 404 for an absent secret: no text at all.
    pub fn not_found() -> Self {
        VaultError::new(StatusCode::NOT_FOUND, Vec::new())
    }

    fn unavailable(cause: String, tally: Option<Tally>) -> Self {
        VaultError {
            retry: true,
            tally,
            cause: Some(cause),
            ..VaultError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                vec!["service unavailable".into()],
            )
        }
    }
}

impl std::fmt::Debug for VaultError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VaultError({} {:?})", self.status, self.errors)
    }
}

impl From<OpError> for VaultError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Unauthorized | OpError::Forbidden => VaultError::denied(),
            // Vault's JWT auth refuses a login with 400 and the reason.
            OpError::LoginRefused(detail) | OpError::Invalid(detail) => VaultError::bad(detail),
            OpError::LoginPending(code) => VaultError::bad(code),
            OpError::NotFound => VaultError::not_found(),
            OpError::Gone => VaultError::new(StatusCode::GONE, vec!["resource gone".into()]),
            OpError::VersionMismatch => VaultError::bad(CAS_MISMATCH),
            OpError::ValueTooLarge { limit } => VaultError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                vec![format!(
                    "value too large: values are limited to {limit} bytes"
                )],
            ),
            OpError::ResponseTooLarge { limit } => VaultError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                vec![format!("response too large: more than {limit} bytes")],
            ),
            OpError::LimitReached { what, limit } => VaultError::new(
                StatusCode::CONFLICT,
                vec![format!(
                    "limit reached: a tenant holds at most {limit} {what}"
                )],
            ),
            OpError::RateLimited => VaultError {
                retry: true,
                ..VaultError::new(StatusCode::TOO_MANY_REQUESTS, vec!["rate limited".into()])
            },
            OpError::Overloaded => VaultError::unavailable("overloaded".into(), Some(Tally::Shed)),
            OpError::Unavailable(cause) => VaultError::unavailable(cause, None),
            OpError::Integrity(cause) => VaultError {
                tally: Some(Tally::Integrity),
                cause: Some(cause),
                ..VaultError::new(
                    StatusCode::BAD_GATEWAY,
                    vec!["stored data failed its integrity check".into()],
                )
            },
            OpError::Internal(cause) => VaultError {
                cause: Some(cause),
                ..VaultError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    vec!["internal error".into()],
                )
            },
        }
    }
}

/// The request-reading helpers the quiva API shares (body limits and
/// timeouts) answer `ApiError`s: the same conditions in Vault's shape.
impl From<ApiError> for VaultError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::RequestTooLarge => VaultError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                vec!["http: request body too large".into()],
            ),
            ApiError::BodyTimeout => VaultError::new(
                StatusCode::REQUEST_TIMEOUT,
                vec!["the request body did not arrive in time".into()],
            ),
            ApiError::ClientClosed => VaultError::new(
                StatusCode::from_u16(499).expect("499 is a valid status"),
                vec!["client closed request".into()],
            ),
            ApiError::BadRequest { detail, .. } => VaultError::bad(detail),
            ApiError::UnsupportedMediaType => VaultError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                vec!["unsupported media type".into()],
            ),
            ApiError::Unavailable(cause) => VaultError::unavailable(cause, None),
            ApiError::Internal(cause) => OpError::Internal(cause).into(),
            other => VaultError {
                cause: Some(format!("{other:?}")),
                ..VaultError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    vec!["internal error".into()],
                )
            },
        }
    }
}

/// `{"errors":[...]}` as JSON, never cached.
pub fn errors_body(status: StatusCode, errors: &[String]) -> Response {
    let body = serde_json::json!({ "errors": errors });
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for VaultError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            if self.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(cause = %cause, "internal error");
            } else if self.tally == Some(Tally::Integrity) {
                tracing::error!(cause = %cause, "stored data failed its integrity check");
            } else if self.tally.is_none() {
                tracing::error!(cause = %cause, "store unavailable");
            }
        }
        let mut response = errors_body(self.status, &self.errors);
        if self.retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(tally) = self.tally {
            response.extensions_mut().insert(tally);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_errors_get_vaults_statuses_and_texts() {
        let cases = [
            (OpError::Unauthorized, 403, vec!["permission denied"]),
            (OpError::Forbidden, 403, vec!["permission denied"]),
            (OpError::NotFound, 404, vec![]),
            (OpError::VersionMismatch, 400, vec![CAS_MISMATCH]),
            (OpError::Invalid("bad thing".into()), 400, vec!["bad thing"]),
            (OpError::RateLimited, 429, vec!["rate limited"]),
            (OpError::Overloaded, 503, vec!["service unavailable"]),
            (
                OpError::Unavailable("the cause".into()),
                503,
                vec!["service unavailable"],
            ),
            (OpError::Internal("why".into()), 500, vec!["internal error"]),
        ];
        for (error, status, texts) in cases {
            let e = VaultError::from(error);
            assert_eq!(e.status.as_u16(), status);
            assert_eq!(e.errors, texts);
        }
    }
}

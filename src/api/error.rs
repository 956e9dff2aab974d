//! `ApiError`: every way a request can fail, mapped to one status and the
//! compat spec's exact `error` text, with specifics in an extra `detail`.
//! Internal causes are logged here and never sent to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::ops::OpError;

/// Which operation a 400 belongs to: each has its own compat error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
    Delete,
    /// Extension endpoints (listing, metadata, undelete).
    Other,
}

impl Op {
    fn bad_request_text(self) -> &'static str {
        match self {
            Op::Put | Op::Other => "invalid request format",
            Op::Get => "error retrieving secret",
            Op::Delete => "error deleting secret",
        }
    }
}

#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    /// A refused login, with the binding that failed.
    LoginRefused(String),
    /// A device-flow login not finished: `{"error":"<its code>"}`.
    LoginPending(String),
    Forbidden,
    BadRequest {
        op: Op,
        detail: String,
    },
    RequestTooLarge,
    /// The values a batch names add up to more than one answer may hold.
    ResponseTooLarge {
        limit: usize,
    },
    ValueTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    /// A tenant holds as many of something (API keys, data keys) as it may.
    LimitReached {
        what: &'static str,
        limit: usize,
    },
    NotFound,
    /// A watcher resumed from before the kept events: re-list.
    Gone,
    VersionMismatch,
    MethodNotAllowed,
    /// Failed authentications over the client address's limit, or requests
    /// over the credential's.
    RateLimited,
    /// More requests in flight than allowed, or the write queue full:
    /// answered at once, with a hint to retry.
    Overloaded,
    /// The request's body did not arrive in time.
    BodyTimeout,
    /// Stored data (a value, a data key, a record) failed its integrity
    /// check: 502, as from an upstream that answered with bad data; never
    /// a value.
    Integrity(String),
    /// The client went away before its request was read; recorded as 499
    /// (no one reads the answer).
    ClientClosed,
    Unavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn bad(op: Op, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            op,
            detail: detail.into(),
        }
    }
}

impl ApiError {
    /// An operation's error as this API answers it; a broken rule is a 400
    /// with `op`'s text.
    pub fn in_op(op: Op) -> impl Fn(OpError) -> ApiError {
        move |e| match e {
            OpError::Invalid(detail) => ApiError::BadRequest { op, detail },
            other => other.into(),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Unauthorized => ApiError::Unauthorized,
            OpError::LoginRefused(detail) => ApiError::LoginRefused(detail),
            OpError::LoginPending(code) => ApiError::LoginPending(code),
            OpError::Forbidden => ApiError::Forbidden,
            OpError::Invalid(detail) => ApiError::bad(Op::Other, detail),
            OpError::NotFound => ApiError::NotFound,
            OpError::Gone => ApiError::Gone,
            OpError::VersionMismatch => ApiError::VersionMismatch,
            OpError::ValueTooLarge { limit } => ApiError::ValueTooLarge { limit },
            OpError::ResponseTooLarge { limit } => ApiError::ResponseTooLarge { limit },
            OpError::LimitReached { what, limit } => ApiError::LimitReached { what, limit },
            OpError::RateLimited => ApiError::RateLimited,
            OpError::Overloaded => ApiError::Overloaded,
            OpError::Integrity(cause) => ApiError::Integrity(cause),
            OpError::Unavailable(cause) => ApiError::Unavailable(cause),
            OpError::Internal(cause) => ApiError::Internal(cause),
        }
    }
}

/// What an error answer is, for the metrics the middleware keeps: the
/// error becomes an answer where no registry is at hand.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Refused at once for load (over `--max-in-flight`, or the write queue
    /// full).
    Shed,
    /// Stored data that failed its integrity check.
    Integrity,
}

fn json_error(status: StatusCode, error: &str, detail: Option<&str>) -> Response {
    let body = match detail {
        None => serde_json::json!({ "error": error }),
        Some(d) => serde_json::json!({ "error": error, "detail": d }),
    };
    let mut response = (status, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Unauthorized => {
                let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized", None);
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ApiError::LoginRefused(detail) => {
                let mut r = json_error(StatusCode::UNAUTHORIZED, "unauthorized", Some(&detail));
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
            ApiError::LoginPending(code) => json_error(StatusCode::BAD_REQUEST, &code, None),
            ApiError::Forbidden => json_error(StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::BadRequest { op, detail } => json_error(
                StatusCode::BAD_REQUEST,
                op.bad_request_text(),
                Some(&detail),
            ),
            ApiError::RequestTooLarge => {
                json_error(StatusCode::PAYLOAD_TOO_LARGE, "request too large", None)
            }
            ApiError::ResponseTooLarge { limit } => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "response too large",
                Some(&format!(
                    "the values named add up to more than {limit} bytes: ask for fewer keys at once"
                )),
            ),
            ApiError::ValueTooLarge { limit } => json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "value too large",
                Some(&format!("values are limited to {limit} bytes")),
            ),
            ApiError::UnsupportedMediaType => json_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported media type",
                Some("send the body as application/json"),
            ),
            ApiError::LimitReached { what, limit } => json_error(
                StatusCode::CONFLICT,
                "limit reached",
                Some(&format!("a tenant holds at most {limit} {what}")),
            ),
            ApiError::NotFound => json_error(StatusCode::NOT_FOUND, "resource not found", None),
            ApiError::Gone => json_error(
                StatusCode::GONE,
                "resource gone",
                Some("events after that id are no longer kept: list again, then watch from now"),
            ),
            ApiError::VersionMismatch => {
                json_error(StatusCode::PRECONDITION_FAILED, "version mismatch", None)
            }
            ApiError::MethodNotAllowed => {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed", None)
            }
            ApiError::RateLimited => {
                let mut r = json_error(StatusCode::TOO_MANY_REQUESTS, "rate limited", None);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Overloaded => {
                let mut r =
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable", None);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r.extensions_mut().insert(Tally::Shed);
                r
            }
            ApiError::BodyTimeout => json_error(
                StatusCode::REQUEST_TIMEOUT,
                "request timeout",
                Some("the request body did not arrive in time"),
            ),
            ApiError::Integrity(cause) => {
                tracing::error!(cause = %cause, "stored data failed its integrity check");
                let mut r = json_error(
                    StatusCode::BAD_GATEWAY,
                    "stored data failed its integrity check",
                    None,
                );
                r.extensions_mut().insert(Tally::Integrity);
                r
            }
            ApiError::ClientClosed => json_error(
                StatusCode::from_u16(499).expect("499 is a valid status"),
                "client closed request",
                None,
            ),
            ApiError::Unavailable(cause) => {
                tracing::error!(cause = %cause, "store unavailable");
                let mut r =
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable", None);
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            ApiError::Internal(cause) => {
                tracing::error!(cause = %cause, "internal error");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error", None)
            }
        }
    }
}

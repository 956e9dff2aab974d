//! The HTTP client of the client commands.
//!
//! Error texts name keys, addresses and the server's error text, never a
//! secret value or a credential: the server never echoes a value in an error,
//! and response bodies that are not the documented error shape are not shown.

use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, ETAG};
use reqwest::{Certificate, Method, StatusCode, Url};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::args::ClientArgs;
pub use super::error::CliError;
use crate::types::{is_valid_key_prefix, SecretKey};

/// A credential; zeroized on drop.
enum Credential {
    None,
    ApiKey(Zeroizing<String>),
    Bearer(Zeroizing<String>),
}

/// One secret as `GET /secrets/{key}` returns it; the value is zeroized on drop.
#[derive(Deserialize)]
pub struct SecretValue {
    pub key: String,
    pub value: Zeroizing<String>,
    /// From the `ETag` header, when the server sent one.
    #[serde(skip)]
    pub version: Option<u64>,
}

/// One row of `GET /secrets`.
#[derive(Deserialize, Serialize, Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub version: u64,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Deserialize)]
struct ListPage {
    secrets: Vec<Listed>,
    next_cursor: Option<String>,
}

/// One version in `GET /metadata/{key}`.
#[derive(Deserialize, Serialize, Debug)]
pub struct VersionInfo {
    pub version: u64,
    pub created_at: String,
    pub deleted: bool,
}

/// `GET /metadata/{key}`: history without values.
#[derive(Deserialize, Serialize, Debug)]
pub struct Metadata {
    pub key: String,
    pub current_version: u64,
    pub created_at: String,
    pub updated_at: String,
    pub deleted: bool,
    pub versions: Vec<VersionInfo>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    detail: Option<String>,
}

/// A connection to one server with one credential.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    credential: Credential,
}

impl Client {
    /// Builds the client from the flags; reads `--ca-cert` at once so a bad
    /// path fails before any request.
    pub fn new(args: &ClientArgs) -> Result<Client, CliError> {
        let text = if args.addr.contains("://") {
            args.addr.clone()
        } else {
            format!("http://{}", args.addr)
        };
        let base = Url::parse(&text)
            .map_err(|e| CliError::Usage(format!("invalid --addr {:?}: {e}", args.addr)))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!(
                "invalid --addr {:?}: expected http://HOST:PORT or https://HOST:PORT",
                args.addr
            )));
        }
        let credential = match (&args.api_key, &args.token) {
            (Some(_), Some(_)) => {
                return Err(CliError::Usage(
                    "both an API key (--api-key/STRONGROOM_API_KEY) and a token \
                     (--token/STRONGROOM_TOKEN) are set; set only one"
                        .into(),
                ))
            }
            (Some(k), None) => Credential::ApiKey(Zeroizing::new(k.clone())),
            (None, Some(t)) => Credential::Bearer(Zeroizing::new(t.clone())),
            // The token `strongroom login` kept, when nothing else is given.
            (None, None) => match super::login::saved_token(base.as_str().trim_end_matches('/')) {
                Some(token) => Credential::Bearer(token),
                None => Credential::None,
            },
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            // A watch stream gets a heartbeat every 15 s: silence this long
            // means a dead connection, which `watch` then opens again.
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("strongroom/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &args.ca_cert {
            for cert in read_ca_cert(path)? {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| CliError::Other(format!("cannot set up the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            credential,
        })
    }

    /// The server address as given, for messages.
    pub fn addr(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// A URL under the base: fixed segments, then the key's own segments
    /// (each percent-encoded as needed; valid keys need none).
    fn url(&self, segments: &[&str], key: Option<&SecretKey>) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("checked in new");
            path.pop_if_empty();
            path.extend(segments);
            if let Some(key) = key {
                path.extend(key.as_str().split('/'));
            }
        }
        url
    }

    /// Opens `GET /watch?prefix=` after event `after`, if given: the
    /// response streams events; `None` when the server no longer keeps the
    /// events after `after` (410).
    pub async fn open_watch(
        &self,
        prefix: &str,
        after: Option<u64>,
    ) -> Result<Option<reqwest::Response>, CliError> {
        let mut url = self.url(&["watch"], None);
        url.query_pairs_mut().append_pair("prefix", prefix);
        // The stream lasts as long as the watch: no overall timeout.
        let forever = Duration::from_secs(100 * 365 * 86_400);
        let mut request = self.authorize(self.http.get(url).timeout(forever))?;
        if let Some(id) = after {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        if status == StatusCode::GONE {
            return Ok(None);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(self.status_error(status, &body, "watch"))
    }

    /// `request` with the credential, marked sensitive.
    fn authorize(
        &self,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, CliError> {
        match &self.credential {
            Credential::None => {}
            Credential::ApiKey(k) => {
                let mut v = HeaderValue::from_str(k).map_err(|_| {
                    CliError::Usage("the API key contains characters a header cannot carry".into())
                })?;
                v.set_sensitive(true);
                request = request.header("X-Api-Key", v);
            }
            Credential::Bearer(t) => {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {}", t.as_str())).map_err(|_| {
                        CliError::Usage(
                            "the token contains characters a header cannot carry".into(),
                        )
                    })?;
                v.set_sensitive(true);
                request = request.header(AUTHORIZATION, v);
            }
        }
        Ok(request)
    }

    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<(HeaderMap, Zeroizing<Vec<u8>>), CliError> {
        let mut request = self.authorize(self.http.request(method, url))?;
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e))?;
        // Bodies may hold a value, so the copy kept is zeroized on drop.
        let body = Zeroizing::new(bytes.to_vec());
        if status.is_success() {
            return Ok((headers, body));
        }
        Err(self.status_error(status, &body, what))
    }

    fn transport_error(&self, e: &reqwest::Error) -> CliError {
        // The innermost cause says why (refused, DNS, TLS); reqwest's own
        // text would add the URL, which carries the key.
        let mut cause: &dyn std::error::Error = e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        if e.is_connect() || e.is_timeout() {
            CliError::Unreachable(format!(
                "cannot reach the server at {} ({cause}); check --addr/STRONGROOM_ADDR",
                self.addr()
            ))
        } else {
            CliError::Other(format!("request to {} failed: {cause}", self.addr()))
        }
    }

    fn status_error(&self, status: StatusCode, body: &[u8], what: &str) -> CliError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let text = match &parsed {
            Some(ErrorBody {
                error,
                detail: Some(d),
            }) => format!("{error}: {d}"),
            Some(ErrorBody { error, .. }) => error.clone(),
            None => status.canonical_reason().unwrap_or("error").to_lowercase(),
        };
        match status {
            StatusCode::NOT_FOUND => CliError::NotFound(format!("{what}: not found")),
            StatusCode::UNAUTHORIZED => CliError::Unauthorized(match self.credential {
                Credential::None => format!(
                    "unauthorized: no credential given; set STRONGROOM_API_KEY or \
                     STRONGROOM_TOKEN (or --api-key/--token) for {}",
                    self.addr()
                ),
                _ => format!(
                    "unauthorized: the server at {} refused the credential; check \
                     STRONGROOM_API_KEY or STRONGROOM_TOKEN (wrong, expired or revoked?)",
                    self.addr()
                ),
            }),
            StatusCode::FORBIDDEN => CliError::Forbidden(format!(
                "{what}: forbidden: the credential lacks the scope for this"
            )),
            _ => CliError::Other(format!(
                "{what}: the server answered {}: {text}",
                status.as_u16()
            )),
        }
    }

    /// `PUT /secrets`, lapsing after `ttl_seconds` if given; returns the
    /// new version when the server tells it.
    pub async fn put(
        &self,
        key: &SecretKey,
        value: &str,
        ttl_seconds: Option<u64>,
    ) -> Result<Option<u64>, CliError> {
        let mut body = serde_json::json!({ "key": key.as_str(), "value": value });
        if let Some(ttl) = ttl_seconds {
            body["ttl_seconds"] = ttl.into();
        }
        let what = format!("put {}", key.as_str());
        let (headers, _) = self
            .send(Method::PUT, self.url(&["secrets"], None), Some(body), &what)
            .await?;
        Ok(version_of(&headers))
    }

    /// `GET /secrets/{key}`.
    pub async fn get(&self, key: &SecretKey) -> Result<SecretValue, CliError> {
        let what = format!("get {}", key.as_str());
        let (headers, body) = self
            .send(Method::GET, self.url(&["secrets"], Some(key)), None, &what)
            .await?;
        let mut secret: SecretValue = serde_json::from_slice(&body)
            .map_err(|e| CliError::Other(format!("{what}: unexpected answer: {e}")))?;
        secret.version = version_of(&headers);
        Ok(secret)
    }

    /// A JSON request to `segments` (fixed path segments, each encoded),
    /// answered with JSON; `what` names it in errors.
    pub async fn json(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<serde_json::Value, CliError> {
        let (_, bytes) = self
            .send(method, self.url(segments, None), body, what)
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|_| CliError::Other(format!("{what}: the server's answer is not JSON")))
    }

    /// A POST that OAuth's polling answers: the JSON of a 200, or the
    /// `error` code of a 400 that carries only one (`authorization_pending`
    /// and the like).
    pub async fn poll_json(
        &self,
        segments: &[&str],
        body: serde_json::Value,
    ) -> Result<Result<serde_json::Value, String>, CliError> {
        let request = self
            .authorize(self.http.post(self.url(segments, None)))?
            .json(&body);
        let response = request.send().await.map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        let bytes = Zeroizing::new(
            response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?
                .to_vec(),
        );
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map(Ok)
                .map_err(|_| CliError::Other("login: the server's answer is not JSON".into()));
        }
        if status == StatusCode::BAD_REQUEST {
            if let Ok(ErrorBody {
                error,
                detail: None,
            }) = serde_json::from_slice::<ErrorBody>(&bytes)
            {
                return Ok(Err(error));
            }
        }
        Err(self.status_error(status, &bytes, "login"))
    }

    /// `DELETE /secrets/{key}` (a soft delete).
    pub async fn delete(&self, key: &SecretKey) -> Result<(), CliError> {
        let what = format!("rm {}", key.as_str());
        self.send(
            Method::DELETE,
            self.url(&["secrets"], Some(key)),
            None,
            &what,
        )
        .await?;
        Ok(())
    }

    /// `GET /metadata/{key}`.
    pub async fn metadata(&self, key: &SecretKey) -> Result<Metadata, CliError> {
        let what = format!("history {}", key.as_str());
        let (_, body) = self
            .send(Method::GET, self.url(&["metadata"], Some(key)), None, &what)
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| CliError::Other(format!("{what}: unexpected answer: {e}")))
    }

    /// Every key under `prefix` (that lapses before `expiring_before`, an
    /// RFC 3339 time, if given), following `next_cursor` page by page.
    pub async fn list_all(
        &self,
        prefix: &str,
        page_size: u32,
        expiring_before: Option<&str>,
    ) -> Result<Vec<Listed>, CliError> {
        check_prefix(prefix)?;
        let what = if prefix.is_empty() {
            "ls".to_owned()
        } else {
            format!("ls {prefix}")
        };
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = self.url(&["secrets"], None);
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("prefix", prefix);
                q.append_pair("limit", &page_size.to_string());
                if let Some(before) = expiring_before {
                    q.append_pair("expiring_before", before);
                }
                if let Some(c) = &cursor {
                    q.append_pair("cursor", c);
                }
            }
            let (_, body) = self.send(Method::GET, url, None, &what).await?;
            let page: ListPage = serde_json::from_slice(&body)
                .map_err(|e| CliError::Other(format!("{what}: unexpected answer: {e}")))?;
            all.extend(page.secrets);
            match page.next_cursor {
                // A cursor that does not move would loop for ever.
                Some(next) if cursor.as_deref() != Some(next.as_str()) => cursor = Some(next),
                _ => break,
            }
        }
        Ok(all)
    }
}

fn version_of(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(ETAG)?
        .to_str()
        .ok()?
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn read_ca_cert(path: &Path) -> Result<Vec<Certificate>, CliError> {
    let pem = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("cannot read --ca-cert {}: {e}", path.display())))?;
    let certs = Certificate::from_pem_bundle(&pem).map_err(|e| {
        CliError::Usage(format!(
            "--ca-cert {} is not a PEM certificate: {e}",
            path.display()
        ))
    })?;
    if certs.is_empty() {
        return Err(CliError::Usage(format!(
            "--ca-cert {} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Checks a key given on the command line, before any request.
pub fn parse_key(text: &str) -> Result<SecretKey, CliError> {
    SecretKey::parse(text).map_err(|e| CliError::Usage(format!("invalid key {text:?}: {e}")))
}

/// Checks a prefix given on the command line, before any request.
pub fn check_prefix(prefix: &str) -> Result<(), CliError> {
    if is_valid_key_prefix(prefix) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "invalid prefix {prefix:?}: it may only contain A-Z a-z 0-9 - _ = . / \
             and be at most 256 bytes"
        )))
    }
}

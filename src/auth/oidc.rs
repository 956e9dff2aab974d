//! A person's login at an identity provider, strongroom's side of the
//! OpenID Connect authorization code flow with PKCE (S256) and of the
//! device authorization grant (RFC 8628): the authorization URL, the code
//! and device-code exchanges at the token endpoint. The ID token that comes
//! back is checked like a workload's JWT (`workload::verify`), plus its
//! `nonce`. Written over reqwest and jsonwebtoken rather than an OpenID
//! client crate: those bring a second crypto stack (RustCrypto) beside
//! aws-lc-rs, and discovery and key handling are `providers.rs`'s already.

use base64::Engine as _;
use serde::Deserialize;

use super::providers::{Endpoints, Provider};
use super::workload::Refused;

/// The scopes asked for: an ID token, and what a role commonly binds.
const SCOPES: &str = "openid profile email";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The S256 challenge of a PKCE verifier (RFC 7636 4.2).
pub fn challenge(verifier: &str) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes()).as_ref())
}

/// Why an exchange with the provider failed: it refused (the caller's
/// login is refused), or it could not be reached (the login is not the
/// caller's fault: 503).
pub enum Failure {
    Refused(Refused),
    Unreachable(String),
}

impl From<Refused> for Failure {
    fn from(r: Refused) -> Self {
        Failure::Refused(r)
    }
}

/// The provider's endpoints and client id, or why it cannot log people in.
pub fn client(provider: &Provider) -> Result<(Endpoints, &str), Refused> {
    let client_id = provider.client_id.as_deref().ok_or_else(|| {
        Refused(
            "provider: the role's provider has no client_id: people cannot log in with it".into(),
        )
    })?;
    let endpoints = provider.endpoints().ok_or_else(|| {
        Refused("provider: the provider's discovery document has not been read".into())
    })?;
    Ok((endpoints, client_id))
}

/// The URL the person's browser opens at the provider.
pub fn authorization_url(
    provider: &Provider,
    redirect_uri: &str,
    state: &str,
    verifier: &str,
    nonce: &str,
) -> Result<String, Refused> {
    let (endpoints, client_id) = client(provider)?;
    let mut url = reqwest::Url::parse(&endpoints.authorization)
        .map_err(|_| Refused("provider: its authorization endpoint is not a URL".into()))?;
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", SCOPES)
        .append_pair("state", state)
        .append_pair("nonce", nonce)
        .append_pair("code_challenge", &challenge(verifier))
        .append_pair("code_challenge_method", "S256");
    Ok(url.into())
}

/// What a token endpoint answers, success or error (RFC 6749 5.1, 5.2).
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<zeroize::Zeroizing<String>>,
    error: Option<String>,
}

/// How a device-code poll ended at the provider.
pub enum Polled {
    IdToken(zeroize::Zeroizing<String>),
    /// `authorization_pending`, `slow_down`, `expired_token`,
    /// `access_denied`, or another error code the provider gave.
    Pending(String),
}

/// POSTs `form` to the token endpoint with the client's credentials
/// (client_secret_basic when there is a secret).
async fn token_request(provider: &Provider, form: &[(&str, &str)]) -> Result<TokenAnswer, Failure> {
    let (endpoints, client_id) = client(provider)?;
    let http = provider
        .http()
        .ok_or_else(|| Refused("provider: it was not found by discovery".into()))?;
    let request = with_client(http.post(&endpoints.token), provider, client_id, form);
    let response = request.send().await.map_err(|_| {
        Failure::Unreachable("the provider's token endpoint could not be reached".into())
    })?;
    let status = response.status();
    let answer: TokenAnswer = response.json().await.map_err(|_| {
        Failure::Unreachable(format!(
            "the provider's token endpoint answered {status} without JSON"
        ))
    })?;
    Ok(answer)
}

/// `request` with `form` as its body and the client's credentials:
/// client_secret_basic when there is a secret, else the id in the form.
fn with_client(
    request: reqwest::RequestBuilder,
    provider: &Provider,
    client_id: &str,
    form: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    match &provider.client_secret {
        Some(secret) => request
            .basic_auth(encode_form(client_id), Some(encode_form(secret)))
            .form(form),
        None => {
            let mut fields = form.to_vec();
            fields.push(("client_id", client_id));
            request.form(&fields)
        }
    }
}

/// RFC 6749 2.3.1: the client id and secret are form-encoded before Basic.
fn encode_form(text: &str) -> String {
    url_encode(text)
}

fn url_encode(text: &str) -> String {
    reqwest::Url::parse_with_params("x:", &[("v", text)])
        .map(|u| u.query().unwrap_or("").trim_start_matches("v=").to_owned())
        .unwrap_or_default()
}

/// Exchanges an authorization code (with its PKCE verifier) for the ID
/// token.
pub async fn exchange_code(
    provider: &Provider,
    code: &str,
    redirect_uri: &str,
    verifier: &str,
) -> Result<zeroize::Zeroizing<String>, Failure> {
    let answer = token_request(
        provider,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ],
    )
    .await?;
    match (answer.id_token, answer.error) {
        (Some(token), None) => Ok(token),
        (_, Some(error)) => Err(Failure::Refused(Refused(format!(
            "code: the provider refused the code ({})",
            safe_code(&error)
        )))),
        (None, None) => Err(Refused("code: the provider answered no ID token".into()).into()),
    }
}

/// An error code as the provider sent it, if it is one (RFC 6749 5.2's
/// alphabet), so nothing else it said reaches a detail or a log.
fn safe_code(code: &str) -> &str {
    let ok = code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if ok {
        code
    } else {
        "error"
    }
}

/// The device authorization the provider starts (RFC 8628 3.2).
#[derive(Deserialize)]
pub struct DeviceStart {
    pub device_code: zeroize::Zeroizing<String>,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: u64,
    pub interval: Option<u64>,
}

pub async fn start_device(provider: &Provider) -> Result<DeviceStart, Failure> {
    let (endpoints, client_id) = client(provider)?;
    let url = endpoints
        .device_authorization
        .ok_or_else(|| Refused("provider: it offers no device authorization endpoint".into()))?;
    let http = provider
        .http()
        .ok_or_else(|| Refused("provider: it was not found by discovery".into()))?;
    let request = with_client(http.post(url), provider, client_id, &[("scope", SCOPES)]);
    let response = request.send().await.map_err(|_| {
        Failure::Unreachable("the provider's device endpoint could not be reached".into())
    })?;
    if !response.status().is_success() {
        return Err(Failure::Unreachable(format!(
            "the provider's device endpoint answered {}",
            response.status().as_u16()
        )));
    }
    response.json().await.map_err(|_| {
        Failure::Unreachable("the provider's device endpoint answered without JSON".into())
    })
}

/// Polls the token endpoint once for a device code.
pub async fn poll_device(provider: &Provider, device_code: &str) -> Result<Polled, Failure> {
    let answer = token_request(
        provider,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
        ],
    )
    .await?;
    match (answer.id_token, answer.error) {
        (Some(token), None) => Ok(Polled::IdToken(token)),
        (_, Some(error)) => Ok(Polled::Pending(safe_code(&error).to_owned())),
        (None, None) => Err(Refused("code: the provider answered no ID token".into()).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_s256_challenge_is_rfc_7636s() {
        // RFC 7636 Appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn form_encoding_escapes_what_basic_auth_needs() {
        assert_eq!(url_encode("a b:c/d"), "a+b%3Ac%2Fd");
        assert_eq!(safe_code("invalid_grant"), "invalid_grant");
        assert_eq!(safe_code("x <script>"), "error");
    }
}

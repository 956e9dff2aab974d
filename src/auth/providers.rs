//! Identity providers, the operator's (`--oidc-providers FILE`): each a
//! name and an issuer whose signing keys come from a JWKS file or from the
//! issuer's discovery document, fetched at start and again when a token
//! names an unknown `kid` (at most once per `MIN_REFRESH`). A failed fetch
//! keeps the last good keys, and shows in `/readyz` and the metrics.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;

use super::jwks::{parse_provider_keys, VerifyKey};

/// Least time between two fetches of one provider's keys.
pub const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Keys fetched longer ago than this are fetched again at the next login,
/// so a key the provider withdrew stops verifying without an unknown `kid`
/// to prompt it.
pub const MAX_KEY_AGE: Duration = Duration::from_secs(600);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Discovery documents and key sets larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// One entry of the providers file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    issuer: String,
    client_id: Option<String>,
    client_secret_file: Option<PathBuf>,
    jwks_file: Option<PathBuf>,
    /// A PEM file of the CA that signed the issuer's certificate, trusted
    /// for this provider only (a private CA); the system roots otherwise.
    ca_file: Option<PathBuf>,
}

/// Where a provider's keys come from.
enum Source {
    File,
    Discovery(reqwest::Client),
}

#[derive(Default)]
struct Health {
    /// Why the last fetch failed, until one succeeds.
    error: Option<String>,
    failures: u64,
    /// When keys were last fetched or tried (`clock::now_ms`).
    last_try: Option<i64>,
    /// When keys were last fetched (`clock::now_ms`).
    last_success: Option<i64>,
}

/// Where people sign in, from the discovery document.
#[derive(Clone, Debug)]
pub struct Endpoints {
    pub authorization: String,
    pub token: String,
    pub device_authorization: Option<String>,
}

pub struct Provider {
    pub name: String,
    pub issuer: String,
    /// strongroom's client at the provider, for people's logins.
    pub client_id: Option<String>,
    pub client_secret: Option<zeroize::Zeroizing<String>>,
    endpoints: RwLock<Option<Endpoints>>,
    source: Source,
    keys: RwLock<Arc<Vec<VerifyKey>>>,
    health: Mutex<Health>,
    /// One fetch at a time: a burst of unknown `kid`s makes one request.
    fetching: tokio::sync::Mutex<()>,
}

/// Whether `url` is `https://`, or `http://` to a loopback address (a
/// provider on the same host, as in tests).
fn allowed_issuer(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Provider {
    fn from_entry(entry: Entry, dir: &Path) -> Result<Provider, String> {
        let name = entry.name;
        if !crate::store::identity::valid_name(&name) {
            return Err(format!(
                "provider name {name:?}: {}",
                crate::store::identity::NAME_RULE
            ));
        }
        if !allowed_issuer(&entry.issuer) {
            return Err(format!(
                "provider {name}: the issuer must be https:// (http:// only on a loopback address)"
            ));
        }
        let resolve = |p: PathBuf| if p.is_relative() { dir.join(p) } else { p };
        let (source, keys) = match entry.jwks_file.map(resolve) {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("provider {name}: cannot read {}: {e}", path.display()))?;
                let keys = parse_provider_keys(&text)
                    .map_err(|e| format!("provider {name}: {}: {e}", path.display()))?;
                (Source::File, keys)
            }
            None => {
                let mut builder = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(path) = entry.ca_file.map(resolve) {
                    let pem = std::fs::read(&path).map_err(|e| {
                        format!("provider {name}: cannot read {}: {e}", path.display())
                    })?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        format!("provider {name}: {} is not PEM: {e}", path.display())
                    })?;
                    builder = builder.tls_certs_only(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| format!("provider {name}: HTTP client: {e}"))?;
                (Source::Discovery(client), Vec::new())
            }
        };
        let client_secret = match entry.client_secret_file.map(resolve) {
            Some(path) => Some(zeroize::Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("provider {name}: cannot read {}: {e}", path.display()))?
                    .trim()
                    .to_owned(),
            )),
            None => None,
        };
        Ok(Provider {
            name,
            issuer: entry.issuer,
            client_id: entry.client_id,
            client_secret,
            endpoints: RwLock::new(None),
            source,
            keys: RwLock::new(Arc::new(keys)),
            health: Mutex::new(Health::default()),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    /// Where people sign in, once the discovery document was read.
    pub fn endpoints(&self) -> Option<Endpoints> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The HTTP client of a provider found by discovery.
    pub fn http(&self) -> Option<&reqwest::Client> {
        match &self.source {
            Source::Discovery(client) => Some(client),
            Source::File => None,
        }
    }

    /// The keys in use now.
    pub fn keys(&self) -> Arc<Vec<VerifyKey>> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Fetches the keys again when they are older than `MAX_KEY_AGE` (or
    /// were never fetched), within `refresh`'s rate: in the background
    /// while there are keys to go on with, so a provider that answers
    /// slowly or not at all never holds up a login its keys can verify.
    pub async fn refresh_if_stale(self: &Arc<Self>) {
        if !matches!(self.source, Source::Discovery(_)) {
            return;
        }
        let now = crate::clock::now_ms();
        let stale = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_success
            .is_none_or(|at| !(0..MAX_KEY_AGE.as_millis() as i64).contains(&(now - at)));
        if !stale {
            return;
        }
        if self.keys().is_empty() {
            self.refresh().await;
        } else if let Ok(_idle) = self.fetching.try_lock() {
            let provider = self.clone();
            tokio::spawn(async move { provider.refresh().await });
        }
    }

    /// Fetches the keys again unless the last try was within
    /// `MIN_REFRESH`; true when the key set was replaced.
    pub async fn refresh(&self) -> bool {
        let Source::Discovery(client) = &self.source else {
            return false;
        };
        let _one = self.fetching.lock().await;
        {
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            let now = crate::clock::now_ms();
            // A clock that went back allows a fetch rather than forbid one.
            let recent = |at: i64| (0..MIN_REFRESH.as_millis() as i64).contains(&(now - at));
            if health.last_try.is_some_and(recent) {
                return false;
            }
            health.last_try = Some(now);
        }
        let fetched = self.fetch(client).await;
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        // The rate counts from the attempt's end: a provider that answers
        // slowly is not asked again by every login queued behind it.
        health.last_try = Some(crate::clock::now_ms());
        match fetched {
            Ok(keys) => {
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
                health.error = None;
                health.last_success = Some(crate::clock::now_ms());
                true
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "fetching an identity provider's keys failed; keeping the last good ones");
                health.error = Some(e);
                health.failures += 1;
                false
            }
        }
    }

    async fn fetch(&self, client: &reqwest::Client) -> Result<Vec<VerifyKey>, String> {
        #[derive(Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
            authorization_endpoint: Option<String>,
            token_endpoint: Option<String>,
            device_authorization_endpoint: Option<String>,
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = serde_json::from_slice(&get(client, &url).await?)
            .map_err(|_| "the discovery document is not valid JSON with issuer and jwks_uri")?;
        // OpenID Connect Discovery 4.3: the document names its own issuer.
        if discovery.issuer != self.issuer {
            return Err("the discovery document names another issuer".into());
        }
        if !allowed_issuer(&discovery.jwks_uri) {
            return Err("the discovery document's jwks_uri is not https://".into());
        }
        let endpoint = |url: Option<String>| url.filter(|u| allowed_issuer(u));
        if let (Some(authorization), Some(token)) = (
            endpoint(discovery.authorization_endpoint),
            endpoint(discovery.token_endpoint),
        ) {
            *self.endpoints.write().unwrap_or_else(|p| p.into_inner()) = Some(Endpoints {
                authorization,
                token,
                device_authorization: endpoint(discovery.device_authorization_endpoint),
            });
        }
        let text = String::from_utf8(get(client, &discovery.jwks_uri).await?)
            .map_err(|_| "the key set is not UTF-8")?;
        if !text.trim_start().starts_with('{') {
            return Err("the key set is not a JWKS document".into());
        }
        parse_provider_keys(&text)
    }
}

/// GETs `url`; the error names what failed, never a credential (the URLs
/// are the operator's public ones).
async fn get(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = client.get(url).send().await.map_err(|e| {
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        format!("GET {url}: {cause}")
    })?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: status {}", response.status().as_u16()));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    Ok(bytes.to_vec())
}

/// Every configured provider.
#[derive(Default)]
pub struct Providers {
    list: Vec<Arc<Provider>>,
}

impl Providers {
    /// Reads the providers file (a JSON list) and fetches each provider's
    /// keys; a provider that cannot be fetched now starts without keys and
    /// is tried again on its first login.
    pub async fn load(path: &Path) -> Result<Providers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the providers file {}: {e}", path.display()))?;
        let entries: Vec<Entry> = serde_json::from_str(&text)
            .map_err(|e| format!("the providers file {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut list: Vec<Arc<Provider>> = Vec::new();
        for entry in entries {
            let provider = Provider::from_entry(entry, dir)?;
            if list.iter().any(|p| p.name == provider.name) {
                return Err(format!("provider {} is named twice", provider.name));
            }
            list.push(Arc::new(provider));
        }
        for provider in &list {
            provider.refresh().await;
        }
        Ok(Providers { list })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.list.iter().find(|p| p.name == name)
    }

    /// A readiness warning per provider whose last fetch failed.
    pub fn warnings(&self) -> Vec<String> {
        self.list
            .iter()
            .filter_map(|p| {
                let health = p.health.lock().unwrap_or_else(|e| e.into_inner());
                let error = health.error.as_ref()?;
                Some(format!(
                    "identity provider {}: fetching its keys failed ({error}); {} keys in use",
                    p.name,
                    p.keys().len()
                ))
            })
            .collect()
    }

    /// The providers' lines of `/metrics`.
    pub fn render_metrics(&self, out: &mut String) {
        if self.list.is_empty() {
            return;
        }
        out.push_str("# HELP strongroom_oidc_key_fetch_failures_total Failed fetches of an identity provider's keys.\n");
        out.push_str("# TYPE strongroom_oidc_key_fetch_failures_total counter\n");
        for p in &self.list {
            let failures = p.health.lock().unwrap_or_else(|e| e.into_inner()).failures;
            let _ = writeln!(
                out,
                "strongroom_oidc_key_fetch_failures_total{{provider=\"{}\"}} {failures}",
                p.name
            );
        }
        out.push_str("# HELP strongroom_oidc_keys_stale 1 while an identity provider's last key fetch failed.\n");
        out.push_str("# TYPE strongroom_oidc_keys_stale gauge\n");
        for p in &self.list {
            let stale = p
                .health
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .error
                .is_some();
            let _ = writeln!(
                out,
                "strongroom_oidc_keys_stale{{provider=\"{}\"}} {}",
                p.name,
                u8::from(stale)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_loopback() {
        for good in [
            "https://token.actions.githubusercontent.com",
            "http://127.0.0.1:9000",
            "http://localhost:8080/realms/x",
            "http://[::1]:1",
        ] {
            assert!(allowed_issuer(good), "{good}");
        }
        for bad in [
            "http://example.com",
            "http://10.0.0.1",
            "ftp://x",
            "http://127.0.0.1.evil.com",
            "http://localhost.evil.com",
        ] {
            assert!(!allowed_issuer(bad), "{bad}");
        }
    }
}

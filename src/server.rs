//! Start-up and the serve loop: opens the store, binds the master key to it,
//! prepares authentication, issues the bootstrap key, and serves HTTP until
//! the shutdown future resolves, draining in-flight requests.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;

use crate::api::{self, AppState, Ready};
use crate::auth::jwt::JwtVerifier;
use crate::auth::providers::Providers;
use crate::auth::{apikeys, Authenticator, Scope};
use crate::config::Settings;
use crate::crypto::keyring::KeyringError;
use crate::crypto::master::MasterKeyOrigin;
use crate::crypto::{CryptoError, Keyring, MasterKey};
use crate::http::tls::Tls;
use crate::ops::{Limits, Ops};
use crate::store::records::Kind;
use crate::store::{Store, StoreError, Trail};
use crate::types::TenantId;

/// Why the server could not start; printed as one line before exiting 1.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Config(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
}

impl From<KeyringError> for StartError {
    fn from(e: KeyringError) -> Self {
        match e {
            KeyringError::Store(e) => e.into(),
            KeyringError::Crypto(e) => e.into(),
        }
    }
}

/// A server ready to run: listener bound; state built, or being built in
/// the background until the store answers.
pub struct Application {
    pub listener: TcpListener,
    pub ready: Ready,
    pub store: Store,
    /// The bootstrap admin key, when this start created one.
    pub bootstrap_key: Option<zeroize::Zeroizing<String>>,
    pub tls: Option<Arc<Tls>>,
}

/// What start-up needs once the store answers. `finish` may be retried
/// while the store is still coming up.
struct Init {
    store: Store,
    keyring: Option<Keyring>,
    trail: Trail,
    jwt: Option<JwtVerifier>,
    providers: Option<Providers>,
    limits: Limits,
    restart_chain: bool,
    /// The data dir of a key generated for a shared store, pending until
    /// the store takes it (`bind`).
    pending_key: Option<std::path::PathBuf>,
    data_dir: std::path::PathBuf,
    vault_mount: String,
}

type Started = (Arc<AppState>, Option<zeroize::Zeroizing<String>>);

impl Init {
    /// Binds the master key to the store, issues the bootstrap key when the
    /// store is new, and builds the state.
    async fn finish(&mut self) -> Result<Started, StartError> {
        let keyring = self.keyring.as_ref().expect("finish succeeds once");
        let bound = keyring.bind().await;
        if let Some(dir) = &self.pending_key {
            match &bound {
                Ok(()) => MasterKey::confirm_pending(dir)?,
                Err(KeyringError::Crypto(CryptoError::WrongMasterKey)) => {
                    MasterKey::discard_pending(dir)
                }
                Err(_) => {}
            }
        }
        bound?;
        self.pending_key = None;
        let audit_key = keyring.audit_key(true).await?.expect("created when absent");
        crate::audit::start::start(&self.trail, &self.store, audit_key, self.restart_chain)
            .await
            .map_err(|e| match e {
                crate::audit::start::StartError::Store(e) => StartError::Store(e),
                crate::audit::start::StartError::Refused(why) => StartError::Config(why),
            })?;
        let bootstrap_key = if self.jwt.is_none() && !self.store.apikeys_exist().await? {
            let mut scopes = Scope::all_secrets();
            scopes.push(Scope::parse("apikeys:admin").map_err(StartError::Config)?);
            scopes.push(Scope::parse("audit:read").map_err(StartError::Config)?);
            scopes.push(Scope::parse("keys:admin").map_err(StartError::Config)?);
            scopes.push(Scope::parse("auth:admin").map_err(StartError::Config)?);
            let tenant = TenantId::parse("default").expect("valid tenant");
            let key = apikeys::create(
                &self.store,
                tenant,
                apikeys::KeySpec {
                    name: "bootstrap".into(),
                    scopes,
                    policies: Vec::new(),
                    lifetime_days: None,
                },
                None,
                None,
            )
            .await?;
            Some(key.text)
        } else {
            None
        };
        let ops = Ops::new(
            self.store.clone(),
            self.trail.clone(),
            self.keyring.take().expect("finish succeeds once"),
            Authenticator::new(
                self.store.clone(),
                self.jwt.take(),
                self.providers.take().unwrap_or_default(),
            ),
            self.limits,
        );
        let state = Arc::new(AppState {
            ops,
            data_dir: self.data_dir.clone(),
            readiness: Default::default(),
            vault_mount: self.vault_mount.clone(),
        });
        Ok((state, bootstrap_key))
    }
}

/// True for a start-up failure that a store still coming up explains.
fn transient(e: &StartError) -> bool {
    matches!(e, StartError::Store(StoreError::Unavailable(_)))
}

/// Prints the bootstrap key once, straight to stderr, never through the
/// logger.
pub fn print_bootstrap_key(key: &str) {
    eprintln!(
        "\nstrongroom: created the bootstrap admin API key for tenant 'default'.\n\
         It is shown only this once; store it now:\n\n{key}\n"
    );
}

/// How long start-up waits for the store before serving 503 meanwhile.
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

impl Application {
    pub async fn build(settings: &Settings) -> Result<Application, StartError> {
        check_limits(&settings.limits)?;
        let vault_mount =
            crate::vault::parse_mount(&settings.vault_mount).map_err(StartError::Config)?;
        // Before anything is written to the data dir.
        let tls = Tls::from_flags(
            settings.tls.cert.as_deref(),
            settings.tls.key.as_deref(),
            settings.tls.client_ca.as_deref(),
        )
        .map_err(StartError::Config)?
        .map(Arc::new);
        let jwt = JwtVerifier::from_config(&settings.jwt)
            .await
            .map_err(StartError::Config)?;
        let providers = match &settings.oidc_providers {
            Some(path) => Providers::load(path).await.map_err(StartError::Config)?,
            None => Providers::default(),
        };
        // A master key is generated only for a new store: over an existing
        // one it could never match, and writing it would leave a wrong key
        // beside the data. The embedded store is new when its file is
        // absent; a shared one says so when `bind` records the key, so
        // there the key is written only after that.
        let data_dir = &settings.store.data_dir;
        let nats = settings.store.engine == crate::store::Engine::Nats;
        let given = settings.master.key.is_some()
            || settings.master.file.is_some()
            || data_dir.join("master.key").exists();
        let (master, origin, pending) = if nats && !given {
            let (master, path) = MasterKey::pending(data_dir)?;
            (master, MasterKeyOrigin::Generated(path), true)
        } else {
            // Here a key is given, or the store is the embedded one.
            let generate = !given
                && !crate::store::sqlite::bound_to_a_master_key(&data_dir.join("strongroom.db"))?;
            let (master, origin) = MasterKey::load(
                settings.master.key.as_deref().map(String::as_str),
                settings.master.file.as_deref(),
                data_dir,
                generate,
            )?;
            (master, origin, false)
        };
        // Only now, with every check passed, is anything written.
        crate::fsutil::create_private_dir(data_dir).map_err(|e| {
            StartError::Config(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        if let MasterKeyOrigin::Generated(path) | MasterKeyOrigin::DefaultFile(path) = &origin {
            tracing::warn!(
                path = %path.display(),
                "using a master key stored beside the data; in production set STRONGROOM_MASTER_KEY or STRONGROOM_MASTER_KEY_FILE and keep it elsewhere"
            );
        }
        let opened = Store::open_with_trail(&settings.store).await?;
        let store = opened.store;
        let listener = TcpListener::bind(&settings.listen)
            .await
            .map_err(|source| StartError::Listen {
                addr: settings.listen.clone(),
                source,
            })?;
        let mut init = Init {
            store: store.clone(),
            keyring: Some(match settings.dek_max_seals {
                Some(max) => Keyring::new(master, store.clone()).with_max_seals(max),
                None => Keyring::new(master, store.clone()),
            }),
            trail: opened.trail,
            jwt,
            providers: Some(providers),
            limits: settings.limits,
            restart_chain: settings.audit_restart_chain,
            pending_key: pending.then(|| data_dir.clone()),
            data_dir: data_dir.clone(),
            vault_mount,
        };
        let ready: Ready = Arc::new(OnceLock::new());
        let first = match tokio::time::timeout(STORE_GRACE, store.ping()).await {
            Ok(Ok(())) => Some(init.finish().await),
            _ => None,
        };
        let bootstrap_key = match first {
            Some(Ok((state, key))) => {
                let _ = ready.set(state);
                key
            }
            Some(Err(e)) if !transient(&e) => return Err(e),
            _ => {
                // Serve (503) now; finish start-up when the store answers.
                // A start-up error then (a wrong master key, say) ends the
                // process as it would have at once.
                tracing::warn!("store unavailable; answering 503 until it is reachable");
                let slot = ready.clone();
                tokio::spawn(async move {
                    loop {
                        wait_for_store(&init.store).await;
                        match init.finish().await {
                            Ok((state, key)) => {
                                if let Some(key) = key {
                                    print_bootstrap_key(&key);
                                }
                                let _ = slot.set(state);
                                tracing::info!("store is reachable; serving");
                                return;
                            }
                            Err(e) if transient(&e) => {
                                tracing::warn!(error = %e, "start-up not finished; retrying");
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                            }
                            Err(e) => {
                                eprintln!("strongroom: error: {e}");
                                std::process::exit(1);
                            }
                        }
                    }
                });
                None
            }
        };
        Ok(Application {
            listener,
            ready,
            store,
            bootstrap_key,
            tls,
        })
    }
}

/// A NATS store opens while NATS is down; the start-up steps that follow
/// need it, so wait (logging, never failing) until it answers. The embedded
/// store answers at once.
async fn wait_for_store(store: &Store) {
    let mut delay = std::time::Duration::from_millis(100);
    let mut waited = std::time::Duration::ZERO;
    let mut last_log: Option<std::time::Duration> = None;
    loop {
        match store.ping().await {
            Ok(()) => {
                if last_log.is_some() {
                    tracing::info!("store is reachable; starting");
                }
                return;
            }
            Err(e) => {
                if last_log.is_none_or(|at| waited >= at + std::time::Duration::from_secs(10)) {
                    tracing::warn!(error = %e, waited_ms = waited.as_millis() as u64, "store unavailable; waiting for it before starting");
                    last_log = Some(waited);
                }
            }
        }
        tokio::time::sleep(delay).await;
        waited += delay;
        delay = (delay * 2).min(std::time::Duration::from_secs(1));
    }
}

fn check_limits(limits: &Limits) -> Result<(), StartError> {
    if limits.max_value_bytes == 0 || limits.max_value_bytes > limits.max_request_bytes {
        return Err(StartError::Config(
            "max-value-bytes must be between 1 and max-request-bytes".into(),
        ));
    }
    Ok(())
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops
/// accepting and waits for in-flight requests to finish.
pub async fn run(
    listener: TcpListener,
    ready: Ready,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: crate::http::Settings,
) -> std::io::Result<()> {
    let background = tokio::spawn({
        let ready = ready.clone();
        async move {
            let state = loop {
                match ready.get() {
                    Some(state) => break state.clone(),
                    None => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                }
            };
            // With a shared store another gateway may revoke a key or a
            // token, or change a policy or role: act on it here at once
            // rather than when the cache entry lapses.
            if let Some(mut changes) = state.ops.store.watch_record_changes() {
                let state = state.clone();
                tokio::spawn(async move {
                    while let Some((kind, id)) = changes.recv().await {
                        let auth = &state.ops.auth;
                        match kind {
                            Kind::ApiKey => auth.forget_api_key(&id),
                            Kind::Token => auth.forget_token(&id),
                            _ => auth.identity_changed(),
                        }
                    }
                });
            }
            // API-key last-use times are coalesced in memory and written
            // every ten seconds, not once per request; refusals of the
            // failed-authentication limit are summarised every second.
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            tick.tick().await;
            for second in 1u64.. {
                tick.tick().await;
                state.ops.summarise_throttled().await;
                if second % 10 == 0 {
                    state.ops.auth.flush_last_used().await;
                }
            }
        }
    });
    // Started: the full router. Still waiting for the store: the gate in
    // front of it, which adds a second routing step to every request.
    let app = match ready.get() {
        Some(state) => api::router(state.clone()),
        None => api::gated_router(ready.clone()),
    };
    // Watchers' streams never end by themselves: end them as shutdown
    // begins, so it does not wait out the grace period for them.
    let shutdown = async move {
        shutdown.await;
        crate::ops::watch::close_all();
    };
    let served = crate::http::serve(listener, app, shutdown, settings).await;
    background.abort();
    if let Some(state) = ready.get() {
        state.ops.summarise_throttled().await;
        state.ops.auth.flush_last_used().await;
        state.ops.trail.flush();
    }
    served
}

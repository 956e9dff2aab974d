//! The NATS connection and the KV buckets. The client connects in the
//! background: `connect` never fails because NATS is down; operations answer
//! `Unavailable` until it is reachable, and the buckets are created (or
//! found) on first use.

use std::time::Duration;

use async_nats::jetstream::context::KeyValueErrorKind;
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use async_nats::jetstream::{self, kv};
use async_nats::ServerAddr;
use tokio::sync::OnceCell;

use super::{unavailable, NatsSettings, REQUEST_TIMEOUT};
use crate::store::StoreError;

/// How long `connect` waits for the first connection before going on without.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);
/// How long the tokens bucket keeps a message: a token lives at most 24 h.
const TOKEN_MAX_AGE: Duration = Duration::from_secs(25 * 3600);
/// How long the logins bucket keeps a message: a login's state lives 5 min.
const LOGIN_STATE_MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Upper bound of the reconnect back-off.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

pub(super) struct Buckets {
    pub secrets: kv::Store,
    pub deks: kv::Store,
    pub apikeys: kv::Store,
    pub meta: kv::Store,
    pub policies: kv::Store,
    pub roles: kv::Store,
    /// Tokens live at most a day: the bucket forgets every message (a
    /// token, a delete marker) after `TOKEN_MAX_AGE`, so it cannot grow
    /// without bound whatever the sweep misses.
    pub tokens: kv::Store,
    /// People's logins in progress (minutes long): forgotten after
    /// `LOGIN_STATE_MAX_AGE` whatever the sweep does.
    pub login_states: kv::Store,
    /// The change stream's events (`events.rs`).
    pub events: stream::Stream,
}

/// The connection and the buckets found on it.
pub(super) struct Connection {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    settings: NatsSettings,
    buckets: OnceCell<Buckets>,
}

fn valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Connection {
    /// Starts connecting in the background and returns at once (after a
    /// short wait for the first connection); fails only on a bad
    /// configuration.
    pub async fn connect(settings: NatsSettings) -> Result<Connection, StoreError> {
        let config = |m: &str| StoreError::Unavailable(format!("nats store configuration: {m}"));
        for name in [
            "",
            "_deks",
            "_apikeys",
            "_meta",
            "_audit",
            "_events",
            "_policies",
            "_roles",
            "_tokens",
            "_logins",
        ] {
            if !valid_bucket_name(&format!("{}{name}", settings.bucket)) {
                return Err(config("the bucket name may only contain A-Z a-z 0-9 - _"));
            }
        }
        if !(1..=64).contains(&settings.max_versions) {
            return Err(config("max versions must be 1 to 64"));
        }
        let addrs = settings
            .url
            .split(',')
            .map(|u| u.trim().parse::<ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            // The URL may hold credentials: never echo it.
            .map_err(|_| config("the NATS URL is not valid"))?;
        if addrs.is_empty() {
            return Err(config("no NATS URL"));
        }
        let options = async_nats::ConnectOptions::new()
            .name("strongroom")
            .retry_on_initial_connect()
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .reconnect_delay_callback(|attempts| {
                let millis = 50u64.saturating_mul(1 << attempts.min(10));
                Duration::from_millis(millis).min(MAX_RECONNECT_DELAY)
            });
        let client = async_nats::connect_with_options(addrs, options)
            .await
            .map_err(|e| unavailable("connect", e))?;
        let deadline = tokio::time::Instant::now() + FIRST_CONNECT_WAIT;
        while !is_connected(&client) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !is_connected(&client) {
            tracing::warn!("NATS is not reachable yet; the store answers unavailable until it is");
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        Ok(Connection {
            client,
            js,
            settings,
            buckets: OnceCell::new(),
        })
    }

    pub fn connected(&self) -> Result<(), StoreError> {
        if is_connected(&self.client) {
            Ok(())
        } else {
            Err(StoreError::Unavailable("not connected to NATS".into()))
        }
    }

    /// The buckets, created or found on first use while connected.
    pub async fn buckets(&self) -> Result<&Buckets, StoreError> {
        self.connected()?;
        self.buckets
            .get_or_try_init(|| async {
                let base = &self.settings.bucket;
                Ok(Buckets {
                    secrets: self
                        .bucket(base.clone(), secrets_history(self.settings.max_versions))
                        .await?,
                    deks: self.bucket(format!("{base}_deks"), 1).await?,
                    apikeys: self.bucket(format!("{base}_apikeys"), 1).await?,
                    meta: self.bucket(format!("{base}_meta"), 1).await?,
                    policies: self.bucket(format!("{base}_policies"), 1).await?,
                    roles: self.bucket(format!("{base}_roles"), 1).await?,
                    tokens: self
                        .bucket_aged(format!("{base}_tokens"), 1, TOKEN_MAX_AGE)
                        .await?,
                    login_states: self
                        .bucket_aged(format!("{base}_logins"), 1, LOGIN_STATE_MAX_AGE)
                        .await?,
                    events: self.events_stream().await?,
                })
            })
            .await
    }

    /// Finds or creates the events stream, which keeps the window.
    async fn events_stream(&self) -> Result<stream::Stream, StoreError> {
        let name = format!("{}_events", self.settings.bucket);
        let window = self.settings.events;
        let config = stream::Config {
            name: name.clone(),
            description: Some("strongroom change stream".into()),
            subjects: vec![format!("{name}.>")],
            max_messages: i64::try_from(window.keep).unwrap_or(i64::MAX),
            max_age: Duration::from_millis(window.max_age_ms.max(1) as u64),
            storage: StorageType::File,
            num_replicas: self.settings.replicas.max(1),
            allow_direct: true,
            discard: DiscardPolicy::Old,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| unavailable("open events stream", e))
    }

    /// Finds or creates a bucket. The stream is created directly rather than
    /// through `create_key_value`, whose account-info step does not parse
    /// the answer of a 2.9 server; the configuration is the KV one.
    async fn bucket(&self, name: String, history: i64) -> Result<kv::Store, StoreError> {
        self.bucket_aged(name, history, Duration::ZERO).await
    }

    /// `bucket`, whose messages the server removes after `max_age` (zero:
    /// never).
    async fn bucket_aged(
        &self,
        name: String,
        history: i64,
        max_age: Duration,
    ) -> Result<kv::Store, StoreError> {
        let config = stream::Config {
            max_age,
            name: format!("KV_{name}"),
            description: Some("strongroom".into()),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: history,
            max_bytes: -1,
            max_message_size: -1,
            storage: StorageType::File,
            num_replicas: self.settings.replicas.max(1),
            allow_rollup: true,
            // A destroyed version's messages are erased (`secrets::erase`);
            // JetStream cannot change this on a bucket made before.
            deny_delete: false,
            deny_purge: false,
            allow_direct: true,
            discard: DiscardPolicy::New,
            ..Default::default()
        };
        match self.js.get_key_value(name.clone()).await {
            Ok(store) => {
                let have = store.stream.cached_info().config.max_messages_per_subject;
                if have == history {
                    return Ok(store);
                }
                // The history is what prunes old versions: follow the
                // configured max_versions.
                let mut updated = store.stream.cached_info().config.clone();
                updated.max_messages_per_subject = history;
                self.js
                    .update_stream(updated)
                    .await
                    .map_err(|e| unavailable("update bucket", e))?;
            }
            Err(e) if e.kind() == KeyValueErrorKind::InvalidStoreName => {
                return Err(unavailable("open bucket", e))
            }
            Err(_) => {
                // Another gateway may create it at the same time; creating
                // an identical stream twice succeeds.
                self.js
                    .create_stream(config)
                    .await
                    .map_err(|e| unavailable("create bucket", e))?;
            }
        }
        self.js
            .get_key_value(name)
            .await
            .map_err(|e| unavailable("open bucket", e))
    }
}

/// Messages a key keeps: one a retained version, and one more, so a
/// message that restates the current version (a delete marker, a settings
/// or per-version change) never pushes out a retained version before it
/// erases the message it replaces; the model's floor hides the extra.
pub(super) fn secrets_history(max_versions: u32) -> i64 {
    i64::from(max_versions) + 1
}

pub(super) fn is_connected(client: &async_nats::Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

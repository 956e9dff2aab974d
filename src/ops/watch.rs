//! Watch: every change under a prefix in commit order (key, version,
//! action, time, with the event's id; never a value). Resuming after an id
//! gives the kept events after it first, then the live feed, with nothing
//! repeated; `Gone` when some of them are no longer kept. A watcher that
//! falls too far behind the live feed is dropped (it resumes by id), so an
//! idle or stuck client never grows memory; all watchers end when the
//! server stops, and a watcher whose credential stops working is ended
//! within `RECHECK`.

use std::collections::VecDeque;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

use super::{Call, OpError, Ops};
use crate::auth::{Action, Authenticator, Credential, Principal};
use crate::store::events::Event;
use crate::store::{Store, StoreError};
use crate::types::TenantId;

/// Kept events read per store query while a watcher catches up.
const PAGE: usize = 500;

/// How often a watcher's credential is checked again: a revoked or expired
/// key (or token) stops receiving changes within this.
const RECHECK: Duration = Duration::from_secs(5);

/// How often an idle stream sends a heartbeat, so proxies keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The watcher's credential, kept to check again (`RECHECK`).
enum Held {
    ApiKey(Zeroizing<String>),
    Bearer(Zeroizing<String>),
}

impl Held {
    fn of(credential: Credential<'_>) -> Held {
        match credential {
            Credential::ApiKey(text) => Held::ApiKey(Zeroizing::new(text.to_owned())),
            Credential::Bearer(text) => Held::Bearer(Zeroizing::new(text.to_owned())),
        }
    }

    fn credential(&self) -> Credential<'_> {
        match self {
            Held::ApiKey(text) => Credential::ApiKey(text),
            Held::Bearer(text) => Credential::Bearer(text),
        }
    }
}

/// Set once the server stops: every watcher's stream then ends, so the
/// graceful shutdown does not wait for them.
static CLOSING: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::channel(false).0);

/// Ends every watcher's stream (at shutdown).
pub fn close_all() {
    CLOSING.send_replace(true);
}

/// An open watch: `next` gives its events.
pub struct Watch {
    auth: Arc<Authenticator>,
    credential: Held,
    recheck: tokio::time::Interval,
    store: Store,
    tenant: TenantId,
    prefix: String,
    /// The id of the last event given; later live events only.
    last: u64,
    /// Kept events not yet given, and whether more may be kept beyond them.
    pending: VecDeque<Event>,
    catching_up: bool,
    live: broadcast::Receiver<Arc<Event>>,
    closing: watch::Receiver<bool>,
}

impl Ops {
    /// Opens a watch of `prefix` for `principal`, whose `credential` is
    /// checked again as the watch goes on; resumes after the event id
    /// `after` when given.
    pub async fn watch(
        &self,
        call: &Call,
        principal: &Principal,
        credential: Credential<'_>,
        prefix: String,
        after: Option<u64>,
    ) -> Result<Watch, OpError> {
        let outcome = self
            .open_watch(principal, Held::of(credential), prefix, after)
            .await;
        self.settle(call, outcome).await
    }

    async fn open_watch(
        &self,
        principal: &Principal,
        credential: Held,
        prefix: String,
        after: Option<u64>,
    ) -> Result<Watch, OpError> {
        if !principal.allows(Action::List, &prefix) {
            return Err(OpError::Forbidden);
        }
        // Subscribed before the kept events are read, so none committed in
        // between is missed; ids already given are skipped.
        let live = self.store.subscribe();
        let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = Watch {
            auth: self.auth.clone(),
            credential,
            recheck,
            store: self.store.clone(),
            tenant: principal.tenant.clone(),
            prefix,
            last: after.unwrap_or(0),
            pending: VecDeque::new(),
            catching_up: false,
            live,
            closing: CLOSING.subscribe(),
        };
        if let Some(after) = after {
            // The first page here, so a resume from before the window is
            // refused rather than a stream that ends at once.
            let page = self
                .store
                .events_after(&watch.tenant, &watch.prefix, after, PAGE)
                .await
                .map_err(|e| match e {
                    StoreError::Gone => OpError::Gone,
                    other => other.into(),
                })?;
            watch.catching_up = page.len() == PAGE;
            watch.pending.extend(page);
        }
        Ok(watch)
    }
}

impl Watch {
    /// The next event; `None` ends the watch (a lagging watcher, a store
    /// that failed, a credential no longer valid, or the server stopping).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.last = event.id;
                return Some(event);
            }
            if self.catching_up {
                let page = self
                    .store
                    .events_after(&self.tenant, &self.prefix, self.last, PAGE)
                    .await
                    .ok()?;
                self.catching_up = page.len() == PAGE;
                self.pending.extend(page);
                continue;
            }
            let received = tokio::select! {
                received = self.live.recv() => Some(received),
                _ = self.closing.wait_for(|closing| *closing) => return None,
                _ = self.recheck.tick() => None,
            };
            let Some(received) = received else {
                let still = self.auth.authenticate(self.credential.credential()).await;
                if still.is_err() {
                    return None;
                }
                continue;
            };
            let event = received.ok()?;
            let mine = event.tenant == self.tenant && event.key.starts_with(&self.prefix);
            if mine && event.id > self.last {
                self.pending.push_back((*event).clone());
            }
        }
    }
}

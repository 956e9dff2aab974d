//! `GET /watch?prefix=P`: Server-Sent Events of every change under P in
//! commit order (`{"key","version","action","at"}` with the event's id,
//! never a value). `Last-Event-ID` or `?after=` resumes after an id: the
//! kept events after it first, then the live feed, with nothing repeated;
//! 410 when some of them are no longer kept. A watcher that falls too far
//! behind the live feed is dropped (it resumes by id), so an idle or stuck
//! client never grows memory; all watchers end when the server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, watch};
use zeroize::Zeroizing;

use super::access::Caller;
use super::error::{ApiError, Op};
use super::{request, AppState};
use crate::auth::{Action, Credential};
use crate::clock::rfc3339;
use crate::store::events::Event;
use crate::store::{Store, StoreError};
use crate::types::TenantId;

/// Kept events read per store query while a watcher catches up.
const PAGE: usize = 500;

/// How often a watcher's credential is checked again: a revoked or expired
/// key (or token) stops receiving changes within this.
const RECHECK: Duration = Duration::from_secs(5);

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

/// Where a watcher stands.
struct Watcher {
    app: Arc<AppState>,
    credential: Held,
    recheck: tokio::time::Interval,
    store: Store,
    tenant: TenantId,
    prefix: String,
    /// The id of the last event sent; later live events only.
    last: u64,
    /// Kept events not yet sent, and whether more may be kept beyond them.
    pending: VecDeque<Event>,
    catching_up: bool,
    live: broadcast::Receiver<Arc<Event>>,
    closing: watch::Receiver<bool>,
}

impl Watcher {
    /// The next event to send; `None` ends the stream (a lagging watcher, a
    /// store that failed, or the server stopping).
    async fn next(&mut self) -> Option<Event> {
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
                let still = self
                    .app
                    .auth
                    .authenticate(self.credential.credential())
                    .await;
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

fn sse(event: &Event) -> SseEvent {
    let data = serde_json::json!({
        "key": event.key,
        "version": event.version,
        "action": event.action,
        "at": rfc3339(event.at),
    });
    SseEvent::default()
        .id(event.id.to_string())
        .data(data.to_string())
}

/// The id to resume after: `Last-Event-ID` (what a reconnecting
/// `EventSource` sends) or `?after=`.
fn resume_after(headers: &HeaderMap, query: &request::ListQuery) -> Result<Option<u64>, ApiError> {
    let given = match headers.get("last-event-id") {
        Some(value) => Some(value.to_str().unwrap_or("x").trim().to_owned()),
        None => query.get("after").map(str::to_owned),
    };
    given
        .map(|text| {
            text.parse::<u64>().map_err(|_| {
                ApiError::bad(
                    Op::Other,
                    "Last-Event-ID and after must be an event id (a whole number)",
                )
            })
        })
        .transpose()
}

pub async fn watch(
    State(app): State<Arc<AppState>>,
    Caller { principal, .. }: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    // The extractor authenticated this credential; it is checked again as
    // the stream goes on.
    let credential =
        Held::of(super::access::credential(&headers).map_err(|_| ApiError::Unauthorized)?);
    let query = request::ListQuery::parse(uri.query())?;
    let prefix = query.prefix()?.to_owned();
    let after = resume_after(&headers, &query)?;
    if !principal.allows(Action::List, &prefix) {
        return Err(ApiError::Forbidden);
    }
    // Subscribed before the kept events are read, so none committed in
    // between is missed; ids already sent are skipped.
    let live = app.store.subscribe();
    let mut recheck = tokio::time::interval_at(tokio::time::Instant::now() + RECHECK, RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watcher = Watcher {
        app: app.clone(),
        credential,
        recheck,
        store: app.store.clone(),
        tenant: principal.tenant.clone(),
        prefix,
        last: after.unwrap_or(0),
        pending: VecDeque::new(),
        catching_up: false,
        live,
        closing: CLOSING.subscribe(),
    };
    if let Some(after) = after {
        // The first page here, so a resume from before the window answers
        // 410 rather than a stream that ends at once.
        let page = app
            .store
            .events_after(&watcher.tenant, &watcher.prefix, after, PAGE)
            .await
            .map_err(|e| match e {
                StoreError::Gone => ApiError::Gone,
                other => other.into(),
            })?;
        watcher.catching_up = page.len() == PAGE;
        watcher.pending.extend(page);
    }
    let stream = futures_util::stream::unfold(watcher, |mut watcher| async move {
        let event = watcher.next().await?;
        Some((Ok::<_, Infallible>(sse(&event)), watcher))
    });
    let keep_alive = KeepAlive::new()
        .interval(app.limits.watch_heartbeat)
        .text("heartbeat");
    let mut response = Sse::new(stream).keep_alive(keep_alive).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// How often an idle stream sends a comment, so proxies keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

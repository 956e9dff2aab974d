//! The nats engine's trail: every gateway appends to one JetStream stream,
//! `<bucket>_audit`, each to its own chain, so no gateway waits for
//! another's append. A gateway process picks a random id at start and
//! appends on subject `<bucket>.audit.<id>`, every line carrying
//! `"gateway":"<id>"`; a message holds one or more lines, each the exact
//! text of a file line, separated by newlines, so under load the lines of
//! requests waiting together go out in one acknowledged publish (group
//! commit). Every publish carries `Nats-Expected-Last-Subject-Sequence` of
//! the gateway's last message, so a message lost or doubled is refused, not
//! chained twice. `audit export` merges the chains in stream order; `audit
//! verify` checks each (`audit::verify_chains`). Subject `<bucket>.audit`
//! holds the one chain all gateways shared before, read as chain "".
//!
//! Subject `<bucket>.intent` holds intents: before a change is published,
//! its request id and the KV subject and revision it writes against, so
//! that a trail that cannot be written stops the change before it happens,
//! and a gateway that dies between the change and its line leaves a record
//! `audit verify` names. The stream denies deletes and purges.
//!
//! Each gateway records its chain's head at most a second after the append
//! (`head.rs`).

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, OnceCell};

use super::head::HeadRecord;
use super::recorded::read_all;
use crate::store::chain::{link, AuditKey, ChainHead};
use crate::store::lines::{chain_name, LineBody, TrailError};

const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
/// Attempts of one append while other gateways keep winning the race.
const MAX_ATTEMPTS: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Most lines or intents in one message (a line is a few hundred bytes).
const MAX_BATCH: usize = 256;
/// How long an appended head may wait before it is recorded.
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// What a gateway records before it publishes a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub request_id: String,
    /// The KV subject the change is published on.
    pub subject: String,
    /// The subject's revision the change is written against.
    pub after: u64,
}

/// Stream name, the shared chain's subject (and the prefix of the
/// gateways' chains) and intent subject of the trail of `bucket`.
pub fn names(bucket: &str) -> (String, String, String) {
    (
        format!("{bucket}_audit"),
        format!("{bucket}.audit"),
        format!("{bucket}.intent"),
    )
}

/// Requests queue their lines (and intents) for a publisher task of each
/// kind, which batches whatever is waiting into one message. The task, not
/// the request, owns the publish, so a request that goes away (its client
/// disconnected) cannot abandon the lines of others.
pub struct StreamTrail {
    inner: Arc<Inner>,
    lines: mpsc::UnboundedSender<Waiting<LineBody>>,
    intents: mpsc::UnboundedSender<Waiting<Intent>>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    /// The shared chain's subject, and the prefix of the gateways'.
    shared: String,
    /// This gateway's chain: its id, its subject, and the field its lines
    /// carry.
    chain: String,
    subject: String,
    field: String,
    intent_subject: String,
    bucket: String,
    replicas: usize,
    stream: OnceCell<stream::Stream>,
    /// What lines are chained under, set once by `start`.
    key: std::sync::OnceLock<AuditKey>,
    /// Where this gateway records the chain's head.
    head: HeadRecord,
    /// Where the stream's messages begin among its lines (`read_page`).
    index: tokio::sync::Mutex<super::recorded::LineIndex>,
}

type Waiting<T> = (T, oneshot::Sender<Result<(), TrailError>>);

pub(super) fn failed(what: &str, e: impl std::fmt::Display) -> TrailError {
    // NATS error texts name operations and codes, never payloads.
    TrailError(format!("audit stream {what}: {e}"))
}

impl StreamTrail {
    /// Must be called inside the runtime: it starts the publisher tasks.
    pub fn new(client: async_nats::Client, bucket: &str, replicas: usize) -> StreamTrail {
        let (stream_name, shared, intent_subject) = names(bucket);
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let mut id = [0u8; 8];
        aws_lc_rs::rand::fill(&mut id).expect("system randomness");
        let chain = hex::encode(id);
        let inner = Arc::new(Inner {
            head: HeadRecord::new(js.clone(), bucket, &chain),
            js,
            client,
            stream_name,
            subject: chain_name(&shared, &chain),
            field: format!("\"gateway\":\"{chain}\","),
            shared,
            chain,
            intent_subject,
            bucket: bucket.to_owned(),
            replicas: replicas.max(1),
            stream: OnceCell::new(),
            key: std::sync::OnceLock::new(),
            index: Default::default(),
        });
        let (lines, queued_lines) = mpsc::unbounded_channel();
        let (intents, queued_intents) = mpsc::unbounded_channel();
        tokio::spawn(lines_publisher(inner.clone(), queued_lines));
        tokio::spawn(intents_publisher(inner.clone(), queued_intents));
        StreamTrail {
            inner,
            lines,
            intents,
        }
    }

    /// Starts chaining under `key`; returns the head the chain continues.
    pub async fn start(&self, key: AuditKey) -> Result<ChainHead, TrailError> {
        let _ = self.inner.key.set(key);
        let stream = self.inner.stream().await?;
        tracing::info!(gateway = %self.inner.chain, "audit: this gateway appends its own chain");
        Ok(self.inner.read_tail(stream, &self.inner.subject).await?.1)
    }

    /// This gateway's chain.
    pub fn chain(&self) -> &str {
        &self.inner.chain
    }

    /// Where `chain` ends in the stream (genesis when it has no line).
    pub async fn chain_tail(&self, chain: &str) -> Result<ChainHead, TrailError> {
        let stream = self.inner.stream().await?;
        let subject = chain_name(&self.inner.shared, chain);
        Ok(self.inner.read_tail(stream, &subject).await?.1)
    }

    /// Forgets the recorded heads of `chains`, lost and superseded by a new
    /// chain whose first line names them (`--audit-restart-chain`).
    pub async fn retire(&self, chains: &[String]) -> Result<(), TrailError> {
        self.inner.head.retire(chains).await
    }

    /// Offers the trail's lines numbered after `after` (by place in the
    /// stream, from 1) to `offer`, in order, until it has enough.
    pub async fn read_page(
        &self,
        after: u64,
        offer: &mut (dyn FnMut(u64, &[u8]) -> bool + Send),
    ) -> Result<(), TrailError> {
        super::recorded::read_page(
            self.inner.client.clone(),
            &self.inner.bucket,
            &self.inner.index,
            after,
            offer,
        )
        .await
    }

    /// Appends one line; answers once the stream has acknowledged it.
    pub async fn append(&self, line: LineBody) -> Result<(), TrailError> {
        self.send(&self.lines, line).await
    }

    /// Records an intent; answers once the stream has acknowledged it.
    pub async fn intend(&self, intent: Intent) -> Result<(), TrailError> {
        self.send(&self.intents, intent).await
    }

    async fn send<T>(
        &self,
        queue: &mpsc::UnboundedSender<Waiting<T>>,
        item: T,
    ) -> Result<(), TrailError> {
        // Fail fast while disconnected rather than queue behind a timeout.
        self.inner.stream().await?;
        let stopped = || TrailError("audit publisher stopped".into());
        let (answer, answered) = oneshot::channel();
        queue.send((item, answer)).map_err(|_| stopped())?;
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

/// Takes what is waiting, up to `MAX_BATCH`, after the first.
fn drain<T>(first: T, queue: &mut mpsc::UnboundedReceiver<T>) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(more) => batch.push(more),
            Err(_) => break,
        }
    }
    batch
}

/// Answers every request of a batch with its publish's outcome.
fn answer<T>(batch: Vec<Waiting<T>>, outcome: &Result<(), TrailError>) {
    for (_, answer) in batch {
        let _ = answer.send(outcome.clone());
    }
}

/// Publishes the lines waiting, a batch per message, in order.
async fn lines_publisher(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<Waiting<LineBody>>) {
    // Stream sequence of the last message and the chain's head, as far as
    // this gateway knows; `None`: read them before the next publish.
    let mut tail: Option<(u64, ChainHead)> = None;
    // The head appended last and not yet recorded, and when one last was.
    let mut unrecorded: Option<ChainHead> = None;
    let mut recorded_at = tokio::time::Instant::now();
    loop {
        let first = match tokio::time::timeout(HEAD_EVERY, queue.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => {
                inner.head.record(&mut unrecorded).await;
                break;
            }
            Err(_idle) => {
                inner.head.record(&mut unrecorded).await;
                recorded_at = tokio::time::Instant::now();
                continue;
            }
        };
        let batch = drain(first, &mut queue);
        let outcome = match inner.stream().await {
            Ok(stream) => inner.publish_lines(stream, &mut tail, &batch).await,
            Err(e) => Err(e),
        };
        match &tail {
            Some((_, head)) if outcome.is_ok() => unrecorded = Some(head.clone()),
            _ => tail = None,
        }
        answer(batch, &outcome);
        if recorded_at.elapsed() >= HEAD_EVERY {
            inner.head.record(&mut unrecorded).await;
            recorded_at = tokio::time::Instant::now();
        }
    }
}

/// Publishes the intents waiting, a batch per message (one JSON object a
/// line).
async fn intents_publisher(inner: Arc<Inner>, mut queue: mpsc::UnboundedReceiver<Waiting<Intent>>) {
    while let Some(first) = queue.recv().await {
        let batch = drain(first, &mut queue);
        let payload: Vec<String> = batch
            .iter()
            .map(|(intent, _)| serde_json::to_string(intent).expect("serializable"))
            .collect();
        let outcome = inner
            .publish(
                &inner.intent_subject,
                HeaderMap::new(),
                payload.join("\n").into_bytes(),
            )
            .await
            .map(|_| ())
            .map_err(|e| failed("publish intent", e));
        answer(batch, &outcome);
    }
}

impl Inner {
    /// The stream, found or created on first use while connected; a stream
    /// made before intents existed gets their subject.
    async fn stream(&self) -> Result<&stream::Stream, TrailError> {
        if !super::connection::is_connected(&self.client) {
            return Err(TrailError("not connected to NATS".into()));
        }
        self.stream
            .get_or_try_init(|| async {
                let subjects = vec![
                    self.shared.clone(),
                    format!("{}.*", self.shared),
                    self.intent_subject.clone(),
                ];
                if let Ok(mut found) = self.js.get_stream(&self.stream_name).await {
                    let config = &found.cached_info().config;
                    // Subjects are only ever added (gateways of several
                    // versions may start in any order).
                    let missing: Vec<String> = subjects
                        .iter()
                        .filter(|s| !config.subjects.contains(s))
                        .cloned()
                        .collect();
                    if !missing.is_empty() {
                        let mut config = config.clone();
                        config.subjects.extend(missing);
                        self.js
                            .update_stream(config)
                            .await
                            .map_err(|e| failed("update stream", e))?;
                        found.info().await.map_err(|e| failed("stream info", e))?;
                    }
                    return Ok(found);
                }
                // Another gateway may create it at the same time; creating
                // an identical stream twice succeeds.
                self.js
                    .create_stream(stream::Config {
                        name: self.stream_name.clone(),
                        description: Some("strongroom audit trail".into()),
                        subjects,
                        storage: StorageType::File,
                        num_replicas: self.replicas,
                        deny_delete: true,
                        deny_purge: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| failed("create stream", e))
            })
            .await
    }

    async fn publish(
        &self,
        subject: &str,
        headers: HeaderMap,
        payload: Vec<u8>,
    ) -> Result<u64, async_nats::jetstream::context::PublishError> {
        let ack = self
            .js
            .publish_with_headers(subject.to_owned(), headers, payload.into())
            .await?;
        Ok(ack.await?.sequence)
    }

    /// The stream sequence of the last message on `subject` (a chain's)
    /// and the chain's head (0 and genesis when none).
    async fn read_tail(
        &self,
        stream: &stream::Stream,
        subject: &str,
    ) -> Result<(u64, ChainHead), TrailError> {
        let m = match stream.get_last_raw_message_by_subject(subject).await {
            Ok(m) => m,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                return Ok((0, ChainHead::genesis()))
            }
            Err(e) => return Err(failed("read last line", e)),
        };
        let last = last_line(&m.payload);
        if !last.starts_with(crate::store::chain::V2_PREFIX.as_bytes()) {
            // The shared chain written before v2: number on from its line
            // count, read once.
            let count = read_all(self.client.clone(), &self.bucket)
                .await?
                .lines
                .iter()
                .filter(|(chain, _)| chain.is_empty())
                .count() as u64;
            return Ok((m.sequence, ChainHead::after(last, || count)));
        }
        Ok((m.sequence, ChainHead::after(last, || 0)))
    }

    /// Publishes `batch` as one message chained to the tail, retrying while
    /// other gateways win the race.
    async fn publish_lines(
        &self,
        stream: &stream::Stream,
        tail: &mut Option<(u64, ChainHead)>,
        batch: &[Waiting<LineBody>],
    ) -> Result<(), TrailError> {
        let key = self
            .key
            .get()
            .ok_or_else(|| TrailError("the trail is not started".into()))?;
        for _ in 0..MAX_ATTEMPTS {
            let (sequence, mut head) = match tail.take() {
                Some(known) => known,
                None => self.read_tail(stream, &self.subject).await?,
            };
            let mut payload = Vec::with_capacity(batch.len() * 340);
            for (body, _) in batch {
                if !payload.is_empty() {
                    payload.push(b'\n');
                }
                let fields = body.text.strip_prefix('{').unwrap_or(&body.text);
                let text = format!("{}{fields}", self.field);
                link(key, &mut head, &text, &mut payload);
            }
            let mut headers = HeaderMap::new();
            headers.insert(
                EXPECTED_LAST_SUBJECT_SEQUENCE,
                sequence.to_string().as_str(),
            );
            match self.publish(&self.subject, headers, payload).await {
                Ok(sequence) => {
                    *tail = Some((sequence, head));
                    return Ok(());
                }
                // A message of ours the tail did not know (a publish whose
                // ack was lost): re-read the tail.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                // The lines may or may not be stored; the tail is re-read.
                Err(e) => return Err(failed("publish", e)),
            }
        }
        Err(TrailError("the chain's tail kept moving".into()))
    }
}

/// The last line of a message.
fn last_line(payload: &[u8]) -> &[u8] {
    payload.rsplit(|&b| b == b'\n').next().unwrap_or(payload)
}

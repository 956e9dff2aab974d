//! The audit trail on NATS: with the nats store every gateway appends to one
//! JetStream stream, `<bucket>_audit` (subject `<bucket>.audit`). A message
//! holds one or more lines, each the exact text of a file line, separated by
//! newlines: under load the lines of requests waiting together go out in one
//! acknowledged publish (group commit), and each request is answered once
//! the publish holding its line is acknowledged.
//!
//! The chain stays one chain across gateways: every publish carries
//! `Nats-Expected-Last-Sequence` (the sequence of the line whose hash is the
//! new line's `prev`). A gateway that loses the race to another gets
//! "wrong last sequence", re-reads the last message for the new `prev`, and
//! renders its line again. The stream denies deletes and purges.

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind, StorageType};
use async_nats::jetstream::{self};
use async_nats::HeaderMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OnceCell};

use super::{chain_hash, render, AuditEntry, AuditError, GENESIS};

const EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// Attempts of one append while other gateways keep winning the race.
const MAX_ATTEMPTS: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Stream name and subject of the trail of `bucket`.
pub fn names(bucket: &str) -> (String, String) {
    (format!("{bucket}_audit"), format!("{bucket}.audit"))
}

/// The sink: requests queue their lines for one publisher task, which
/// batches whatever is waiting into one message. The task, not the request,
/// owns the publish, so a request that goes away (its client disconnected)
/// cannot abandon the lines of others.
pub struct NatsSink {
    inner: Arc<Inner>,
    queue: mpsc::UnboundedSender<Waiting>,
}

struct Inner {
    client: async_nats::Client,
    js: jetstream::Context,
    stream_name: String,
    subject: String,
    replicas: usize,
    stream: OnceCell<stream::Stream>,
}

type Waiting = (AuditEntry, oneshot::Sender<Result<(), AuditError>>);

/// Most lines in one message (a line is a few hundred bytes).
const MAX_BATCH: usize = 256;

fn failed(what: &str, e: impl std::fmt::Display) -> AuditError {
    // NATS error texts name operations and codes, never payloads.
    AuditError::Nats(format!("{what}: {e}"))
}

impl NatsSink {
    /// Must be called inside the runtime: it starts the publisher task.
    pub fn new(client: async_nats::Client, bucket: &str, replicas: usize) -> NatsSink {
        let (stream_name, subject) = names(bucket);
        let inner = Arc::new(Inner {
            js: jetstream::ContextBuilder::new()
                .timeout(REQUEST_TIMEOUT)
                .build(client.clone()),
            client,
            stream_name,
            subject,
            replicas: replicas.max(1),
            stream: OnceCell::new(),
        });
        let (queue, lines) = mpsc::unbounded_channel();
        tokio::spawn(publisher(inner.clone(), lines));
        NatsSink { inner, queue }
    }

    /// Appends one line; answers once the stream has acknowledged it.
    pub async fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        // Fail fast while disconnected rather than queue behind a timeout.
        self.inner.stream().await?;
        let (answer, answered) = oneshot::channel();
        self.queue
            .send((entry.clone(), answer))
            .map_err(|_| AuditError::Nats("audit publisher stopped".into()))?;
        answered
            .await
            .unwrap_or_else(|_| Err(AuditError::Nats("audit publisher stopped".into())))
    }
}

/// Publishes what is waiting, a batch per message, in order.
async fn publisher(inner: Arc<Inner>, mut lines: mpsc::UnboundedReceiver<Waiting>) {
    // Sequence and hash of the last line, as far as this gateway knows;
    // `None`: read it from the stream before the next publish.
    let mut tail: Option<(u64, String)> = None;
    while let Some(first) = lines.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match lines.try_recv() {
                Ok(more) => batch.push(more),
                Err(_) => break,
            }
        }
        let outcome = match inner.stream().await {
            Ok(stream) => inner.publish_batch(stream, &mut tail, &batch).await,
            Err(e) => Err(e),
        };
        if outcome.is_err() {
            tail = None;
        }
        for (_, answer) in batch {
            let _ = answer.send(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(AuditError::Nats(e.to_string())),
            });
        }
    }
}

impl Inner {
    /// The stream, found or created on first use while connected.
    async fn stream(&self) -> Result<&stream::Stream, AuditError> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(AuditError::Nats("not connected to NATS".into()));
        }
        self.stream
            .get_or_try_init(|| async {
                if let Ok(found) = self.js.get_stream(&self.stream_name).await {
                    return Ok(found);
                }
                // Another gateway may create it at the same time; creating
                // an identical stream twice succeeds.
                self.js
                    .create_stream(stream::Config {
                        name: self.stream_name.clone(),
                        description: Some("strongroom audit trail".into()),
                        subjects: vec![self.subject.clone()],
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

    /// Sequence and hash of the last line (0 and the genesis hash when none).
    async fn read_tail(&self, stream: &stream::Stream) -> Result<(u64, String), AuditError> {
        match stream.get_last_raw_message_by_subject(&self.subject).await {
            Ok(m) => Ok((m.sequence, chain_hash(last_line(&m.payload)))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                let info = stream
                    .get_info()
                    .await
                    .map_err(|e| failed("stream info", e))?;
                Ok((info.state.last_sequence, GENESIS.to_owned()))
            }
            Err(e) => Err(failed("read last line", e)),
        }
    }

    /// Publishes `batch` as one message chained to the tail, retrying while
    /// other gateways win the race.
    async fn publish_batch(
        &self,
        stream: &stream::Stream,
        tail: &mut Option<(u64, String)>,
        batch: &[Waiting],
    ) -> Result<(), AuditError> {
        for _ in 0..MAX_ATTEMPTS {
            let (sequence, mut prev) = match tail.take() {
                Some(known) => known,
                None => self.read_tail(stream).await?,
            };
            let mut payload = String::with_capacity(batch.len() * 320);
            for (entry, _) in batch {
                let (line, hash) = render(entry, &prev);
                if !payload.is_empty() {
                    payload.push('\n');
                }
                payload.push_str(&line);
                prev = hash;
            }
            let mut headers = HeaderMap::new();
            headers.insert(EXPECTED_LAST_SEQUENCE, sequence.to_string().as_str());
            let ack = match self
                .js
                .publish_with_headers(self.subject.clone(), headers, payload.into())
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match ack {
                Ok(ack) => {
                    *tail = Some((ack.sequence, prev));
                    return Ok(());
                }
                // Another gateway appended first: re-read the tail.
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => continue,
                // The lines may or may not be stored; the tail is re-read.
                Err(e) => return Err(failed("publish", e)),
            }
        }
        Err(AuditError::Nats(
            "too many gateways appending at once".into(),
        ))
    }
}

/// The last line of a message.
fn last_line(payload: &[u8]) -> &[u8] {
    payload.rsplit(|&b| b == b'\n').next().unwrap_or(payload)
}

/// Every line of the trail of `bucket`, oldest first, each without a newline.
pub async fn read_all(
    client: async_nats::Client,
    bucket: &str,
) -> Result<Vec<Vec<u8>>, AuditError> {
    let (stream_name, _) = names(bucket);
    let js = jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client);
    let mut stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| failed(&format!("open stream {stream_name}"), e))?;
    let state = stream
        .info()
        .await
        .map_err(|e| failed("stream info", e))?
        .state
        .clone();
    let mut lines = Vec::new();
    if state.messages == 0 {
        return Ok(lines);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let m = stream
            .get_raw_message(sequence)
            .await
            .map_err(|e| failed(&format!("read line at sequence {sequence}"), e))?;
        lines.extend(m.payload.split(|&b| b == b'\n').map(<[u8]>::to_vec));
    }
    Ok(lines)
}

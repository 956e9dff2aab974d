//! Each gateway's record of the audit chain's head (`audit_head` in the
//! `<bucket>_meta` bucket): what `audit verify` and a start compare the
//! stream with, so a deleted (re-made) stream is noticed. Only ever moved
//! forward, with a compare-and-set, since gateways record concurrently;
//! except once after `--audit-restart-chain`, when the new chain's lower
//! head replaces the lost chain's.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{self, kv};
use tokio::sync::OnceCell;

use super::kv::{last, publish, Publish};
use super::records::{op_of, with_format, without_format, Op};
use crate::store::chain::ChainHead;
use crate::store::engine::WriteError;
use crate::store::trail::AUDIT_HEAD;
use crate::store::StoreError;

pub(super) struct HeadRecord {
    js: jetstream::Context,
    bucket: String,
    meta: OnceCell<kv::Store>,
    /// Set when a new chain began over a lost one.
    replace: AtomicBool,
}

impl HeadRecord {
    pub fn new(js: jetstream::Context, bucket: &str) -> HeadRecord {
        HeadRecord {
            js,
            bucket: bucket.to_owned(),
            meta: OnceCell::new(),
            replace: AtomicBool::new(false),
        }
    }

    /// The next head recorded replaces the recorded one, whatever its number.
    pub fn restarted(&self) {
        self.replace.store(true, Ordering::SeqCst);
    }

    /// Records `head` unless one as far on is recorded (another gateway's);
    /// leaves it in place to be tried again when that fails.
    pub async fn record(&self, head: &mut Option<ChainHead>) {
        let Some(new) = head.take() else { return };
        match self.advance(&new).await {
            Ok(()) => {}
            // Another gateway recorded meanwhile: compare again next time.
            Err(WriteError::Conflict) | Err(WriteError::Stale(_)) => *head = Some(new),
            Err(WriteError::Failed(e)) => {
                tracing::warn!(error = %e, "audit: cannot record the chain head");
                *head = Some(new);
            }
        }
    }

    async fn advance(&self, new: &ChainHead) -> Result<(), WriteError> {
        let meta = self
            .meta
            .get_or_try_init(|| self.js.get_key_value(format!("{}_meta", self.bucket)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("nats meta bucket: {e}")))?;
        let replace = self.replace.load(Ordering::SeqCst);
        let expected = match last(meta, AUDIT_HEAD).await? {
            Some(m) if replace => m.sequence,
            Some(m) if op_of(Some(&m.headers)) == Op::Put => {
                let stored = without_format("audit head", &m.payload)?;
                let stored = std::str::from_utf8(&stored)
                    .ok()
                    .and_then(ChainHead::decode);
                if stored.is_some_and(|s| s.seq >= new.seq) {
                    return Ok(());
                }
                m.sequence
            }
            Some(m) => m.sequence,
            None => 0,
        };
        let message = Publish {
            key: AUDIT_HEAD,
            expected,
            op: Op::Put,
            payload: with_format(new.encode().as_bytes()),
        };
        publish(&self.js, meta, message, None).await?;
        if replace {
            self.replace.store(false, Ordering::SeqCst);
        }
        Ok(())
    }
}

//! Each gateway's record of its audit chain's head (`audit_head.<chain>` in
//! the `<bucket>_meta` bucket; `audit_head` was the shared chain's): what
//! `audit verify` and a start compare the stream with, so a deleted
//! (re-made) stream or lines cut off a chain's end are noticed. Only ever
//! moved forward, with a compare-and-set. A chain lost and superseded
//! (`--audit-restart-chain`) has its record removed.

use async_nats::jetstream::{self, kv};
use tokio::sync::OnceCell;

use super::kv::{last, publish, Publish};
use super::records::{op_of, with_format, without_format, Op};
use crate::store::chain::ChainHead;
use crate::store::engine::WriteError;
use crate::store::lines::{chain_name, TrailError, AUDIT_HEAD};
use crate::store::StoreError;

pub(super) struct HeadRecord {
    js: jetstream::Context,
    bucket: String,
    /// The meta key of this gateway's chain.
    name: String,
    meta: OnceCell<kv::Store>,
}

impl HeadRecord {
    pub fn new(js: jetstream::Context, bucket: &str, chain: &str) -> HeadRecord {
        HeadRecord {
            js,
            bucket: bucket.to_owned(),
            name: chain_name(AUDIT_HEAD, chain),
            meta: OnceCell::new(),
        }
    }

    async fn meta(&self) -> Result<&kv::Store, StoreError> {
        self.meta
            .get_or_try_init(|| self.js.get_key_value(format!("{}_meta", self.bucket)))
            .await
            .map_err(|e| StoreError::Unavailable(format!("nats meta bucket: {e}")))
    }

    /// Removes the recorded heads of `chains`.
    pub async fn retire(&self, chains: &[String]) -> Result<(), TrailError> {
        let meta = self.meta().await.map_err(|e| TrailError(e.to_string()))?;
        for chain in chains {
            meta.delete(chain_name(AUDIT_HEAD, chain))
                .await
                .map_err(|e| TrailError(format!("audit: retiring chain {chain:?}: {e}")))?;
        }
        Ok(())
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
        let meta = self.meta().await?;
        let expected = match last(meta, &self.name).await? {
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
            key: &self.name,
            expected,
            op: Op::Put,
            payload: with_format(new.encode().as_bytes()),
        };
        publish(&self.js, meta, message, None).await?;
        Ok(())
    }
}

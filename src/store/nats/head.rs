//! Each gateway's record of its audit chain's head (`audit_head.<chain>` in
//! the `<bucket>_meta` bucket; `audit_head` was the shared chain's): what
//! `audit verify` and a start compare the stream with, so a deleted
//! (re-made) stream or lines cut off a chain's end are noticed. Only ever
//! moved forward, with a compare-and-set. A chain lost and superseded
//! (`--audit-restart-chain`) has its record removed.

use std::collections::BTreeMap;

use async_nats::jetstream::{self, kv};
use tokio::sync::OnceCell;

use super::kv::{last, publish, Publish};
use super::records::{op_of, with_format, without_format, Op};
use crate::store::chain::ChainHead;
use crate::store::engine::WriteError;
use crate::store::lines::{chain_name, chain_named, TrailError, AUDIT_HEAD};
use crate::store::StoreError;

pub(super) struct HeadRecord {
    js: jetstream::Context,
    bucket: String,
    /// The meta key of this gateway's chain.
    name: String,
    meta: OnceCell<kv::Store>,
}

/// Every chain's recorded head in the meta bucket `meta`, by chain.
pub(super) async fn recorded(
    client: &async_nats::Client,
    meta: &kv::Store,
) -> Result<BTreeMap<String, ChainHead>, StoreError> {
    let mut heads = BTreeMap::new();
    for (name, op, payload) in super::kv::scan_last(client, meta, &format!("{AUDIT_HEAD}.>"), false)
        .await?
        .into_iter()
        .chain(last_of(meta, AUDIT_HEAD).await?)
    {
        let Some(chain) = chain_named(AUDIT_HEAD, &name).filter(|_| op == Op::Put) else {
            continue;
        };
        let stored = without_format("audit head", &payload)?;
        if let Some(head) = std::str::from_utf8(&stored)
            .ok()
            .and_then(ChainHead::decode)
        {
            heads.insert(chain.to_owned(), head);
        }
    }
    Ok(heads)
}

/// `name`'s last message as `scan_last` gives it.
async fn last_of(
    meta: &kv::Store,
    name: &str,
) -> Result<Option<(String, Op, Vec<u8>)>, StoreError> {
    Ok(last(meta, name)
        .await?
        .map(|m| (name.to_owned(), op_of(Some(&m.headers)), m.payload.to_vec())))
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

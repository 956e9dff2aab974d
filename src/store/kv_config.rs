//! A tenant's KV defaults (Vault's `config` of its KV v2 mount): a meta
//! record per tenant, so backups and every gateway carry it.

use super::model::Defaults;
use super::records::Kind;
use super::{LineBody, Store, StoreError};
use crate::types::TenantId;

fn name(tenant: &TenantId) -> String {
    format!("kv_config.{}", tenant.as_str())
}

impl Store {
    /// The tenant's KV defaults; all zero when never set.
    pub async fn kv_config(&self, tenant: &TenantId) -> Result<Defaults, StoreError> {
        match self.meta_get(&name(tenant)).await? {
            None => Ok(Defaults::default()),
            Some(bytes) => decode(&bytes),
        }
    }

    /// Changes the tenant's KV defaults by `change`, compare-and-set
    /// against what it read (again when another writer came first), with
    /// `line` in the same unit of work.
    pub async fn update_kv_config(
        &self,
        tenant: &TenantId,
        change: impl Fn(Defaults) -> Defaults,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        let id = name(tenant);
        super::retry((), |()| async {
            let stored = self.record(Kind::Meta, &id).await?;
            let (current, expected) = match &stored {
                None => (Defaults::default(), 0),
                Some(r) => (decode(&r.value)?, r.revision),
            };
            let value = serde_json::to_vec(&change(current)).expect("config encodes");
            match self
                .put_record(Kind::Meta, &id, expected, value, line.clone())
                .await?
            {
                true => Ok(()),
                false => Err(super::Attempt::Again(())),
            }
        })
        .await
    }
}

fn decode(bytes: &[u8]) -> Result<Defaults, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("kv config: {e}")))
}

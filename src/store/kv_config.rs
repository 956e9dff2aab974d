//! A tenant's KV defaults (Vault's `config` of its KV v2 mount): a meta
//! record per tenant, so backups and every gateway carry it.

use super::model::Defaults;
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
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| StoreError::Corrupt(format!("kv config: {e}"))),
        }
    }

    /// Replaces the tenant's KV defaults, with `line` in the same unit of
    /// work.
    pub async fn put_kv_config(
        &self,
        tenant: &TenantId,
        config: Defaults,
        line: Option<LineBody>,
    ) -> Result<(), StoreError> {
        let value = serde_json::to_vec(&config).expect("config encodes");
        let id = name(tenant);
        super::retry((), |()| async {
            let expected = self
                .record(super::records::Kind::Meta, &id)
                .await?
                .map_or(0, |r| r.revision);
            let line = line.clone();
            match self
                .put_record(
                    super::records::Kind::Meta,
                    &id,
                    expected,
                    value.clone(),
                    line,
                )
                .await?
            {
                true => Ok(()),
                false => Err(super::Attempt::Again(())),
            }
        })
        .await
    }
}

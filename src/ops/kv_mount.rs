//! The KV operations over a whole folder or the whole mount: the children
//! a Vault `LIST` shows, and the tenant's KV configuration (Vault's
//! `secret/config`).

use super::kv::{KvConfig, KvConfigChange};
use super::{Call, OpError, Ops};
use crate::auth::{Action, Principal};

/// Keys read per page while listing a folder's children.
const LIST_PAGE: usize = 1000;

impl Ops {
    /// The names directly under `prefix` (a folder: empty or ending in
    /// '/') of keys that have metadata, deleted or not; a folder's name
    /// ends in '/'. `NotFound` when there are none.
    pub async fn list_children(
        &self,
        call: &Call,
        principal: &Principal,
        prefix: &str,
    ) -> Result<Vec<String>, OpError> {
        let outcome = async {
            let mut folder = prefix.to_owned();
            if !folder.is_empty() && !folder.ends_with('/') {
                folder.push('/');
            }
            if !crate::types::is_valid_key_prefix(&folder) {
                return Err(OpError::Invalid(
                    "path may only contain A-Z a-z 0-9 - _ = . /".into(),
                ));
            }
            if !principal.allows(Action::List, &folder) {
                return Err(OpError::Forbidden);
            }
            let tenant = &principal.tenant;
            let mut children: Vec<String> = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store
                    .list_with_deleted(tenant, &folder, after.as_deref(), LIST_PAGE)
                    .await?;
                let full = page.len() == LIST_PAGE;
                for row in &page {
                    let rest = &row.key[folder.len()..];
                    let child = match rest.find('/') {
                        Some(i) => &rest[..=i],
                        None => rest,
                    };
                    if children.last().map(String::as_str) != Some(child) {
                        children.push(child.to_owned());
                    }
                }
                // Past a folder's keys at once: '~' sorts after every key byte.
                after = match children.last() {
                    Some(last) if last.ends_with('/') => Some(format!("{folder}{last}~")),
                    _ => page.last().map(|row| row.key.clone()),
                };
                if !full {
                    break;
                }
            }
            if children.is_empty() {
                return Err(OpError::NotFound);
            }
            Ok(children)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// The tenant's KV configuration; reading or changing it takes a scope
    /// over every key (it governs all of them).
    pub async fn kv_config(&self, call: &Call, principal: &Principal) -> Result<KvConfig, OpError> {
        let outcome = async {
            if !principal.allows(Action::Read, "") {
                return Err(OpError::Forbidden);
            }
            Ok(self.store.kv_config(&principal.tenant).await?)
        }
        .await;
        self.settle(call, outcome).await
    }

    /// Changes the fields `change` names; the rest stay.
    pub async fn set_kv_config(
        &self,
        call: &Call,
        principal: &Principal,
        change: KvConfigChange,
    ) -> Result<(), OpError> {
        let outcome = async {
            if !principal.allows(Action::Write, "") {
                return Err(OpError::Forbidden);
            }
            self.check_max_versions(change.max_versions)?;
            let line = Some(call.line(200));
            let changed = move |mut config: KvConfig| {
                config.max_versions = change.max_versions.unwrap_or(config.max_versions);
                config.cas_required = change.cas_required.unwrap_or(config.cas_required);
                config.delete_version_after_secs = change
                    .delete_version_after_secs
                    .unwrap_or(config.delete_version_after_secs);
                config
            };
            self.store
                .update_kv_config(&principal.tenant, changed, line)
                .await?;
            call.mark_written();
            Ok(())
        }
        .await;
        self.settle(call, outcome).await
    }
}

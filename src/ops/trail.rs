//! Audit read (`audit:read`): a page of the caller's tenant's audit lines,
//! oldest first. Another tenant's lines, and lines of no tenant (refused
//! credentials, system lines), are never shown.

use super::{Call, OpError, Ops};
use crate::auth::{Action, Principal};

/// A page of lines (the trail's JSON objects) and the number to read after
/// for the next.
pub type AuditPage = crate::store::trail::Page;

impl Ops {
    pub async fn read_audit(
        &self,
        call: &Call,
        principal: &Principal,
        after: u64,
        limit: usize,
    ) -> Result<AuditPage, OpError> {
        let outcome = async {
            if !principal.allows(Action::AuditRead, "") {
                return Err(OpError::Forbidden);
            }
            let tenant = principal.tenant.as_str().to_owned();
            self.trail
                .read_after(after, limit, move |line| {
                    line.get("tenant").and_then(|t| t.as_str()) == Some(tenant.as_str())
                })
                .await
                .map_err(|e| OpError::Unavailable(e.to_string()))
        }
        .await;
        self.settle(call, outcome).await
    }
}

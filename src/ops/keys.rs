//! Data-key rotation (`keys:admin`): a new DEK for the caller's tenant; new
//! writes seal under it and old versions keep opening under theirs.

use super::{Call, OpError, Ops};
use crate::auth::{Action, Principal};
use crate::clock::now_ms;

/// The data key a rotation started, and when.
pub struct Rotated {
    pub dek_id: u32,
    pub created_at: i64,
}

impl Ops {
    pub async fn rotate_keys(
        &self,
        call: &Call,
        principal: &Principal,
    ) -> Result<Rotated, OpError> {
        let outcome = async {
            if !principal.allows(Action::KeysAdmin, "") {
                return Err(OpError::Forbidden);
            }
            // Every data key is kept (old versions open under theirs):
            // bounded, so one credential cannot grow the store without end.
            let held = self.store.deks(&principal.tenant).await?.len();
            if held >= self.limits.max_deks_per_tenant {
                return Err(OpError::LimitReached {
                    what: "data keys",
                    limit: self.limits.max_deks_per_tenant,
                });
            }
            let dek_id = self.keyring.rotate(&principal.tenant).await?;
            Ok(Rotated {
                dek_id,
                created_at: now_ms(),
            })
        }
        .await;
        self.settle(call, outcome).await
    }
}

//! The store conformance suite's identity part (`conformance.rs` runs it
//! on every engine): policies, roles and tokens as records of the model.

use super::identity::{PolicyRecord, RoleRecord, TokenRecord};
use super::*;
use crate::types::TenantId;

fn t(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}

pub(crate) fn role(name: &str) -> RoleRecord {
    RoleRecord {
        name: name.into(),
        provider: "github".into(),
        bound_audiences: vec!["aud".into()],
        bound_subject: Some("repo:acme/*".into()),
        bound_claims: [("environment".to_owned(), vec!["prod".to_owned()])].into(),
        user_claim: "sub".into(),
        scopes: vec!["secrets:read:prod/".into()],
        policies: vec!["readers".into()],
        token_ttl_seconds: 60,
        allowed_redirect_uris: vec![],
        uid: "0123456789abcdef".into(),
        updated_at: 5,
    }
}

pub(crate) fn token(id: &str, tenant: &str, expires_at: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        tenant: tenant.into(),
        subject: "github:repo:acme/app".into(),
        role: "ci".into(),
        role_uid: "0123456789abcdef".into(),
        scopes: vec!["secrets:read".into()],
        policies: vec![],
        created_at: 1,
        expires_at,
        revoked_at: None,
    }
}

/// Puts `policy` over whatever `tenant` holds under its name, as the
/// operations do (read, then compare-and-set); true when it is new.
pub(crate) async fn put_policy(s: &Store, tenant: &TenantId, policy: &PolicyRecord) -> bool {
    let read = s.policy_read(tenant, &policy.name).await.unwrap();
    let expected = read.map_or(0, |v| v.revision);
    assert!(s
        .policy_put_if(tenant, &policy.name, Some(policy), expected, None)
        .await
        .unwrap());
    expected == 0
}

/// `put_policy` for a role.
pub(crate) async fn put_role(s: &Store, tenant: &TenantId, role: &RoleRecord) -> bool {
    let read = s.role_read(tenant, &role.name).await.unwrap();
    let expected = read.map_or(0, |v| v.revision);
    assert!(s
        .role_put_if(tenant, &role.name, Some(role), expected, None)
        .await
        .unwrap());
    expected == 0
}

/// Removes `tenant`'s policy `name`; `NotFound` when there is none.
async fn delete_policy(s: &Store, tenant: &TenantId, name: &str) -> Result<(), StoreError> {
    let read = s
        .policy_read(tenant, name)
        .await?
        .ok_or(StoreError::NotFound)?;
    assert!(
        s.policy_put_if(tenant, name, None, read.revision, None)
            .await?
    );
    Ok(())
}

/// Policies and roles are per tenant, replaced whole, listed in name order
/// and deleted once; tokens are found by their hash, revoked once, and
/// swept once expired.
pub(crate) async fn identity_records_round_trip(s: &Store) {
    let (a, b) = (t("ident-a"), t("ident.b"));
    let readers = PolicyRecord {
        name: "readers".into(),
        scopes: vec!["secrets:read".into()],
        updated_at: 1,
    };
    assert!(put_policy(s, &a, &readers).await);
    let wider = PolicyRecord {
        scopes: vec!["secrets:read".into(), "secrets:list".into()],
        ..readers.clone()
    };
    assert!(!put_policy(s, &a, &wider).await);
    assert_eq!(s.policy_get(&a, "readers").await.unwrap(), Some(wider));
    assert_eq!(s.policy_get(&b, "readers").await.unwrap(), None);
    let other = PolicyRecord {
        name: "a.writers".into(),
        ..readers.clone()
    };
    put_policy(s, &a, &other).await;
    put_policy(s, &b, &readers).await;
    let names: Vec<String> = s
        .policy_list(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a.writers", "readers"]);
    delete_policy(s, &a, "readers").await.unwrap();
    assert!(matches!(
        delete_policy(s, &a, "readers").await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(s.policy_get(&a, "readers").await.unwrap(), None);
    // Deleted, then made again (nats: after a delete marker).
    assert!(put_policy(s, &a, &readers).await);
    assert_eq!(s.policy_list(&b).await.unwrap().len(), 1);

    assert!(put_role(s, &a, &role("ci")).await);
    assert_eq!(s.role_get(&a, "ci").await.unwrap(), Some(role("ci")));
    assert_eq!(s.role_get(&b, "ci").await.unwrap(), None);
    assert_eq!(s.role_list(&a).await.unwrap(), vec![role("ci")]);
    // Conditional writes: a stale revision loses, on both engines, and a
    // record removed and made again does not take its old revision back.
    let read = s.role_read(&a, "ci").await.unwrap().unwrap();
    let mut changed = role("ci");
    changed.token_ttl_seconds = 30;
    assert!(s
        .role_put_if(&a, "ci", Some(&changed), read.revision, None)
        .await
        .unwrap());
    assert!(!s
        .role_put_if(&a, "ci", Some(&role("ci")), read.revision, None)
        .await
        .unwrap());
    let now = s.role_read(&a, "ci").await.unwrap().unwrap();
    assert!(s
        .role_put_if(&a, "ci", None, now.revision, None)
        .await
        .unwrap());
    assert!(s
        .role_put_if(&a, "ci", Some(&role("ci")), 0, None)
        .await
        .unwrap());
    let again = s.role_read(&a, "ci").await.unwrap().unwrap();
    assert_ne!(again.revision, now.revision);
    assert!(!s
        .role_put_if(&a, "ci", None, now.revision, None)
        .await
        .unwrap());
    assert!(!s
        .role_put_if(&a, "ci", Some(&role("ci")), 0, None)
        .await
        .unwrap());
    let last = s.role_read(&a, "ci").await.unwrap().unwrap();
    assert!(s
        .role_put_if(&a, "ci", None, last.revision, None)
        .await
        .unwrap());
    assert!(s.role_list(&a).await.unwrap().is_empty());
    let p = s.policy_read(&a, "readers").await.unwrap().unwrap();
    assert!(!s
        .policy_put_if(&a, "readers", None, p.revision + 1, None)
        .await
        .unwrap());

    let now = crate::clock::now_ms();
    let live = token(&"a".repeat(64), "ident-a", now + 60_000);
    let old = token(&"b".repeat(64), "ident-a", now - 1);
    s.token_insert(&live, None).await.unwrap();
    s.token_insert(&old, None).await.unwrap();
    assert!(s.token_insert(&live, None).await.is_err());
    assert_eq!(s.token_get(&live.id).await.unwrap(), Some(live.clone()));
    assert_eq!(s.token_get(&"c".repeat(64)).await.unwrap(), None);
    s.token_revoke(&live.id, now, None).await.unwrap();
    assert!(matches!(
        s.token_revoke(&live.id, now, None).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        s.token_get(&live.id).await.unwrap().unwrap().revoked_at,
        Some(now)
    );
    assert_eq!(s.tokens_sweep(now).await.unwrap(), 1);
    assert_eq!(s.token_get(&old.id).await.unwrap(), None);
    assert_eq!(s.token_count().await.unwrap(), 1);
    assert_eq!(s.tokens_sweep(now + 60_000).await.unwrap(), 1);
    assert_eq!(s.token_count().await.unwrap(), 0);
}

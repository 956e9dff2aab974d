//! The seam every front-end plugs into, tried without HTTP: operations
//! called directly on a real sqlite store, checking their outcomes and the
//! audit lines they wrote.

use std::sync::Arc;

use zeroize::Zeroizing;

use super::*;
use crate::auth::{Principal, Scope};
use crate::crypto::{MasterKey, MasterKeys};
use crate::store::{Precondition, StoreConfig};
use crate::types::{SecretKey, TenantId};

struct Fixture {
    ops: Ops,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::embedded(dir.path());
    let opened = crate::store::Store::open_with_trail(&config).await.unwrap();
    let keks = MasterKeys::single(MasterKey::from_bytes(&[7; 32]));
    let keyring = Keyring::open(keks, opened.store.clone()).await.unwrap();
    keyring.bind().await.unwrap();
    let audit_key = keyring.audit_key(true).await.unwrap().unwrap();
    crate::audit::start::start(&opened.trail, &opened.store, audit_key, false)
        .await
        .unwrap();
    let auth = Authenticator::new(opened.store.clone(), None, Default::default());
    let ops = Ops::new(opened.store, opened.trail, keyring, auth, Limits::default());
    Fixture { ops, _dir: dir }
}

fn principal(scopes: &[&str]) -> Arc<Principal> {
    Arc::new(Principal {
        tenant: TenantId::parse("acme").unwrap(),
        subject: "apikey:0123456789abcdef".into(),
        scopes: scopes.iter().map(|s| Scope::parse(s).unwrap()).collect(),
        expires_at: None,
        share_keys: Default::default(),
        token: None,
    })
}

/// A call as a front-end begins one, its caller already admitted.
fn call(operation: Operation, id: &str, who: &Arc<Principal>) -> Call {
    let call = Call::new(operation, id, None);
    call.principal(who);
    call
}

fn put(key: &str, value: &str, precondition: Precondition) -> PutRequest {
    PutRequest {
        key: SecretKey::parse(key).unwrap(),
        value: Zeroizing::new(value.into()),
        expiry: Expiry::Never,
        precondition,
        kv: false,
    }
}

/// (request id, action, key, status) of every line, in order.
async fn lines(ops: &Ops) -> Vec<(String, String, String, u64)> {
    ops.trail.flush();
    let page = ops.trail.read_after(0, 1000, |_| true).await.unwrap();
    page.lines
        .iter()
        .filter(|l| {
            l["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("r-"))
        })
        .map(|l| {
            (
                l["request_id"].as_str().unwrap().to_owned(),
                l["action"].as_str().unwrap().to_owned(),
                l["key"].as_str().unwrap_or("").to_owned(),
                l["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn line(id: &str, action: &str, key: &str, status: u64) -> (String, String, String, u64) {
    (id.into(), action.into(), key.into(), status)
}

#[tokio::test]
async fn operations_decide_authorize_and_audit_without_a_front_end() {
    let Fixture { ops, _dir } = fixture().await;
    let writer = principal(&["secrets:write:app/", "secrets:read:app/"]);

    // A put: version 1, its line written with the change.
    let first = call(Operation::Put, "r-1", &writer);
    let written = ops
        .put(&first, &writer, put("app/db", "one", Precondition::None))
        .await
        .unwrap();
    assert_eq!(written.version, 1);

    // A raced If-Match pair: both ask for version 1, exactly one wins.
    let (a, b) = (
        call(Operation::Put, "r-2a", &writer),
        call(Operation::Put, "r-2b", &writer),
    );
    let (left, right) = tokio::join!(
        ops.put(
            &a,
            &writer,
            put("app/db", "two-a", Precondition::Version(1))
        ),
        ops.put(
            &b,
            &writer,
            put("app/db", "two-b", Precondition::Version(1))
        ),
    );
    let (won, lost, winner) = match (left, right) {
        (Ok(w), Err(e)) => (w, e, "two-a"),
        (Err(e), Ok(w)) => (w, e, "two-b"),
        other => panic!("one of a raced If-Match pair wins: {other:?}"),
    };
    assert_eq!(won.version, 2);
    assert!(matches!(lost, OpError::VersionMismatch), "{lost:?}");
    let read = call(Operation::Get, "r-3", &writer);
    let key = SecretKey::parse("app/db").unwrap();
    let secret = ops.get(&read, &writer, &key, None, None).await.unwrap();
    assert_eq!((secret.version, secret.value.as_str()), (2, winner));

    // A forbidden read: refused, and said so in the trail.
    let outsider = principal(&["secrets:read:other/"]);
    let refused = call(Operation::Get, "r-4", &outsider);
    let e = ops.get(&refused, &outsider, &key, None, None).await;
    assert!(matches!(e, Err(OpError::Forbidden)), "{:?}", e.err());

    // A batch: a line per key, with the status a lone read would have had.
    let batch = call(Operation::BatchGet, "r-5", &writer);
    let keys = ["app/db", "app/none", "other/x"]
        .map(|k| SecretKey::parse(k).unwrap())
        .to_vec();
    let found = ops.batch_get(&batch, &writer, keys, None).await.unwrap();
    let names = |keys: &[SecretKey]| {
        keys.iter()
            .map(|k| k.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(found.found.len(), 1);
    assert_eq!(found.found[0].0.as_str(), "app/db");
    assert_eq!(found.missing.len(), 2);
    assert_eq!(names(&found.missing), ["app/none", "other/x"]);

    // One line per request (per key for the batch); a request the front-end
    // would still finish adds none.
    for c in [&first, &a, &b, &read, &refused, &batch] {
        ops.finish(c, 500).await.unwrap();
    }
    let (won_id, lost_id) = if winner == "two-a" {
        ("r-2a", "r-2b")
    } else {
        ("r-2b", "r-2a")
    };
    let mut seen = lines(&ops).await;
    seen.sort();
    let mut want = vec![
        line("r-1", "secrets.write", "app/db", 200),
        line(won_id, "secrets.write", "app/db", 200),
        line(lost_id, "secrets.write", "app/db", 412),
        line("r-3", "secrets.read", "app/db", 200),
        line("r-4", "secrets.read", "app/db", 403),
        line("r-5", "secrets.read", "app/db", 200),
        line("r-5", "secrets.read", "app/none", 404),
        line("r-5", "secrets.read", "other/x", 403),
    ];
    want.sort();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn a_request_that_never_reached_its_operation_is_recorded_once() {
    let Fixture { ops, _dir } = fixture().await;
    let refused = ops.begin(Operation::Get, "r-9", None);
    ops.finish(&refused, 401).await.unwrap();
    ops.finish(&refused, 401).await.unwrap();
    assert_eq!(lines(&ops).await, [line("r-9", "secrets.read", "", 401)]);
}

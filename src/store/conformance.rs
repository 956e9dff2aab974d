//! The store conformance suite, written once: every backend runs it. A
//! backend that passes it is a backend (garage `src/db/test.rs`).

use super::*;
use crate::store::chain::test_key;
use crate::types::{SecretKey, TenantId};

fn t(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}
fn k(name: &str) -> SecretKey {
    SecretKey::parse(name).unwrap()
}
/// A put as a caller makes one: sealed for the version after the head,
/// sealed again when a concurrent write took that version (`Put::Stale`).
trait PutLoop {
    async fn put(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        expires_at: Option<i64>,
        precondition: Precondition,
        seal: impl FnMut(u64) -> Result<Vec<u8>, StoreError>,
        line: Option<LineBody>,
    ) -> Result<u64, StoreError>;
}

impl PutLoop for Store {
    async fn put(
        &self,
        tenant: &TenantId,
        key: &SecretKey,
        expires_at: Option<i64>,
        precondition: Precondition,
        mut seal: impl FnMut(u64) -> Result<Vec<u8>, StoreError>,
        line: Option<LineBody>,
    ) -> Result<u64, StoreError> {
        let mut seen = self.head(tenant, key).await?;
        for _ in 0..MAX_ATTEMPTS {
            let sealed = seal(seen.next_version())?;
            let put = SealedPut {
                sealed,
                expires_at,
                precondition,
                line: line.clone(),
                kv: false,
                defaults: Defaults::default(),
            };
            let put = self.put_once(tenant, key, seen, put).await;
            match put {
                Ok((version, _)) => return Ok(version),
                Err(Put::Stale(found)) => seen = found,
                Err(Put::Failed(e)) => return Err(e),
            }
        }
        Err(StoreError::Unavailable(
            "too many concurrent writers".into(),
        ))
    }
}

/// A stand-in sealer: the store treats sealed bytes as opaque, so the suite
/// records the version it was asked to seal for.
fn sealer(tag: &str) -> impl FnMut(u64) -> Result<Vec<u8>, StoreError> {
    let tag = tag.to_owned();
    move |version| Ok(format!("{tag}@{version}").into_bytes())
}
fn text(v: &StoredVersion) -> String {
    String::from_utf8(v.sealed.clone()).unwrap()
}

pub(crate) async fn run_all(opened: &Opened, config: &StoreConfig) {
    let store = &opened.store;
    put_assigns_increasing_versions(store).await;
    tenants_are_partitioned(store).await;
    preconditions_are_checked(store).await;
    soft_delete_undelete_destroy(store).await;
    old_versions_are_pruned(store).await;
    listing_pages_by_prefix(store).await;
    data_keys_are_created_once(store).await;
    api_keys_round_trip(store).await;
    super::conformance_identity::identity_records_round_trip(store).await;
    meta_init_keeps_the_first_value(store).await;
    rotation_steps_are_compare_and_set(store).await;
    lapsed_keys_read_as_deleted_and_the_sweep_marks_them(store).await;
    each_change_leaves_one_event_in_commit_order(store).await;
    lines_are_written_with_the_changes_that_happen(opened, config).await;
    super::conformance_kv::run_all(store).await;
}

/// Expiry (DESIGN §1): a lapsed version is not read, listed or counted as
/// live from the instant it lapses; the sweep finds it and marks it deleted
/// once, leaving a key rewritten with another expiry alone; undelete brings
/// it back without one.
async fn lapsed_keys_read_as_deleted_and_the_sweep_marks_them(s: &Store) {
    let tn = t("lapsing");
    let now = crate::clock::now_ms();
    let put = |key: &'static str, expires_at: Option<i64>| {
        let s = s.clone();
        let tn = tn.clone();
        async move {
            s.put(
                &tn,
                &k(key),
                expires_at,
                Precondition::None,
                sealer(key),
                None,
            )
            .await
            .unwrap()
        }
    };
    put("e/gone", Some(now - 1000)).await;
    put("e/later", Some(now + 3_600_000)).await;
    put("e/never", None).await;
    put("e/rewritten", Some(now - 1000)).await;
    put("e/rewritten", Some(now + 3_600_000)).await;
    assert!(s.get(&tn, &k("e/gone"), None).await.unwrap().is_none());
    assert!(s.get(&tn, &k("e/gone"), Some(1)).await.unwrap().is_none());
    assert!(s
        .get(&tn, &k("e/rewritten"), Some(1))
        .await
        .unwrap()
        .is_none());
    let live = s.get(&tn, &k("e/later"), None).await.unwrap().unwrap();
    assert_eq!(live.expires_at, Some(now + 3_600_000));
    let names = |rows: Vec<ListedSecret>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        names(s.list(&tn, "e/", None, 10, None).await.unwrap()),
        ["e/later", "e/never", "e/rewritten"]
    );
    assert_eq!(
        names(
            s.list(&tn, "e/", None, 10, Some(now + 7_200_000))
                .await
                .unwrap()
        ),
        ["e/later", "e/rewritten"]
    );
    let meta = s.metadata(&tn, &k("e/gone")).await.unwrap().unwrap();
    assert!(meta.deleted && meta.expires_at == Some(now - 1000));
    // Create-only sees the lapsed key as absent.
    let lapsed = s.lapsed(crate::clock::now_ms(), 100).await.unwrap();
    let mine: Vec<_> = lapsed.iter().filter(|l| l.tenant == tn).collect();
    assert_eq!(mine.len(), 1, "{lapsed:?}");
    assert_eq!(
        (mine[0].key.as_str(), mine[0].expires_at),
        ("e/gone", now - 1000)
    );
    let expire = |at| Change::Expire { at };
    assert!(matches!(
        s.change(
            &tn,
            &k("e/rewritten"),
            expire(now - 1000),
            Precondition::None,
            None
        )
        .await,
        Err(StoreError::NotFound)
    ));
    s.change(
        &tn,
        &k("e/gone"),
        expire(now - 1000),
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.change(
            &tn,
            &k("e/gone"),
            expire(now - 1000),
            Precondition::None,
            None
        )
        .await,
        Err(StoreError::NotFound)
    ));
    let lapsed = s.lapsed(crate::clock::now_ms(), 100).await.unwrap();
    assert!(lapsed.iter().all(|l| l.tenant != tn), "{lapsed:?}");
    let meta = s.metadata(&tn, &k("e/gone")).await.unwrap().unwrap();
    assert!(
        meta.deleted && meta.expires_at == Some(now - 1000),
        "{meta:?}"
    );
    s.change(
        &tn,
        &k("e/gone"),
        Change::Undelete,
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    let back = s.get(&tn, &k("e/gone"), None).await.unwrap().unwrap();
    assert_eq!((text(&back).as_str(), back.expires_at), ("e/gone@1", None));
    let meta = s.metadata(&tn, &k("e/gone")).await.unwrap().unwrap();
    assert!(!meta.deleted && meta.expires_at.is_none());
}

/// The change stream (DESIGN §1): one event per change that happened, none
/// for one refused, numbered in commit order, never with a value, read back
/// after any id; an id the store never gave is `Gone`.
async fn each_change_leaves_one_event_in_commit_order(s: &Store) {
    let tn = t("evented");
    let key = k("ev/a");
    let now = crate::clock::now_ms();
    s.put(&tn, &key, None, Precondition::None, sealer("1"), None)
        .await
        .unwrap();
    s.put(
        &tn,
        &key,
        Some(now - 1),
        Precondition::None,
        sealer("2"),
        None,
    )
    .await
    .unwrap();
    // Refused: no event.
    assert!(s
        .put(&tn, &key, None, Precondition::Version(9), sealer("x"), None)
        .await
        .is_err());
    s.change(
        &tn,
        &key,
        Change::Expire { at: now - 1 },
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    s.change(&tn, &key, Change::Undelete, Precondition::None, None)
        .await
        .unwrap();
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    s.change(&tn, &key, Change::Destroy, Precondition::None, None)
        .await
        .unwrap();
    s.put(
        &tn,
        &k("other/b"),
        None,
        Precondition::None,
        sealer("b"),
        None,
    )
    .await
    .unwrap();
    let all = s.events_after(&tn, "", 0, 100).await.unwrap();
    let seen: Vec<(&str, u64, &str)> = all
        .iter()
        .map(|e| (e.key.as_str(), e.version, e.action))
        .collect();
    assert_eq!(
        seen,
        [
            ("ev/a", 1, "put"),
            ("ev/a", 2, "put"),
            ("ev/a", 2, "expire"),
            ("ev/a", 2, "undelete"),
            ("ev/a", 2, "delete"),
            ("ev/a", 2, "destroy"),
            ("other/b", 1, "put"),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    assert!(all.iter().all(|e| e.tenant == tn && e.at >= now - 1000));
    let under = s.events_after(&tn, "ev/", all[2].id, 100).await.unwrap();
    assert_eq!(under, all[3..6].to_vec());
    assert_eq!(
        s.events_after(&tn, "ev/", all[1].id, 2).await.unwrap(),
        all[2..4].to_vec()
    );
    let last = all.last().unwrap().id;
    assert!(s.events_after(&tn, "", last, 100).await.unwrap().is_empty());
    assert!(matches!(
        s.events_after(&tn, "", last + 1_000_000, 100).await,
        Err(StoreError::Gone)
    ));
    assert!(s
        .events_after(&t("quiet"), "", 0, 100)
        .await
        .unwrap()
        .is_empty());
}

async fn rotation_steps_are_compare_and_set(s: &Store) {
    let name = "rotation.test";
    assert!(s.meta_replace(name, None, b"one").await.unwrap());
    assert!(!s.meta_replace(name, None, b"two").await.unwrap());
    assert!(!s.meta_replace(name, Some(b"zero"), b"two").await.unwrap());
    assert!(s.meta_replace(name, Some(b"one"), b"two").await.unwrap());
    assert_eq!(s.meta_get(name).await.unwrap().unwrap(), b"two");

    let tn = t("rekeyed");
    let dek = |wrapped: &[u8]| WrappedDek {
        id: 3,
        wrapped: wrapped.to_vec(),
    };
    assert!(s.add_dek(&tn, dek(b"old")).await.unwrap());
    assert!(!s
        .replace_dek(&tn, 3, b"other", b"new".to_vec())
        .await
        .unwrap());
    assert!(s
        .replace_dek(&tn, 3, b"old", b"new".to_vec())
        .await
        .unwrap());
    assert_eq!(s.deks(&tn).await.unwrap(), [dek(b"new")]);
    let all = s.all_deks().await.unwrap();
    assert!(all.contains(&(tn.clone(), dek(b"new"))), "{all:?}");
    assert!(all.iter().any(|(t, _)| t.as_str() == "deks"));
}

/// Fills `source` with every kind of record, dumps it, loads the dump
/// into the empty `target`, and finds the same records there; a second
/// load is refused unless forced, and a forced one keeps the target's
/// trail meta.
pub(crate) async fn a_dump_loads_into_another_store_as_it_was(source: &Store, target: &Store) {
    use crate::store::dump::{Dumped, Records};
    let (tn, gone) = (t("dumped"), k("d/gone"));
    for (key, n) in [("d/one", 3), ("d/two", 1), ("d/gone", 2)] {
        for _ in 0..n {
            source
                .put(&tn, &k(key), None, Precondition::None, sealer(key), None)
                .await
                .unwrap();
        }
    }
    let deleted = |store: &Store| {
        let store = store.clone();
        let (tn, gone) = (tn.clone(), gone.clone());
        async move {
            store
                .change(&tn, &gone, Change::Delete, Precondition::None, None)
                .await
        }
    };
    deleted(source).await.unwrap();
    // A version that lapses, far ahead: the dump carries its expiry.
    source
        .put(
            &tn,
            &k("d/lapsing"),
            Some(4_000_000_000_000),
            Precondition::None,
            sealer("lapsing"),
            None,
        )
        .await
        .unwrap();
    // Vault's KV v2 model: per-version states, settings, a key with
    // settings and no value yet.
    let kv = k("d/kv");
    for _ in 0..3 {
        let d = Defaults::default();
        super::conformance_kv::put(source, &tn, &kv, Precondition::None, true, d)
            .await
            .unwrap();
    }
    for (action, version) in [(VersionAction::Delete, 1), (VersionAction::Destroy, 2)] {
        let change = Change::Versions {
            action,
            versions: vec![version],
        };
        source
            .change(&tn, &kv, change, Precondition::None, None)
            .await
            .unwrap();
    }
    let settings = KeySettings {
        max_versions: 5,
        custom_metadata: [("team".to_owned(), "a".to_owned())].into(),
        ..Default::default()
    };
    for key in [&kv, &k("d/meta")] {
        let change = Change::Settings(settings.clone().into());
        source
            .change(&tn, key, change, Precondition::None, None)
            .await
            .unwrap();
    }
    source
        .add_dek(
            &tn,
            WrappedDek {
                id: 1,
                wrapped: b"w".to_vec(),
            },
        )
        .await
        .unwrap();
    source
        .apikey_insert(
            ApiKeyRecord {
                id: "dumpkey".into(),
                tenant: tn.clone(),
                name: "n".into(),
                scopes: vec!["secrets:read".into()],
                hash: [3; 32],
                created_at: 1,
                expires_at: Some(2),
                revoked_at: None,
                last_used_at: Some(1),
                policies: Vec::new(),
            },
            None,
        )
        .await
        .unwrap();
    use super::conformance_identity::{put_policy, put_role, role, token};
    put_role(source, &tn, &role("ci")).await;
    let policy = super::identity::PolicyRecord {
        name: "readers".into(),
        scopes: vec!["secrets:read".into()],
        updated_at: 1,
    };
    put_policy(source, &tn, &policy).await;
    let minted = token(&"d".repeat(64), "dumped", 4_000_000_000_000);
    source.token_insert(&minted, None).await.unwrap();
    source
        .meta_init("master_key_check", b"check".to_vec())
        .await
        .unwrap();
    source
        .meta_init("audit_key", b"source's".to_vec())
        .await
        .unwrap();
    let dump = |store: Store| async move {
        let mut records = Vec::new();
        store
            .dump(&mut |r: Dumped| {
                records.push(r);
                Ok(())
            })
            .await
            .unwrap();
        records
    };
    let records = dump(source.clone()).await;
    assert!(records
        .iter()
        .all(|r| !matches!(r, Dumped::Meta { name, .. } if name == "audit_key")));
    let gone_dump = records.iter().find_map(|r| match r {
        Dumped::Secret(s) if s.key == "d/gone" => Some(s.clone()),
        _ => None,
    });
    let gone_dump = gone_dump.expect("a soft-deleted secret is dumped");
    assert!(gone_dump.head.deleted && gone_dump.versions.len() == 2);
    let lapsing = records.iter().find_map(|r| match r {
        Dumped::Secret(s) if s.key == "d/lapsing" => Some(s.clone()),
        _ => None,
    });
    let lapsing = lapsing.expect("a lapsing secret is dumped");
    assert_eq!(lapsing.head.expires_at, Some(4_000_000_000_000));
    assert_eq!(lapsing.versions[0].expires_at, Some(4_000_000_000_000));
    let feed = |records: &Vec<Dumped>| -> Records { Box::new(records.clone().into_iter().map(Ok)) };

    target
        .meta_init("audit_key", b"target's".to_vec())
        .await
        .unwrap();
    let counts = target.load(feed(&records), false, None).await.unwrap();
    assert_eq!(
        (
            counts.secrets,
            counts.versions,
            counts.deks,
            counts.apikeys,
            counts.identity
        ),
        (6, 10, 1, 1, 3)
    );
    assert_eq!(dump(target.clone()).await, records);
    assert_eq!(target.role_get(&tn, "ci").await.unwrap(), Some(role("ci")));
    assert_eq!(
        target.policy_get(&tn, "readers").await.unwrap(),
        Some(policy)
    );
    assert_eq!(target.token_get(&minted.id).await.unwrap(), Some(minted));
    let meta = target.metadata(&tn, &gone).await.unwrap().unwrap();
    assert_eq!(meta, source.metadata(&tn, &gone).await.unwrap().unwrap());
    let old = target
        .get(&tn, &k("d/one"), Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text(&old), "d/one@1");

    assert!(matches!(
        target.load(feed(&records), false, None).await,
        Err(StoreError::Refused(_))
    ));
    let mut fewer = records.clone();
    fewer.retain(|r| !matches!(r, Dumped::Secret(s) if s.key == "d/two"));
    target.load(feed(&fewer), true, None).await.unwrap();
    assert_eq!(dump(target.clone()).await, fewer);
    assert_eq!(
        target.meta_get("audit_key").await.unwrap().unwrap(),
        b"target's"
    );
    // A failing record stops the load; on sqlite it undoes it whole.
    let failing: Records = Box::new(
        records
            .clone()
            .into_iter()
            .map(Ok)
            .chain([Err("cut".to_owned())]),
    );
    assert!(target.load(failing, true, None).await.is_err());
}

async fn put_assigns_increasing_versions(s: &Store) {
    let (tn, key) = (t("a"), k("app/one"));
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert_eq!(
        s.put(&tn, &key, None, Precondition::None, sealer("x"), None)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.put(&tn, &key, None, Precondition::None, sealer("y"), None)
            .await
            .unwrap(),
        2
    );
    let cur = s.get(&tn, &key, None).await.unwrap().unwrap();
    assert_eq!((cur.version, text(&cur)), (2, "y@2".into()));
    let old = s.get(&tn, &key, Some(1)).await.unwrap().unwrap();
    assert_eq!(text(&old), "x@1");
    assert!(s.get(&tn, &key, Some(3)).await.unwrap().is_none());
}

async fn tenants_are_partitioned(s: &Store) {
    let key = k("shared/name");
    s.put(&t("a"), &key, None, Precondition::None, sealer("a"), None)
        .await
        .unwrap();
    assert!(s.get(&t("b"), &key, None).await.unwrap().is_none());
    assert!(matches!(
        s.change(&t("b"), &key, Change::Delete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(s.metadata(&t("b"), &key).await.unwrap().is_none());
    assert!(s
        .list(&t("b"), "", None, 100, None)
        .await
        .unwrap()
        .is_empty());
    assert!(s.get(&t("a"), &key, None).await.unwrap().is_some());
}

async fn preconditions_are_checked(s: &Store) {
    let (tn, key) = (t("a"), k("cas"));
    assert_eq!(
        s.put(&tn, &key, None, Precondition::Absent, sealer("1"), None)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        s.put(&tn, &key, None, Precondition::Absent, sealer("x"), None)
            .await,
        Err(StoreError::VersionMismatch)
    ));
    assert!(matches!(
        s.put(&tn, &key, None, Precondition::Version(7), sealer("x"), None)
            .await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(
        s.put(&tn, &key, None, Precondition::Version(1), sealer("2"), None)
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        s.change(&tn, &key, Change::Delete, Precondition::Version(1), None)
            .await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(text(&s.get(&tn, &key, None).await.unwrap().unwrap()), "2@2");
    s.change(&tn, &key, Change::Delete, Precondition::Version(2), None)
        .await
        .unwrap();
    // A soft-deleted key counts as absent for create-only writes.
    assert_eq!(
        s.put(&tn, &key, None, Precondition::Absent, sealer("3"), None)
            .await
            .unwrap(),
        3
    );
}

async fn soft_delete_undelete_destroy(s: &Store) {
    let (tn, key) = (t("a"), k("soft"));
    s.put(&tn, &key, None, Precondition::None, sealer("v"), None)
        .await
        .unwrap();
    s.put(&tn, &key, None, Precondition::None, sealer("w"), None)
        .await
        .unwrap();
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert!(s.get(&tn, &key, Some(2)).await.unwrap().is_none());
    assert!(s.get(&tn, &key, Some(1)).await.unwrap().is_some());
    assert!(matches!(
        s.change(&tn, &key, Change::Delete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert!(meta.deleted);
    assert_eq!(meta.current_version, 2);
    assert_eq!(
        meta.versions
            .iter()
            .map(|v| (v.version, v.deleted))
            .collect::<Vec<_>>(),
        [(1, false), (2, true)]
    );
    s.change(&tn, &key, Change::Undelete, Precondition::None, None)
        .await
        .unwrap();
    assert!(matches!(
        s.change(&tn, &key, Change::Undelete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(text(&s.get(&tn, &key, None).await.unwrap().unwrap()), "w@2");
    // A PUT on a soft-deleted key is the next version and live; the
    // deleted version stays deleted.
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    s.put(&tn, &key, None, Precondition::None, sealer("x"), None)
        .await
        .unwrap();
    assert_eq!(text(&s.get(&tn, &key, None).await.unwrap().unwrap()), "x@3");
    assert!(s.get(&tn, &key, Some(2)).await.unwrap().is_none());
    s.change(&tn, &key, Change::Destroy, Precondition::None, None)
        .await
        .unwrap();
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert!(s.get(&tn, &key, Some(1)).await.unwrap().is_none());
    assert!(s.metadata(&tn, &key).await.unwrap().is_none());
    assert!(matches!(
        s.change(&tn, &key, Change::Undelete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        s.change(&tn, &key, Change::Destroy, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
}

async fn old_versions_are_pruned(s: &Store) {
    let (tn, key) = (t("a"), k("pruned"));
    let max = u64::from(s.max_versions());
    for _ in 0..max + 3 {
        s.put(&tn, &key, None, Precondition::None, sealer("p"), None)
            .await
            .unwrap();
    }
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(meta.versions.len() as u64, max);
    assert_eq!(meta.versions[0].version, 4);
    assert!(s.get(&tn, &key, Some(3)).await.unwrap().is_none());
    assert!(s.get(&tn, &key, Some(4)).await.unwrap().is_some());
}

async fn listing_pages_by_prefix(s: &Store) {
    let tn = t("lister");
    for name in ["p/c", "p/a", "p/b", "q/a", "p", "pa"] {
        s.put(&tn, &k(name), None, Precondition::None, sealer("l"), None)
            .await
            .unwrap();
    }
    s.change(&tn, &k("p/b"), Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    let keys = |rows: Vec<ListedSecret>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
    assert_eq!(
        keys(s.list(&tn, "p/", None, 10, None).await.unwrap()),
        ["p/a", "p/c"]
    );
    assert_eq!(
        keys(s.list(&tn, "", None, 2, None).await.unwrap()),
        ["p", "p/a"]
    );
    assert_eq!(
        keys(s.list(&tn, "", Some("p/a"), 10, None).await.unwrap()),
        ["p/c", "pa", "q/a"]
    );
    assert_eq!(
        keys(s.list(&tn, "p", Some("p/c"), 10, None).await.unwrap()),
        ["pa"]
    );
}

async fn data_keys_are_created_once(s: &Store) {
    let tn = t("deks");
    assert!(s.deks(&tn).await.unwrap().is_empty());
    assert!(s
        .add_dek(
            &tn,
            WrappedDek {
                id: 1,
                wrapped: vec![1]
            }
        )
        .await
        .unwrap());
    assert!(!s
        .add_dek(
            &tn,
            WrappedDek {
                id: 1,
                wrapped: vec![2]
            }
        )
        .await
        .unwrap());
    let deks = s.deks(&tn).await.unwrap();
    assert_eq!((deks.len(), deks[0].wrapped.clone()), (1, vec![1]));
    assert!(s.deks(&t("other")).await.unwrap().is_empty());
}

async fn api_keys_round_trip(s: &Store) {
    let record = ApiKeyRecord {
        id: "abc123".into(),
        tenant: t("keys"),
        name: "ci".into(),
        scopes: vec!["secrets:read".into(), "secrets:write:prod/".into()],
        hash: [7; 32],
        created_at: 1,
        expires_at: Some(2),
        revoked_at: None,
        last_used_at: None,
        policies: Vec::new(),
    };
    s.apikey_insert(record.clone(), None).await.unwrap();
    assert!(s.apikeys_exist().await.unwrap());
    assert_eq!(s.apikey_get("abc123").await.unwrap().unwrap(), record);
    assert_eq!(
        s.apikey_list(&t("keys")).await.unwrap(),
        vec![record.clone()]
    );
    assert!(s.apikey_list(&t("other")).await.unwrap().is_empty());
    s.apikey_touch(vec![("abc123".into(), 50)]).await.unwrap();
    assert_eq!(
        s.apikey_get("abc123").await.unwrap().unwrap().last_used_at,
        Some(50)
    );
    assert!(matches!(
        s.apikey_revoke(&t("other"), "abc123", 9, None).await,
        Err(StoreError::NotFound)
    ));
    s.apikey_revoke(&t("keys"), "abc123", 9, None)
        .await
        .unwrap();
    assert_eq!(
        s.apikey_get("abc123").await.unwrap().unwrap().revoked_at,
        Some(9)
    );
    assert!(s.apikey_list(&t("keys")).await.unwrap().is_empty());
}

async fn meta_init_keeps_the_first_value(s: &Store) {
    assert_eq!(s.meta_init("check", vec![1]).await.unwrap(), vec![1]);
    assert_eq!(s.meta_init("check", vec![2]).await.unwrap(), vec![1]);
}

/// An audit line for request `id`.
fn line(id: &str) -> Option<LineBody> {
    Some(LineBody {
        text: format!("{{\"request_id\":\"{id}\","),
        request_id: id.into(),
    })
}

/// The request ids of the trail's lines, in order.
async fn trail_ids(config: &StoreConfig) -> Vec<String> {
    read_trail(config)
        .await
        .unwrap()
        .lines
        .iter()
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).unwrap()["request_id"].to_string())
        .map(|id| id.trim_matches('"').to_owned())
        .collect()
}

/// A change's line is written once, with a change that happens, and never
/// for one refused by a precondition or not found; lines that record no
/// change go through the trail.
async fn lines_are_written_with_the_changes_that_happen(opened: &Opened, config: &StoreConfig) {
    let (s, tn, key) = (&opened.store, t("lines"), k("l"));
    s.put(
        &tn,
        &key,
        None,
        Precondition::None,
        sealer("1"),
        line("put-1"),
    )
    .await
    .unwrap();
    let refused = s
        .put(
            &tn,
            &key,
            None,
            Precondition::Absent,
            sealer("x"),
            line("put-412"),
        )
        .await;
    assert!(matches!(refused, Err(StoreError::VersionMismatch)));
    s.change(
        &tn,
        &key,
        Change::Delete,
        Precondition::Version(9),
        line("del-412"),
    )
    .await
    .unwrap_err();
    s.change(
        &tn,
        &key,
        Change::Delete,
        Precondition::Version(1),
        line("del-1"),
    )
    .await
    .unwrap();
    s.change(
        &tn,
        &k("absent"),
        Change::Undelete,
        Precondition::None,
        line("undel-404"),
    )
    .await
    .unwrap_err();
    opened.trail.append(line("read-1").unwrap()).await.unwrap();
    s.change(
        &tn,
        &key,
        Change::Undelete,
        Precondition::None,
        line("undel-1"),
    )
    .await
    .unwrap();
    s.change(
        &tn,
        &key,
        Change::Destroy,
        Precondition::None,
        line("destroy-1"),
    )
    .await
    .unwrap();
    let record = ApiKeyRecord {
        id: "line0key".into(),
        tenant: tn.clone(),
        name: "n".into(),
        scopes: vec![],
        hash: [1; 32],
        created_at: 1,
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        policies: Vec::new(),
    };
    s.apikey_insert(record, line("key-1")).await.unwrap();
    s.apikey_revoke(&t("other"), "line0key", 5, line("revoke-404"))
        .await
        .unwrap_err();
    s.apikey_revoke(&tn, "line0key", 5, line("revoke-1"))
        .await
        .unwrap();
    assert_eq!(
        trail_ids(config).await,
        [
            "put-1",
            "del-1",
            "read-1",
            "undel-1",
            "destroy-1",
            "key-1",
            "revoke-1"
        ]
    );
    let trail = read_trail(config).await.unwrap();
    assert_eq!(trail.unfinished, [], "every change begun has its line");
    assert_eq!(
        crate::audit::verify_lines(
            trail.lines.into_iter().map(Ok::<_, ()>),
            Some(&test_key()),
            None
        )
        .map(|v| matches!(v, crate::audit::Verdict::Intact { lines: 7, .. })),
        Ok(true)
    );
}

fn unavailable<T>(r: Result<T, StoreError>) -> bool {
    matches!(r, Err(StoreError::Unavailable(_)))
}

/// With a trail that cannot be written, no change happens and each fails
/// `Unavailable`.
async fn changes_fail_when_their_line_cannot_be_written(s: &Store) {
    let (tn, key) = (t("veto"), k("v"));
    assert!(unavailable(
        s.put(&tn, &key, None, Precondition::None, sealer("2"), line("p"))
            .await
    ));
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    s.put(&tn, &key, None, Precondition::None, sealer("1"), None)
        .await
        .unwrap();
    for change in [Change::Delete, Change::Destroy] {
        assert!(unavailable(
            s.change(&tn, &key, change, Precondition::None, line("c"))
                .await
        ));
    }
    let cur = s.get(&tn, &key, None).await.unwrap().unwrap();
    assert_eq!((cur.version, text(&cur)), (1, "1@1".into()), "no trace");
}

fn sqlite_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig::embedded(dir)
}

/// 32 concurrent create-only writes to one key: exactly one wins.
async fn create_only_race(store: &Store) {
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    &t("race"),
                    &k("once"),
                    None,
                    Precondition::Absent,
                    sealer(&i.to_string()),
                    None,
                )
                .await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => wins += 1,
            Err(StoreError::VersionMismatch) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(wins, 1);
}

/// With one version kept, a soft-deleted secret can still be undeleted and
/// its metadata still names the deleted version.
async fn one_version_survives_delete_and_undelete(s: &Store) {
    assert_eq!(s.max_versions(), 1);
    let (tn, key) = (t("one"), k("only"));
    s.put(&tn, &key, None, Precondition::None, sealer("a"), None)
        .await
        .unwrap();
    s.put(&tn, &key, None, Precondition::None, sealer("b"), None)
        .await
        .unwrap();
    assert!(s.get(&tn, &key, Some(1)).await.unwrap().is_none());
    s.change(&tn, &key, Change::Delete, Precondition::Version(2), None)
        .await
        .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert!(meta.deleted);
    assert_eq!(
        meta.versions
            .iter()
            .map(|v| (v.version, v.deleted))
            .collect::<Vec<_>>(),
        [(2, true)]
    );
    s.change(&tn, &key, Change::Undelete, Precondition::None, None)
        .await
        .unwrap();
    let cur = s.get(&tn, &key, None).await.unwrap().unwrap();
    assert_eq!((cur.version, text(&cur)), (2, "b@2".into()));
    assert_eq!(
        s.put(&tn, &key, None, Precondition::Version(2), sealer("c"), None)
            .await
            .unwrap(),
        3
    );
}

#[tokio::test]
async fn sqlite_keeps_one_version_through_delete_and_undelete() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        max_versions: 1,
        ..sqlite_config(dir.path())
    };
    let store = Store::open(&config).await.unwrap();
    one_version_survives_delete_and_undelete(&store).await;
}

#[tokio::test]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite_config(dir.path());
    let opened = Store::open_with_trail(&config).await.unwrap();
    opened.trail.start(test_key()).await.unwrap();
    run_all(&opened, &config).await;
}

#[tokio::test]
async fn sqlite_changes_fail_when_the_trail_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("audit.log")).unwrap();
    let opened = Store::open_with_trail(&sqlite_config(dir.path()))
        .await
        .unwrap();
    opened.trail.start(test_key()).await.unwrap();
    changes_fail_when_their_line_cannot_be_written(&opened.store).await;
}

#[tokio::test]
async fn sqlite_dumps_load_into_another_store() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = Store::open(&sqlite_config(a.path())).await.unwrap();
    let target = Store::open(&sqlite_config(b.path())).await.unwrap();
    a_dump_loads_into_another_store_as_it_was(&source, &target).await;
    // The failed forced load above left the target as it was before it.
    let tn = t("dumped");
    assert!(target.get(&tn, &k("d/two"), None).await.unwrap().is_none());
    assert!(target.get(&tn, &k("d/one"), None).await.unwrap().is_some());
}

#[tokio::test]
async fn sqlite_concurrent_create_only_writes_have_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&sqlite_config(dir.path())).await.unwrap();
    create_only_race(&store).await;
}

mod nats {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::store::nats_fixture::{free_port, NatsServer};

    fn nats_config(url: String, bucket: &str) -> StoreConfig {
        StoreConfig {
            engine: Engine::Nats,
            data_dir: std::env::temp_dir(),
            max_versions: 10,
            nats_url: url,
            nats_bucket: bucket.into(),
            nats_replicas: 1,
            audit_max_bytes: u64::MAX,
            events: Default::default(),
        }
    }

    /// Pings until the store answers, for at most `limit`.
    async fn wait_ready(store: &Store, limit: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + limit;
        loop {
            match store.ping().await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_backend_conforms() {
        let server = NatsServer::start();
        let config = nats_config(server.url(), "conform_1");
        let opened = Store::open_with_trail(&config).await.unwrap();
        wait_ready(&opened.store, Duration::from_secs(10))
            .await
            .unwrap();
        opened.trail.start(test_key()).await.unwrap();
        run_all(&opened, &config).await;
        opened.store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_dumps_load_into_another_store() {
        let server = NatsServer::start();
        let source = Store::open(&nats_config(server.url(), "dump_src"))
            .await
            .unwrap();
        let target = Store::open(&nats_config(server.url(), "dump_dst"))
            .await
            .unwrap();
        wait_ready(&source, Duration::from_secs(10)).await.unwrap();
        wait_ready(&target, Duration::from_secs(10)).await.unwrap();
        a_dump_loads_into_another_store_as_it_was(&source, &target).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_changes_fail_when_the_trail_cannot_be_written() {
        use async_nats::jetstream::stream::DiscardPolicy;
        let server = NatsServer::start();
        let config = nats_config(server.url(), "veto_1");
        let opened = Store::open_with_trail(&config).await.unwrap();
        wait_ready(&opened.store, Duration::from_secs(10))
            .await
            .unwrap();
        opened.trail.start(test_key()).await.unwrap();
        // The stream exists once a line was appended; then it takes no more.
        opened.trail.append(line("first").unwrap()).await.unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        let mut stream = js.get_stream("veto_1_audit").await.unwrap();
        let mut full = stream.info().await.unwrap().config.clone();
        full.max_messages = 1;
        full.discard = DiscardPolicy::New;
        js.update_stream(full).await.unwrap();
        changes_fail_when_their_line_cannot_be_written(&opened.store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_keeps_one_version_through_delete_and_undelete() {
        let server = NatsServer::start();
        // Created with 10 versions, then reopened with 1: the bucket's
        // history follows the configuration.
        let wide = Store::open(&nats_config(server.url(), "one_1"))
            .await
            .unwrap();
        wait_ready(&wide, Duration::from_secs(10)).await.unwrap();
        wide.close().await;
        let config = StoreConfig {
            max_versions: 1,
            ..nats_config(server.url(), "one_1")
        };
        let store = Store::open(&config).await.unwrap();
        wait_ready(&store, Duration::from_secs(10)).await.unwrap();
        one_version_survives_delete_and_undelete(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_concurrent_create_only_writes_have_one_winner() {
        let server = NatsServer::start();
        let store = Store::open(&nats_config(server.url(), "race_1"))
            .await
            .unwrap();
        wait_ready(&store, Duration::from_secs(10)).await.unwrap();
        create_only_race(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nats_store_opens_while_the_server_is_down_and_recovers() {
        let port = free_port();
        let store = Store::open(&nats_config(
            format!("nats://127.0.0.1:{port}"),
            "recover_1",
        ))
        .await
        .expect("opening never fails because NATS is down");
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store
                .put(
                    &t("a"),
                    &k("early"),
                    None,
                    Precondition::None,
                    sealer("x"),
                    None
                )
                .await,
            Err(StoreError::Unavailable(_))
        ));
        let _server = NatsServer::start_on(port);
        wait_ready(&store, Duration::from_secs(10))
            .await
            .expect("the store reconnects by itself");
        assert_eq!(
            store
                .put(
                    &t("a"),
                    &k("late"),
                    None,
                    Precondition::None,
                    sealer("y"),
                    None
                )
                .await
                .unwrap(),
            1
        );
    }
}

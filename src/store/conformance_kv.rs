//! The conformance suite's part for Vault's KV v2 model (DESIGN §12):
//! per-version delete, undelete and destroy, check-and-set against the
//! newest version, a key's settings (versions kept, `cas_required`,
//! `delete_version_after`, custom metadata), the KV-data marker, and a key
//! whose settings came before any value. Every engine runs it.

use super::*;
use crate::types::{SecretKey, TenantId};

fn t(name: &str) -> TenantId {
    TenantId::parse(name).unwrap()
}
fn k(name: &str) -> SecretKey {
    SecretKey::parse(name).unwrap()
}

/// A put as ops makes one, sealed again after a lost race; the sealed
/// bytes name the version.
pub(crate) async fn put(
    s: &Store,
    tn: &TenantId,
    key: &SecretKey,
    precondition: Precondition,
    kv: bool,
    defaults: Defaults,
) -> Result<u64, StoreError> {
    let mut seen = s.head(tn, key).await?;
    for _ in 0..MAX_ATTEMPTS {
        let put = SealedPut {
            sealed: format!("kv@{}", seen.next_version()).into_bytes(),
            expires_at: None,
            precondition,
            line: None,
            kv,
            defaults,
        };
        match s.put_once(tn, key, seen, put).await {
            Ok((version, _)) => return Ok(version),
            Err(Put::Stale(found)) => seen = found,
            Err(Put::Failed(e)) => return Err(e),
        }
    }
    Err(StoreError::Unavailable("too many writers".into()))
}

async fn versions(
    s: &Store,
    tn: &TenantId,
    key: &SecretKey,
    action: VersionAction,
    v: &[u64],
) -> Result<(), StoreError> {
    let change = Change::Versions {
        action,
        versions: v.to_vec(),
    };
    s.change(tn, key, change, Precondition::None, None).await
}

/// (version, deleted, destroyed) of each retained version.
async fn states(s: &Store, tn: &TenantId, key: &SecretKey) -> Vec<(u64, bool, bool)> {
    let meta = s.metadata(tn, key).await.unwrap().unwrap();
    meta.versions
        .iter()
        .map(|v| (v.version, v.deleted, v.destroyed))
        .collect()
}

pub(crate) async fn run_all(s: &Store) {
    versions_are_deleted_undeleted_and_destroyed_one_by_one(s).await;
    check_and_set_names_the_newest_version(s).await;
    settings_govern_the_writes_that_follow(s).await;
    settings_may_come_before_any_value(s).await;
    a_full_history_keeps_every_version_through_metadata_changes(s).await;
    pruned_versions_stay_pruned(s).await;
    an_older_lapsed_version_undeleted_reads_again(s).await;
    settings_merge_with_what_the_key_has(s).await;
    a_deleted_version_keeps_when_it_was_deleted(s).await;
}

/// A deleted current version keeps its deletion time through later changes
/// of the key's settings and of its other versions, and after a new put.
async fn a_deleted_version_keeps_when_it_was_deleted(s: &Store) {
    let (tn, key) = (t("kv"), k("deleted/since"));
    for _ in 0..2 {
        put(s, &tn, &key, Precondition::None, true, Defaults::default())
            .await
            .unwrap();
    }
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    let deleted_at = |meta: &SecretMetadata, v: usize| meta.versions[v].deleted_at;
    let first = s.metadata(&tn, &key).await.unwrap().unwrap();
    let since = deleted_at(&first, 1).expect("a deletion time");
    // The next changes come at least a millisecond later.
    while crate::clock::now_ms() <= since {
        tokio::task::yield_now().await;
    }
    let change = SettingsChange {
        cas_required: Some(true),
        ..Default::default()
    };
    s.change(
        &tn,
        &key,
        Change::Settings(change),
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    versions(s, &tn, &key, VersionAction::Delete, &[1])
        .await
        .unwrap();
    let later = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(deleted_at(&later, 1), Some(since));
    assert!(later.deleted && later.updated_at > since);
    put(
        s,
        &tn,
        &key,
        Precondition::Cas(2),
        true,
        Defaults::default(),
    )
    .await
    .unwrap();
    let after_put = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(deleted_at(&after_put, 1), Some(since));
    assert!(after_put.versions[0].deleted && after_put.versions[1].deleted);
}

/// However many settings and per-version changes a key takes, every
/// retained version stays (a nats message restating a version replaces
/// the one before it).
async fn a_full_history_keeps_every_version_through_metadata_changes(s: &Store) {
    let (tn, key) = (t("kv"), k("full/history"));
    let max = u64::from(s.max_versions());
    for _ in 0..max {
        put(s, &tn, &key, Precondition::None, true, Defaults::default())
            .await
            .unwrap();
    }
    for i in 0..max + 2 {
        let change = SettingsChange {
            custom_metadata_patch: Some([(format!("k{i}"), Some("v".to_owned()))].into()),
            ..Default::default()
        };
        s.change(
            &tn,
            &key,
            Change::Settings(change),
            Precondition::None,
            None,
        )
        .await
        .unwrap();
    }
    versions(s, &tn, &key, VersionAction::Delete, &[2])
        .await
        .unwrap();
    versions(s, &tn, &key, VersionAction::Undelete, &[2])
        .await
        .unwrap();
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    s.change(&tn, &key, Change::Undelete, Precondition::None, None)
        .await
        .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(meta.versions.len() as u64, max, "{:?}", meta.versions);
    assert_eq!(meta.settings.custom_metadata.len() as u64, max + 2);
    for v in 1..=max {
        assert!(
            s.get(&tn, &key, Some(v)).await.unwrap().is_some(),
            "version {v}"
        );
    }
}

/// A version pruned by the tenant's smaller number does not come back when
/// a later write keeps more.
async fn pruned_versions_stay_pruned(s: &Store) {
    let (tn, key) = (t("kv"), k("pruned/floor"));
    let two = Defaults {
        max_versions: 2,
        ..Defaults::default()
    };
    for _ in 0..5 {
        put(s, &tn, &key, Precondition::None, true, two)
            .await
            .unwrap();
    }
    put(s, &tn, &key, Precondition::None, false, Defaults::default())
        .await
        .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(
        meta.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    for v in 1..=3 {
        assert!(
            s.get(&tn, &key, Some(v)).await.unwrap().is_none(),
            "version {v}"
        );
    }
}

/// An older version that lapsed (its key's `delete_version_after`), once
/// undeleted, reads again and no longer lapses.
async fn an_older_lapsed_version_undeleted_reads_again(s: &Store) {
    let (tn, key) = (t("kv"), k("lapsed/older"));
    let past = SealedPut {
        sealed: b"kv@1".to_vec(),
        expires_at: Some(crate::clock::now_ms() + 50),
        precondition: Precondition::None,
        line: None,
        kv: true,
        defaults: Defaults::default(),
    };
    let seen = s.head(&tn, &key).await.unwrap();
    assert!(s.put_once(&tn, &key, seen, past).await.is_ok());
    put(s, &tn, &key, Precondition::None, true, Defaults::default())
        .await
        .unwrap();
    // Wait for the lapse: the store's clock, not a sleep of a guessed length.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.get(&tn, &key, Some(1)).await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "version 1 never lapsed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    versions(s, &tn, &key, VersionAction::Undelete, &[1])
        .await
        .unwrap();
    let back = s.get(&tn, &key, Some(1)).await.unwrap().expect("undeleted");
    assert_eq!(back.expires_at, None);
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(
        (meta.versions[0].deleted, meta.versions[0].expires_at),
        (false, None)
    );
}

/// A change names only what it changes; custom metadata merges; a change
/// that needs the key refuses a key without metadata.
async fn settings_merge_with_what_the_key_has(s: &Store) {
    let (tn, key) = (t("kv"), k("merge/settings"));
    let missing = SettingsChange {
        cas_required: Some(true),
        must_exist: true,
        ..Default::default()
    };
    assert!(matches!(
        s.change(
            &tn,
            &key,
            Change::Settings(missing),
            Precondition::None,
            None
        )
        .await,
        Err(StoreError::NotFound)
    ));
    assert!(s.metadata(&tn, &key).await.unwrap().is_none());
    let first = SettingsChange {
        max_versions: Some(3),
        custom_metadata: Some([("a".into(), "1".into()), ("b".into(), "2".into())].into()),
        ..Default::default()
    };
    let second = SettingsChange {
        custom_metadata_patch: Some([("a".into(), None), ("c".into(), Some("3".into()))].into()),
        must_exist: true,
        ..Default::default()
    };
    for change in [first, second] {
        s.change(
            &tn,
            &key,
            Change::Settings(change),
            Precondition::None,
            None,
        )
        .await
        .unwrap();
    }
    let settings = s.metadata(&tn, &key).await.unwrap().unwrap().settings;
    assert_eq!(settings.max_versions, 3);
    assert_eq!(
        settings.custom_metadata,
        [("b".into(), "2".into()), ("c".into(), "3".into())].into()
    );
    let too_many = SettingsChange {
        custom_metadata_patch: Some(
            (0..70)
                .map(|i| (format!("x{i}"), Some("v".into())))
                .collect(),
        ),
        ..Default::default()
    };
    assert!(matches!(
        s.change(
            &tn,
            &key,
            Change::Settings(too_many),
            Precondition::None,
            None
        )
        .await,
        Err(StoreError::Invalid(_))
    ));
}

async fn versions_are_deleted_undeleted_and_destroyed_one_by_one(s: &Store) {
    let (tn, key) = (t("kv"), k("per/version"));
    for _ in 0..4 {
        put(s, &tn, &key, Precondition::None, true, Defaults::default())
            .await
            .unwrap();
    }
    // An older version deleted: the key stays live, that version reads
    // as gone, and its deletion time is kept.
    versions(s, &tn, &key, VersionAction::Delete, &[2])
        .await
        .unwrap();
    assert!(s.get(&tn, &key, Some(2)).await.unwrap().is_none());
    let current = s.get(&tn, &key, None).await.unwrap().unwrap();
    assert_eq!((current.version, current.kv), (4, true));
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert!(!meta.deleted && meta.versions[1].deleted_at.is_some());
    // Nothing more to do: an answer, not a change.
    assert!(matches!(
        versions(s, &tn, &key, VersionAction::Delete, &[2, 9]).await,
        Err(StoreError::NotFound)
    ));
    // The current version deleted per version is the key's soft delete.
    versions(s, &tn, &key, VersionAction::Delete, &[4])
        .await
        .unwrap();
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert!(s.metadata(&tn, &key).await.unwrap().unwrap().deleted);
    assert_eq!(
        states(s, &tn, &key).await,
        [
            (1, false, false),
            (2, true, false),
            (3, false, false),
            (4, true, false)
        ]
    );
    // Undelete both; then destroy version 3 (live) and 1.
    versions(s, &tn, &key, VersionAction::Undelete, &[2, 4])
        .await
        .unwrap();
    assert_eq!(s.get(&tn, &key, None).await.unwrap().unwrap().version, 4);
    assert!(s.get(&tn, &key, Some(2)).await.unwrap().is_some());
    versions(s, &tn, &key, VersionAction::Destroy, &[1, 3])
        .await
        .unwrap();
    assert!(s.get(&tn, &key, Some(3)).await.unwrap().is_none());
    assert!(s.get(&tn, &key, Some(1)).await.unwrap().is_none());
    // A destroyed version stays so: undelete passes over it.
    assert!(matches!(
        versions(s, &tn, &key, VersionAction::Undelete, &[1, 3]).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(
        states(s, &tn, &key).await,
        [
            (1, true, true),
            (2, false, false),
            (3, true, true),
            (4, false, false)
        ]
    );
    // A later put keeps every older version's state.
    put(s, &tn, &key, Precondition::None, false, Defaults::default())
        .await
        .unwrap();
    assert_eq!(
        states(s, &tn, &key).await,
        [
            (1, true, true),
            (2, false, false),
            (3, true, true),
            (4, false, false),
            (5, false, false)
        ]
    );
    assert!(!s.get(&tn, &key, None).await.unwrap().unwrap().kv);
    // Destroying the current version: the key is deleted and cannot be
    // brought back, but takes a new version.
    versions(s, &tn, &key, VersionAction::Destroy, &[5])
        .await
        .unwrap();
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert!(matches!(
        s.change(&tn, &key, Change::Undelete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    put(s, &tn, &key, Precondition::None, true, Defaults::default())
        .await
        .unwrap();
    assert_eq!(s.get(&tn, &key, None).await.unwrap().unwrap().version, 6);
    assert_eq!(states(s, &tn, &key).await[4], (5, true, true));
    // A quiva soft delete of the current version shows per version too.
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    put(s, &tn, &key, Precondition::None, true, Defaults::default())
        .await
        .unwrap();
    assert_eq!(states(s, &tn, &key).await[5], (6, true, false));
    assert!(s.get(&tn, &key, Some(6)).await.unwrap().is_none());
    // Listing with deleted keys shows one whose current version is gone.
    let gone = k("per/gone");
    put(s, &tn, &gone, Precondition::None, true, Defaults::default())
        .await
        .unwrap();
    versions(s, &tn, &gone, VersionAction::Destroy, &[1])
        .await
        .unwrap();
    let live: Vec<_> = s.list(&tn, "per/", None, 10, None).await.unwrap();
    assert_eq!(
        live.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["per/version"]
    );
    let all = s.list_with_deleted(&tn, "per/", None, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.key.as_str()).collect::<Vec<_>>(),
        ["per/gone", "per/version"]
    );
}

async fn check_and_set_names_the_newest_version(s: &Store) {
    let (tn, key) = (t("kv"), k("cas"));
    let d = Defaults::default();
    assert!(matches!(
        put(s, &tn, &key, Precondition::Cas(1), true, d).await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(
        put(s, &tn, &key, Precondition::Cas(0), true, d)
            .await
            .unwrap(),
        1
    );
    assert!(matches!(
        put(s, &tn, &key, Precondition::Cas(0), true, d).await,
        Err(StoreError::VersionMismatch)
    ));
    // Deleted, the newest version still counts (Vault), unlike If-Match.
    s.change(&tn, &key, Change::Delete, Precondition::None, None)
        .await
        .unwrap();
    assert!(matches!(
        put(s, &tn, &key, Precondition::Cas(0), true, d).await,
        Err(StoreError::VersionMismatch)
    ));
    assert_eq!(
        put(s, &tn, &key, Precondition::Cas(1), true, d)
            .await
            .unwrap(),
        2
    );
    // A tenant that requires cas binds KV writes only.
    let strict = Defaults {
        cas_required: true,
        ..d
    };
    assert!(matches!(
        put(s, &tn, &key, Precondition::None, true, strict).await,
        Err(StoreError::CasRequired)
    ));
    assert_eq!(
        put(s, &tn, &key, Precondition::None, false, strict)
            .await
            .unwrap(),
        3
    );
}

async fn settings_govern_the_writes_that_follow(s: &Store) {
    let (tn, key) = (t("kv"), k("settings"));
    let d = Defaults::default();
    for _ in 0..4 {
        put(s, &tn, &key, Precondition::None, true, d)
            .await
            .unwrap();
    }
    let mut settings = KeySettings {
        max_versions: 2,
        cas_required: true,
        delete_version_after_secs: 3600,
        custom_metadata: [("owner".to_owned(), "team-a".to_owned())].into(),
    };
    s.change(
        &tn,
        &key,
        Change::Settings(settings.clone().into()),
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(meta.settings, settings);
    let read = s.get_kv(&tn, &key).await.unwrap().unwrap();
    assert_eq!(read.settings.as_deref(), Some(&settings));
    // cas_required refuses a write without one.
    assert!(matches!(
        put(s, &tn, &key, Precondition::None, false, d).await,
        Err(StoreError::CasRequired)
    ));
    let before = crate::clock::now_ms();
    assert_eq!(
        put(s, &tn, &key, Precondition::Cas(4), true, d)
            .await
            .unwrap(),
        5
    );
    // Two versions kept; the new one lapses an hour after it was written.
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(
        meta.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        [4, 5]
    );
    let lapses = meta.versions[1].expires_at.expect("delete_version_after");
    assert!(lapses >= before + 3_600_000 && lapses <= crate::clock::now_ms() + 3_600_000);
    // The tenant's number of versions applies where the key names none.
    settings.max_versions = 0;
    settings.cas_required = false;
    s.change(
        &tn,
        &key,
        Change::Settings(settings.clone().into()),
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    let one = Defaults {
        max_versions: 1,
        ..d
    };
    put(s, &tn, &key, Precondition::None, true, one)
        .await
        .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!(meta.versions.len(), 1);
    assert_eq!(meta.settings, settings);
}

async fn settings_may_come_before_any_value(s: &Store) {
    let (tn, key) = (t("kv"), k("meta/first"));
    let settings = KeySettings {
        custom_metadata: [("a".to_owned(), "b".to_owned())].into(),
        ..Default::default()
    };
    s.change(
        &tn,
        &key,
        Change::Settings(settings.clone().into()),
        Precondition::None,
        None,
    )
    .await
    .unwrap();
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!((meta.current_version, meta.versions.len()), (0, 0));
    assert_eq!(meta.settings, settings);
    assert!(s.get(&tn, &key, None).await.unwrap().is_none());
    assert!(s
        .list(&tn, "meta/", None, 10, None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.list_with_deleted(&tn, "meta/", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        s.change(&tn, &key, Change::Undelete, Precondition::None, None)
            .await,
        Err(StoreError::NotFound)
    ));
    // cas 0: no version yet.
    assert_eq!(
        put(
            s,
            &tn,
            &key,
            Precondition::Cas(0),
            true,
            Defaults::default()
        )
        .await
        .unwrap(),
        1
    );
    let meta = s.metadata(&tn, &key).await.unwrap().unwrap();
    assert_eq!((meta.current_version, meta.settings), (1, settings));
    s.change(&tn, &key, Change::Destroy, Precondition::None, None)
        .await
        .unwrap();
    assert!(s.metadata(&tn, &key).await.unwrap().is_none());
}

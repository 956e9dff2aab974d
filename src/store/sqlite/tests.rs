//! The embedded engine's own tests: read snapshots against the writer's
//! batches. (What every engine must do is `store::conformance`.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;
use crate::store::engine::Seen;
use crate::store::model::Precondition;

fn put(version: u64, text: &str) -> SecretWrite {
    SecretWrite {
        seen: Seen::Unread,
        change: Change::Put {
            version,
            sealed: text.as_bytes().to_vec(),
            expires_at: None,
            kv: false,
            defaults: Default::default(),
        },
        precondition: Precondition::None,
        line: None,
    }
}

/// A store in a temp dir holding version 1 ("one") of `t`/`app/one`.
async fn one_version() -> (tempfile::TempDir, SqliteBackend, TenantId, SecretKey) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("s.db"), 10, None).unwrap();
    let (tenant, key) = (
        TenantId::parse("t").unwrap(),
        SecretKey::parse("app/one").unwrap(),
    );
    store.write(&tenant, &key, put(1, "one")).await.unwrap();
    (dir, store, tenant, key)
}

/// A reader busy while a batch commits keeps its (now stale) read
/// transaction; its next read of secrets must begin a new one and see the
/// acknowledged change, for the current version (past the read cache), an
/// older version, the metadata and the listing alike.
#[tokio::test]
async fn a_read_after_an_acknowledged_change_never_sees_an_older_snapshot() {
    let (_dir, store, tenant, key) = one_version().await;
    // Every reader opens a read transaction on the first version.
    for reader in store.readers.pool.iter() {
        let mut reader = reader.lock().unwrap();
        let committed = store.batches.committed.load(Ordering::SeqCst);
        exec_cached(&reader.conn, "BEGIN").unwrap();
        reader.snapshot = Some(committed);
        let n: i64 = reader
            .conn
            .query_row("SELECT count(*) FROM versions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
    // Busy readers: the writer cannot end their transactions.
    let held: Vec<_> = store
        .readers
        .pool
        .iter()
        .map(|r| r.lock().unwrap())
        .collect();
    let write = store.write(&tenant, &key, put(2, "two"));
    tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .unwrap()
        .unwrap();
    assert!(held.iter().all(|r| r.snapshot.is_some()));
    drop(held);

    let current = store
        .get(&tenant, &key, None, None, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (current.version, current.sealed.as_slice()),
        (2, &b"two"[..])
    );
    let by_number = store
        .get(&tenant, &key, Some(2), None, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_number.sealed, b"two");
    let meta = store.metadata(&tenant, &key).await.unwrap().unwrap();
    assert_eq!((meta.current_version, meta.versions.len()), (2, 2));
    let listed = store
        .list(
            &tenant,
            "app/",
            None,
            10,
            crate::store::ListFilter {
                now: 0,
                expiring_before: None,
                deleted: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].version, 2);
    store.close().await;
}

/// The writer ends idle readers' transactions after each batch, a read
/// during a batch ends its own, and the writer ends all of them before the
/// checkpoint at close, which then empties the WAL. (The writer marks its
/// batch finished before it answers, so a read made once a write is
/// acknowledged keeps its snapshot.)
#[tokio::test]
async fn idle_readers_release_their_snapshots() {
    let (dir, store, tenant, key) = one_version().await;
    assert!(store
        .get(&tenant, &key, Some(1), None, false)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .readers
        .pool
        .iter()
        .any(|r| r.lock().unwrap().snapshot.is_some()));
    store.write(&tenant, &key, put(2, "two")).await.unwrap();
    for reader in store.readers.pool.iter() {
        let reader = reader.lock().unwrap();
        assert_eq!(reader.snapshot, None);
        assert!(reader.conn.is_autocommit());
    }
    // A read made while a batch is under way keeps no snapshot: the batch's
    // checkpoint could not pass it.
    store.batches.writing.store(true, Ordering::SeqCst);
    assert!(store
        .get(&tenant, &key, Some(1), None, false)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .readers
        .pool
        .iter()
        .all(|r| r.lock().unwrap().snapshot.is_none()));
    store.batches.writing.store(false, Ordering::SeqCst);
    assert!(store
        .get(&tenant, &key, Some(1), None, false)
        .await
        .unwrap()
        .is_some());
    store.close().await;
    let wal = std::fs::metadata(dir.path().join("s.db-wal")).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the checkpoint at close left the WAL non-empty");
}

/// Past `MAX_QUEUED` waiting jobs a write is refused at once (503 with
/// Retry-After upstream) instead of queueing without bound; the queued
/// ones all finish once the writer moves again.
#[tokio::test]
async fn a_full_write_queue_refuses_at_once_and_the_queued_jobs_finish() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteBackend::open(&dir.path().join("s.db"), 10, None).unwrap());
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (started, running) = tokio::sync::oneshot::channel::<()>();
    let blocker = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .writer
                .run(SqliteBackend::plain(), move |_| {
                    let _ = started.send(());
                    let _ = released.recv();
                    Ok::<(), StoreError>(())
                })
                .await
        }
    });
    // The writer thread is inside the blocking job, with nothing queued.
    running.await.unwrap();
    assert_eq!(store.writer.queued(), 0);
    let queued: Vec<_> = (0..writer::MAX_QUEUED)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .writer
                    .run(SqliteBackend::plain(), |_| Ok::<(), StoreError>(()))
                    .await
            })
        })
        .collect();
    while store.writer.queued() < writer::MAX_QUEUED {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let over = store
        .writer
        .run(SqliteBackend::plain(), |_| Ok::<(), StoreError>(()))
        .await;
    assert!(matches!(over, Err(StoreError::Busy)), "{over:?}");
    release.send(()).unwrap();
    blocker.await.unwrap().unwrap();
    for job in queued {
        job.await.unwrap().unwrap();
    }
    assert_eq!(store.writer.queued(), 0);
}

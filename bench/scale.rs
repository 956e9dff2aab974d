//! Store scale benchmark (not a test): loads N secrets (default 1,000,000)
//! into the embedded store through the same sealing and group-commit path a
//! PUT takes, then reports the time of one listing page of 100 under a
//! prefix and the latency of a GET (read + decrypt) at N keys against a
//! store of 1,000 keys, medians of many samples.
//!
//! Run: `cargo bench --bench scale` (`STRONGROOM_BENCH_KEYS` changes N).

use std::sync::Arc;
use std::time::{Duration, Instant};

use strongroom::crypto::{Keyring, MasterKey};
use strongroom::store::{no_hook, Engine, Precondition, Store, StoreConfig, StoreError};
use strongroom::types::{SecretKey, TenantId};

const GROUPS: usize = 1000;
const WRITERS: usize = 256;

struct Bench {
    store: Store,
    keyring: Arc<Keyring>,
    tenant: TenantId,
    _dir: tempfile::TempDir,
}

fn key_name(i: usize) -> String {
    format!("app{:03}/svc/secret-{i:07}", i % GROUPS)
}

async fn open() -> Bench {
    let dir =
        tempfile::tempdir_in(std::env::var("STRONGROOM_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let config = StoreConfig {
        engine: Engine::Sqlite,
        data_dir: dir.path().to_owned(),
        max_versions: 10,
        nats_url: String::new(),
        nats_bucket: String::new(),
        nats_replicas: 1,
    };
    let store = Store::open(&config).await.unwrap();
    let keyring = Arc::new(
        Keyring::open(MasterKey::from_bytes(&[7; 32]), store.clone())
            .await
            .unwrap(),
    );
    Bench {
        store,
        keyring,
        tenant: TenantId::parse("bench").unwrap(),
        _dir: dir,
    }
}

async fn load(bench: &Bench, n: usize) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, keyring, tenant) = (
            bench.store.clone(),
            bench.keyring.clone(),
            bench.tenant.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < n {
                let key = SecretKey::parse(&key_name(i)).unwrap();
                let sealer = keyring.sealer(&tenant).await.unwrap();
                let name = key.as_str().to_owned();
                let value = format!("value-{i:07}-{}", "x".repeat(32));
                store
                    .put(
                        &tenant,
                        &key,
                        Precondition::None,
                        Box::new(move |v| {
                            sealer
                                .seal(&name, v, value.as_bytes())
                                .map_err(|_| StoreError::Seal)
                        }),
                        no_hook(),
                    )
                    .await
                    .unwrap();
                i += WRITERS;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() * 99 / 100]
}

/// Latency of one GET's store work: read the current version and open it.
async fn get_latencies(bench: &Bench, n: usize, samples: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..samples {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x as usize) % n;
        let key = SecretKey::parse(&key_name(i)).unwrap();
        let started = Instant::now();
        let stored = bench
            .store
            .get(&bench.tenant, &key, None)
            .await
            .unwrap()
            .unwrap();
        let plain = bench
            .keyring
            .open_value(&bench.tenant, key.as_str(), stored.version, &stored.sealed)
            .await
            .unwrap();
        out.push(started.elapsed());
        assert!(plain.starts_with(b"value-"));
    }
    out
}

/// Reads every key once, in key order.
async fn warm(bench: &Bench, n: usize) {
    for i in 0..n {
        let key = SecretKey::parse(&key_name(i)).unwrap();
        bench
            .store
            .get(&bench.tenant, &key, None)
            .await
            .unwrap()
            .unwrap();
    }
}

async fn list_latencies(bench: &Bench, n: usize, samples: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(samples);
    for s in 0..samples {
        let prefix = format!("app{:03}/", s % GROUPS);
        // Alternate first pages and pages that start after a cursor.
        let after = (s % 2 == 1).then(|| key_name(n / 2 / GROUPS * GROUPS + s % GROUPS));
        let started = Instant::now();
        let rows = bench
            .store
            .list(&bench.tenant, &prefix, after.as_deref(), 101)
            .await
            .unwrap();
        out.push(started.elapsed());
        assert!(!rows.is_empty());
    }
    out
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("STRONGROOM_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let small_n = 1000.min(n);
    println!("strongroom store scale benchmark: {n} keys vs {small_n} keys");

    let small = open().await;
    load(&small, small_n).await;
    let get_small = get_latencies(&small, small_n, 20_000).await;

    let big = open().await;
    let took = load(&big, n).await;
    println!(
        "loaded {n} secrets in {:.1} s ({:.0} writes/s, fsync'd in groups)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    // Steady state, as in a server that has been running: one read of every
    // key first, so the measured reads do not pay first-touch page faults of
    // the freshly written file (the 1k store is warm from its own writes).
    warm(&big, n).await;
    let get_big = get_latencies(&big, n, 20_000).await;
    let list = list_latencies(&big, n, 2_000).await;

    let (gs, gb) = (median(get_small.clone()), median(get_big.clone()));
    println!();
    println!("| measure | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| list page of 100 under a prefix, {n} keys | {} | {} |",
        ms(median(list.clone())),
        ms(p99(list))
    );
    println!(
        "| GET (read + decrypt), {small_n} keys | {} | {} |",
        us(gs),
        us(p99(get_small))
    );
    println!(
        "| GET (read + decrypt), {n} keys | {} | {} |",
        us(gb),
        us(p99(get_big))
    );
    println!();
    println!(
        "GET at {n} keys / GET at {small_n} keys: {:.2}x",
        gb.as_secs_f64() / gs.as_secs_f64()
    );
    big.store.close().await;
    small.store.close().await;
}

//! Fills an embedded store for `bench/backup`: N secrets of tenant `bench`,
//! each with V versions, sealed under the master key in
//! `STRONGROOM_MASTER_KEY`, written through the library (no HTTP, many
//! writes in flight so the writer commits them in large batches).
//!
//!     STRONGROOM_MASTER_KEY=... seed DATA_DIR SECRETS VERSIONS

use std::sync::Arc;

use strongroom::crypto::{Keyring, MasterKey, MasterKeys};
use strongroom::store::{Precondition, SealedPut, Store, StoreConfig};
use strongroom::types::{SecretKey, TenantId};

const IN_FLIGHT: usize = 256;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, secrets, versions] = &args[..] else {
        panic!("usage: seed DATA_DIR SECRETS VERSIONS");
    };
    let (secrets, versions): (usize, u64) = (secrets.parse().unwrap(), versions.parse().unwrap());
    let key = std::env::var("STRONGROOM_MASTER_KEY").expect("STRONGROOM_MASTER_KEY");
    let config = StoreConfig::embedded(dir);
    let store = Store::open(&config).await.unwrap();
    let keks = MasterKeys::single(MasterKey::from_base64(&key).unwrap());
    let keyring = Arc::new(Keyring::open(keks, store.clone()).await.unwrap());
    let tenant = TenantId::parse("bench").unwrap();
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (store, keyring, tenant, next) =
            (store.clone(), keyring.clone(), tenant.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= secrets {
                    return;
                }
                let key = SecretKey::parse(&format!("bench/key-{i}")).unwrap();
                for v in 1..=versions {
                    let sealer = keyring.sealer(&tenant).await.unwrap();
                    let value = format!("value-{i}-{v}-0123456789abcdef0123456789abcdef");
                    // One writer per key: no race, so one attempt.
                    let seen = store.head(&tenant, &key).await.unwrap();
                    let sealed = sealer
                        .seal(key.as_str(), seen.next_version(), value.as_bytes())
                        .unwrap();
                    let put = SealedPut {
                        sealed,
                        expires_at: None,
                        precondition: Precondition::None,
                        line: None,
                        kv: false,
                        defaults: Default::default(),
                    };
                    store.put_once(&tenant, &key, seen, put).await.unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    store.close().await;
    eprintln!(
        "seeded {secrets} secrets x {versions} versions in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

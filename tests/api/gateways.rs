//! Gateways on one nats store answer reads from their own caches, kept
//! coherent from a watch of the bucket: a gateway reads its own writes, a
//! read that names a write's revision never sees anything older, and a
//! gateway that loses its watch serves nothing from its cache.

use std::time::{Duration, Instant};

use crate::helpers::*;

const MIN_REVISION: &str = "x-strongroom-min-revision";

fn revision(put: &Reply) -> u64 {
    put.header("x-strongroom-revision")
        .expect("a nats PUT answers its revision")
        .parse()
        .unwrap()
}

async fn get_at_least(app: &TestApp, key: &str, revision: u64, cred: &Cred) -> Reply {
    app.send(
        app.client
            .get(app.url(&format!("/secrets/{key}")))
            .header(MIN_REVISION, revision.to_string()),
        cred,
    )
    .await
}

/// Reads `key` through `app` until its cache answers it (admitted on a
/// second read once the gateway's watch runs, which may take a moment after
/// start on a busy machine).
async fn warm(app: &TestApp, key: &str, value: &str, cred: &Cred) {
    let before = app.counter("strongroom_gateway_cache_hits_total").await;
    let t = Instant::now();
    loop {
        assert_eq!(app.get(key, cred).await.json()["value"], value);
        if app.counter("strongroom_gateway_cache_hits_total").await > before {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the gateway never answered {key} from its cache"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reads_through_another_gateway_that_name_the_revision_never_see_an_older_value() {
    nats_only!("gateways share a store only on nats");
    let a = spawn_app().await;
    let b = spawn_with(Options::default().data_dir(&a.data_dir)).await;
    let admin = a.admin();
    assert_eq!(a.put("hot/key", "v0", &admin).await.status, 200);
    warm(&b, "hot/key", "v0", &admin).await;

    for i in 1..=300 {
        let value = format!("v{i}");
        let put = a.put("hot/key", &value, &admin).await;
        assert_eq!(put.status, 200);
        let read = get_at_least(&b, "hot/key", revision(&put), &admin).await;
        assert_eq!(read.status, 200);
        assert_eq!(read.json()["value"], value.as_str(), "round {i}");
        // And a gateway always reads its own write.
        assert_eq!(
            a.get("hot/key", &admin).await.json()["value"],
            value.as_str()
        );
    }

    // Without the header B may answer from its cache until its watch has
    // seen A's write: how long that lasts is measured, and bounded.
    let mut stale = Vec::new();
    for i in 0..100 {
        let value = format!("w{i}");
        assert_eq!(a.put("hot/key", &value, &admin).await.status, 200);
        let written = Instant::now();
        loop {
            if b.get("hot/key", &admin).await.json()["value"] == value.as_str() {
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(2),
                "B never saw w{i}"
            );
        }
        stale.push(written.elapsed());
    }
    stale.sort();
    eprintln!(
        "B saw A's write after: median {:?}, max {:?} (over {} writes)",
        stale[stale.len() / 2],
        stale[stale.len() - 1],
        stale.len()
    );
    let r = get_at_least(&b, "hot/key", u64::MAX, &admin).await;
    assert_eq!(
        r.status, 200,
        "a revision not yet seen reads from the leader"
    );
    let r = b
        .send(
            b.client
                .get(b.url("/secrets/hot/key"))
                .header(MIN_REVISION, "soon"),
            &admin,
        )
        .await;
    assert_eq!(
        (r.status, r.error()),
        (400, "error retrieving secret".into())
    );
}

/// A TCP relay to NATS that can be cut and restored: B's way to its store,
/// so B alone loses its connection while A keeps writing.
struct Relay {
    port: u16,
    to: u16,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    async fn start(to: u16) -> Relay {
        let mut relay = Relay {
            port: free_port(),
            to,
            task: None,
        };
        relay.restore().await;
        relay
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let to = self.to;
        self.task = Some(tokio::spawn(async move {
            // Dropped with the task when cut: every relayed connection ends.
            let mut relayed = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                relayed.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_loses_its_watch_never_serves_what_changed_meanwhile() {
    nats_only!("the cache is the nats gateway's");
    let nats_port: u16 = shared_nats_url()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut relay = Relay::start(nats_port).await;
    let a = spawn_app().await;
    let b = spawn_with(Options::default().data_dir(&a.data_dir).env(
        "STRONGROOM_NATS_URL",
        &format!("nats://127.0.0.1:{}", relay.port),
    ))
    .await;
    let admin = a.admin();
    assert_eq!(a.put("k", "before", &admin).await.status, 200);
    warm(&b, "k", "before", &admin).await;

    // B loses NATS; A changes the key meanwhile.
    relay.cut();
    let t = Instant::now();
    while b.get("k", &admin).await.status != 503 {
        assert!(t.elapsed() < Duration::from_secs(10), "B never noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a.put("k", "after", &admin).await.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Back: B's first answer is the new value, never the one it cached.
    relay.restore().await;
    let t = Instant::now();
    loop {
        let r = b.get("k", &admin).await;
        if r.status == 200 {
            assert_eq!(
                r.json()["value"],
                "after",
                "B served a value it could not know was current"
            );
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(t.elapsed() < Duration::from_secs(20), "B never reconnected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for _ in 0..3 {
        assert_eq!(b.get("k", &admin).await.json()["value"], "after");
    }
}

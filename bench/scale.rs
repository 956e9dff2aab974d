//! Store scale benchmark (not a test): loads N secrets (default 1,000,000)
//! into the embedded store through the same sealing and group-commit path a
//! PUT takes, then reports the time of one listing page of 100 under a
//! prefix, and the latency of a GET at N keys against a store of 1,000
//! keys, medians of many samples: end to end (the real server on each
//! store, one keep-alive connection over loopback, the latency a client
//! sees) and the store's part alone (read + decrypt, in process).
//!
//! Run: `cargo bench --bench scale` (`STRONGROOM_BENCH_KEYS` changes N).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use strongroom::crypto::{Keyring, MasterKey, MasterKeys};
use strongroom::store::{Precondition, SealedPut, Store, StoreConfig};
use strongroom::types::{SecretKey, TenantId};

const GROUPS: usize = 1000;
const WRITERS: usize = 256;
const MASTER_KEY: [u8; 32] = [7; 32];

struct Bench {
    store: Store,
    keyring: Arc<Keyring>,
    tenant: TenantId,
    dir: tempfile::TempDir,
}

fn key_name(i: usize) -> String {
    format!("app{:03}/svc/secret-{i:07}", i % GROUPS)
}

async fn open() -> Bench {
    let dir =
        tempfile::tempdir_in(std::env::var("STRONGROOM_BENCH_DIR").unwrap_or_else(|_| ".".into()))
            .unwrap();
    let config = StoreConfig::embedded(dir.path());
    let store = Store::open(&config).await.unwrap();
    let keyring = Arc::new(
        Keyring::open(
            MasterKeys::single(MasterKey::from_bytes(&MASTER_KEY)),
            store.clone(),
        )
        .await
        .unwrap(),
    );
    Bench {
        store,
        keyring,
        tenant: TenantId::parse("bench").unwrap(),
        dir,
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
                let value = format!("value-{i:07}-{}", "x".repeat(32));
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
        // Alternate first pages and pages that start after a cursor (when
        // each group has keys after the cursor).
        let after =
            (s % 2 == 1 && n >= 2 * GROUPS).then(|| key_name(n / 2 / GROUPS * GROUPS + s % GROUPS));
        let started = Instant::now();
        let rows = bench
            .store
            .list(&bench.tenant, &prefix, after.as_deref(), 101, None)
            .await
            .unwrap();
        out.push(started.elapsed());
        assert!(!rows.is_empty());
    }
    out
}

/// The real server (the `strongroom` binary) serving a store's data dir,
/// with an API key of the bench tenant.
struct Server {
    child: Child,
    port: u16,
    conn: TcpStream,
    api_key: String,
}

impl Server {
    fn start(data_dir: &Path) -> Server {
        let bin = env!("CARGO_BIN_EXE_strongroom");
        let master = base64::engine::general_purpose::STANDARD.encode(MASTER_KEY);
        let created = Command::new(bin)
            .args(["apikey", "create", "--tenant", "bench", "--name", "bench"])
            .env("STRONGROOM_DATA_DIR", data_dir)
            .output()
            .unwrap();
        assert!(created.status.success(), "{created:?}");
        let api_key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = std::fs::File::create(data_dir.join("server.log")).unwrap();
        // The server on the second core, the client on the first: every
        // request crosses cores the same way for both stores (left to the
        // scheduler, whether a server shares the client's core swings the
        // round trip by tens of microseconds).
        let child = Command::new("taskset")
            .args([
                "-c",
                "1",
                bin,
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("STRONGROOM_DATA_DIR", data_dir)
            .env("STRONGROOM_MASTER_KEY", master)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        let conn = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(conn) => break conn,
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => panic!("server did not listen: {e}"),
            }
        };
        conn.set_nodelay(true).unwrap();
        Server {
            child,
            port,
            conn,
            api_key,
        }
    }

    /// Reads every one of the `n` keys once over `connections` more
    /// connections, as a server that has been running has (the in-process
    /// measurement warms the same way).
    fn warm(&self, n: usize, connections: usize) {
        std::thread::scope(|scope| {
            for c in 0..connections {
                scope.spawn(move || {
                    let mut conn = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
                    conn.set_nodelay(true).unwrap();
                    let mut other = Conn {
                        conn: &mut conn,
                        api_key: &self.api_key,
                    };
                    for i in (c..n).step_by(connections) {
                        other.get(&key_name(i));
                    }
                });
            }
        });
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        Conn {
            conn: &mut self.conn,
            api_key: &self.api_key,
        }
        .get(key)
    }
}

/// A kept-alive connection to a `Server`.
struct Conn<'a> {
    conn: &'a mut TcpStream,
    api_key: &'a str,
}

impl Conn<'_> {
    /// One GET over the kept-alive connection; returns the value's body.
    fn get(&mut self, key: &str) -> Vec<u8> {
        let request = format!(
            "GET /secrets/{key} HTTP/1.1\r\nHost: bench\r\nX-Api-Key: {}\r\n\r\n",
            self.api_key
        );
        self.conn.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::with_capacity(512);
        let mut buf = [0u8; 4096];
        loop {
            let n = self.conn.read(&mut buf).unwrap();
            assert!(n > 0, "server closed the connection");
            response.extend_from_slice(&buf[..n]);
            let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .expect("a content-length")
                .trim()
                .parse()
                .unwrap();
            if response.len() >= end + 4 + length {
                return response.split_off(end + 4);
            }
        }
    }
}

impl Server {
    /// Stops the server with SIGTERM (so its log is complete) and returns
    /// the handler latencies of its last `count` requests, from the access
    /// log: the time spent inside the server, without the network.
    fn stop(mut self, data_dir: &Path, count: usize) -> Vec<Duration> {
        // SAFETY: signalling a child this struct owns.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        let log = std::fs::read_to_string(data_dir.join("server.log")).unwrap();
        let latencies: Vec<Duration> = log
            .lines()
            .filter(|l| l.contains("\"strongroom::access\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["latency_us"].as_u64())
            .map(Duration::from_micros)
            .collect();
        assert!(latencies.len() >= count, "access log incomplete");
        latencies[latencies.len() - count..].to_vec()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pin_to_first_core() {
    // SAFETY: a zeroed cpu_set_t is valid; we pass its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// End-to-end GET latencies on both servers, interleaved in rounds so both
/// see the same machine; keys drawn at random from each store.
fn http_latencies(
    small: &mut Server,
    small_n: usize,
    big: &mut Server,
    n: usize,
    samples: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = |m: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x as usize) % m
    };
    // A warm-up round for the measuring connections, not counted.
    for _ in 0..1000 {
        small.get(&key_name(next(small_n)));
        big.get(&key_name(next(n)));
    }
    for _ in 0..samples / 1000 {
        for (server, m, out) in [(&mut *big, n, &mut b), (&mut *small, small_n, &mut a)] {
            for _ in 0..1000 {
                let key = key_name(next(m));
                let started = Instant::now();
                let body = server.get(&key);
                out.push(started.elapsed());
                assert!(body.windows(6).any(|w| w == b"value-"));
            }
        }
    }
    (a, b)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
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

    // The real server on each store (the bench's own handles closed first:
    // one process per data dir).
    let (small_dir, big_dir) = (small.dir.path().to_owned(), big.dir.path().to_owned());
    big.store.close().await;
    small.store.close().await;
    pin_to_first_core();
    let (http_small, http_big, inside_small, inside_big) = {
        let mut big_server = Server::start(&big_dir);
        let mut small_server = Server::start(&small_dir);
        tokio::task::block_in_place(|| {
            small_server.warm(small_n, 3);
            big_server.warm(n, 3);
            // Warming wrote a million audit and log lines: let their
            // writeback finish before measuring, not during.
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            std::thread::sleep(Duration::from_secs(2));
        });
        let (a, b) = tokio::task::block_in_place(|| {
            http_latencies(&mut small_server, small_n, &mut big_server, n, 20_000)
        });
        let inside_small = small_server.stop(&small_dir, a.len());
        let inside_big = big_server.stop(&big_dir, b.len());
        (a, b, inside_small, inside_big)
    };

    let (gs, gb) = (median(get_small.clone()), median(get_big.clone()));
    let (hs, hb) = (median(http_small.clone()), median(http_big.clone()));
    println!();
    println!("| measure | median | p99 |");
    println!("|---|---|---|");
    println!(
        "| list page of 100 under a prefix, {n} keys | {} | {} |",
        ms(median(list.clone())),
        ms(p99(list))
    );
    println!(
        "| GET over HTTP, end to end, {small_n} keys | {} | {} |",
        us(hs),
        us(p99(http_small))
    );
    println!(
        "| GET over HTTP, end to end, {n} keys | {} | {} |",
        us(hb),
        us(p99(http_big))
    );
    println!(
        "| GET inside the server (access-log latency), {small_n} keys | {} | {} |",
        us(median(inside_small.clone())),
        us(p99(inside_small.clone()))
    );
    println!(
        "| GET inside the server (access-log latency), {n} keys | {} | {} |",
        us(median(inside_big.clone())),
        us(p99(inside_big.clone()))
    );
    println!(
        "| GET store part (read + decrypt), {small_n} keys | {} | {} |",
        us(gs),
        us(p99(get_small))
    );
    println!(
        "| GET store part (read + decrypt), {n} keys | {} | {} |",
        us(gb),
        us(p99(get_big))
    );
    println!();
    println!(
        "GET end to end at {n} keys / at {small_n} keys: {:.2}x (store part alone: {:.2}x)",
        hb.as_secs_f64() / hs.as_secs_f64(),
        gb.as_secs_f64() / gs.as_secs_f64()
    );
}

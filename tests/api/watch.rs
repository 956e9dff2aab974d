//! `GET /watch`: the change stream as Server-Sent Events, in commit order,
//! resumable by id (across a restart on sqlite), bounded by its window (410
//! beyond it), per tenant, across gateways on nats, and cheap when idle.

use std::time::{Duration, Instant};

use crate::helpers::*;

/// An open `/watch` stream and what it has sent so far.
pub struct Watch {
    response: reqwest::Response,
    buffer: String,
    /// Every byte received, to look for what must never be sent.
    pub seen: String,
}

/// One event: its id and its JSON data.
pub type Seen = (u64, serde_json::Value);

impl Watch {
    pub async fn open(app: &TestApp, query: &str, cred: &Cred, last_id: Option<u64>) -> Watch {
        match Watch::try_open(app, query, cred, last_id).await {
            Ok(watch) => watch,
            Err(reply) => panic!("watch{query}: {} {}", reply.status, reply.body),
        }
    }

    pub async fn try_open(
        app: &TestApp,
        query: &str,
        cred: &Cred,
        last_id: Option<u64>,
    ) -> Result<Watch, Reply> {
        let mut b = app.client.get(app.url(&format!("/watch{query}")));
        b = match cred {
            Cred::ApiKey(k) => b.header("X-Api-Key", k),
            Cred::Bearer(t) => b.header("Authorization", format!("Bearer {t}")),
            Cred::None => b,
        };
        if let Some(id) = last_id {
            b = b.header("Last-Event-ID", id.to_string());
        }
        let response = b.send().await.unwrap();
        if response.status() != 200 {
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let body = response.text().await.unwrap();
            return Err(Reply {
                status,
                headers,
                body,
            });
        }
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Ok(Watch {
            response,
            buffer: String::new(),
            seen: String::new(),
        })
    }

    /// The next frame's text (events and comments), or `None` when the
    /// stream ended or nothing came within `within`.
    pub async fn frame(&mut self, within: Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame = self.buffer[..end].to_owned();
                self.buffer.drain(..end + 2);
                return Some(frame);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            let bytes = chunk.ok()?.ok()??;
            let text = String::from_utf8(bytes.to_vec()).unwrap();
            self.seen.push_str(&text);
            self.buffer.push_str(&text);
        }
    }

    /// The next event (heartbeats skipped).
    pub async fn next(&mut self, within: Duration) -> Option<Seen> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self.frame(left).await?;
            let (mut id, mut data) = (None, None);
            for line in frame.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().parse::<u64>().unwrap());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(v.trim()).unwrap());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                return Some((id, data));
            }
        }
    }

    /// Exactly `n` events, failing if they do not all come within 10 s.
    pub async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(Duration::from_secs(10)).await {
                Some(event) => out.push(event),
                None => panic!("{} of {n} events came: {out:?}", out.len()),
            }
        }
        out
    }

    /// Whether the stream sends an event within `within`.
    pub async fn quiet_for(&mut self, within: Duration) -> bool {
        self.next(within).await.is_none()
    }
}

fn summary(events: &[Seen]) -> Vec<(String, u64, String)> {
    events
        .iter()
        .map(|(_, e)| {
            (
                e["key"].as_str().unwrap().to_owned(),
                e["version"].as_u64().unwrap(),
                e["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn owned(items: &[(&str, u64, &str)]) -> Vec<(String, u64, String)> {
    items
        .iter()
        .map(|(k, v, a)| (k.to_string(), *v, a.to_string()))
        .collect()
}

async fn undelete(app: &TestApp, key: &str, cred: &Cred) -> u16 {
    let b = app.client.post(app.url(&format!("/undelete/{key}")));
    app.send(b, cred).await.status
}

async fn destroy(app: &TestApp, key: &str, cred: &Cred) -> u16 {
    let b = app.client.delete(app.url(&format!("/metadata/{key}")));
    app.send(b, cred).await.status
}

#[tokio::test]
async fn a_watcher_sees_each_change_under_its_prefix_in_order_and_never_a_value() {
    let app = spawn_with(Options::default().env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1s")).await;
    let admin = app.admin();
    let mut watch = Watch::open(&app, "?prefix=team/", &admin, None).await;
    let other = Cred::ApiKey(app.create_key("other", &[]));
    app.put("team/a", "watch-canary-1", &admin).await;
    app.put("team/a", "watch-canary-2", &admin).await;
    app.put("elsewhere/x", "watch-canary-x", &admin).await;
    app.put("team/a", "not-mine", &other).await;
    assert_eq!(app.delete("team/a", &admin).await.status, 200);
    assert_eq!(undelete(&app, "team/a", &admin).await, 200);
    assert_eq!(destroy(&app, "team/a", &admin).await, 200);
    let lapsing = serde_json::json!({"key": "team/b", "value": "watch-canary-b", "ttl_seconds": 1});
    assert_eq!(app.put_raw(lapsing.to_string(), &admin).await.status, 200);
    let events = watch.take(7).await;
    assert_eq!(
        summary(&events),
        owned(&[
            ("team/a", 1, "put"),
            ("team/a", 2, "put"),
            ("team/a", 2, "delete"),
            ("team/a", 2, "undelete"),
            ("team/a", 2, "destroy"),
            ("team/b", 1, "put"),
            ("team/b", 1, "expire"),
        ])
    );
    let ids: Vec<u64> = events.iter().map(|(id, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    for (_, e) in &events {
        let at = e["at"].as_str().unwrap();
        assert!(at.ends_with('Z') && at.len() == 24, "{at}");
        assert_eq!(e.as_object().unwrap().len(), 4, "{e}");
    }
    assert!(watch.quiet_for(Duration::from_millis(500)).await);
    assert!(!watch.seen.contains("canary") && !watch.seen.contains("not-mine"));

    // The other tenant sees its own change only.
    let mut theirs = Watch::open(&app, "", &other, Some(0)).await;
    let events = theirs.take(1).await;
    assert_eq!(summary(&events), owned(&[("team/a", 1, "put")]));
    assert!(theirs.quiet_for(Duration::from_millis(300)).await);
}

#[tokio::test]
async fn a_watch_needs_list_scope_on_its_prefix_and_a_whole_number_to_resume() {
    let app = spawn_app().await;
    let narrow = Cred::ApiKey(app.create_key("default", &["--scopes", "secrets:list:team/"]));
    assert!(Watch::try_open(&app, "?prefix=team/", &narrow, None)
        .await
        .is_ok());
    let r = Watch::try_open(&app, "?prefix=ops/", &narrow, None)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 403);
    let r = Watch::try_open(&app, "", &narrow, None)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 403);
    let r = Watch::try_open(&app, "?prefix=team/&after=x", &narrow, None)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = Watch::try_open(&app, "?prefix=a%20b", &narrow, None)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 400);
    let r = Watch::try_open(&app, "", &Cred::None, None)
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn a_watcher_resumes_after_its_last_id_with_nothing_missed_or_repeated_across_a_restart() {
    let mut app = spawn_app().await;
    let admin = app.admin();
    let mut watch = Watch::open(&app, "?prefix=r/", &admin, None).await;
    for i in 1..=3 {
        app.put("r/k", &format!("v{i}"), &admin).await;
    }
    let first = watch.take(3).await;
    drop(watch);
    let last_seen = first[1].0;
    app.put("r/k", "v4", &admin).await;
    app.delete("r/k", &admin).await;
    assert_eq!(app.terminate().code(), Some(0));
    let app = spawn_with(Options::default().data_dir(&app.data_dir)).await;
    let mut resumed = Watch::open(&app, "?prefix=r/", &admin, Some(last_seen)).await;
    let caught_up = resumed.take(3).await;
    assert_eq!(
        summary(&caught_up),
        owned(&[("r/k", 3, "put"), ("r/k", 4, "put"), ("r/k", 4, "delete")])
    );
    assert_eq!(caught_up[0].0, first[2].0, "the same id after a restart");
    // Then live, after what it caught up on.
    app.put("r/k", "v5", &admin).await;
    let live = resumed.take(1).await;
    assert_eq!(summary(&live), owned(&[("r/k", 5, "put")]));
    assert!(live[0].0 > caught_up[2].0);
    assert!(resumed.quiet_for(Duration::from_millis(300)).await);
    // `?after=` says the same.
    let mut by_query = Watch::open(
        &app,
        &format!("?prefix=r/&after={}", caught_up[2].0),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        summary(&by_query.take(1).await),
        owned(&[("r/k", 5, "put")])
    );
}

#[tokio::test]
async fn resuming_from_before_the_kept_window_answers_410() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_EVENTS_KEEP", "3")
            .env("STRONGROOM_EXPIRY_SWEEP_INTERVAL", "1s"),
    )
    .await;
    let admin = app.admin();
    let mut watch = Watch::open(&app, "", &admin, None).await;
    for i in 0..6 {
        app.put(&format!("w/{i}"), "v", &admin).await;
    }
    let events = watch.take(6).await;
    // The sweep (every second) drops the events beyond the window: wait
    // until a resume from the first is refused, then check the rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        match Watch::try_open(&app, "", &admin, Some(events[0].0)).await {
            Err(r) => break r,
            Ok(_) => {
                assert!(Instant::now() < deadline, "never pruned");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(r.status, 410, "{}", r.body);
    assert_eq!(r.error(), "resource gone");
    let r = Watch::try_open(&app, "", &admin, Some(events[5].0 + 1000))
        .await
        .err()
        .unwrap();
    assert_eq!(r.status, 410, "an id this store never gave");
    let mut inside = Watch::open(&app, "", &admin, Some(events[3].0)).await;
    assert_eq!(inside.take(2).await, events[4..].to_vec());
}

#[tokio::test]
async fn an_idle_stream_sends_heartbeats_and_ends_when_the_server_stops() {
    let mut app = spawn_with(Options::default().env("STRONGROOM_WATCH_HEARTBEAT", "1s")).await;
    let admin = app.admin();
    let mut watch = Watch::open(&app, "", &admin, None).await;
    let frame = watch.frame(Duration::from_secs(3)).await.unwrap();
    assert!(frame.starts_with(':'), "{frame:?}");
    let stopping = Instant::now();
    assert_eq!(app.terminate().code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopping.elapsed()
    );
    assert!(watch.frame(Duration::from_secs(2)).await.is_none());
}

#[tokio::test]
async fn a_change_through_one_gateway_reaches_watchers_on_another() {
    nats_only!("two gateways share a store only on nats");
    let a = spawn_app().await;
    let b = spawn_with(Options::default().data_dir(&a.data_dir)).await;
    let admin = a.admin();
    let mut on_a = Watch::open(&a, "?prefix=g/", &admin, None).await;
    let mut on_b = Watch::open(&b, "?prefix=g/", &admin, None).await;
    assert_eq!(a.put("g/one", "v", &admin).await.status, 200);
    assert_eq!(b.put("g/two", "v", &admin).await.status, 200);
    let seen_a = on_a.take(2).await;
    let seen_b = on_b.take(2).await;
    assert_eq!(seen_a, seen_b, "the same events, ids and order on both");
    assert_eq!(
        summary(&seen_a),
        owned(&[("g/one", 1, "put"), ("g/two", 1, "put")])
    );
}

/// Resident memory of a process, from /proc.
fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_thousand_idle_watchers_cost_under_20_mb_and_a_stuck_one_is_dropped() {
    sqlite_only!("the gateway is the same on both engines");
    let _turn = crate::limits::HEAVY.lock().await;
    use std::io::{Read, Write};
    // This side holds a thousand sockets.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur = limit.rlim_max.min(8192);
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    // A thousand opened at once by one key: its share of the in-flight
    // requests (an eighth of them by default) is not what is tested here.
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_MAX_IN_FLIGHT_PER_TENANT", "1024")
            .env("STRONGROOM_MAX_IN_FLIGHT_PER_CREDENTIAL", "1024"),
    )
    .await;
    let admin = app.admin();
    let Cred::ApiKey(key) = &admin else {
        unreachable!()
    };
    let host = app.addr.trim_start_matches("http://").to_owned();
    let request = format!("GET /watch HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\n\r\n");
    // Warm up what the first watcher allocates once.
    let mut warm = std::net::TcpStream::connect(&host).unwrap();
    warm.write_all(request.as_bytes()).unwrap();
    let mut head = [0u8; 12];
    warm.read_exact(&mut head).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kb(app.child.id());
    let mut watchers = Vec::new();
    for _ in 0..1000 {
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        watchers.push(s);
    }
    for s in &mut watchers {
        s.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_kb(app.child.id()).saturating_sub(before);
    println!("1000 idle watchers: {grown} kB");
    assert!(grown < 20 * 1024, "1000 idle watchers took {grown} kB");
    drop(watchers);

    // A watcher that never reads (a small receive buffer, so the server's
    // writes stop): after more changes than the live backlog, the server
    // drops it instead of holding them.
    let port: u16 = host.rsplit(':').next().unwrap().parse().unwrap();
    let mut stuck = small_buffer_connection(port);
    stuck.write_all(request.as_bytes()).unwrap();
    let big = "x".repeat(200);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (app_url, client, key) = (app.url("/secrets"), app.client.clone(), key.clone());
            let big = big.clone();
            tokio::spawn(async move {
                for i in 0..5000 {
                    let body =
                        serde_json::json!({"key": format!("flood/{w}-{i}-{big}"), "value": "v"});
                    let r = client
                        .put(&app_url)
                        .header("X-Api-Key", &key)
                        .header("Content-Type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    // Now read: what the socket held, then the end of the stream: the
    // chunked body's last chunk (the connection itself may stay open for
    // another request; this read once relied on the header timeout cutting
    // every stream, the defect of issue 32).
    stuck
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stuck.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the stuck watcher's stream never ended: {e}"),
        }
        if all.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let events = String::from_utf8_lossy(&all).matches("\nid:").count();
    println!("a stuck watcher got {events} of 40000 events before it was dropped");
    assert!(
        events < 40_000,
        "{events} of 40000 events reached a watcher that never read"
    );
}

/// A loopback connection whose receive buffer is 4 KiB, set before connect
/// (so the window the server sees stays small).
fn small_buffer_connection(port: u16) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let size: libc::c_int = 4096;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "{}", std::io::Error::last_os_error());
        std::net::TcpStream::from_raw_fd(fd)
    }
}

#[tokio::test]
async fn a_revoked_key_stops_receiving_changes() {
    let app = spawn_app().await;
    let admin = app.admin();
    let key = app.create_key("default", &[]);
    let id = key.split('_').nth(1).unwrap().to_owned();
    let mut watch = Watch::open(&app, "", &Cred::ApiKey(key), None).await;
    app.put("before/revoke", "v", &admin).await;
    assert_eq!(watch.take(1).await.len(), 1);
    let b = app.client.delete(app.url(&format!("/apikeys/{id}")));
    assert_eq!(app.send(b, &admin).await.status, 200);
    // Within the recheck (5 s), the stream ends; nothing after it arrives.
    let ended = Instant::now();
    while watch.frame(Duration::from_secs(8)).await.is_some() {
        assert!(ended.elapsed() < Duration::from_secs(8));
    }
    assert!(
        ended.elapsed() < Duration::from_secs(8),
        "{:?}",
        ended.elapsed()
    );
    app.put("after/revoke", "v", &admin).await;
    assert!(!watch.seen.contains("after/revoke"));
}

/// Holds `watch` for `hold` while a writer puts one change under `prefix`
/// a second, and returns how many heartbeats and events came, failing if
/// the stream ended or fell silent for more than two heartbeats.
pub async fn hold_stream(
    app: &TestApp,
    watch: &mut Watch,
    prefix: &str,
    hold: Duration,
) -> (usize, Vec<Seen>) {
    let admin = app.admin();
    let started = Instant::now();
    let (mut heartbeats, mut events) = (0, Vec::new());
    let mut next_put = started + Duration::from_secs(1);
    let mut puts = 0u64;
    while started.elapsed() < hold {
        if Instant::now() >= next_put {
            puts += 1;
            let put = app
                .put(&format!("{prefix}k"), &format!("v{puts}"), &admin)
                .await;
            assert_eq!(put.status, 200, "{}", put.body);
            next_put += Duration::from_secs(1);
        }
        // A heartbeat a second: silence this long means the stream died.
        let Some(frame) = watch.frame(Duration::from_millis(2_500)).await else {
            panic!(
                "the stream ended or fell silent after {:?} ({heartbeats} heartbeats, {} events)",
                started.elapsed(),
                events.len()
            );
        };
        if frame.starts_with(':') {
            heartbeats += 1;
        } else if frame.contains("data:") {
            let data = frame.lines().find_map(|l| l.strip_prefix("data:")).unwrap();
            let id = frame.lines().find_map(|l| l.strip_prefix("id:")).unwrap();
            events.push((
                id.trim().parse().unwrap(),
                serde_json::from_str(data.trim()).unwrap(),
            ));
        }
    }
    // Every put came, the last within a heartbeat of the hold's end.
    while (events.len() as u64) < puts {
        match watch.next(Duration::from_secs(5)).await {
            Some(event) => events.push(event),
            None => panic!("{} of {puts} events came", events.len()),
        }
    }
    (heartbeats, events)
}

/// Reproduction (issue 32, item 1): `curl -sN -H "X-Api-Key: $K"
/// 'http://127.0.0.1:8210/watch?prefix='` ended after 10.0-10.3 s (the
/// `--header-timeout`) without its terminating chunk, idle or not: the
/// watchdog took a connection whose answer had begun for an idle one. Here
/// the header timeout is 1 s and the stream is held for 4 s with a change
/// a second and a heartbeat a second.
#[tokio::test]
async fn a_watch_stream_outlives_the_header_timeout_with_every_heartbeat_and_event() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_HEADER_TIMEOUT", "1")
            .env("STRONGROOM_WATCH_HEARTBEAT", "1s"),
    )
    .await;
    let mut watch = Watch::open(&app, "?prefix=held/", &app.admin(), None).await;
    let (heartbeats, events) = hold_stream(&app, &mut watch, "held/", Duration::from_secs(4)).await;
    assert!(events.len() >= 3, "{events:?}");
    let versions: Vec<u64> = events
        .iter()
        .map(|(_, e)| e["version"].as_u64().unwrap())
        .collect();
    assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>());
    // A heartbeat a second, less those an event replaced.
    assert!(heartbeats + events.len() >= 3, "{heartbeats} heartbeats");
    // Still open after 4 header timeouts: one more change arrives.
    app.put("held/k", "after", &app.admin()).await;
    let last = watch
        .next(Duration::from_secs(5))
        .await
        .expect("the stream is still open");
    assert_eq!(
        last.1["version"].as_u64().unwrap(),
        versions.len() as u64 + 1
    );
}

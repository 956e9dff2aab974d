//! Limits a lone server keeps on its own: slow clients cut off by the header
//! and body timeouts, a connection flood that never locks out `/healthz`,
//! requests beyond `--max-in-flight` shed at once, a per-credential rate
//! limit, and the HTTP-layer errors answered, logged and told apart.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

/// The tests that load the machine (a connection flood, 300 slow clients,
/// held requests, unread answers, a thousand watchers) take turns, so one's
/// load is not in another's figures.
pub(crate) static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn host_port(app: &TestApp) -> String {
    app.addr.trim_start_matches("http://").to_owned()
}

/// Reads until the peer closes (or `limit` passes) and returns what came.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(limit, stream.read_to_end(&mut out))
        .await
        .ok()
        .map(|_| out)
}

/// Sends a whole request on a new connection and returns the whole answer
/// (the request asks the server to close).
async fn exchange(app: &TestApp, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(host_port(app)).await.unwrap();
    // The server may answer (and close) before reading it all.
    let _ = stream.write_all(request).await;
    let out = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("an answer within 10 s");
    String::from_utf8_lossy(&out).into_owned()
}

fn p99(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[(samples.len() * 99 / 100).min(samples.len() - 1)]
}

#[tokio::test]
async fn slowloris_connections_are_cut_off_at_the_header_timeout_while_others_are_served() {
    sqlite_only!("the HTTP layer is the same on both engines");
    let _turn = HEAVY.lock().await;
    let app = spawn_with(Options::default().env("STRONGROOM_HEADER_TIMEOUT", "2")).await;
    let cred = app.admin();
    assert_eq!(app.put("slow/probe", "v", &cred).await.status, 200);

    // 300 clients that send a header line and then a byte every half second,
    // never finishing their headers.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..300 {
        let addr = host_port(&app);
        slow.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"GET /secrets/slow/probe HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 256];
            loop {
                tokio::select! {
                    read = stream.read(&mut buf) => {
                        if matches!(read, Ok(0) | Err(_)) {
                            return started.elapsed();
                        }
                    }
                    () = tokio::time::sleep(Duration::from_millis(500)) => {
                        if stream.write_all(b"X-A: b\r\n").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
                if started.elapsed() > Duration::from_secs(20) {
                    panic!("a slow client was never cut off");
                }
            }
        }));
    }
    // Meanwhile a well-behaved client is served quickly.
    let mut latencies = Vec::new();
    while started.elapsed() < Duration::from_millis(1500) {
        let t = Instant::now();
        let reply = app.get("slow/probe", &cred).await;
        latencies.push(t.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    let worst_cut = futures_max(slow).await;
    assert!(
        worst_cut >= Duration::from_secs(2) && worst_cut < Duration::from_secs(8),
        "slow clients cut off after {worst_cut:?} (header timeout 2 s)"
    );
    let p99 = p99(latencies.clone());
    eprintln!(
        "{} requests beside 300 slowloris connections: p99 {p99:?}",
        latencies.len()
    );
    assert!(p99 < Duration::from_millis(50), "p99 {p99:?}");
    // The server still serves after them.
    assert_eq!(app.get("slow/probe", &cred).await.status, 200);
}

async fn futures_max(tasks: Vec<tokio::task::JoinHandle<Duration>>) -> Duration {
    let mut worst = Duration::ZERO;
    for task in tasks {
        worst = worst.max(task.await.unwrap());
    }
    worst
}

#[tokio::test]
async fn a_flood_of_20000_connections_never_stops_healthz_from_answering() {
    sqlite_only!("the HTTP layer is the same on both engines");
    let _turn = HEAVY.lock().await;
    let app = spawn_with(Options::default().env("STRONGROOM_MAX_CONNECTIONS", "256")).await;
    let addr = host_port(&app);
    // The flood: 20,000 connections that never send a byte, up to 400 held
    // open at once by this side, each closed with a reset (no TIME_WAIT, so
    // the flood does not run this machine out of ports).
    let flood = std::thread::spawn({
        let addr = addr.clone();
        move || {
            let mut held = std::collections::VecDeque::new();
            for _ in 0..20_000 {
                if let Ok(stream) = std::net::TcpStream::connect(&addr) {
                    reset_on_close(&stream);
                    held.push_back(stream);
                }
                if held.len() > 400 {
                    held.pop_front();
                }
            }
        }
    });
    let mut probes = 0;
    while !flood.is_finished() || probes < 10 {
        let t = Instant::now();
        let answer = tokio::time::timeout(
            Duration::from_secs(2),
            exchange(
                &app,
                b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            ),
        )
        .await
        .expect("/healthz answers within 2 s during the flood");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "{answer:?} after {:?}",
            t.elapsed()
        );
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    flood.join().unwrap();
    let evicted = app.counter("strongroom_connections_evicted_total").await;
    assert!(evicted > 10_000, "{evicted} evicted");
    assert!(!app.log_text().contains("Too many open files"));
}

/// Makes closing `stream` send a reset: SO_LINGER with a zero timeout.
fn reset_on_close(stream: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `linger`, whose size is passed with it.
    let set = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(set, 0, "SO_LINGER");
}

/// Starts a PUT whose body never finishes: the request stays in flight.
async fn held_put(app: &TestApp, key: &str) -> (TcpStream, String) {
    let body = format!(r#"{{"key":"{key}","value":"held"}}"#);
    let head = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.bootstrap_key.as_deref().unwrap(),
        body.len()
    );
    let mut stream = TcpStream::connect(host_port(app)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..5]).await.unwrap();
    (stream, body[5..].to_owned())
}

#[tokio::test]
async fn beyond_max_in_flight_requests_answer_503_at_once_and_the_accepted_ones_finish() {
    sqlite_only!("the HTTP layer is the same on both engines");
    let _turn = HEAVY.lock().await;
    // One credential holds all four and probes for a fifth: its own share
    // (above the global cap here) is not what is tested.
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_MAX_IN_FLIGHT", "4")
            .env("STRONGROOM_MAX_IN_FLIGHT_PER_TENANT", "8")
            .env("STRONGROOM_MAX_IN_FLIGHT_PER_CREDENTIAL", "8")
            .env("STRONGROOM_BODY_MIN_RATE", "0"),
    )
    .await;
    let cred = app.admin();
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(held_put(&app, &format!("flight/{i}")).await);
    }
    // Wait until the server has taken the four in: then the next is shed.
    // A held PUT that raced a probe for a slot was shed itself: start it again.
    let started = Instant::now();
    while app.get("flight/0", &cred).await.status != 503 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never shed:\n{}",
            app.log_text()
        );
        for (i, (stream, _)) in held.iter_mut().enumerate() {
            let mut byte = [0u8; 1];
            if let Ok(read) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await
            {
                assert!(read.is_ok(), "{read:?}");
                *stream = held_put(&app, &format!("flight/{i}")).await.0;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..7 {
        let t = Instant::now();
        let shed = app.get("flight/0", &cred).await;
        assert_eq!(shed.status, 503, "{}", shed.body);
        assert_eq!(shed.error(), "service unavailable");
        assert_eq!(shed.header("retry-after").as_deref(), Some("1"));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "shed at once, not queued"
        );
    }
    // The four finish and are kept.
    for (mut stream, rest) in held {
        stream.write_all(rest.as_bytes()).await.unwrap();
        let answer = read_to_close(&mut stream, Duration::from_secs(10))
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    }
    for i in 0..4 {
        let got = app.get(&format!("flight/{i}"), &cred).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.json()["value"], "held");
    }
    let shed = app.counter("strongroom_requests_shed_total").await;
    assert!(shed >= 8, "{shed} shed");
}

#[tokio::test]
async fn a_credential_over_its_rate_limit_gets_429_and_others_are_unaffected() {
    let app = spawn_with(
        Options::default()
            .env("STRONGROOM_RATE_LIMIT", "1")
            .env("STRONGROOM_RATE_LIMIT_BURST", "3"),
    )
    .await;
    let busy = Cred::ApiKey(app.create_key("rl", &[]));
    let calm = Cred::ApiKey(app.create_key("rl", &[]));
    // The burst of 3 goes at once; a token comes back each second, so
    // among the next few requests one is refused however slow this
    // machine is.
    for _ in 0..3 {
        assert_eq!(app.get("rate/missing", &busy).await.status, 404);
    }
    let mut limited = app.get("rate/missing", &busy).await;
    for _ in 0..50 {
        if limited.status != 404 {
            break;
        }
        limited = app.get("rate/missing", &busy).await;
    }
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert_eq!(limited.error(), "rate limited");
    assert_eq!(limited.header("retry-after").as_deref(), Some("1"));
    assert_eq!(app.get("rate/missing", &calm).await.status, 404);
    // A second later the bucket holds a token again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(app.get("rate/missing", &busy).await.status, 404);
    assert_eq!(app.counter("strongroom_rate_limited_total").await, 1);
}

#[tokio::test]
async fn a_body_that_stalls_gets_408_a_bad_chunk_400_and_a_client_that_leaves_is_logged_as_499() {
    let app = spawn_with(Options::default().env("STRONGROOM_BODY_TIMEOUT", "1")).await;
    let key = app.bootstrap_key.clone().unwrap();

    let (mut stalled, _) = held_put(&app, "body/stalled").await;
    let answer = read_to_close(&mut stalled, Duration::from_secs(10))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""error":"request timeout""#), "{answer}");

    let chunked = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n{{}}\r\n0\r\n\r\n"
    );
    let answer = exchange(&app, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains(r#""error":"invalid request format""#),
        "{answer}"
    );

    let (left, _) = held_put(&app, "body/left").await;
    drop(left);
    assert!(app.log_shows(r#""status":499"#).await, "{}", app.log_text());
    assert!(
        !app.log_text().contains(r#""status":413"#),
        "{}",
        app.log_text()
    );
    // Nothing was stored by any of them.
    for key in ["body/stalled", "body/left"] {
        assert_eq!(app.get(key, &app.admin()).await.status, 404);
    }
}

#[tokio::test]
async fn a_client_that_half_closes_after_its_request_still_gets_the_answer() {
    let app = spawn_app().await;
    let key = app.bootstrap_key.clone().unwrap();
    let body = r#"{"key":"half/closed","value":"answered"}"#;
    let request = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let got = app.get("half/closed", &app.admin()).await;
    assert_eq!(got.json()["value"], "answered");
}

#[tokio::test]
async fn http_layer_errors_are_answered_and_logged() {
    let app = spawn_app().await;
    let long_uri = format!(
        "GET /secrets/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect::<String>()
    );
    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "b".repeat(1024 * 1024)
    );
    for (request, status, error) in [
        (
            b"GET /secrets/a\0b HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "invalid request format",
        ),
        (
            b"GET /secrets/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "400",
            "invalid request format",
        ),
        (
            b"PUT /secrets HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n".to_vec(),
            "400",
            "invalid request format",
        ),
        (long_uri.into_bytes(), "414", "uri too long"),
        (
            many_headers.into_bytes(),
            "431",
            "request header fields too large",
        ),
        (
            huge_header.into_bytes(),
            "431",
            "request header fields too large",
        ),
    ] {
        let answer = exchange(&app, &request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer:?}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(body, serde_json::json!({ "error": error }));
        assert!(
            app.log_shows(&format!(r#""status":{status}"#)).await,
            "no access line for {status}: {}",
            app.log_text()
        );
    }
}

#[tokio::test]
async fn a_request_head_cut_off_by_the_header_timeout_gets_408_and_an_idle_connection_just_closes()
{
    let app = spawn_with(Options::default().env("STRONGROOM_HEADER_TIMEOUT", "1")).await;
    let mut partial = TcpStream::connect(host_port(&app)).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut partial, Duration::from_secs(10))
        .await
        .expect("closed within 10 s");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(
        answer.ends_with(r#"{"error":"request timeout"}"#),
        "{answer:?}"
    );
    assert!(app.log_shows(r#""status":408"#).await, "{}", app.log_text());

    // Idle, before and after a request: closed without a word.
    let mut idle = TcpStream::connect(host_port(&app)).await.unwrap();
    let said = read_to_close(&mut idle, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(said.is_empty(), "{:?}", String::from_utf8_lossy(&said));
    let mut kept = TcpStream::connect(host_port(&app)).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let said = read_to_close(&mut kept, Duration::from_secs(10))
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&said);
    assert!(said.starts_with("HTTP/1.1 200"), "{said:?}");
    assert!(!said.contains("408"), "{said:?}");
}

/// A request head with `Content-Length: 1000` and then one body byte every
/// `every`: it holds an in-flight slot while its body trickles in.
async fn trickle(app: &TestApp, key: &str, every: Duration) -> tokio::task::JoinHandle<()> {
    let head = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let addr = host_port(app);
    tokio::spawn(async move {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            return;
        };
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        loop {
            tokio::time::sleep(every).await;
            if stream.write_all(b" ").await.is_err() {
                return;
            }
        }
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median of `n` GETs of another tenant's key, each of which must
/// answer 200.
async fn victim_latency(app: &TestApp, cred: &Cred, n: usize) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let got = app.get("fair/victim", cred).await;
        samples.push(t.elapsed());
        assert_eq!(got.status, 200, "another tenant was refused: {}", got.body);
    }
    median(samples)
}

/// Reproduction (issue 32, item 3): a key holding only `audit:read` opened
/// 1,100 connections, each a request head with `Content-Length: 1000` and
/// a body byte every 2 s; it took all 1,024 in-flight slots and every other
/// tenant's GETs and PUTs answered 503 for the whole 30 s body timeout.
/// Here, with `--max-in-flight 64`, 200 such connections: the flooding
/// credential holds at most its share (an eighth), its other requests are
/// refused 429 at once, a trickling body is cut off after the grace, and
/// another tenant is served within twice its normal latency throughout.
#[tokio::test]
async fn one_credential_flooding_slow_bodies_cannot_starve_another_tenant() {
    sqlite_only!("the HTTP layer is the same on both engines");
    let _turn = HEAVY.lock().await;
    let app = spawn_with(Options::default().env("STRONGROOM_MAX_IN_FLIGHT", "64")).await;
    let attacker = app.create_key("attacker", &["--scopes", "audit:read"]);
    let victim = Cred::ApiKey(app.create_key("victim", &[]));
    assert_eq!(app.put("fair/victim", "served", &victim).await.status, 200);
    // Warm up, then the normal latency.
    victim_latency(&app, &victim, 20).await;
    let normal = victim_latency(&app, &victim, 41).await;

    let mut flood = Vec::new();
    for _ in 0..200 {
        flood.push(trickle(&app, &attacker, Duration::from_secs(2)).await);
    }
    // Until the server has seen the flood: its share is full.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.counter("strongroom_rate_limited_total").await < 100 {
        assert!(
            Instant::now() < deadline,
            "the flood was never refused:\n{}",
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let during = victim_latency(&app, &victim, 41).await;
    // Loopback latency is a fraction of a millisecond; a floor keeps
    // scheduler noise from deciding the test.
    eprintln!("another tenant's median GET: {normal:?} alone, {during:?} beside the flood");
    let bound = 2 * normal.max(Duration::from_millis(2));
    assert!(
        during <= bound,
        "median {during:?} under the flood, {normal:?} before"
    );
    let put = app.put("fair/victim-put", "written", &victim).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert!(
        app.counter("strongroom_requests_shed_total").await == 0,
        "nobody reached the global cap"
    );
    for task in flood {
        task.abort();
    }
}

/// A body slower than `--body-min-rate` is cut off (408) after the grace,
/// long before `--body-timeout`, and changes nothing.
#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_is_cut_off_after_the_grace() {
    sqlite_only!("the HTTP layer is the same on both engines");
    let app = spawn_app().await;
    let key = app.bootstrap_key.clone().unwrap();
    let head = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{"
    );
    let mut stream = TcpStream::connect(host_port(&app)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 512];
    // A byte every half second: 2 B/s against a minimum of 1,024.
    loop {
        match tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {
                let _ = stream.write_all(b" ").await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The 30 s body timeout did not decide it: the grace and the rate did.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

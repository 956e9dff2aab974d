//! The durable-write baseline: an axum server that answers a `PUT` only once
//! its body is appended to a file and fdatasync'd, one fdatasync per batch
//! of whatever requests wait together (group commit), and nothing else.
//! `bench/run` reports strongroom's PUT as a ratio to it: how close a
//! durable PUT comes to what this disk allows.
//!
//!     durable ADDR FILE

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::mpsc;

use axum::body::Bytes;
use axum::routing::put;
use axum::Router;
use tokio::sync::oneshot;

type Job = (Bytes, oneshot::Sender<()>);

/// Blocks for the first body, takes every other one waiting, appends them
/// with one write, fdatasyncs once, then answers them all.
fn writer(path: String, jobs: mpsc::Receiver<Job>) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the log file");
    let mut batch: Vec<Job> = Vec::new();
    let mut buffer = Vec::new();
    while let Ok(first) = jobs.recv() {
        batch.push(first);
        batch.extend(jobs.try_iter());
        buffer.clear();
        for (body, _) in &batch {
            buffer.extend_from_slice(body);
            buffer.push(b'\n');
        }
        file.write_all(&buffer).expect("append");
        file.sync_data().expect("fdatasync");
        for (_, done) in batch.drain(..) {
            let _ = done.send(());
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let path = args.next().unwrap_or_else(|| "durable.log".into());
    let (jobs, queue) = mpsc::channel::<Job>();
    std::thread::spawn(move || writer(path, queue));
    let app = Router::new().route(
        "/secrets",
        put(move |body: Bytes| {
            let jobs = jobs.clone();
            async move {
                let (done, written) = oneshot::channel();
                jobs.send((body, done)).expect("writer running");
                written.await.expect("writer answered");
                (
                    [("content-type", "application/json")],
                    r#"{"message":"success"}"#,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

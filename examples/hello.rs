//! The benchmark baseline: a plain axum hello-world (`#[tokio::main]`,
//! `axum::serve`), answering 40 bytes of JSON, as the performance issue
//! defines it. `bench/run` measures strongroom against it in the same run.

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let app = Router::new().route(
        "/hello",
        get(|| async {
            (
                [("content-type", "application/json")],
                r#"{"message":"hello, world from axum!!!!"}"#,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    eprintln!("listening on {}", listener.local_addr().unwrap());
    axum::serve(listener, app).await.unwrap();
}

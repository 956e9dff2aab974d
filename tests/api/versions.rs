//! Versions and check-and-set as far as step 1 exposes them: each PUT makes
//! a new version, reported in `ETag`.

use crate::helpers::*;

#[tokio::test]
async fn each_put_makes_a_new_version_reported_as_etag() {
    let app = spawn_app().await;
    let admin = app.admin();
    let first = app.put("k", "one", &admin).await;
    assert_eq!(first.header("etag").as_deref(), Some("\"1\""));
    app.put("k", "two", &admin).await;
    let r = app.get("k", &admin).await;
    assert_eq!(r.header("etag").as_deref(), Some("\"2\""));
    assert!(r.header("last-modified").unwrap().ends_with("GMT"));
    assert_eq!(app.get("k?version=1", &admin).await.json()["value"], "one");
    assert_eq!(app.get("k?version=3", &admin).await.status, 404);
}

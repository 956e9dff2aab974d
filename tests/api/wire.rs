//! Wire compatibility with the quiva compat spec, byte for byte, and the
//! error table of DESIGN §1.

use crate::helpers::*;

#[tokio::test]
async fn put_get_delete_answer_exactly_the_compat_bodies() {
    let app = spawn_app().await;
    let admin = app.admin();
    let put = app.put("api-key", "sk_live_abc", &admin).await;
    assert_eq!(
        (put.status, put.body.as_str()),
        (200, r#"{"message":"success"}"#)
    );
    assert!(put
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let get = app.get("api-key", &admin).await;
    assert_eq!(
        (get.status, get.body.as_str()),
        (200, r#"{"key":"api-key","value":"sk_live_abc"}"#)
    );
    let del = app.delete("api-key", &admin).await;
    assert_eq!(
        (del.status, del.body.as_str()),
        (200, r#"{"message":"success"}"#)
    );
    let gone = app.get("api-key", &admin).await;
    assert_eq!(
        (gone.status, gone.body.as_str()),
        (404, r#"{"error":"resource not found"}"#)
    );
    let gone = app.delete("api-key", &admin).await;
    assert_eq!(
        (gone.status, gone.body.as_str()),
        (404, r#"{"error":"resource not found"}"#)
    );
}

#[tokio::test]
async fn put_overwrites_and_ignores_unknown_fields() {
    let app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(app.put("k", "one", &admin).await.status, 200);
    let r = app
        .put_raw(
            r#"{"key":"k","value":"two","description":"x","tags":[1]}"#,
            &admin,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("k", &admin).await.json()["value"], "two");
}

#[tokio::test]
async fn bad_put_bodies_answer_400_invalid_request_format_and_change_nothing() {
    let app = spawn_app().await;
    let admin = app.admin();
    app.put("k", "original", &admin).await;
    let bodies = [
        "",
        "   ",
        "{",
        "not json",
        r#"["k","v"]"#,
        r#""k""#,
        "null",
        r#"{"value":"v"}"#,
        r#"{"key":"k"}"#,
        r#"{"key":"k","value":5}"#,
        r#"{"key":"k","value":null}"#,
        r#"{"key":"k","value":{"a":"b"}}"#,
        r#"{"key":7,"value":"v"}"#,
        r#"{"key":"a b","value":"v"}"#,
        r#"{"key":"","value":"v"}"#,
        r#"{"key":"/k","value":"v"}"#,
        r#"{"key":"k/","value":"v"}"#,
        r#"{"key":"a..b","value":"v"}"#,
        r#"{"key":"a//b","value":"v"}"#,
    ];
    for body in bodies {
        let r = app.put_raw(body, &admin).await;
        assert_eq!(r.status, 400, "{body:?}: {}", r.body);
        let json = r.json();
        assert_eq!(json["error"], "invalid request format", "{body:?}");
        assert!(
            json["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body:?} has a detail"
        );
    }
    let long_key = format!(r#"{{"key":"{}","value":"v"}}"#, "k".repeat(257));
    assert_eq!(
        app.put_raw(long_key, &admin).await.error(),
        "invalid request format"
    );
    assert_eq!(app.get("k", &admin).await.json()["value"], "original");
}

#[tokio::test]
async fn bad_keys_in_the_path_answer_400_with_the_operation_text() {
    let app = spawn_app().await;
    let admin = app.admin();
    for path in [
        "a%20b", "a..b", "a%2F%2Fb", ".hidden", "k%2F", "%ZZ", "%FF", "x*",
    ] {
        let r = app.get(path, &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "error retrieving secret".into()),
            "GET {path}"
        );
        assert!(r.json()["detail"].is_string());
        let r = app.delete(path, &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (400, "error deleting secret".into()),
            "DELETE {path}"
        );
    }
    let long = "k".repeat(257);
    assert_eq!(app.get(&long, &admin).await.status, 400);
    let r = app.get("", &admin).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let r = app.get("k?version=zero", &admin).await;
    assert_eq!(
        (r.status, r.error()),
        (400, "error retrieving secret".into())
    );
}

#[tokio::test]
async fn keys_with_slashes_are_reached_raw_or_percent_encoded() {
    let app = spawn_app().await;
    let admin = app.admin();
    assert_eq!(
        app.put("team/app/db.password", "pw", &admin).await.status,
        200
    );
    for path in [
        "team/app/db.password",
        "team%2Fapp%2Fdb.password",
        "team%2fapp/db.password",
    ] {
        let r = app.get(path, &admin).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.json()["key"], "team/app/db.password");
    }
    assert_eq!(
        app.delete("team%2Fapp%2Fdb.password", &admin).await.status,
        200
    );
    assert_eq!(app.get("team/app/db.password", &admin).await.status, 404);
}

#[tokio::test]
async fn any_json_string_is_a_value() {
    let app = spawn_app().await;
    let admin = app.admin();
    let exact = "x".repeat(65_536);
    let values = [
        "",
        "\0",
        "a\0b",
        "🔐 clé",
        "line1\nline2\t\"quoted\"\\",
        exact.as_str(),
    ];
    for (i, value) in values.iter().enumerate() {
        let key = format!("v{i}");
        let r = app.put(&key, value, &admin).await;
        assert_eq!(r.status, 200, "value {i}: {}", r.body);
        assert_eq!(
            app.get(&key, &admin).await.json()["value"]
                .as_str()
                .unwrap(),
            *value,
            "value {i}"
        );
    }
}

#[tokio::test]
async fn oversize_bodies_and_values_answer_413() {
    let app = spawn_app().await;
    let admin = app.admin();
    let too_long = "x".repeat(65_537);
    let r = app.put("big", &too_long, &admin).await;
    assert_eq!((r.status, r.error()), (413, "value too large".into()));
    let huge = format!(r#"{{"key":"big","value":"{}"}}"#, "x".repeat(1024 * 1024));
    let r = app.put_raw(huge, &admin).await;
    assert_eq!((r.status, r.error()), (413, "request too large".into()));
    // Chunked, with no Content-Length to go by.
    let Cred::ApiKey(key) = &admin else {
        unreachable!()
    };
    let mut raw = format!(
        "PUT /secrets HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for _ in 0..20 {
        raw.push_str(&format!("{:x}\r\n{}\r\n", 65536, "x".repeat(65536)));
    }
    raw.push_str("0\r\n\r\n");
    let answer = raw_request(&app.addr, raw.as_bytes());
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(answer.contains(r#"{"error":"request too large"}"#));
    // A fresh connection: the server closes one whose body it refused.
    let fresh = reqwest::Client::new().get(app.url("/secrets/big"));
    assert_eq!(app.send(fresh, &admin).await.status, 404);
}

#[tokio::test]
async fn value_limit_is_configurable() {
    let app = spawn_with(Options::default().env("STRONGROOM_MAX_VALUE_BYTES", "10")).await;
    let admin = app.admin();
    assert_eq!(app.put("k", "0123456789", &admin).await.status, 200);
    assert_eq!(
        app.put("k", "0123456789a", &admin).await.error(),
        "value too large"
    );
}

#[tokio::test]
async fn non_json_content_type_answers_415() {
    let app = spawn_app().await;
    let admin = app.admin();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let b = app
            .client
            .put(app.url("/secrets"))
            .header("Content-Type", ct)
            .body(r#"{"key":"k","value":"v"}"#);
        let r = app.send(b, &admin).await;
        assert_eq!(
            (r.status, r.error()),
            (415, "unsupported media type".into()),
            "{ct}"
        );
    }
    let b = app
        .client
        .put(app.url("/secrets"))
        .header("Content-Type", "application/json; charset=utf-8")
        .body(r#"{"key":"k","value":"v"}"#);
    assert_eq!(app.send(b, &admin).await.status, 200);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = spawn_app().await;
    let r = app
        .send(app.client.get(app.url("/nope")), &app.admin())
        .await;
    assert_eq!((r.status, r.error()), (404, "resource not found".into()));
    let r = app
        .send(app.client.post(app.url("/secrets")), &app.admin())
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.error(), "method not allowed");
}

/// Reproduction (issue 32, item 6): two `X-Api-Key` headers (or two
/// `Authorization` headers) were taken as one of them; JSON answers had no
/// `X-Content-Type-Options`. Now two of either answer 400, and every
/// answer says `nosniff`.
#[tokio::test]
async fn two_credential_headers_answer_400_and_json_is_never_sniffed() {
    let app = spawn_app().await;
    let key = app.bootstrap_key.clone().unwrap();
    let token = hs256_token(&serde_json::json!({"tenant": "default", "exp": now_secs() + 60}));
    for (first, second) in [
        (format!("X-Api-Key: {key}"), format!("X-Api-Key: {key}")),
        (
            format!("X-Api-Key: {key}"),
            "X-Api-Key: sr_wrong".to_owned(),
        ),
        (
            format!("Authorization: Bearer {token}"),
            format!("Authorization: Bearer {token}"),
        ),
    ] {
        let request = format!(
            "GET /secrets/k HTTP/1.1\r\nHost: x\r\n{first}\r\n{second}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_request(&app.addr, request.as_bytes());
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("not several"), "{answer}");
        assert!(!answer.contains(&key) && !answer.contains(&token));
    }
    for path in ["/secrets/missing", "/apikeys", "/readyz", "/no/such/route"] {
        let r = app.send(app.client.get(app.url(path)), &app.admin()).await;
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
    }
}

//! The web console's files: served without auth from the binary, under a
//! strict Content-Security-Policy, and the API's CORS stays closed. The
//! console itself is tested in a real browser (tests/console/).

use crate::helpers::*;

#[tokio::test]
async fn the_console_is_served_with_strict_headers_and_no_auth() {
    sqlite_only!("the console's files do not touch the store");
    let app = spawn_app().await;
    let files = [
        ("/ui/", "text/html"),
        ("/ui/index.html", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/api.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ];
    for (path, content_type) in files {
        let r = app.send(app.client.get(app.url(path)), &Cred::None).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.header("content-type").unwrap().starts_with(content_type));
        let csp = r.header("content-security-policy").unwrap();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(
            r.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(r.header("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(r.header("x-frame-options").as_deref(), Some("DENY"));
    }
    // The page loads nothing from elsewhere and runs no inline script.
    let page = app
        .send(app.client.get(app.url("/ui/")), &Cred::None)
        .await
        .body;
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!page.contains("style=") && !page.contains("<style"));
    for script in page.split("<script").skip(1) {
        let tag = &script[..script.find('>').unwrap()];
        assert!(
            tag.contains("src=\"/ui/"),
            "an inline script: <script{tag}>"
        );
        assert!(script[tag.len() + 1..]
            .trim_start()
            .starts_with("</script>"));
    }

    let r = app
        .send(app.client.get(app.url("/ui/nope.js")), &Cred::None)
        .await;
    assert_eq!((r.status, r.error()), (404, "resource not found".into()));
    let r = app
        .send(
            app.client.get(app.url("/ui/%2e%2e%2fopenapi.json")),
            &Cred::None,
        )
        .await;
    assert_eq!(r.status, 404);

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], "/ui/");
}

#[tokio::test]
async fn the_api_answers_no_cross_origin_request() {
    sqlite_only!("CORS is the HTTP layer's");
    let app = spawn_app().await;
    let preflight = app
        .send(
            app.client
                .request(reqwest::Method::OPTIONS, app.url("/secrets/a"))
                .header("origin", "https://evil.example")
                .header("access-control-request-method", "GET")
                .header("access-control-request-headers", "x-api-key"),
            &Cred::None,
        )
        .await;
    assert!(preflight.header("access-control-allow-origin").is_none());
    let get = app
        .send(
            app.client
                .get(app.url("/secrets/a"))
                .header("origin", "https://evil.example"),
            &app.admin(),
        )
        .await;
    assert!(get.header("access-control-allow-origin").is_none());
    let ui = app
        .send(
            app.client
                .get(app.url("/ui/app.js"))
                .header("origin", "https://evil.example"),
            &Cred::None,
        )
        .await;
    assert!(ui.header("access-control-allow-origin").is_none());
}

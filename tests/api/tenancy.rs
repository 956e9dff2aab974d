//! Tenancy: a tenant never reads, deletes or lists another's keys, and a
//! foreign key answers 404, never 403.

use crate::helpers::*;

#[tokio::test]
async fn a_foreign_tenants_key_is_404_for_every_operation() {
    let app = spawn_app().await;
    let acme = Cred::ApiKey(app.create_key("acme", &[]));
    let evil = Cred::ApiKey(app.create_key("evil", &[]));
    assert_eq!(
        app.put("shared/name", "acme-secret", &acme).await.status,
        200
    );
    let r = app.get("shared/name", &evil).await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, r#"{"error":"resource not found"}"#)
    );
    assert_eq!(app.delete("shared/name", &evil).await.status, 404);
    let list = app.send(app.client.get(app.url("/secrets")), &evil).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["secrets"].as_array().unwrap().len(), 0);
    let meta = app
        .send(app.client.get(app.url("/metadata/shared/name")), &evil)
        .await;
    assert_eq!(meta.status, 404);
    // The same key name in another tenant is a different secret.
    assert_eq!(
        app.put("shared/name", "evil-secret", &evil).await.status,
        200
    );
    assert_eq!(
        app.get("shared/name", &acme).await.json()["value"],
        "acme-secret"
    );
    assert_eq!(
        app.get("shared/name", &evil).await.json()["value"],
        "evil-secret"
    );
}

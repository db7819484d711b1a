//! The server skeleton over real HTTP: the admin bootstrap, its unhappy
//! statuses, bearer-token routing to realms, and graceful shutdown.

mod common;

use keystead_examples::server::Backend;
use serde_json::{Value, json};

#[tokio::test]
async fn admin_creates_realms_and_refuses_everyone_else() {
    let server = common::start().await;
    let url = server.url("/admin/realms");

    let created = server
        .http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "acme", "issuer": "https://id.acme.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body: Value = created.json().await.unwrap();
    assert_eq!(body["name"], "acme");
    assert_eq!(body["issuer"], "https://id.acme.test");
    let id: keystead::id::RealmId = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(server.ks().realms().get(id).await.unwrap().name, "acme");

    // The same name again: 409 with the library's code.
    let again = server
        .http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["code"],
        "REALM_NAME_TAKEN"
    );

    // Another realm with the same issuer: 409, and no realm left behind.
    let same_issuer = server
        .http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "other", "issuer": "https://id.acme.test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_issuer.status(), 409);
    assert_eq!(
        same_issuer.json::<Value>().await.unwrap()["code"],
        "ISSUER_TAKEN"
    );
    assert!(server.ks().realms().get_by_name("other").await.is_err());

    // No token, a wrong token, a malformed body, an invalid name.
    let none = server
        .http
        .post(&url)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 401);
    assert!(none.headers().contains_key("www-authenticate"));
    let wrong = server
        .http
        .post(&url)
        .bearer_auth("not-the-admin-token")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let malformed = server
        .http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["code"],
        "VALIDATION_FAILED"
    );
    let bad_name = server
        .http
        .post(&url)
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "Not A DNS Label"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_name.status(), 400);
    let body: Value = bad_name.json().await.unwrap();
    assert_eq!(body["code"], "VALIDATION_FAILED");
    assert_eq!(body["field"], "realm.name");

    server.stop().await;
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = common::start_on(Backend::Memory).await;
    let big = "x".repeat(100 * 1024);
    let response = server
        .http
        .post(server.url("/admin/realms"))
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": big}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    server.stop().await;
}

#[tokio::test]
async fn admin_creates_groups_with_members() {
    let server = common::start_on(Backend::Sled).await;
    let realm = server.create_realm("fam").await;
    let (alice, _) = server.user_with_token(realm, "alice").await;
    let created = server
        .http
        .post(server.url("/admin/realms/fam/groups"))
        .bearer_auth(&server.admin_token)
        .json(&json!({"name": "home", "deviceLimit": 3, "members": [alice.to_string()]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let group: Value = created.json().await.unwrap();
    assert_eq!(group["members"][0], alice.to_string());
    assert_eq!(group["deviceLimit"], 3);
    let group_id = group["groupId"].as_str().unwrap().to_owned();

    // Unknown member, unknown realm, unknown group: 404; bad ids: 400.
    let stranger = keystead::id::UserId::generate(chrono::Utc::now());
    let cases = [
        (
            format!("/admin/realms/fam/groups/{group_id}/members/{stranger}"),
            404,
        ),
        (
            format!("/admin/realms/nope/groups/{group_id}/members/{alice}"),
            404,
        ),
        (
            format!("/admin/realms/fam/groups/{stranger}/members/{alice}"),
            404,
        ),
        (
            format!("/admin/realms/fam/groups/not-an-id/members/{alice}"),
            400,
        ),
        (
            format!("/admin/realms/fam/groups/{group_id}/members/{alice}"),
            204,
        ),
    ];
    for (path, status) in cases {
        let response = server
            .http
            .put(server.url(&path))
            .bearer_auth(&server.admin_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
    }
    server.stop().await;
}

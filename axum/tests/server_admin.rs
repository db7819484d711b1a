//! The server skeleton over real HTTP: the admin bootstrap, its unhappy
//! statuses, bearer-token routing to realms, and graceful shutdown.
#![allow(clippy::too_many_lines)] // end-to-end walkthroughs read top to bottom

mod common;

use keystead_axum::Backend;
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

/// Serve a tiny router that echoes the verified caller, through the
/// extractors of two route scopes, on the harness's state.
async fn whoami_server(state: keystead_axum::AppState) -> String {
    use axum::routing::get;
    use keystead_axum::auth::{AccountScope, Caller, DeviceScope};
    let app = axum::Router::new()
        .route(
            "/whoami",
            get(|c: Caller<AccountScope>| async move { c.claims.sub.to_string() }),
        )
        .route(
            "/oauth/whoami",
            get(|c: Caller<DeviceScope>| async move { c.realm.to_string() }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

#[tokio::test]
async fn tokens_route_to_their_realm_by_issuer() {
    let server = common::start_on(Backend::Memory).await;
    let http = &server.http;
    let (status, acme) = common::call(
        http.post(server.url("/admin/realms"))
            .bearer_auth(&server.admin_token)
            .json(&json!({"name": "acme", "issuer": "https://id.acme.test"})),
    )
    .await;
    assert_eq!(status, 201);
    let acme: keystead::id::RealmId = acme["id"].as_str().unwrap().parse().unwrap();
    let beta = server.create_realm("beta").await;
    let (alice, alice_token) = server.user_with_token(acme, "alice").await;
    let (bob, bob_token) = server.user_with_token(beta, "bob").await;
    let base = whoami_server(server.state.clone()).await;

    // An issuer URL routes through the index, a URN issuer directly.
    let (status, body) =
        common::call(http.get(format!("{base}/whoami")).bearer_auth(&alice_token)).await;
    assert_eq!((status, body), (200, json!(alice.to_string())));
    let (status, body) =
        common::call(http.get(format!("{base}/whoami")).bearer_auth(&bob_token)).await;
    assert_eq!((status, body), (200, json!(bob.to_string())));
    let (status, body) = common::call(
        http.get(format!("{base}/oauth/whoami"))
            .bearer_auth(&alice_token),
    )
    .await;
    assert_eq!((status, body), (200, json!(acme.to_string())));

    // A token re-labelled with the other realm's issuer (its signature no
    // longer matches, and beta's keys never signed it) is refused.
    let relabelled = {
        use base64::Engine as _;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = alice_token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["iss"] = json!(format!("urn:keystead:realm:{beta}"));
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let (status, body) =
        common::call(http.get(format!("{base}/whoami")).bearer_auth(&relabelled)).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "TOKEN_UNTRUSTED");
    // Unknown issuers, garbage, the wrong scheme.
    let unknown = {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://nobody.test"}"#);
        format!("e30.{payload}.c2ln")
    };
    for (auth, code) in [
        (format!("Bearer {unknown}"), "TOKEN_WRONG_ISSUER"),
        ("Bearer not-a-jwt".to_owned(), "TOKEN_MALFORMED"),
        (format!("Basic {alice_token}"), "UNAUTHORIZED"),
    ] {
        let (status, body) = common::call(
            http.get(format!("{base}/whoami"))
                .header("authorization", auth),
        )
        .await;
        assert_eq!((status, body["code"].as_str()), (401, Some(code)));
    }
    // A token of realm acme on realm beta's own routes: beta's keys never
    // signed it.
    let (status, body) = common::call(
        http.post(server.url("/realms/beta/login-actions/generate-recovery-codes"))
            .bearer_auth(&alice_token)
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // A token for another audience is refused.
    let users = server.ks().users(acme);
    let keystead::user::LoginOutcome::Authenticated(session) = users
        .authenticate(
            "alice",
            keystead::secret::SecretString::new("correct horse battery staple".into()),
        )
        .await
        .unwrap()
    else {
        panic!("no MFA")
    };
    server
        .ks()
        .oauth(acme)
        .create_client(keystead::oauth::NewClient::first_party(
            "elsewhere",
            "someone-else",
            Vec::new(),
        ))
        .await
        .unwrap();
    let other_aud = server
        .ks()
        .tokens(acme)
        .issue(
            session.id,
            &keystead::token::AccessRequest::public("elsewhere", vec![]),
        )
        .await
        .unwrap();
    let (status, body) = common::call(
        http.get(format!("{base}/whoami"))
            .bearer_auth(other_aud.access_token.expose()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("TOKEN_WRONG_AUDIENCE"))
    );

    // Each route needs its scope: a token for the server without it, and a
    // named (message) token with it, are both refused.
    server
        .ks()
        .oauth(acme)
        .create_client(keystead::oauth::NewClient::first_party(
            "devices-only",
            server.state.audience.to_string(),
            vec!["devices".into()],
        ))
        .await
        .unwrap();
    let request = keystead::token::AccessRequest::public("devices-only", vec!["devices".into()]);
    let devices_only = server
        .ks()
        .tokens(acme)
        .issue(session.id, &request)
        .await
        .unwrap();
    let named = server
        .ks()
        .tokens(acme)
        .create_scoped_token(
            session.id,
            &keystead::token::NewScopedToken {
                name: "message".into(),
                request,
                expires_in: chrono::Duration::days(30),
            },
        )
        .await
        .unwrap();
    let token = devices_only.access_token.expose();
    let (status, body) =
        common::call(http.get(format!("{base}/oauth/whoami")).bearer_auth(token)).await;
    assert_eq!((status, body), (200, json!(acme.to_string())));
    for token in [token, named.token.expose()] {
        let (status, body) =
            common::call(http.get(format!("{base}/whoami")).bearer_auth(token)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some("INSUFFICIENT_SCOPE"))
        );
    }
    let (status, body) = common::call(
        http.get(format!("{base}/oauth/whoami"))
            .bearer_auth(named.token.expose()),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("INSUFFICIENT_SCOPE"))
    );

    // A disabled realm's tokens stop working (403), a deleted realm's too (401).
    server.ks().realms().disable(acme).await.unwrap();
    let (status, body) =
        common::call(http.get(format!("{base}/whoami")).bearer_auth(&alice_token)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("REALM_DISABLED"))
    );
    server.ks().realms().delete(beta).await.unwrap();
    let (status, _) =
        common::call(http.get(format!("{base}/whoami")).bearer_auth(&bob_token)).await;
    assert_eq!(status, 401);
    server.stop().await;
}

//! Issuance-policy cases, written as an attacker would try them: widen a
//! scope, pick an audience, name another client, use a deleted client,
//! widen on refresh, exchange an exchanged token for more. Every refusal is
//! the typed error, and nothing was written (the whole store is compared
//! before and after).

use super::user::cheap_settings;
use super::{everything, keystead};
use crate::Error;
use crate::Keystead;
use crate::oauth::{ClientKind, GrantType, NewClient, OAuth, OAuthError};
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::token::{AccessRequest, ClientAuth, ExchangeOutcome, Grant, Tokens};
use crate::user::{LoginOutcome, Session, Users};

const API: &str = "https://api.example";
const PAYMENTS: &str = "https://payments.example";

struct Fixture {
    ks: Keystead,
    oauth: OAuth,
    users: Users,
    tokens: Tokens,
    /// The confidential `backend` client's secret.
    backend_secret: SecretString,
    /// The `payments` exchanger's secret.
    payments_secret: SecretString,
}

async fn fixture(h: &Harness) -> Fixture {
    let (ks, _) = keystead(h).await;
    let realm = ks.realms().create("acme", cheap_settings()).await.unwrap();
    let oauth = ks.oauth(realm.id);
    let read = vec!["read".to_owned()];
    oauth
        .create_client(NewClient::first_party("web", API, read.clone()))
        .await
        .unwrap();
    let backend = oauth
        .create_client(NewClient {
            kind: ClientKind::Confidential,
            ..NewClient::first_party("backend", API, vec!["read".into(), "write".into()])
        })
        .await
        .unwrap();
    let payments = oauth
        .create_client(NewClient {
            kind: ClientKind::Confidential,
            grant_types: vec![GrantType::TokenExchange],
            subject_audiences: vec![API.into()],
            ..NewClient::first_party("payments", PAYMENTS, read)
        })
        .await
        .unwrap();
    let users = ks.users(realm.id);
    users
        .register("eve", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    Fixture {
        tokens: ks.tokens(realm.id),
        ks,
        oauth,
        users,
        backend_secret: backend.secret.unwrap(),
        payments_secret: payments.secret.unwrap(),
    }
}

async fn login(f: &Fixture) -> Session {
    match f
        .users
        .authenticate("eve", SecretString::from("correct horse"))
        .await
        .unwrap()
    {
        LoginOutcome::Authenticated(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

fn oauth_error<T: std::fmt::Debug>(result: Result<T, Error>) -> OAuthError {
    match result {
        Err(Error::OAuth(e)) => e,
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

fn password(request: AccessRequest) -> Grant {
    Grant::Password {
        username: "eve".into(),
        password: SecretString::from("correct horse"),
        request,
    }
}

/// The password grant (and every direct login through `issue`) never
/// carries more than the registered client: no unregistered client, no
/// scope or audience it did not register, no confidential client without
/// its secret — and nothing is written for a refused request.
pub async fn password_grant_is_bounded_by_the_client(h: Harness) {
    let f = fixture(&h).await;
    let session = login(&f).await;
    let before = everything(&f.ks).await;
    let attacks = [
        // Any client id at all.
        (
            AccessRequest::public("anything", vec![]),
            OAuthError::InvalidClient,
        ),
        // A scope the client never registered.
        (
            AccessRequest::public("web", vec!["introspect".into(), "payments:write".into()]),
            OAuthError::InvalidScope,
        ),
        // A resource server of the caller's choosing.
        (
            AccessRequest {
                resource: Some("payments-api".into()),
                ..AccessRequest::public("web", vec![])
            },
            OAuthError::InvalidTarget,
        ),
        // A public caller naming a confidential client's id.
        (
            AccessRequest::public("backend", vec![]),
            OAuthError::InvalidClient,
        ),
        // ... or guessing its secret.
        (
            AccessRequest {
                client_secret: Some(SecretString::from("kscs_guess")),
                ..AccessRequest::public("backend", vec![])
            },
            OAuthError::InvalidClient,
        ),
        // A client not allowed the grant.
        (
            AccessRequest {
                client_secret: Some(f.payments_secret.clone()),
                ..AccessRequest::public("payments", vec![])
            },
            OAuthError::UnauthorizedClient,
        ),
    ];
    for (request, want) in attacks {
        assert_eq!(
            oauth_error(f.tokens.issue(session.id, &request).await),
            want,
            "{request:?}"
        );
        assert_eq!(
            oauth_error(f.tokens.exchange(password(request.clone())).await),
            want,
            "password grant {request:?}"
        );
    }
    // Derived tokens are bounded the same way.
    let wide = AccessRequest::public("web", vec!["admin".into()]);
    assert_eq!(
        oauth_error(
            f.tokens
                .create_one_time_token(session.id, &wide, chrono::Duration::seconds(60))
                .await
        ),
        OAuthError::InvalidScope
    );
    let scoped = crate::token::NewScopedToken {
        name: "x".into(),
        request: AccessRequest {
            resource: Some(PAYMENTS.into()),
            ..AccessRequest::public("web", vec![])
        },
        expires_in: chrono::Duration::days(30),
    };
    assert_eq!(
        oauth_error(f.tokens.create_scoped_token(session.id, &scoped).await),
        OAuthError::InvalidTarget
    );
    assert_eq!(everything(&f.ks).await, before, "a refused request wrote");

    // What the client registered it gets, authenticated where it must be.
    let ok = f
        .tokens
        .issue(
            session.id,
            &AccessRequest {
                client_secret: Some(f.backend_secret.clone()),
                ..AccessRequest::public("backend", vec!["write".into()])
            },
        )
        .await
        .unwrap();
    let claims = f
        .tokens
        .verify_access_token(ok.access_token.expose(), API)
        .await
        .unwrap();
    assert_eq!(
        (claims.client_id.as_str(), claims.scope.as_str()),
        ("backend", "write")
    );
}

/// A refresh only narrows: a wider scope, another client, a confidential
/// client without its secret, or a deleted client get nothing, and the
/// family is not rotated by the attempt.
pub async fn refresh_only_narrows(h: Harness) {
    let f = fixture(&h).await;
    let session = login(&f).await;
    let backend = |secret: Option<SecretString>| ClientAuth {
        client_id: "backend".into(),
        secret,
    };
    let pair = f
        .tokens
        .issue(
            session.id,
            &AccessRequest {
                client_secret: Some(f.backend_secret.clone()),
                ..AccessRequest::public("backend", vec!["read".into()])
            },
        )
        .await
        .unwrap();
    let refresh = SecretString::from(pair.refresh_token.unwrap().expose());
    let before = everything(&f.ks).await;
    let wider = f
        .tokens
        .refresh_as(
            &refresh,
            &backend(Some(f.backend_secret.clone())),
            &["write".into()],
        )
        .await;
    assert_eq!(oauth_error(wider), OAuthError::InvalidScope);
    assert_eq!(
        oauth_error(f.tokens.refresh_as(&refresh, &backend(None), &[]).await),
        OAuthError::InvalidClient
    );
    let wrong = backend(Some(SecretString::from("kscs_guess")));
    assert_eq!(
        oauth_error(f.tokens.refresh_as(&refresh, &wrong, &[]).await),
        OAuthError::InvalidClient
    );
    assert_eq!(
        f.tokens.refresh(&refresh, "web").await.unwrap_err().code(),
        "INVALID_GRANT",
        "another client's refresh token"
    );
    assert_eq!(everything(&f.ks).await, before, "a refused refresh wrote");

    // Narrowing works, and keeps the family's scope for later refreshes.
    let narrowed = f
        .tokens
        .refresh_as(&refresh, &backend(Some(f.backend_secret.clone())), &[])
        .await
        .unwrap();
    assert_eq!(narrowed.scope, ["read"]);

    // A deleted client's refresh token is dead, on every grant.
    f.oauth.delete_client("backend").await.unwrap();
    let next = SecretString::from(narrowed.refresh_token.unwrap().expose());
    assert!(
        f.tokens
            .refresh_as(&next, &backend(Some(f.backend_secret.clone())), &[])
            .await
            .is_err()
    );
    assert_eq!(
        oauth_error(
            f.tokens
                .issue(
                    session.id,
                    &AccessRequest {
                        client_secret: Some(f.backend_secret.clone()),
                        ..AccessRequest::public("backend", vec![])
                    },
                )
                .await
        ),
        OAuthError::InvalidClient
    );
}

/// Token exchange: only an authenticated client registered for it, only
/// subject tokens it may present, only audiences it registered, never a
/// wider scope; the new token names it in `act`, and exchanging the
/// exchanged token again can't widen anything.
pub async fn exchange_is_authenticated_and_narrow(h: Harness) {
    let f = fixture(&h).await;
    let session = login(&f).await;
    let pair = f
        .tokens
        .issue(
            session.id,
            &AccessRequest::public("web", vec!["read".into()]),
        )
        .await
        .unwrap();
    let subject = || SecretString::from(pair.access_token.expose());
    let exchange =
        |client: ClientAuth, audience: Option<&str>, scope: Vec<String>| Grant::TokenExchange {
            client,
            subject_token: subject(),
            audience: audience.map(str::to_owned),
            scope,
        };
    let payments = || ClientAuth::confidential("payments", f.payments_secret.clone());
    let before = everything(&f.ks).await;
    for (grant, want) in [
        (
            exchange(ClientAuth::public("payments"), None, vec![]),
            OAuthError::InvalidClient,
        ),
        (
            exchange(
                ClientAuth::confidential("payments", "kscs_guess".into()),
                None,
                vec![],
            ),
            OAuthError::InvalidClient,
        ),
        (
            exchange(ClientAuth::public("web"), None, vec![]),
            OAuthError::UnauthorizedClient,
        ),
        (
            exchange(payments(), Some("payments-api"), vec![]),
            OAuthError::InvalidTarget,
        ),
        (
            exchange(payments(), None, vec!["write".into()]),
            OAuthError::InvalidScope,
        ),
    ] {
        assert_eq!(oauth_error(f.tokens.exchange(grant).await), want);
    }
    assert_eq!(everything(&f.ks).await, before, "a refused exchange wrote");

    let ExchangeOutcome::Tokens(exchanged) = f
        .tokens
        .exchange(exchange(payments(), None, vec![]))
        .await
        .unwrap()
    else {
        panic!("tokens expected")
    };
    let claims = f
        .tokens
        .verify_access_token(exchanged.access_token.expose(), PAYMENTS)
        .await
        .unwrap();
    assert_eq!(claims.client_id, "payments");
    assert_eq!(
        claims.act.as_ref().map(|a| a.sub.as_str()),
        Some("payments")
    );
    assert!(
        claims.exp
            <= f.tokens
                .verify_access_token(pair.access_token.expose(), API)
                .await
                .unwrap()
                .exp
    );
    // The exchanged token (aud payments) can't be exchanged back for the
    // API's audience or by a client that may not present it.
    let again = Grant::TokenExchange {
        client: payments(),
        subject_token: SecretString::from(exchanged.access_token.expose()),
        audience: Some(API.into()),
        scope: vec![],
    };
    assert_eq!(
        oauth_error(f.tokens.exchange(again).await),
        OAuthError::InvalidTarget
    );
}

/// Revocation and introspection answer only the right client: revocation
/// authenticates the client (a public one by its id) and ends only that
/// client's tokens; introspection needs a confidential client registered
/// for the `introspect` scope, or a bearer token carrying it — and a
/// client's own client-credentials token is introspected as active.
pub async fn revocation_and_introspection_need_the_right_client(h: Harness) {
    use crate::token::{INTROSPECT_SCOPE, Introspector};
    let f = fixture(&h).await;
    let rs = f
        .oauth
        .create_client(NewClient {
            kind: ClientKind::Confidential,
            grant_types: vec![GrantType::ClientCredentials],
            ..NewClient::first_party("rs", API, vec![INTROSPECT_SCOPE.into()])
        })
        .await
        .unwrap();
    let rs_secret = rs.secret.unwrap();
    let session = login(&f).await;
    let pair = f
        .tokens
        .issue(session.id, &AccessRequest::public("web", vec![]))
        .await
        .unwrap();
    let refresh = pair.refresh_token.clone().unwrap();
    let access = SecretString::from(pair.access_token.expose());
    let backend = ClientAuth::confidential("backend", f.backend_secret.clone());
    let before = everything(&f.ks).await;

    for impostor in [
        ClientAuth::public("anything"),
        ClientAuth::public("backend"),
        ClientAuth::confidential("backend", SecretString::from("kscs_guess")),
        ClientAuth::confidential("web", SecretString::from("kscs_guess")),
    ] {
        for token in [&refresh, &access] {
            assert_eq!(
                oauth_error(f.tokens.revoke(token, &impostor).await),
                OAuthError::InvalidClient,
                "{impostor:?}"
            );
        }
    }
    // Another client, properly authenticated: a success that ends nothing.
    f.tokens.revoke(&refresh, &backend).await.unwrap();
    f.tokens.revoke(&access, &backend).await.unwrap();

    let web = ClientAuth::public("web");
    for (caller, want) in [
        (Introspector::Client(&web), "OAUTH_UNAUTHORIZED_CLIENT"),
        (Introspector::Client(&backend), "OAUTH_UNAUTHORIZED_CLIENT"),
        (
            Introspector::Client(&ClientAuth::confidential(
                "rs",
                SecretString::from("kscs_guess"),
            )),
            "OAUTH_INVALID_CLIENT",
        ),
        (Introspector::Bearer(access.expose()), "INSUFFICIENT_SCOPE"),
        (Introspector::Bearer("not.a.token"), "TOKEN_MALFORMED"),
    ] {
        let refused = f.tokens.introspect_as(caller, &refresh).await.unwrap_err();
        assert_eq!(refused.code(), want, "{caller:?}");
    }
    assert_eq!(everything(&f.ks).await, before, "a refused request wrote");

    // The resource server, by its credentials or its own token.
    let rs_auth = ClientAuth::confidential("rs", rs_secret.clone());
    let info = f
        .tokens
        .introspect_as(Introspector::Client(&rs_auth), &refresh)
        .await
        .unwrap();
    assert_eq!(
        (info["active"].clone(), info["client_id"].clone()),
        (true.into(), "web".into())
    );
    let own = f
        .oauth
        .client_credentials("rs", &rs_secret, &[], None)
        .await
        .unwrap();
    let info = f
        .tokens
        .introspect_as(
            Introspector::Bearer(own.access_token.expose()),
            &own.access_token,
        )
        .await
        .unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["sub"], "rs");
    assert_eq!(info["scope"], INTROSPECT_SCOPE);

    // The owner revokes: the family and its session end.
    f.tokens.revoke(&refresh, &web).await.unwrap();
    assert_eq!(
        f.tokens.introspect(&refresh).await.unwrap(),
        serde_json::json!({ "active": false })
    );
}

/// Userinfo takes a token for its own server, or one issued to any client
/// with `openid` (OIDC Core §5.3); nothing else.
pub async fn userinfo_takes_its_server_or_openid(h: Harness) {
    use crate::token::TokenError;
    let f = fixture(&h).await;
    let session = login(&f).await;
    let pair = f
        .tokens
        .issue(session.id, &AccessRequest::public("web", vec![]))
        .await
        .unwrap();
    let access = SecretString::from(pair.access_token.expose());
    f.tokens.userinfo(access.expose(), API).await.unwrap();
    // Userinfo: a token for another audience needs `openid`.
    assert!(matches!(
        f.tokens
            .userinfo(access.expose(), "https://other.example")
            .await,
        Err(Error::Token(TokenError::WrongAudience))
    ));
    f.oauth
        .create_client(NewClient::first_party(
            "rp",
            "https://rp.example",
            vec![crate::oauth::SCOPE_OPENID.into()],
        ))
        .await
        .unwrap();
    let rp = f
        .tokens
        .issue(
            session.id,
            &AccessRequest::public("rp", vec![crate::oauth::SCOPE_OPENID.into()]),
        )
        .await
        .unwrap();
    let user = f
        .tokens
        .userinfo(rp.access_token.expose(), API)
        .await
        .unwrap();
    assert_eq!(user["preferred_username"], "eve");
}

/// Sign-up only where the realm opens it; with a verified address every
/// request gets the same answer and the same store work, registered
/// address or not, and only the mailed token creates the account — once.
pub async fn verified_sign_up_reveals_nothing(h: Harness) {
    use crate::user::SignUpMail;
    let (ks, _, users) = sign_up_realm(&h, crate::realm::SignUp::VerifiedEmail).await;
    let pw = || SecretString::from("correct horse battery");
    let day = chrono::Duration::days(1);
    users
        .register("known", Some("known@example.com"), pw())
        .await
        .unwrap();
    assert_eq!(
        users
            .sign_up("walk-in", None, pw())
            .await
            .unwrap_err()
            .code(),
        "REGISTRATION_CLOSED"
    );
    let pending = crate::realm::service::data_prefix(users.realm()).push("sign-up");
    let mut new_keys = Vec::new();
    let mut token = None;
    for (address, registered) in [("new@example.com", false), ("KNOWN@example.com", true)] {
        let before = everything(&ks).await;
        let request = users
            .request_sign_up("newcomer", address, pw(), day)
            .await
            .unwrap();
        let after = everything(&ks).await;
        let added: Vec<_> = after.iter().filter(|k| !before.contains(k)).collect();
        assert_eq!(
            (added.len(), after.len()),
            (1, before.len() + 1),
            "{address}"
        );
        new_keys.push(added[0].0.starts_with(pending.as_bytes()));
        match request.mail {
            SignUpMail::Confirm { token: t, .. } => {
                assert!(!registered);
                token = Some(t);
            }
            SignUpMail::AlreadyRegistered => assert!(registered),
        }
    }
    assert_eq!(
        new_keys[0], new_keys[1],
        "the decoy looks like the real one"
    );
    let token = token.unwrap();
    for forged in [
        "kssu_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "nonsense",
        "",
    ] {
        assert_eq!(
            users
                .confirm_sign_up(&SecretString::from(forged))
                .await
                .unwrap_err()
                .code(),
            "SIGN_UP_NOT_FOUND"
        );
    }
    let user = users.confirm_sign_up(&token).await.unwrap();
    assert_eq!(user.email.as_deref(), Some("new@example.com"));
    assert!(matches!(
        users.authenticate("newcomer", pw()).await,
        Ok(LoginOutcome::Authenticated(_))
    ));
    assert_eq!(
        users.confirm_sign_up(&token).await.unwrap_err().code(),
        "SIGN_UP_NOT_FOUND",
        "single use"
    );
}

/// A realm whose sign-up is `sign_up`, with its clock and users.
async fn sign_up_realm(
    h: &Harness,
    sign_up: crate::realm::SignUp,
) -> (Keystead, crate::clock::ManualClock, Users) {
    let (ks, clock) = keystead(h).await;
    let settings = crate::realm::RealmSettings {
        sign_up,
        ..cheap_settings()
    };
    let realm = ks.realms().create("acme", settings).await.unwrap();
    let users = ks.users(realm.id);
    (ks, clock, users)
}

/// Sign-up is closed unless the realm opens it: both ways are refused and
/// nothing is written.
pub async fn sign_up_is_closed_by_default(h: Harness) {
    let (ks, _, users) = sign_up_realm(&h, crate::realm::SignUp::default()).await;
    let pw = || SecretString::from("correct horse battery");
    let day = chrono::Duration::days(1);
    let before = everything(&ks).await;
    for refused in [
        users.sign_up("walk-in", None, pw()).await.map(drop),
        users
            .request_sign_up("walk-in", "walk@example.com", pw(), day)
            .await
            .map(drop),
    ] {
        assert_eq!(refused.unwrap_err().code(), "REGISTRATION_CLOSED");
    }
    assert_eq!(everything(&ks).await, before, "a closed realm wrote");
}

/// An unconfirmed sign-up expires; its record, and the decoys of
/// registered addresses, are purged.
pub async fn unconfirmed_sign_ups_expire(h: Harness) {
    use crate::user::SignUpMail;
    let (ks, clock, users) = sign_up_realm(&h, crate::realm::SignUp::VerifiedEmail).await;
    let realm = users.realm();
    let pw = || SecretString::from("correct horse battery");
    let day = chrono::Duration::days(1);
    users
        .register("known", Some("known@example.com"), pw())
        .await
        .unwrap();
    users
        .request_sign_up("impostor", "known@example.com", pw(), day)
        .await
        .unwrap();
    // An unconfirmed request expires; the decoy and it are purged.
    let late = users
        .request_sign_up("slow", "slow@example.com", pw(), day)
        .await
        .unwrap();
    clock.advance(day + chrono::Duration::seconds(1));
    let SignUpMail::Confirm { token: late, .. } = late.mail else {
        panic!("a new address gets a confirmation");
    };
    assert_eq!(
        users.confirm_sign_up(&late).await.unwrap_err().code(),
        "SIGN_UP_NOT_FOUND"
    );
    assert_eq!(
        ks.tokens(realm)
            .purge_expired()
            .await
            .unwrap()
            .pending_sign_ups,
        1,
        "the decoy (the expired request was removed when tried)"
    );
}

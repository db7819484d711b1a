//! Token cases: signing keys, access tokens, refresh rotation and reuse,
//! revocation, expire-all, introspection, userinfo and discovery, with
//! adversarial inputs.

use super::keystead;
use super::user::cheap_settings;
use crate::Error;
use crate::Keystead;
use crate::clock::{Clock, ManualClock};
use crate::crypto::jws::JwsAlgorithm;
use crate::realm::{RealmSettings, TokenLifetimes};
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::token::{AccessRequest, TokenError, TokenResponse, Tokens};
use crate::user::{AuthMethod, LoginOutcome, Session, Users};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Duration;

struct Fixture {
    ks: Keystead,
    clock: ManualClock,
    users: Users,
    tokens: Tokens,
}

async fn fixture(h: &Harness, settings: RealmSettings) -> Fixture {
    let (ks, clock) = keystead(h).await;
    let realm = ks.realms().create("acme", settings).await.unwrap();
    register_clients(&ks.oauth(realm.id)).await;
    let users = ks.users(realm.id);
    let tokens = ks.tokens(realm.id);
    Fixture {
        ks,
        clock,
        users,
        tokens,
    }
}

/// The clients the cases issue to: first-party `web` and `mobile` (their
/// own login pages, tokens for [`AUD`]), `portal` (scoped message tokens),
/// and `files`, a confidential resource server that may exchange tokens
/// for [`AUD`] into tokens for [`FILES`]. Its secret is [`files_auth`].
pub(crate) async fn register_clients(oauth: &crate::oauth::OAuth) {
    use crate::oauth::{GrantType, NewClient};
    let scopes = vec!["read".to_owned(), "write".to_owned()];
    for id in ["web", "mobile"] {
        oauth
            .create_client(NewClient::first_party(id, AUD, scopes.clone()))
            .await
            .unwrap();
    }
    oauth
        .create_client(NewClient::first_party(
            "portal",
            AUD,
            vec!["messages:create".into()],
        ))
        .await
        .unwrap();
    let files = oauth
        .create_client(NewClient {
            kind: crate::oauth::ClientKind::Confidential,
            grant_types: vec![GrantType::TokenExchange],
            subject_audiences: vec![AUD.into()],
            ..NewClient::first_party("files", FILES, scopes)
        })
        .await
        .unwrap();
    FILES_SECRET
        .lock()
        .unwrap()
        .insert(oauth.realm(), files.secret.unwrap());
}

/// Secrets of each realm's `files` client (realm ids are unique, so cases
/// running in parallel never share one).
static FILES_SECRET: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<crate::id::RealmId, SecretString>>,
> = std::sync::LazyLock::new(Default::default);

/// The `files` client with its secret, for token exchange.
fn files_auth(f: &Fixture) -> crate::token::ClientAuth {
    let secret = FILES_SECRET.lock().unwrap()[&f.tokens.realm()].clone();
    crate::token::ClientAuth::confidential("files", secret)
}

/// The public `web` client, as it names itself to revocation.
fn web() -> crate::token::ClientAuth {
    crate::token::ClientAuth::public("web")
}

fn request() -> AccessRequest {
    AccessRequest {
        resource: Some(AUD.into()),
        ..AccessRequest::public("web", vec!["read".into(), "write".into()])
    }
}

const AUD: &str = "https://api.example";
const FILES: &str = "https://files.example";

async fn login(users: &Users, name: &str) -> Session {
    if users.get_by_username(name).await.is_err() {
        users
            .register(name, None, SecretString::from("correct horse"))
            .await
            .unwrap();
    }
    match users
        .authenticate(name, SecretString::from("correct horse"))
        .await
        .unwrap()
    {
        LoginOutcome::Authenticated(s) => s,
        other => panic!("unexpected {other:?}"),
    }
}

async fn issued(f: &Fixture, name: &str) -> (Session, TokenResponse) {
    let session = login(&f.users, name).await;
    let pair = f.tokens.issue(session.id, &request()).await.unwrap();
    (session, pair)
}

fn token_error(r: Result<impl std::fmt::Debug, Error>) -> TokenError {
    match r {
        Err(Error::Token(e)) => e,
        other => panic!("expected a token error, got {other:?}"),
    }
}

fn refresh_of(pair: &TokenResponse) -> SecretString {
    SecretString::from(pair.refresh_token.as_ref().unwrap().expose())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The payload part of a compact JWS, decoded.
fn payload_of(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// The first key is created with the realm (Ed25519); `ensure_signing_key`
/// keeps it for every concurrent caller; the JWKS publishes it; rotation to ES256 keeps the old key verifying and
/// published for the overlap, then drops it.
pub async fn signing_keys_jwks_and_rotation(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    // The realm was created with its first key: Ed25519, current.
    let created = f.tokens.signing_keys().await.unwrap();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].algorithm, JwsAlgorithm::EdDsa);
    assert!(created[0].retired_at.is_none());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let tokens = f.tokens.clone();
            tokio::spawn(async move { tokens.ensure_signing_key(JwsAlgorithm::EdDsa).await })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids, [created[0].id], "every caller gets the realm's key");
    let first = ids[0];
    let jwks = f.tokens.jwks().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kid"], first.to_string());
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "no private member");

    // The stored record never holds the private key in clear.
    let (_, old_pair) = issued(&f, "alice").await;
    let record_key = crate::token::layout::signing_keys(f.tokens.realm());
    let stored =
        f.ks.store()
            .get(record_key.as_bytes())
            .await
            .unwrap()
            .unwrap();
    assert!(!stored.value.windows(16).any(|w| w
        == [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20
        ]));

    let second = f
        .tokens
        .rotate_signing_key(JwsAlgorithm::Es256, Duration::hours(1))
        .await
        .unwrap();
    assert_eq!(second.algorithm, JwsAlgorithm::Es256);
    let jwks = f.tokens.jwks().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let es = keys
        .iter()
        .find(|k| k["kid"] == second.id.to_string())
        .unwrap();
    assert_eq!(es["kty"], "EC");
    assert_eq!(es["crv"], "P-256");
    assert!(es["y"].is_string());
    // Signed before the rotation: still verifies.
    f.tokens
        .verify_access_token(old_pair.access_token.expose(), AUD)
        .await
        .unwrap();
    // Signed after: ES256 under the new kid.
    let (_, new_pair) = issued(&f, "bob").await;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(new_pair.access_token.expose().split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["kid"], second.id.to_string());
    f.tokens
        .verify_access_token(new_pair.access_token.expose(), AUD)
        .await
        .unwrap();
    // After the overlap the retired key is gone from the JWKS.
    f.clock.advance(Duration::hours(1));
    let jwks = f.tokens.jwks().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    let infos = f.tokens.signing_keys().await.unwrap();
    assert_eq!(infos[0].id, second.id);
    assert!(infos[1].retired_at.is_some());
}

/// An issued access token carries the RFC 9068 claims and verifies only
/// for its audience.
pub async fn access_token_claims(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (session, pair) = issued(&f, "alice").await;
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 300);
    assert!(
        pair.refresh_token
            .as_ref()
            .unwrap()
            .expose()
            .starts_with("ksrt_")
    );
    let claims = f
        .tokens
        .verify_access_token(pair.access_token.expose(), AUD)
        .await
        .unwrap();
    assert_eq!(claims.sub, session.user);
    assert_eq!(claims.sid, session.id);
    assert_eq!(claims.aud, AUD);
    assert_eq!(claims.client_id, "web");
    assert_eq!(claims.scopes().collect::<Vec<_>>(), ["read", "write"]);
    assert_eq!(claims.amr, [AuthMethod::Pwd]);
    assert_eq!(
        claims.iss,
        format!("urn:keystead:realm:{}", f.tokens.realm())
    );
    assert_eq!(claims.exp - claims.iat, 300);
    assert_eq!(claims.nbf, claims.iat);
    assert_eq!(claims.auth_time, session.created_at.timestamp());
    assert_eq!(claims.jti.len(), 22);
    let raw = payload_of(pair.access_token.expose());
    for member in [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "client_id",
        "scope",
        "sid",
        "amr",
        "auth_time",
    ] {
        assert!(raw.get(member).is_some(), "missing {member}");
    }
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(pair.access_token.expose(), "https://other.example")
                .await
        ),
        TokenError::WrongAudience
    );
    // Invalid requests are refused before anything is written.
    let bad = AccessRequest {
        client_id: String::new(),
        ..request()
    };
    assert!(matches!(
        f.tokens.issue(session.id, &bad).await,
        Err(Error::Validation(_))
    ));
}

/// `alg: none`, HS256 keyed with the public key, a token of another realm
/// (even one with the same issuer), garbage, oversized tokens, and a
/// refresh token presented as an access token are all refused.
pub async fn adversarial_access_tokens(h: Harness) {
    let settings = RealmSettings {
        issuer_url: Some("https://id.example/realms/shared".into()),
        ..cheap_settings()
    };
    let f = fixture(&h, settings.clone()).await;
    let (_, pair) = issued(&f, "alice").await;
    let token = pair.access_token.expose();
    let mut parts = token.split('.');
    let (header_b64, payload_b64) = (parts.next().unwrap(), parts.next().unwrap());
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap().to_owned();

    // alg: none, with and without a signature part.
    for alg in ["none", "NONE", "nOnE"] {
        let h = b64(format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"at+jwt"}}"#).as_bytes());
        for forged in [
            format!("{h}.{payload_b64}."),
            format!("{h}.{payload_b64}.AAAA"),
        ] {
            assert_eq!(
                token_error(f.tokens.verify_access_token(&forged, AUD).await),
                TokenError::Untrusted {
                    jws_code: "JWS_UNSECURED"
                }
            );
        }
    }

    // HS256 with the public key (raw and as JWK x) as the HMAC secret.
    let jwks = f.tokens.jwks().await.unwrap();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let h256 = b64(format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"at+jwt"}}"#).as_bytes());
    let input = format!("{h256}.{payload_b64}");
    for secret in [URL_SAFE_NO_PAD.decode(&x).unwrap(), x.as_bytes().to_vec()] {
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let forged = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(
            token_error(f.tokens.verify_access_token(&forged, AUD).await),
            TokenError::Untrusted {
                jws_code: "JWS_ALGORITHM_MISMATCH"
            }
        );
    }

    // A changed payload breaks the signature.
    let mut claims = payload_of(token);
    claims["aud"] = "https://evil.example".into();
    let tampered = format!(
        "{header_b64}.{}.{}",
        b64(&serde_json::to_vec(&claims).unwrap()),
        token.split('.').nth(2).unwrap()
    );
    assert_eq!(
        token_error(f.tokens.verify_access_token(&tampered, AUD).await),
        TokenError::Untrusted {
            jws_code: "JWS_BAD_SIGNATURE"
        }
    );

    // Realm B, same issuer URL: realm A's token names an unknown key.
    let realm_b = f.ks.realms().create("other", settings).await.unwrap();
    let tokens_b = f.ks.tokens(realm_b.id);
    tokens_b
        .ensure_signing_key(JwsAlgorithm::EdDsa)
        .await
        .unwrap();
    assert_eq!(
        token_error(tokens_b.verify_access_token(token, AUD).await),
        TokenError::Untrusted {
            jws_code: "JWS_UNKNOWN_KEY"
        }
    );
    // Introspection in realm B reveals nothing.
    assert_eq!(
        tokens_b
            .introspect(&SecretString::from(token))
            .await
            .unwrap(),
        serde_json::json!({ "active": false })
    );

    // Garbage is malformed (checked before storage access).
    let huge = "a".repeat(9000) + ".b.c";
    for garbage in ["", "abc", "a.b", "a.b.c.d", "a b.c.d", huge.as_str()] {
        assert!(
            matches!(
                token_error(f.tokens.verify_access_token(garbage, AUD).await),
                TokenError::Malformed { .. }
            ),
            "{garbage:.20}"
        );
    }
    // A refresh token is not an access token.
    assert!(matches!(
        token_error(
            f.tokens
                .verify_access_token(pair.refresh_token.as_ref().unwrap().expose(), AUD)
                .await
        ),
        TokenError::Malformed { .. }
    ));
}

/// Verification reads the state a payload names before the signature is
/// checked (one read), but that state decides nothing until it is: a
/// payload that is no claim set, one naming an over-long application, one
/// naming another user's session, and one naming a revoked session all
/// fail on their signature — a forgery never learns "revoked".
pub async fn forged_payloads_fail_on_their_signature(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (_, pair) = issued(&f, "alice").await;
    let token = pair.access_token.expose();
    let (header_b64, _) = token.split_once('.').unwrap();
    let signature = token.split('.').nth(2).unwrap();
    let forge = |payload: &serde_json::Value| {
        format!(
            "{header_b64}.{}.{signature}",
            b64(&serde_json::to_vec(payload).unwrap())
        )
    };
    let (bob, _) = issued(&f, "bob").await;
    let mut other_session = payload_of(token);
    other_session["sid"] = bob.id.to_string().into();
    other_session["sub"] = bob.user.to_string().into();
    let mut long_client = payload_of(token);
    long_client["client_id"] = "c".repeat(crate::token::MAX_CLIENT_ID_LEN + 1).into();
    let bad_signature = TokenError::Untrusted {
        jws_code: "JWS_BAD_SIGNATURE",
    };
    for payload in [
        serde_json::json!({ "not": "claims" }),
        long_client,
        other_session.clone(),
    ] {
        let forged = forge(&payload);
        assert_eq!(
            token_error(f.tokens.verify_access_token(&forged, AUD).await),
            bad_signature
        );
    }
    f.tokens.logout(bob.id).await.unwrap();
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(&forge(&other_session), AUD)
                .await
        ),
        bad_signature
    );
    // The genuine token still verifies.
    f.tokens.verify_access_token(token, AUD).await.unwrap();
}

/// `exp` and `nbf`/`iat` are checked with exactly CLOCK_LEEWAY_SECS of
/// leeway.
pub async fn expiry_and_not_before_leeway(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let start = f.clock.now();
    let (_, pair) = issued(&f, "alice").await;
    let token = pair.access_token.expose().to_owned();
    let verify = || f.tokens.verify_access_token(&token, AUD);
    // exp = start + 300; refused from exp + 30 on.
    f.clock.set(start + Duration::seconds(329));
    verify().await.unwrap();
    f.clock.set(start + Duration::seconds(330));
    assert_eq!(token_error(verify().await), TokenError::Expired);
    // nbf = iat = start; accepted down to start - 30.
    f.clock.set(start - Duration::seconds(30));
    verify().await.unwrap();
    f.clock.set(start - Duration::seconds(31));
    assert_eq!(token_error(verify().await), TokenError::NotYetValid);
}

/// Logout, logout-all and disabling the user end access and refresh
/// tokens at once.
pub async fn revoked_sessions_end_tokens(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (session, pair) = issued(&f, "alice").await;
    f.tokens.logout(session.id).await.unwrap();
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(pair.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked
    );
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&pair), "web").await),
        TokenError::InvalidGrant
    );
    // Logging out again is not an error.
    f.tokens.logout(session.id).await.unwrap();

    let (_, first) = issued(&f, "alice").await;
    let (_, second) = issued(&f, "alice").await;
    f.tokens.logout_all(session.user).await.unwrap();
    for pair in [&first, &second] {
        assert_eq!(
            token_error(
                f.tokens
                    .verify_access_token(pair.access_token.expose(), AUD)
                    .await
            ),
            TokenError::Revoked
        );
        assert_eq!(
            token_error(f.tokens.refresh(&refresh_of(pair), "web").await),
            TokenError::InvalidGrant
        );
    }

    let (_, third) = issued(&f, "alice").await;
    f.users.disable(session.user).await.unwrap();
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(third.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked
    );
    f.users.enable(session.user).await.unwrap();
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(third.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked,
        "re-enabling does not revive old sessions"
    );
}

/// Each use rotates; the old token is dead; presenting it again revokes
/// the family and the session. Wrong client and malformed tokens are
/// `INVALID_GRANT`.
pub async fn refresh_rotation_and_reuse(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (session, first) = issued(&f, "alice").await;
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&first), "mobile").await),
        TokenError::InvalidGrant
    );
    for bad in [
        "",
        "ksrt_short",
        "ksot_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let e = token_error(f.tokens.refresh(&SecretString::from(bad), "web").await);
        assert_eq!(e, TokenError::InvalidGrant);
        assert_eq!(e.oauth_code(), "invalid_grant");
    }
    f.clock.advance(Duration::seconds(10));
    let second = f.tokens.refresh(&refresh_of(&first), "web").await.unwrap();
    assert_eq!(second.session, session.id);
    assert_eq!(second.scope, ["read", "write"]);
    assert_ne!(refresh_of(&second).expose(), refresh_of(&first).expose());
    let claims = f
        .tokens
        .verify_access_token(second.access_token.expose(), AUD)
        .await
        .unwrap();
    assert_eq!(claims.sid, session.id);
    let third = f.tokens.refresh(&refresh_of(&second), "web").await.unwrap();

    // Reuse of the first token: the family and session die.
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&first), "web").await),
        TokenError::RefreshReused
    );
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&third), "web").await),
        TokenError::InvalidGrant
    );
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(third.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked
    );
    assert!(f.users.get_session(session.id).await.is_err());
}

/// A refresh token carries its family's ids in the clear. A forgery that
/// keeps a real token's ids but changes its secret — or names another
/// user's family — is `INVALID_GRANT` and kills nothing: only a token the
/// family really issued counts as reuse. A token of another realm is
/// `INVALID_GRANT` there.
pub async fn forged_refresh_tokens_kill_nothing(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (_, pair) = issued(&f, "alice").await;
    let real = refresh_of(&pair);
    let (prefix, body) = real.expose().split_once('_').unwrap();
    let mut bytes = URL_SAFE_NO_PAD.decode(body).unwrap();
    for i in [48, 60, bytes.len() - 1] {
        bytes[i] ^= 0x40;
        let forged = SecretString::new(format!("{prefix}_{}", b64(&bytes)));
        bytes[i] ^= 0x40;
        assert_eq!(
            token_error(f.tokens.refresh(&forged, "web").await),
            TokenError::InvalidGrant
        );
        f.tokens.revoke(&forged, &web()).await.unwrap();
        assert_eq!(
            f.tokens.introspect(&forged).await.unwrap(),
            serde_json::json!({ "active": false })
        );
    }
    // Ids swapped for another family's: no match either.
    let (_, other) = issued(&f, "bob").await;
    let other_body = URL_SAFE_NO_PAD
        .decode(refresh_of(&other).expose().split_once('_').unwrap().1)
        .unwrap();
    let mut mixed = other_body[..48].to_vec();
    mixed.extend_from_slice(&bytes[48..]);
    let mixed = SecretString::new(format!("{prefix}_{}", b64(&mixed)));
    assert_eq!(
        token_error(f.tokens.refresh(&mixed, "web").await),
        TokenError::InvalidGrant
    );
    // Both families still refresh.
    f.tokens.refresh(&real, "web").await.unwrap();
    f.tokens.refresh(&refresh_of(&other), "web").await.unwrap();
    // Cross-realm: the same token presented to another realm's handle.
    let realm_b =
        f.ks.realms()
            .create("beta", cheap_settings())
            .await
            .unwrap();
    let (_, fresh) = issued(&f, "carol").await;
    assert_eq!(
        token_error(
            f.ks.tokens(realm_b.id)
                .refresh(&refresh_of(&fresh), "web")
                .await
        ),
        TokenError::InvalidGrant
    );
    f.tokens.refresh(&refresh_of(&fresh), "web").await.unwrap();
}

/// `purge_expired` removes exactly the records that can never be used
/// again: expired one-time tokens and magic links, index entries of a
/// family killed by reuse, and — once past the idle timeout — families
/// with their index entries. A live family keeps the index entries of its
/// rotated tokens, so reuse is still detected after a purge.
pub async fn purge_removes_only_dead_records(h: Harness) {
    use crate::token::Purged;
    let f = fixture(&h, cheap_settings()).await;
    let (alice, first) = issued(&f, "alice").await;
    let second = f.tokens.refresh(&refresh_of(&first), "web").await.unwrap();
    let (_, carol) = issued(&f, "carol").await;
    let carol_next = f.tokens.refresh(&refresh_of(&carol), "web").await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&carol), "web").await),
        TokenError::RefreshReused
    );
    drop(carol_next);
    f.tokens
        .create_one_time_token(alice.id, &request(), Duration::seconds(60))
        .await
        .unwrap();
    let link = f
        .tokens
        .send_magic_link(alice.user, Duration::seconds(60))
        .await
        .unwrap();
    // Nothing has expired yet: only carol's orphaned index entries go.
    assert_eq!(
        f.tokens.purge_expired().await.unwrap(),
        Purged {
            refresh_tokens: 2,
            ..Purged::default()
        }
    );
    f.clock.advance(Duration::seconds(61));
    assert_eq!(
        f.tokens.purge_expired().await.unwrap(),
        Purged {
            one_time_tokens: 1,
            magic_links: 1,
            ..Purged::default()
        }
    );
    assert!(
        f.tokens
            .verify_magic_link(link.id, &link.token)
            .await
            .is_err()
    );
    // Alice's family lives: her current token refreshes, and her first
    // (rotated) token is still recognised as reuse.
    let third = f.tokens.refresh(&refresh_of(&second), "web").await.unwrap();
    assert_eq!(f.tokens.purge_expired().await.unwrap(), Purged::default());
    let (_, dave) = issued(&f, "dave").await;
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&first), "web").await),
        TokenError::RefreshReused
    );
    // Alice's family died of reuse (its 3 index entries are orphans);
    // past the idle timeout dave's family goes too, with its entry.
    let idle = i64::from(cheap_settings().tokens.refresh_idle_secs);
    f.clock.advance(Duration::seconds(idle));
    assert_eq!(
        f.tokens.purge_expired().await.unwrap(),
        Purged {
            refresh_families: 1,
            refresh_tokens: 4,
            ..Purged::default()
        }
    );
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&dave), "web").await),
        TokenError::InvalidGrant
    );
    drop(third);
    assert_eq!(f.tokens.purge_expired().await.unwrap(), Purged::default());
}

/// A second library instance on the same store caches decoded key sets by
/// record version, so a rotation made through the first instance is seen
/// by the second at once: a key retired without overlap stops verifying
/// there, and the new key verifies.
pub async fn rotation_seen_by_another_instance(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let other = Keystead::builder()
        .shared_store(std::sync::Arc::clone(f.ks.store()))
        .clock(f.clock.clone())
        .keys(crate::crypto::at_rest::StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap()
        .tokens(f.tokens.realm());
    let (_, before) = issued(&f, "alice").await;
    let old = before.access_token.expose();
    other.verify_access_token(old, AUD).await.unwrap();
    f.tokens
        .rotate_signing_key(JwsAlgorithm::EdDsa, Duration::zero())
        .await
        .unwrap();
    assert!(other.verify_access_token(old, AUD).await.is_err());
    let (_, after) = issued(&f, "bob").await;
    other
        .verify_access_token(after.access_token.expose(), AUD)
        .await
        .unwrap();
}

/// Of concurrent uses of one refresh token exactly one gets a new pair.
/// Losers of the compare-and-swap get `INVALID_GRANT`; a use that starts
/// after the winner committed is reuse (`REFRESH_TOKEN_REUSED`, family
/// revoked). When no use counted as reuse, the winner's pair still works.
pub async fn concurrent_refresh_has_one_winner(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (_, pair) = issued(&f, "alice").await;
    one_winner(&f, refresh_of(&pair)).await;
    // A token this instance handed out itself: one racer uses the
    // remembered rotation, the others read.
    let (_, pair) = issued(&f, "bob").await;
    let rotated = f.tokens.refresh(&refresh_of(&pair), "web").await.unwrap();
    one_winner(&f, refresh_of(&rotated)).await;
}

async fn one_winner(f: &Fixture, presented: SecretString) {
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let tokens = f.tokens.clone();
            let token = SecretString::from(presented.expose());
            tokio::spawn(async move { tokens.refresh(&token, "web").await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut reused = false;
    for task in tasks {
        match task.await.unwrap() {
            Ok(p) => winners.push(p),
            Err(Error::Token(TokenError::InvalidGrant)) => {}
            Err(Error::Token(TokenError::RefreshReused)) => reused = true,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let winner = &winners[0];
    let next = f.tokens.refresh(&refresh_of(winner), "web").await;
    if reused {
        assert_eq!(token_error(next), TokenError::InvalidGrant);
    } else {
        next.unwrap();
    }
}

/// An instance remembers the rotation it made last of a family and
/// refreshes that family's next token without reading. Another instance
/// rotating the same family in between leaves that memory stale: a replay
/// of the rotated token at the first instance must still be judged reuse
/// (family and session revoked), and the live token still refreshes there.
pub async fn remembered_rotation_yields_to_another_instance(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let other = f.ks.second_instance().tokens(f.tokens.realm());

    let (_, pair) = issued(&f, "alice").await;
    let first = f.tokens.refresh(&refresh_of(&pair), "web").await.unwrap();
    let second = other.refresh(&refresh_of(&first), "web").await.unwrap();
    let third = f.tokens.refresh(&refresh_of(&second), "web").await.unwrap();
    let fourth = f.tokens.refresh(&refresh_of(&third), "web").await.unwrap();
    f.tokens
        .verify_access_token(fourth.access_token.expose(), AUD)
        .await
        .unwrap();

    let (session, pair) = issued(&f, "bob").await;
    let first = f.tokens.refresh(&refresh_of(&pair), "web").await.unwrap();
    let second = other.refresh(&refresh_of(&first), "web").await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&first), "web").await),
        TokenError::RefreshReused,
        "a replay at the instance that remembers the token as live"
    );
    assert_eq!(
        token_error(other.refresh(&refresh_of(&second), "web").await),
        TokenError::InvalidGrant,
        "the family is dead"
    );
    assert!(
        f.users.get_session(session.id).await.is_err(),
        "and its session"
    );
}

/// What a remembered rotation rests on is checked by the next rotation's
/// commit: a logout, a revoked family, an expire-all, a disabled user, a
/// disabled realm or a new signing key made through another instance after
/// the rotation is honoured by the remembering instance's next refresh.
#[allow(clippy::too_many_lines)] // one scenario per kind of change
pub async fn remembered_rotation_sees_later_changes(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let ks = f.ks.second_instance();
    let realm = f.tokens.realm();
    let other = ks.tokens(realm);
    let rotated_once = |name: &'static str| {
        let f = &f;
        async move {
            let (session, pair) = issued(f, name).await;
            let next = f.tokens.refresh(&refresh_of(&pair), "web").await.unwrap();
            (session, next)
        }
    };

    let (session, next) = rotated_once("logout").await;
    other.logout(session.id).await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&next), "web").await),
        TokenError::InvalidGrant,
        "logout"
    );

    let (_, next) = rotated_once("revoked").await;
    other.revoke(&refresh_of(&next), &web()).await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&next), "web").await),
        TokenError::InvalidGrant,
        "revoked family"
    );

    let (session, next) = rotated_once("disabled").await;
    ks.users(realm).disable(session.user).await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&next), "web").await),
        TokenError::InvalidGrant,
        "disabled user"
    );

    let (_, next) = rotated_once("rekeyed").await;
    let key = other
        .rotate_signing_key(JwsAlgorithm::Es256, Duration::minutes(5))
        .await
        .unwrap();
    let after = f.tokens.refresh(&refresh_of(&next), "web").await.unwrap();
    let header_part = after.access_token.expose().split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_part).unwrap()).unwrap();
    assert_eq!(header["kid"], key.id.to_string(), "signed with the new key");
    assert_eq!(header["alg"], "ES256");

    let (_, next) = rotated_once("expired").await;
    f.clock.advance(Duration::seconds(1));
    other.expire_all(Duration::zero()).await.unwrap();
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&next), "web").await),
        TokenError::InvalidGrant,
        "expire-all"
    );

    // Tokens issued in the mark's second are expired too.
    f.clock.advance(Duration::seconds(1));
    let (_, next) = rotated_once("realm").await;
    ks.realms().disable(realm).await.unwrap();
    assert!(
        f.tokens.refresh(&refresh_of(&next), "web").await.is_err(),
        "disabled realm"
    );
    ks.realms().enable(realm).await.unwrap();
    f.tokens.refresh(&refresh_of(&next), "web").await.unwrap();
}

/// A token unused for `refresh_idle_secs` dies; a family dies
/// `refresh_absolute_secs` after it was created, however often used.
pub async fn refresh_idle_and_absolute_lifetimes(h: Harness) {
    let settings = RealmSettings {
        tokens: TokenLifetimes {
            access_secs: 60,
            refresh_absolute_secs: 250,
            refresh_idle_secs: 100,
        },
        ..cheap_settings()
    };
    let f = fixture(&h, settings).await;
    let (_, pair) = issued(&f, "alice").await;
    f.clock.advance(Duration::seconds(99));
    let next = f.tokens.refresh(&refresh_of(&pair), "web").await.unwrap();
    f.clock.advance(Duration::seconds(100));
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&next), "web").await),
        TokenError::InvalidGrant,
        "idle timeout"
    );

    let (_, pair) = issued(&f, "alice").await;
    let mut current = pair;
    for _ in 0..2 {
        f.clock.advance(Duration::seconds(90));
        current = f
            .tokens
            .refresh(&refresh_of(&current), "web")
            .await
            .unwrap();
    }
    f.clock.advance(Duration::seconds(69));
    current = f
        .tokens
        .refresh(&refresh_of(&current), "web")
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(1));
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&current), "web").await),
        TokenError::InvalidGrant,
        "absolute lifetime"
    );
}

/// Tokens issued up to `expire_all` keep working until the grace ends and
/// not a second longer; tokens issued afterwards are unaffected.
pub async fn expire_all_grace_boundary(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let (_, old) = issued(&f, "alice").await;
    let start = f.clock.now();
    f.tokens.expire_all(Duration::seconds(60)).await.unwrap();
    f.clock.advance(Duration::seconds(1));
    let (_, fresh) = issued(&f, "alice").await;
    f.clock.set(start + Duration::seconds(59));
    f.tokens
        .verify_access_token(old.access_token.expose(), AUD)
        .await
        .unwrap();
    f.clock.set(start + Duration::seconds(60));
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(old.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked
    );
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&old), "web").await),
        TokenError::InvalidGrant
    );
    f.tokens
        .verify_access_token(fresh.access_token.expose(), AUD)
        .await
        .unwrap();
    f.tokens.refresh(&refresh_of(&fresh), "web").await.unwrap();
    assert!(matches!(
        f.tokens.expire_all(Duration::seconds(-1)).await,
        Err(Error::Validation(_))
    ));
}

/// RFC 7009 revocation, RFC 7662 introspection, userinfo and discovery.
pub async fn revoke_introspect_userinfo_discovery(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    assert_eq!(
        token_error(f.tokens.discovery().await),
        TokenError::IssuerNotConfigured
    );
    let (session, pair) = issued(&f, "alice").await;
    let access = SecretString::from(pair.access_token.expose());
    let inactive = serde_json::json!({ "active": false });

    let info = f.tokens.introspect(&access).await.unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "access_token");
    assert_eq!(info["sub"], session.user.to_string());
    assert_eq!(info["client_id"], "web");
    let info = f.tokens.introspect(&refresh_of(&pair)).await.unwrap();
    assert_eq!(info["active"], true);
    assert_eq!(info["token_type"], "refresh_token");
    assert_eq!(info["sid"], session.id.to_string());
    for junk in [
        "",
        "nonsense",
        "ksrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        assert_eq!(
            f.tokens
                .introspect(&SecretString::from(junk))
                .await
                .unwrap(),
            inactive
        );
        // RFC 7009 §2.2: unknown tokens are not an error.
        f.tokens
            .revoke(&SecretString::from(junk), &web())
            .await
            .unwrap();
    }

    let user = f
        .tokens
        .userinfo(pair.access_token.expose(), AUD)
        .await
        .unwrap();
    assert_eq!(user["sub"], session.user.to_string());
    assert_eq!(user["preferred_username"], "alice");

    // Revoking the refresh token ends family and session.
    f.tokens.revoke(&refresh_of(&pair), &web()).await.unwrap();
    assert_eq!(
        f.tokens.introspect(&refresh_of(&pair)).await.unwrap(),
        inactive
    );
    assert_eq!(f.tokens.introspect(&access).await.unwrap(), inactive);
    f.tokens.revoke(&refresh_of(&pair), &web()).await.unwrap();

    // Revoking an access token ends its session.
    let (_, other) = issued(&f, "alice").await;
    f.tokens
        .revoke(&SecretString::from(other.access_token.expose()), &web())
        .await
        .unwrap();
    assert_eq!(
        f.tokens.introspect(&refresh_of(&other)).await.unwrap(),
        inactive
    );

    let (_, before) = issued(&f, "alice").await;
    let realm =
        f.ks.realms()
            .update_settings(
                f.tokens.realm(),
                RealmSettings {
                    issuer_url: Some("https://id.example/realms/acme".into()),
                    ..cheap_settings()
                },
            )
            .await
            .unwrap();
    let doc = f.tokens.discovery().await.unwrap();
    assert_eq!(doc["issuer"], "https://id.example/realms/acme");
    assert_eq!(
        doc["jwks_uri"],
        "https://id.example/realms/acme/protocol/openid-connect/certs"
    );
    assert_eq!(
        doc["introspection_endpoint"],
        "https://id.example/realms/acme/protocol/openid-connect/token/introspect"
    );
    assert!(doc["end_session_endpoint"].is_string());
    assert_eq!(realm.id, f.tokens.realm());
    // Tokens now carry the configured issuer.
    let (_, pair) = issued(&f, "alice").await;
    let claims = f
        .tokens
        .verify_access_token(pair.access_token.expose(), AUD)
        .await
        .unwrap();
    assert_eq!(claims.iss, "https://id.example/realms/acme");
    // One signed under the old issuer is refused.
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(before.access_token.expose(), AUD)
                .await
        ),
        TokenError::WrongIssuer
    );
}

/// A one-time token is exchanged once — also under concurrency — within
/// its lifetime, and only while its session lives.
pub async fn one_time_tokens_are_single_use(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let session = login(&f.users, "alice").await;
    let one = f
        .tokens
        .create_one_time_token(session.id, &request(), Duration::seconds(60))
        .await
        .unwrap();
    assert!(one.token.expose().starts_with("ksot_"));
    let pair = f.tokens.exchange_one_time_token(&one.token).await.unwrap();
    assert!(pair.refresh_token.is_none());
    let claims = f
        .tokens
        .verify_access_token(pair.access_token.expose(), AUD)
        .await
        .unwrap();
    assert_eq!(claims.sid, session.id);
    assert_eq!(
        token_error(f.tokens.exchange_one_time_token(&one.token).await),
        TokenError::InvalidGrant
    );

    // Concurrent exchanges: exactly one wins.
    let one = f
        .tokens
        .create_one_time_token(session.id, &request(), Duration::seconds(60))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let tokens = f.tokens.clone();
            let token = SecretString::from(one.token.expose());
            tokio::spawn(async move { tokens.exchange_one_time_token(&token).await })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => winners += 1,
            Err(Error::Token(TokenError::InvalidGrant)) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(winners, 1);

    // Expiry boundary.
    let one = f
        .tokens
        .create_one_time_token(session.id, &request(), Duration::seconds(60))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(60));
    assert_eq!(
        token_error(f.tokens.exchange_one_time_token(&one.token).await),
        TokenError::InvalidGrant
    );
    // Session ended.
    let one = f
        .tokens
        .create_one_time_token(session.id, &request(), Duration::seconds(60))
        .await
        .unwrap();
    f.tokens.logout(session.id).await.unwrap();
    assert_eq!(
        token_error(f.tokens.exchange_one_time_token(&one.token).await),
        TokenError::InvalidGrant
    );
    // Bad input.
    let session = login(&f.users, "alice").await;
    for ttl in [Duration::zero(), Duration::hours(2)] {
        assert!(matches!(
            f.tokens
                .create_one_time_token(session.id, &request(), ttl)
                .await,
            Err(Error::Validation(_))
        ));
    }
    for junk in ["", "ksrt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        assert_eq!(
            token_error(
                f.tokens
                    .exchange_one_time_token(&SecretString::from(junk))
                    .await
            ),
            TokenError::InvalidGrant
        );
    }
}

/// A scoped token carries its name and scope, verifies for that scope
/// only, expires on time and dies with its session.
pub async fn scoped_tokens(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let session = login(&f.users, "alice").await;
    let new = crate::token::NewScopedToken {
        name: "message sender".into(),
        request: AccessRequest::public("portal", vec!["messages:create".into()]),
        expires_in: Duration::hours(2),
    };
    let scoped = f
        .tokens
        .create_scoped_token(session.id, &new)
        .await
        .unwrap();
    assert_eq!(scoped.expires_at, f.clock.now() + Duration::hours(2));
    let claims = f
        .tokens
        .verify_scoped_token(scoped.token.expose(), AUD, "messages:create")
        .await
        .unwrap();
    assert_eq!(claims.token_name.as_deref(), Some("message sender"));
    assert_eq!(claims.exp - claims.iat, 7200);
    let e = token_error(
        f.tokens
            .verify_scoped_token(scoped.token.expose(), AUD, "admin")
            .await,
    );
    assert_eq!(e, TokenError::InsufficientScope);
    assert_eq!(e.oauth_code(), "insufficient_scope");
    f.clock
        .advance(Duration::hours(2) + Duration::seconds(CLOCK_LEEWAY));
    assert_eq!(
        token_error(
            f.tokens
                .verify_scoped_token(scoped.token.expose(), AUD, "messages:create")
                .await
        ),
        TokenError::Expired
    );
    for bad in [
        crate::token::NewScopedToken {
            name: String::new(),
            ..new.clone()
        },
        crate::token::NewScopedToken {
            expires_in: Duration::days(31),
            ..new.clone()
        },
    ] {
        assert!(matches!(
            f.tokens.create_scoped_token(session.id, &bad).await,
            Err(Error::Validation(_))
        ));
    }
    let scoped = f
        .tokens
        .create_scoped_token(session.id, &new)
        .await
        .unwrap();
    f.tokens.logout(session.id).await.unwrap();
    assert_eq!(
        token_error(
            f.tokens
                .verify_scoped_token(scoped.token.expose(), AUD, "messages:create")
                .await
        ),
        TokenError::Revoked
    );
}

const CLOCK_LEEWAY: i64 = crate::token::CLOCK_LEEWAY_SECS;

/// A magic link opens one session with `amr: magic_link`, once, before it
/// expires, with the right secret; under an MFA policy it yields a
/// challenge instead; the portal URL carries it in the fragment.
pub async fn magic_links(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let alice = login(&f.users, "alice").await.user;
    let link = f
        .tokens
        .send_magic_link(alice, Duration::minutes(15))
        .await
        .unwrap();
    assert!(link.token.expose().starts_with("ksml_"));
    let other = f
        .tokens
        .send_magic_link(alice, Duration::minutes(15))
        .await
        .unwrap();
    // Another link's secret does not open this one.
    assert_eq!(
        token_error(f.tokens.verify_magic_link(link.id, &other.token).await),
        TokenError::InvalidGrant
    );
    match f
        .tokens
        .verify_magic_link(link.id, &link.token)
        .await
        .unwrap()
    {
        LoginOutcome::Authenticated(session) => {
            assert_eq!(session.user, alice);
            assert_eq!(session.methods, [AuthMethod::MagicLink]);
            let pair = f.tokens.issue(session.id, &request()).await.unwrap();
            let claims = f
                .tokens
                .verify_access_token(pair.access_token.expose(), AUD)
                .await
                .unwrap();
            assert_eq!(claims.amr, [AuthMethod::MagicLink]);
        }
        other => panic!("no MFA expected, got {other:?}"),
    }
    assert_eq!(
        token_error(f.tokens.verify_magic_link(link.id, &link.token).await),
        TokenError::InvalidGrant,
        "used once"
    );
    f.clock.advance(Duration::minutes(15));
    assert_eq!(
        token_error(f.tokens.verify_magic_link(other.id, &other.token).await),
        TokenError::InvalidGrant,
        "expired"
    );
    // Revoking all sessions also kills pending links.
    let pending = f
        .tokens
        .send_magic_link(alice, Duration::minutes(15))
        .await
        .unwrap();
    f.tokens.logout_all(alice).await.unwrap();
    assert_eq!(
        token_error(f.tokens.verify_magic_link(pending.id, &pending.token).await),
        TokenError::InvalidGrant
    );

    let portal = f
        .tokens
        .app_portal_access(alice, "https://portal.example/app", Duration::days(7))
        .await
        .unwrap();
    assert_eq!(
        portal.url.expose(),
        format!(
            "https://portal.example/app#id={}&token={}",
            portal.link.id,
            portal.link.token.expose()
        )
    );
    for bad in ["http://portal.example", "https://a.example/#x", "ftp://x"] {
        assert!(matches!(
            f.tokens
                .app_portal_access(alice, bad, Duration::days(1))
                .await,
            Err(Error::Validation(_))
        ));
    }
}

/// The token endpoint: password, refresh, one-time and RFC 8693 grants,
/// with OAuth error codes.
pub async fn exchange_grants(h: Harness) {
    use crate::token::{ExchangeOutcome, Grant};
    let f = fixture(&h, cheap_settings()).await;
    login(&f.users, "alice").await;
    let tokens_of = |outcome: ExchangeOutcome| match outcome {
        ExchangeOutcome::Tokens(t) => t,
        other => panic!("unexpected {other:?}"),
    };
    let pair = tokens_of(
        f.tokens
            .exchange(Grant::Password {
                username: "alice".into(),
                password: SecretString::from("correct horse"),
                request: request(),
            })
            .await
            .unwrap(),
    );
    let wrong = f
        .tokens
        .exchange(Grant::Password {
            username: "alice".into(),
            password: SecretString::from("wrong horse"),
            request: request(),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.oauth_code(), "invalid_grant");

    let refreshed = tokens_of(
        f.tokens
            .exchange(Grant::RefreshToken {
                refresh_token: refresh_of(&pair),
                client: crate::token::ClientAuth::public("web"),
                scope: Vec::new(),
            })
            .await
            .unwrap(),
    );
    let one = f
        .tokens
        .create_one_time_token(refreshed.session, &request(), Duration::seconds(60))
        .await
        .unwrap();
    tokens_of(
        f.tokens
            .exchange(Grant::OneTime { token: one.token })
            .await
            .unwrap(),
    );

    // RFC 8693: narrower scope, new audience, no longer than the subject.
    let subject = SecretString::from(refreshed.access_token.expose());
    let narrow = tokens_of(
        f.tokens
            .exchange(Grant::TokenExchange {
                client: files_auth(&f),
                subject_token: SecretString::from(subject.expose()),
                audience: None,
                scope: vec!["read".into()],
            })
            .await
            .unwrap(),
    );
    assert!(narrow.refresh_token.is_none());
    let claims = f
        .tokens
        .verify_access_token(narrow.access_token.expose(), "https://files.example")
        .await
        .unwrap();
    assert_eq!(claims.scope, "read");
    assert_eq!(claims.sid, refreshed.session);
    let wider = f
        .tokens
        .exchange(Grant::TokenExchange {
            client: files_auth(&f),
            subject_token: SecretString::from(subject.expose()),
            audience: None,
            scope: vec!["admin".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(wider.oauth_code(), "invalid_scope");
    let garbage = f
        .tokens
        .exchange(Grant::TokenExchange {
            client: files_auth(&f),
            subject_token: SecretString::from("not.a.token"),
            audience: None,
            scope: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(garbage.oauth_code(), "invalid_request");
}

/// Under an MFA policy a magic link alone is not enough, and the password
/// grant yields the challenge instead of tokens.
pub async fn mfa_realm_gets_challenges(h: Harness) {
    use crate::token::{ExchangeOutcome, Grant};
    let f = fixture(
        &h,
        RealmSettings {
            mfa: crate::realm::MfaPolicy::Required,
            ..cheap_settings()
        },
    )
    .await;
    let alice = f
        .users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    let link = f
        .tokens
        .send_magic_link(alice, Duration::minutes(15))
        .await
        .unwrap();
    match f
        .tokens
        .verify_magic_link(link.id, &link.token)
        .await
        .unwrap()
    {
        LoginOutcome::MfaEnrollmentRequired { challenge } => {
            assert_eq!(challenge.methods, [AuthMethod::MagicLink]);
        }
        other => panic!("MFA must be required, got {other:?}"),
    }
    assert!(matches!(
        f.tokens
            .exchange(Grant::Password {
                username: "alice".into(),
                password: SecretString::from("correct horse"),
                request: request(),
            })
            .await
            .unwrap(),
        ExchangeOutcome::MfaEnrollmentRequired { .. }
    ));
    // Both challenges stay until they expire; then the purge removes them.
    assert_eq!(f.tokens.purge_expired().await.unwrap().login_challenges, 0);
    f.clock
        .advance(Duration::seconds(crate::user::CHALLENGE_TTL_SECS));
    assert_eq!(f.tokens.purge_expired().await.unwrap().login_challenges, 2);
    assert_eq!(f.tokens.purge_expired().await.unwrap().login_challenges, 0);
}

/// Expire-all for one application (seed 004: `app/{app_id}/expire-all` with
/// `expiry`): after the grace, that application's access and refresh tokens
/// issued before the mark die; other applications' tokens and tokens issued
/// after the mark live on.
pub async fn expire_all_for_one_application(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    let mobile_request = AccessRequest {
        client_id: "mobile".into(),
        ..request()
    };
    let (_, web) = issued(&f, "alice").await;
    let session = login(&f.users, "alice").await;
    let mobile = f.tokens.issue(session.id, &mobile_request).await.unwrap();
    let start = f.clock.now();
    f.tokens
        .expire_all_for_client("web", Duration::seconds(30))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(1));
    let (_, fresh_web) = issued(&f, "alice").await;

    f.clock.set(start + Duration::seconds(29));
    f.tokens
        .verify_access_token(web.access_token.expose(), AUD)
        .await
        .unwrap();
    f.clock.set(start + Duration::seconds(30));
    assert_eq!(
        token_error(
            f.tokens
                .verify_access_token(web.access_token.expose(), AUD)
                .await
        ),
        TokenError::Revoked
    );
    assert_eq!(
        token_error(f.tokens.refresh(&refresh_of(&web), "web").await),
        TokenError::InvalidGrant
    );
    assert_eq!(
        f.tokens.introspect(&refresh_of(&web)).await.unwrap(),
        serde_json::json!({ "active": false })
    );
    // Another application, and the same application after the mark, live on.
    f.tokens
        .verify_access_token(mobile.access_token.expose(), AUD)
        .await
        .unwrap();
    f.tokens
        .refresh(&refresh_of(&mobile), "mobile")
        .await
        .unwrap();
    f.tokens
        .verify_access_token(fresh_web.access_token.expose(), AUD)
        .await
        .unwrap();
    assert!(matches!(
        f.tokens
            .expire_all_for_client("", Duration::seconds(1))
            .await,
        Err(Error::Validation(_))
    ));
}

/// A magic link asked for by address does the same store work whether or
/// not the address has an account (one new record, the same shape): the
/// answer is `Some` only for an active owner, and the decoy of an unknown
/// or disabled address opens nothing and is purged when it expires.
pub async fn magic_links_by_email_reveal_nothing(h: Harness) {
    let f = fixture(&h, cheap_settings()).await;
    f.users
        .register(
            "alice",
            Some("alice@example.com"),
            SecretString::from("correct horse"),
        )
        .await
        .unwrap();
    let bob = f
        .users
        .register(
            "bob",
            Some("bob@example.com"),
            SecretString::from("correct horse"),
        )
        .await
        .unwrap();
    f.users.disable(bob.id).await.unwrap();
    let ttl = Duration::minutes(15);
    let links = crate::realm::service::data_prefix(f.tokens.realm()).push("magic-link");
    let mut written = Vec::new();
    for (address, owned) in [
        ("ALICE@example.com", true),
        ("nobody@example.com", false),
        ("bob@example.com", false),
    ] {
        let before = super::everything(&f.ks).await;
        let sent = f
            .tokens
            .send_magic_link_to_email(address, ttl)
            .await
            .unwrap();
        let after = super::everything(&f.ks).await;
        assert_eq!(sent.is_some(), owned, "{address}");
        let new: Vec<_> = after.iter().filter(|k| !before.contains(k)).collect();
        assert_eq!((new.len(), after.len()), (1, before.len() + 1), "{address}");
        written.push(new[0].0.starts_with(links.as_bytes()));
        if let Some(link) = sent {
            assert!(matches!(
                f.tokens.verify_magic_link(link.id, &link.token).await,
                Ok(LoginOutcome::Authenticated(_))
            ));
        }
    }
    // The same kind of record in every case.
    assert_eq!(written, [true, true, true]);
    assert!(matches!(
        f.tokens
            .send_magic_link_to_email("not an address", ttl)
            .await,
        Err(Error::Validation(_))
    ));
    // The redeemed link is gone; the two decoys expire and are purged.
    f.clock.advance(ttl + Duration::seconds(1));
    assert_eq!(f.tokens.purge_expired().await.unwrap().magic_links, 2);
}

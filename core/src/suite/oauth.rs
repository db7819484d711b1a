//! OAuth cases: clients, the authorization-code flow with PKCE through
//! password, TOTP, enrolment and magic-link steps, ID tokens, every bad
//! input of the issue, reuse revocation, a forced redemption race,
//! expiry, realms, client credentials and discovery.
// Each case walks one scenario end to end; splitting them would hide the
// order the steps depend on.
#![allow(clippy::too_many_lines)]

use super::gate::GatedStore;
use super::keystead;
use super::user::cheap_settings;
use crate::Error;
use crate::Keystead;
use crate::clock::{Clock, ManualClock};
use crate::id::UserId;
use crate::mfa::{MfaAnswer, MfaFactor, NewTotpKey};
use crate::oauth::code::pkce_challenge;
use crate::oauth::{
    AuthorizationRequest, AuthorizationResponse, AuthorizeError, ClientKind, ClientUpdate,
    GrantType, LoginStep, NewClient, OAuth, OAuthError,
};
use crate::realm::{MfaPolicy, RealmSettings};
use crate::secret::SecretString;
use crate::store::conformance::Harness;
use crate::token::id_token::{ACR_MFA, ACR_SINGLE_FACTOR, IdTokenClaims};
use crate::token::{ExchangeOutcome, Grant, TokenError, TokenResponse, Tokens};
use crate::user::Authority;
use chrono::Duration;
use std::sync::Arc;

const ISSUER: &str = "https://id.example/realms/acme";
const REDIRECT: &str = "https://app.example.com/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn settings() -> RealmSettings {
    RealmSettings {
        issuer_url: Some(ISSUER.into()),
        ..cheap_settings()
    }
}

struct Fixture {
    ks: Keystead,
    clock: ManualClock,
    oauth: OAuth,
    tokens: Tokens,
    alice: UserId,
}

async fn fixture_on(ks: Keystead, clock: ManualClock, settings: RealmSettings) -> Fixture {
    let realm = ks.realms().create("acme", settings).await.unwrap();
    let alice = ks
        .users(realm.id)
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap()
        .id;
    let oauth = ks.oauth(realm.id);
    oauth
        .create_client(NewClient::public("spa", REDIRECT))
        .await
        .unwrap();
    Fixture {
        tokens: ks.tokens(realm.id),
        ks,
        clock,
        oauth,
        alice,
    }
}

async fn fixture(h: &Harness, settings: RealmSettings) -> Fixture {
    let (ks, clock) = keystead(h).await;
    fixture_on(ks, clock, settings).await
}

/// A valid request of the public client `spa` with PKCE, state and nonce.
fn request() -> AuthorizationRequest {
    AuthorizationRequest {
        response_type: Some("code".into()),
        client_id: Some("spa".into()),
        redirect_uri: Some(REDIRECT.into()),
        scope: Some("openid".into()),
        state: Some("st-1".into()),
        nonce: Some("n-1".into()),
        code_challenge: Some(pkce_challenge(VERIFIER)),
        code_challenge_method: Some("S256".into()),
    }
}

fn pw() -> SecretString {
    SecretString::from("correct horse")
}

fn redeem_grant(code: &SecretString, client: &str, verifier: Option<&str>) -> Grant {
    Grant::AuthorizationCode {
        code: code.clone(),
        redirect_uri: REDIRECT.into(),
        client_id: client.into(),
        code_verifier: verifier.map(SecretString::from),
        client_secret: None,
    }
}

async fn redeem(f: &Fixture, grant: Grant) -> Result<TokenResponse, Error> {
    match f.tokens.exchange(grant).await? {
        ExchangeOutcome::Tokens(t) => Ok(t),
        other => panic!("unexpected {other:?}"),
    }
}

fn authorized(step: LoginStep) -> AuthorizationResponse {
    match step {
        LoginStep::Authorized(response) => response,
        other => panic!("expected a code, got {other:?}"),
    }
}

/// Authorize `req` and log alice in with her password: the code.
async fn code_for(f: &Fixture, req: &AuthorizationRequest) -> SecretString {
    let tx = f.oauth.authorize(req).await.unwrap();
    let step = f
        .oauth
        .login_password(&tx.handle, "alice", pw())
        .await
        .unwrap();
    authorized(step).code
}

/// `exp − iat` of the access token of `pair`, verified for the client's
/// audience.
async fn access_lifetime(f: &Fixture, pair: &TokenResponse) -> i64 {
    let claims = f
        .tokens
        .verify_access_token(pair.access_token.expose(), "https://api.example")
        .await
        .unwrap();
    claims.exp - claims.iat
}

fn oauth_error(r: &Result<impl std::fmt::Debug, Error>) -> OAuthError {
    match r {
        Err(Error::OAuth(e)) => e.clone(),
        other => panic!("expected an OAuth error, got {other:?}"),
    }
}

fn is_grant_error(r: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(r, Err(Error::OAuth(OAuthError::InvalidGrant { .. })))
}

fn seed_of(new: &NewTotpKey) -> Vec<u8> {
    totp_rs::Secret::try_from_base32(new.secret_base32.expose())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn totp_now(f: &Fixture, new: &NewTotpKey, seed: &[u8]) -> SecretString {
    let totp = crate::mfa::generator(new.key.params, seed).unwrap();
    let t = u64::try_from(f.clock.now().timestamp()).unwrap();
    SecretString::new(totp.generate(t).to_string())
}

/// The claims of an ID token whose signature verifies with the realm's
/// published keys.
async fn id_claims(f: &Fixture, token: &SecretString) -> IdTokenClaims {
    let keys = f.tokens.verification_keys(f.clock.now()).await.unwrap();
    let verified = crate::crypto::jws::verify(token.expose(), &keys).unwrap();
    assert_eq!(verified.header.typ.as_deref(), Some("JWT"));
    serde_json::from_slice(&verified.payload).unwrap()
}

/// Password + TOTP → code → tokens with an ID token whose claims are the
/// login's; the access token verifies for the client's audience; state and
/// iss come back on the redirect.
pub async fn code_flow_with_password_and_totp(h: Harness) {
    let f = fixture(&h, settings()).await;
    let mfa = f.ks.mfa(f.oauth.realm());
    let new = mfa
        .create_totp_key(f.alice, Authority::Operator)
        .await
        .unwrap();
    let seed = seed_of(&new);
    mfa.activate(f.alice, new.key.id, &totp_now(&f, &new, &seed))
        .await
        .unwrap();
    f.clock.advance(Duration::seconds(30));

    let tx = f.oauth.authorize(&request()).await.unwrap();
    assert_eq!(tx.client_id, "spa");
    assert_eq!(tx.scope, vec!["openid".to_owned()]);
    assert!(tx.handle.expose().starts_with("kslt_"));
    // A second factor is due; the password step can't be repeated.
    let step = f
        .oauth
        .login_password(&tx.handle, "alice", pw())
        .await
        .unwrap();
    let LoginStep::MfaRequired { factors } = step else {
        panic!("expected MFA, got {step:?}");
    };
    assert!(factors.contains(&MfaFactor::Totp));
    let again = f.oauth.login_password(&tx.handle, "alice", pw()).await;
    assert_eq!(oauth_error(&again), OAuthError::WrongStep);
    // A wrong code leaves the transaction open.
    let wrong = f
        .oauth
        .login_second_factor(&tx.handle, &MfaAnswer::Totp(SecretString::from("000000")))
        .await;
    assert!(wrong.is_err());
    let answer = MfaAnswer::Totp(totp_now(&f, &new, &seed));
    let response = authorized(
        f.oauth
            .login_second_factor(&tx.handle, &answer)
            .await
            .unwrap(),
    );
    assert_eq!(response.state.as_deref(), Some("st-1"));
    assert_eq!(response.iss, ISSUER);
    let location = response.location();
    assert!(
        location
            .expose()
            .starts_with("https://app.example.com/cb?code=ksac_")
    );
    assert!(
        location
            .expose()
            .ends_with("&state=st-1&iss=https%3A%2F%2Fid.example%2Frealms%2Facme")
    );
    // The transaction is used up.
    let used = f.oauth.login_second_factor(&tx.handle, &answer).await;
    assert_eq!(oauth_error(&used), OAuthError::TransactionNotFound);

    let t = redeem(&f, redeem_grant(&response.code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    assert_eq!(t.scope, vec!["openid".to_owned()]);
    assert!(t.refresh_token.is_some());
    let claims = f
        .tokens
        .verify_access_token(t.access_token.expose(), "spa")
        .await
        .unwrap();
    assert_eq!(claims.client_id, "spa");
    assert_eq!(claims.sub, f.alice);
    assert_eq!(claims.sid, t.session);
    let id = id_claims(&f, t.id_token.as_ref().expect("an ID token")).await;
    assert_eq!(id.iss, ISSUER);
    assert_eq!(id.sub, f.alice);
    assert_eq!(id.aud, "spa");
    assert_eq!(id.azp, "spa");
    assert_eq!(id.nonce.as_deref(), Some("n-1"));
    assert_eq!(id.sid, t.session);
    assert_eq!(id.acr, ACR_MFA);
    assert_eq!(
        id.amr,
        vec![crate::user::AuthMethod::Pwd, crate::user::AuthMethod::Otp]
    );
    let now = f.clock.now().timestamp();
    assert_eq!(id.iat, now);
    assert_eq!(id.auth_time, now);
    assert_eq!(id.exp, now + 300);
    // The refresh token works for the client.
    let refreshed = f
        .tokens
        .refresh(t.refresh_token.as_ref().unwrap(), "spa")
        .await
        .unwrap();
    assert!(refreshed.id_token.is_none());

    // Without `openid` there is no ID token; without a nonce, no claim.
    let plain = f
        .oauth
        .update_client(
            "spa",
            ClientUpdate {
                scopes: Some(vec!["openid".into(), "read".into()]),
                ..ClientUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(plain.scopes.len(), 2);
    f.clock.advance(Duration::seconds(30));
    let req = AuthorizationRequest {
        scope: Some("read".into()),
        ..request()
    };
    let tx = f.oauth.authorize(&req).await.unwrap();
    let step = f
        .oauth
        .login_password(&tx.handle, "alice", pw())
        .await
        .unwrap();
    assert!(matches!(step, LoginStep::MfaRequired { .. }));
    let code = authorized(
        f.oauth
            .login_second_factor(&tx.handle, &MfaAnswer::Totp(totp_now(&f, &new, &seed)))
            .await
            .unwrap(),
    )
    .code;
    let t = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    assert!(t.id_token.is_none());
    assert_eq!(t.scope, vec!["read".to_owned()]);
}

/// The enrolment path (realm requires MFA, user has none) and a magic link
/// both end in a code; `acr`/`amr` say what happened; cancel answers
/// `access_denied` once.
pub async fn enrollment_magic_link_and_cancel(h: Harness) {
    let f = fixture(
        &h,
        RealmSettings {
            mfa: MfaPolicy::Required,
            ..settings()
        },
    )
    .await;
    let tx = f.oauth.authorize(&request()).await.unwrap();
    let wrong_step = f.oauth.enrollment_key(&tx.handle).await;
    assert_eq!(oauth_error(&wrong_step), OAuthError::WrongStep);
    let step = f
        .oauth
        .login_password(&tx.handle, "alice", pw())
        .await
        .unwrap();
    assert!(matches!(step, LoginStep::MfaEnrollmentRequired));
    let new = f.oauth.enrollment_key(&tx.handle).await.unwrap();
    let seed = seed_of(&new);
    let code = authorized(
        f.oauth
            .login_enrollment(&tx.handle, new.key.id, &totp_now(&f, &new, &seed))
            .await
            .unwrap(),
    )
    .code;
    let t = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    let id = id_claims(&f, t.id_token.as_ref().unwrap()).await;
    assert_eq!(id.acr, ACR_MFA);

    // A realm without required MFA: a magic link alone logs bob in.
    let realm = f.ks.realms().create("links", settings()).await.unwrap();
    let bob =
        f.ks.users(realm.id)
            .register("bob", None, SecretString::from("correct horse"))
            .await
            .unwrap()
            .id;
    let oauth = f.ks.oauth(realm.id);
    oauth
        .create_client(NewClient::public("spa", REDIRECT))
        .await
        .unwrap();
    let tokens = f.ks.tokens(realm.id);
    let link = tokens
        .send_magic_link(bob, Duration::minutes(5))
        .await
        .unwrap();
    let tx = oauth.authorize(&request()).await.unwrap();
    let code = authorized(
        oauth
            .login_magic_link(&tx.handle, link.id, &link.token)
            .await
            .unwrap(),
    )
    .code;
    let t = match tokens
        .exchange(redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap()
    {
        ExchangeOutcome::Tokens(t) => t,
        other => panic!("{other:?}"),
    };
    let keys = tokens.verification_keys(f.clock.now()).await.unwrap();
    let verified =
        crate::crypto::jws::verify(t.id_token.as_ref().unwrap().expose(), &keys).unwrap();
    let id: IdTokenClaims = serde_json::from_slice(&verified.payload).unwrap();
    assert_eq!(id.sub, bob);
    assert_eq!(id.acr, ACR_SINGLE_FACTOR);
    assert_eq!(id.amr, vec![crate::user::AuthMethod::MagicLink]);

    // Cancel: access_denied with the state, once.
    let tx = oauth.authorize(&request()).await.unwrap();
    let denied = oauth.cancel(&tx.handle).await.unwrap();
    assert_eq!(denied.error.oauth_code(), "access_denied");
    assert_eq!(
        denied.location(),
        "https://app.example.com/cb?error=access_denied&state=st-1\
         &iss=https%3A%2F%2Fid.example%2Frealms%2Facme"
    );
    let twice = oauth.cancel(&tx.handle).await;
    assert_eq!(oauth_error(&twice), OAuthError::TransactionNotFound);
    let after = oauth.login_password(&tx.handle, "bob", pw()).await;
    assert_eq!(oauth_error(&after), OAuthError::TransactionNotFound);
}

fn no_redirect(r: Result<crate::oauth::LoginTransaction, AuthorizeError>) -> OAuthError {
    match r {
        Err(AuthorizeError::NoRedirect(Error::OAuth(e))) => e,
        other => panic!("expected a no-redirect error, got {other:?}"),
    }
}

fn redirected(r: Result<crate::oauth::LoginTransaction, AuthorizeError>) -> (String, String) {
    match r {
        Err(AuthorizeError::Redirect(r)) => {
            assert_eq!(r.redirect_uri, REDIRECT);
            (r.error.oauth_code().to_owned(), r.location())
        }
        other => panic!("expected a redirect error, got {other:?}"),
    }
}

/// Every bad authorization request: client and redirect-URI errors never
/// redirect (look-alikes included); the rest redirect with `error`,
/// `state` and `iss`; nothing is started.
pub async fn authorization_request_refusals(h: Harness) {
    let f = fixture(&h, settings()).await;
    let unknown = AuthorizationRequest {
        client_id: Some("nobody".into()),
        ..request()
    };
    assert_eq!(
        no_redirect(f.oauth.authorize(&unknown).await),
        OAuthError::InvalidClient
    );
    let missing = AuthorizationRequest {
        client_id: None,
        ..request()
    };
    assert!(matches!(
        no_redirect(f.oauth.authorize(&missing).await),
        OAuthError::InvalidRequest { .. }
    ));
    for uri in [
        None,
        Some("https://app.example.com/cb/"),
        Some("https://app.example.com:8443/cb"),
        Some("http://app.example.com/cb"),
        Some("https://user@app.example.com/cb"),
        Some("https://app.example.com@evil.example/cb"),
        Some("https://APP.example.com/cb"),
        Some("https://app.example.com/cb/evil"),
        Some("https://app.example.com/c"),
        Some("https://app.example.com/cb?x=1"),
        Some("https://app.example.com/cb#x"),
        Some("https://evil.example/cb"),
        Some(""),
    ] {
        let req = AuthorizationRequest {
            redirect_uri: uri.map(str::to_owned),
            ..request()
        };
        assert_eq!(
            no_redirect(f.oauth.authorize(&req).await),
            OAuthError::InvalidRedirectUri,
            "{uri:?}"
        );
    }
    let cases: Vec<(AuthorizationRequest, &str)> = vec![
        (
            AuthorizationRequest {
                response_type: None,
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                response_type: Some("token".into()),
                ..request()
            },
            "unsupported_response_type",
        ),
        (
            AuthorizationRequest {
                response_type: Some("code id_token".into()),
                ..request()
            },
            "unsupported_response_type",
        ),
        (
            AuthorizationRequest {
                scope: Some("openid admin".into()),
                ..request()
            },
            "invalid_scope",
        ),
        (
            AuthorizationRequest {
                scope: Some("open\"id".into()),
                ..request()
            },
            "invalid_scope",
        ),
        (
            AuthorizationRequest {
                code_challenge_method: Some("plain".into()),
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                code_challenge_method: None,
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                code_challenge: None,
                code_challenge_method: None,
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                code_challenge: None,
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                code_challenge: Some("short".into()),
                ..request()
            },
            "invalid_request",
        ),
        (
            AuthorizationRequest {
                nonce: Some("a\nb".into()),
                ..request()
            },
            "invalid_request",
        ),
    ];
    for (req, code) in cases {
        let (error, location) = redirected(f.oauth.authorize(&req).await);
        assert_eq!(error, code, "{req:?}");
        assert!(
            location.starts_with(&format!("{REDIRECT}?error={code}&state=st-1&iss=")),
            "{location}"
        );
    }
    // A malformed state is not echoed.
    let bad_state = AuthorizationRequest {
        state: Some("a\u{7f}".into()),
        ..request()
    };
    let (error, location) = redirected(f.oauth.authorize(&bad_state).await);
    assert_eq!(error, "invalid_request");
    assert!(!location.contains("state="));
    // A client without the code flow is unauthorized for it.
    f.oauth
        .update_client(
            "spa",
            ClientUpdate {
                grant_types: Some(vec![]),
                ..ClientUpdate::default()
            },
        )
        .await
        .unwrap_err();
    f.oauth
        .create_client(NewClient::service("svc", vec![]))
        .await
        .unwrap();
    let svc = AuthorizationRequest {
        client_id: Some("svc".into()),
        ..request()
    };
    // svc has no redirect URI at all: never redirect.
    assert_eq!(
        no_redirect(f.oauth.authorize(&svc).await),
        OAuthError::InvalidRedirectUri
    );
    let mut both = NewClient::confidential("both", REDIRECT);
    both.grant_types = vec![GrantType::ClientCredentials];
    f.oauth.create_client(both).await.unwrap();
    let req = AuthorizationRequest {
        client_id: Some("both".into()),
        ..request()
    };
    assert_eq!(
        redirected(f.oauth.authorize(&req).await).0,
        "unauthorized_client"
    );
}

/// Bad redemptions fail with the right code and burn nothing: missing or
/// wrong verifier, another redirect URI, another client, garbage codes,
/// wrong client authentication; then the code still works once.
pub async fn redemption_refusals(h: Harness) {
    let f = fixture(&h, settings()).await;
    let other = f
        .oauth
        .create_client(NewClient::confidential("web", REDIRECT))
        .await
        .unwrap();
    let web_secret = other.secret.expect("a confidential client has a secret");
    let code = code_for(&f, &request()).await;

    assert!(is_grant_error(
        &redeem(&f, redeem_grant(&code, "spa", None)).await
    ));
    let wrong = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl";
    assert!(is_grant_error(
        &redeem(&f, redeem_grant(&code, "spa", Some(wrong))).await
    ));
    // `plain`: the challenge itself as the verifier.
    let challenge = pkce_challenge(VERIFIER);
    assert!(is_grant_error(
        &redeem(&f, redeem_grant(&code, "spa", Some(&challenge))).await
    ));
    let other_uri = Grant::AuthorizationCode {
        code: code.clone(),
        redirect_uri: "https://app.example.com/cb/".into(),
        client_id: "spa".into(),
        code_verifier: Some(SecretString::from(VERIFIER)),
        client_secret: None,
    };
    assert!(is_grant_error(&redeem(&f, other_uri).await));
    // Another (authenticated) client can't redeem it.
    let stolen = Grant::AuthorizationCode {
        code: code.clone(),
        redirect_uri: REDIRECT.into(),
        client_id: "web".into(),
        code_verifier: Some(SecretString::from(VERIFIER)),
        client_secret: Some(web_secret.clone()),
    };
    assert!(is_grant_error(&redeem(&f, stolen).await));
    // Client authentication comes first.
    let unknown = redeem(&f, redeem_grant(&code, "nobody", Some(VERIFIER))).await;
    assert_eq!(oauth_error(&unknown), OAuthError::InvalidClient);
    let public_with_secret = Grant::AuthorizationCode {
        code: code.clone(),
        redirect_uri: REDIRECT.into(),
        client_id: "spa".into(),
        code_verifier: Some(SecretString::from(VERIFIER)),
        client_secret: Some(web_secret.clone()),
    };
    assert_eq!(
        oauth_error(&redeem(&f, public_with_secret).await),
        OAuthError::InvalidClient
    );
    for garbage in ["", "ksac_", "ksrt_abc", "not a code"] {
        let r = redeem(
            &f,
            redeem_grant(&SecretString::from(garbage), "spa", Some(VERIFIER)),
        )
        .await;
        assert!(is_grant_error(&r), "{garbage}");
    }
    let (unknown_code, _) = crate::oauth::Bearer::Code.generate().unwrap();
    assert!(is_grant_error(
        &redeem(&f, redeem_grant(&unknown_code, "spa", Some(VERIFIER))).await
    ));
    // None of that burnt the code.
    redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();

    // A confidential client: secret required and checked; without PKCE
    // (allowed for it) a verifier is a downgrade attempt and refused.
    f.oauth
        .update_client(
            "web",
            ClientUpdate {
                require_pkce: Some(false),
                ..ClientUpdate::default()
            },
        )
        .await
        .unwrap();
    let req = AuthorizationRequest {
        client_id: Some("web".into()),
        code_challenge: None,
        code_challenge_method: None,
        ..request()
    };
    let code = code_for(&f, &req).await;
    let with = |secret: Option<&SecretString>, verifier: Option<&str>| Grant::AuthorizationCode {
        code: code.clone(),
        redirect_uri: REDIRECT.into(),
        client_id: "web".into(),
        code_verifier: verifier.map(SecretString::from),
        client_secret: secret.cloned(),
    };
    let wrong_secret = SecretString::from("kscs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for secret in [None, Some(&wrong_secret)] {
        assert_eq!(
            oauth_error(&redeem(&f, with(secret, None)).await),
            OAuthError::InvalidClient
        );
    }
    assert!(is_grant_error(
        &redeem(&f, with(Some(&web_secret), Some(VERIFIER))).await
    ));
    let t = redeem(&f, with(Some(&web_secret), None)).await.unwrap();
    assert!(t.id_token.is_some());
    // Public clients can't turn PKCE off.
    let off = f
        .oauth
        .update_client(
            "spa",
            ClientUpdate {
                require_pkce: Some(false),
                ..ClientUpdate::default()
            },
        )
        .await;
    assert!(matches!(off, Err(Error::Validation(_))));
}

/// A code redeemed twice: the second fails and revokes the tokens of the
/// first (access token, refresh token, session); later tries too.
pub async fn reused_code_revokes_the_first_tokens(h: Harness) {
    let f = fixture(&h, settings()).await;
    let code = code_for(&f, &request()).await;
    let first = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    f.tokens
        .verify_access_token(first.access_token.expose(), "spa")
        .await
        .unwrap();
    let again = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER))).await;
    assert_eq!(oauth_error(&again), OAuthError::CodeReused);
    assert_eq!(again.unwrap_err().oauth_code(), "invalid_grant");
    let access = f
        .tokens
        .verify_access_token(first.access_token.expose(), "spa")
        .await;
    assert!(matches!(access, Err(Error::Token(TokenError::Revoked))));
    let refresh = f
        .tokens
        .refresh(first.refresh_token.as_ref().unwrap(), "spa")
        .await;
    assert!(matches!(
        refresh,
        Err(Error::Token(TokenError::InvalidGrant))
    ));
    let third = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER))).await;
    assert_eq!(oauth_error(&third), OAuthError::CodeReused);
    // Even a reuse by another party with a wrong verifier counts.
    let code = code_for(&f, &request()).await;
    let t = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    let thief = redeem(&f, redeem_grant(&code, "spa", None)).await;
    assert_eq!(oauth_error(&thief), OAuthError::CodeReused);
    assert!(
        f.tokens
            .verify_access_token(t.access_token.expose(), "spa")
            .await
            .is_err()
    );
}

/// How many redemptions race.
const RACERS: usize = 4;

/// Concurrent redemptions of one code, all read before any commits:
/// exactly one issues tokens, every other is reuse — and revokes them.
pub async fn concurrent_redemption_one_winner(h: Harness) {
    use crate::crypto::at_rest::StaticKeyProvider;
    let gate = GatedStore::new(h.open().await, b"oauth-code", RACERS);
    let clock = ManualClock::new(super::epoch());
    let ks = Keystead::builder()
        .shared_store(gate.clone())
        .clock(clock.clone())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let f = Arc::new(fixture_on(ks, clock, settings()).await);
    let code = code_for(&f, &request()).await;
    gate.arm(RACERS);
    let mut tasks = Vec::new();
    for _ in 0..RACERS {
        let f = Arc::clone(&f);
        let code = code.clone();
        tasks.push(tokio::spawn(async move {
            redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER))).await
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(tokens) => winners.push(tokens),
            Err(Error::OAuth(OAuthError::CodeReused)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    // The others were reuse: the winner's tokens are revoked.
    let access = f
        .tokens
        .verify_access_token(winners[0].access_token.expose(), "spa")
        .await;
    assert!(matches!(access, Err(Error::Token(TokenError::Revoked))));
}

/// Transactions die after 10 minutes, codes after 60 seconds (manual
/// clock, boundaries exact).
pub async fn transactions_and_codes_expire(h: Harness) {
    let f = fixture(&h, settings()).await;
    let tx = f.oauth.authorize(&request()).await.unwrap();
    assert_eq!(tx.expires_at, f.clock.now() + Duration::seconds(600));
    f.clock.advance(Duration::seconds(599));
    let live = f.oauth.authorize(&request()).await.unwrap();
    f.clock.advance(Duration::seconds(1));
    let dead = f.oauth.login_password(&tx.handle, "alice", pw()).await;
    assert_eq!(oauth_error(&dead), OAuthError::TransactionNotFound);
    assert_eq!(dead.unwrap_err().oauth_code(), "invalid_request");
    // The purge removes the expired transaction and keeps the live one
    // (used below).
    assert_eq!(
        f.tokens.purge_expired().await.unwrap().login_transactions,
        1
    );
    // The other one (1 s younger) still works: its code lives 60 s.
    let code = authorized(
        f.oauth
            .login_password(&live.handle, "alice", pw())
            .await
            .unwrap(),
    )
    .code;
    f.clock.advance(Duration::seconds(60));
    assert!(is_grant_error(
        &redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER))).await
    ));
    let code = code_for(&f, &request()).await;
    f.clock.advance(Duration::seconds(59));
    redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    // A garbage handle is not found either.
    let garbage = f
        .oauth
        .login_password(&SecretString::from("kslt_nope"), "alice", pw())
        .await;
    assert_eq!(oauth_error(&garbage), OAuthError::TransactionNotFound);
}

/// The purge removes an unredeemed code once it expired, and keeps a
/// redeemed one — a late replay must still find it and revoke what it
/// issued — until its refresh family is gone and the longest any of its
/// tokens could live (absolute refresh lifetime, then one last access
/// token of at most 24 h) has passed.
pub async fn purge_keeps_redeemed_codes_until_their_tokens_are_dead(h: Harness) {
    let f = fixture(&h, settings()).await;
    let absolute = i64::from(settings().tokens.refresh_absolute_secs);
    let redeemed = code_for(&f, &request()).await;
    let first = redeem(&f, redeem_grant(&redeemed, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    let replayed = code_for(&f, &request()).await;
    redeem(&f, redeem_grant(&replayed, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    let unused = code_for(&f, &request()).await;
    f.clock.advance(Duration::seconds(60));
    let purged = f.tokens.purge_expired().await.unwrap();
    assert_eq!(
        purged.authorization_codes, 1,
        "only the expired unused code"
    );
    assert_eq!(
        oauth_error(&redeem(&f, redeem_grant(&unused, "spa", Some(VERIFIER))).await),
        OAuthError::InvalidGrant {
            reason: "unknown authorization code"
        }
    );

    // Up to the bound, both redeemed codes stay, although their families
    // died with the absolute lifetime and are purged.
    f.clock
        .advance(Duration::seconds(absolute + 24 * 3600 - 61));
    let purged = f.tokens.purge_expired().await.unwrap();
    assert_eq!(
        (purged.refresh_families, purged.authorization_codes),
        (2, 0)
    );
    assert!(
        f.tokens
            .refresh(first.refresh_token.as_ref().unwrap(), "spa")
            .await
            .is_err()
    );
    assert_eq!(
        oauth_error(&redeem(&f, redeem_grant(&replayed, "spa", Some(VERIFIER))).await),
        OAuthError::CodeReused,
        "a replay at the last second is still reuse"
    );
    f.clock.advance(Duration::seconds(1));
    assert_eq!(
        f.tokens.purge_expired().await.unwrap().authorization_codes,
        2
    );
    assert_eq!(
        oauth_error(&redeem(&f, redeem_grant(&redeemed, "spa", Some(VERIFIER))).await),
        OAuthError::InvalidGrant {
            reason: "unknown authorization code"
        }
    );
}

/// Nothing crosses realms: clients, transactions and codes of one realm
/// are unknown in another, even under the same `client_id`.
pub async fn realms_are_isolated(h: Harness) {
    let f = fixture(&h, settings()).await;
    let other = f.ks.realms().create("other", settings()).await.unwrap();
    let oauth_b = f.ks.oauth(other.id);
    let tokens_b = f.ks.tokens(other.id);
    assert_eq!(
        no_redirect(oauth_b.authorize(&request()).await),
        OAuthError::InvalidClient
    );
    let tx = f.oauth.authorize(&request()).await.unwrap();
    oauth_b
        .create_client(NewClient::public("spa", REDIRECT))
        .await
        .unwrap();
    let foreign = oauth_b.login_password(&tx.handle, "alice", pw()).await;
    assert_eq!(oauth_error(&foreign), OAuthError::TransactionNotFound);
    let code = authorized(
        f.oauth
            .login_password(&tx.handle, "alice", pw())
            .await
            .unwrap(),
    )
    .code;
    let r = tokens_b
        .exchange(redeem_grant(&code, "spa", Some(VERIFIER)))
        .await;
    assert!(matches!(
        r,
        Err(Error::OAuth(OAuthError::InvalidGrant { .. }))
    ));
    // Still redeemable at home.
    redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    assert_eq!(oauth_b.list_clients(None, 10).await.unwrap().items.len(), 1);
}

/// Create, get, list, update, delete; secrets shown once, checked by
/// basic and post; rotation; deleting a client ends its tokens and codes.
pub async fn clients_and_secrets(h: Harness) {
    let f = fixture(&h, settings()).await;
    let created = f
        .oauth
        .create_client(NewClient::confidential("web", REDIRECT))
        .await
        .unwrap();
    assert_eq!(created.client.kind, ClientKind::Confidential);
    assert_eq!(created.client.audience, "web");
    let secret = created.secret.unwrap();
    assert!(secret.expose().starts_with("kscs_"));
    let dup = f
        .oauth
        .create_client(NewClient::public("web", REDIRECT))
        .await;
    assert_eq!(oauth_error(&dup), OAuthError::ClientExists);
    for bad in [
        NewClient::public("a b", REDIRECT),
        NewClient::public("x", "https://app.example.com/*"),
        NewClient::public("x", "https://app.example.com/cb#f"),
        NewClient::public("x", "http://app.example.com/cb"),
        NewClient::confidential("x", "com.example.app:/cb"),
        NewClient {
            scopes: vec!["a b".into()],
            ..NewClient::public("x", REDIRECT)
        },
        NewClient {
            access_token_secs: Some(0),
            ..NewClient::public("x", REDIRECT)
        },
        NewClient {
            grant_types: vec![GrantType::ClientCredentials],
            ..NewClient::public("x", REDIRECT)
        },
        NewClient {
            redirect_uris: vec![REDIRECT.into(), REDIRECT.into()],
            ..NewClient::public("x", REDIRECT)
        },
    ] {
        let r = f.oauth.create_client(bad.clone()).await;
        assert!(matches!(r, Err(Error::Validation(_))), "{bad:?}");
    }
    assert_eq!(
        oauth_error(&f.oauth.get_client("x").await),
        OAuthError::ClientNotFound
    );
    f.oauth
        .create_client(NewClient::public("native", "com.example.app:/cb"))
        .await
        .unwrap();
    let page = f.oauth.list_clients(None, 2).await.unwrap();
    let ids: Vec<_> = page.items.iter().map(|c| c.client_id.as_str()).collect();
    assert_eq!(ids, ["native", "spa"]);
    let rest = f.oauth.list_clients(page.next.as_deref(), 2).await.unwrap();
    assert_eq!(rest.items[0].client_id, "web");
    assert!(rest.next.is_none());

    // Secrets: basic (form-encoded values) and post.
    let basic = f.oauth.client_secret_basic("web", &secret).await.unwrap();
    assert_eq!(basic.client_id, "web");
    f.oauth.client_secret_post("web", &secret).await.unwrap();
    let wrong = SecretString::from("kscs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    for r in [
        f.oauth.client_secret_post("web", &wrong).await,
        f.oauth.client_secret_basic("web", &wrong).await,
        f.oauth.client_secret_post("spa", &secret).await,
        f.oauth.client_secret_post("nobody", &secret).await,
        f.oauth.client_secret_basic("we%zz", &secret).await,
        f.oauth.authenticate_client("web", None).await,
    ] {
        assert_eq!(oauth_error(&r), OAuthError::InvalidClient);
    }
    f.oauth.authenticate_client("spa", None).await.unwrap();
    let rotated = f.oauth.rotate_client_secret("web").await.unwrap();
    assert!(f.oauth.client_secret_post("web", &secret).await.is_err());
    f.oauth.client_secret_post("web", &rotated).await.unwrap();
    assert!(matches!(
        f.oauth.rotate_client_secret("spa").await,
        Err(Error::Validation(_))
    ));

    // Update: a lifetime override shows in the token.
    let updated = f
        .oauth
        .update_client(
            "spa",
            ClientUpdate {
                access_token_secs: Some(Some(60)),
                audience: Some("https://api.example".into()),
                ..ClientUpdate::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.access_token_secs, Some(60));
    assert_eq!(f.oauth.get_client("spa").await.unwrap(), updated);
    let code = code_for(&f, &request()).await;
    let t = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    assert_eq!(t.expires_in, 60);
    assert_eq!(access_lifetime(&f, &t).await, 60);
    // ... and in the access tokens its refresh tokens are exchanged for.
    let refreshed = f
        .tokens
        .refresh(t.refresh_token.as_ref().unwrap(), "spa")
        .await
        .unwrap();
    assert_eq!(refreshed.expires_in, 60);
    assert_eq!(access_lifetime(&f, &refreshed).await, 60);
    let t = TokenResponse {
        refresh_token: refreshed.refresh_token.clone(),
        ..t
    };

    // Delete: tokens die, pending codes fail, the id is free again.
    let pending = code_for(&f, &request()).await;
    f.clock.advance(Duration::seconds(1));
    f.oauth.delete_client("spa").await.unwrap();
    assert!(matches!(
        f.tokens
            .verify_access_token(t.access_token.expose(), "https://api.example")
            .await,
        Err(Error::Token(TokenError::Revoked))
    ));
    assert!(
        f.tokens
            .refresh(t.refresh_token.as_ref().unwrap(), "spa")
            .await
            .is_err()
    );
    assert_eq!(
        oauth_error(&redeem(&f, redeem_grant(&pending, "spa", Some(VERIFIER))).await),
        OAuthError::InvalidClient
    );
    assert_eq!(
        oauth_error(&f.oauth.delete_client("spa").await),
        OAuthError::ClientNotFound
    );
    f.oauth
        .create_client(NewClient::public("spa", REDIRECT))
        .await
        .unwrap();
}

/// Client credentials: a confidential client gets a token for itself that
/// only [`OAuth::verify_client_token`] accepts; refusals; deletion ends it.
pub async fn client_credentials_grant(h: Harness) {
    let f = fixture(&h, settings()).await;
    let svc = f
        .oauth
        .create_client(NewClient {
            audience: Some("https://api.example".into()),
            ..NewClient::service("svc", vec!["read".into(), "write".into()])
        })
        .await
        .unwrap();
    let secret = svc.secret.unwrap();
    let all = f
        .oauth
        .client_credentials("svc", &secret, &[], None)
        .await
        .unwrap();
    assert_eq!(all.scope, vec!["read".to_owned(), "write".to_owned()]);
    let t = f
        .oauth
        .client_credentials("svc", &secret, &["read".into()], None)
        .await
        .unwrap();
    assert_eq!(t.expires_in, 300);
    let claims = f
        .oauth
        .verify_client_token(t.access_token.expose(), "https://api.example")
        .await
        .unwrap();
    assert_eq!(claims.sub, "svc");
    assert_eq!(claims.scope, "read");
    assert_eq!(claims.iss, ISSUER);
    // Not a user's token, and the other audience is refused.
    assert!(
        f.tokens
            .verify_access_token(t.access_token.expose(), "https://api.example")
            .await
            .is_err()
    );
    assert!(matches!(
        f.oauth
            .verify_client_token(t.access_token.expose(), "other")
            .await,
        Err(Error::Token(TokenError::WrongAudience))
    ));
    // A user's access token is not a client token.
    let code = code_for(&f, &request()).await;
    let user = redeem(&f, redeem_grant(&code, "spa", Some(VERIFIER)))
        .await
        .unwrap();
    assert!(matches!(
        f.oauth
            .verify_client_token(user.access_token.expose(), "spa")
            .await,
        Err(Error::Token(TokenError::Malformed { .. }))
    ));
    // Refusals.
    let wrong = SecretString::from("kscs_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    assert_eq!(
        oauth_error(&f.oauth.client_credentials("svc", &wrong, &[], None).await),
        OAuthError::InvalidClient
    );
    assert_eq!(
        oauth_error(
            &f.oauth
                .client_credentials("svc", &secret, &["admin".into()], None)
                .await
        ),
        OAuthError::InvalidScope
    );
    assert_eq!(
        oauth_error(
            &f.oauth
                .client_credentials("svc", &secret, &["openid".into()], None)
                .await
        ),
        OAuthError::InvalidScope
    );
    let web = f
        .oauth
        .create_client(NewClient::confidential("web", REDIRECT))
        .await
        .unwrap();
    assert_eq!(
        oauth_error(
            &f.oauth
                .client_credentials("web", web.secret.as_ref().unwrap(), &[], None)
                .await
        ),
        OAuthError::UnauthorizedClient
    );
    // Expiry with leeway, then deletion.
    f.clock.advance(Duration::seconds(300 + 29));
    f.oauth
        .verify_client_token(t.access_token.expose(), "https://api.example")
        .await
        .unwrap();
    f.oauth.delete_client("svc").await.unwrap();
    assert!(matches!(
        f.oauth
            .verify_client_token(t.access_token.expose(), "https://api.example")
            .await,
        Err(Error::Token(TokenError::Revoked))
    ));
    f.clock.advance(Duration::seconds(1));
    assert!(matches!(
        f.oauth
            .verify_client_token(all.access_token.expose(), "https://api.example")
            .await,
        Err(Error::Token(TokenError::Expired))
    ));
}

/// The discovery document lists the code flow as implemented, nothing
/// more.
pub async fn discovery_lists_what_is_supported(h: Harness) {
    let f = fixture(&h, settings()).await;
    let doc = f.tokens.discovery().await.unwrap();
    assert_eq!(
        doc["authorization_endpoint"],
        format!("{ISSUER}/protocol/openid-connect/auth")
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        doc["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    let grants: Vec<&str> = doc["grant_types_supported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    for grant in &grants {
        if *grant != crate::token::grants::GRANT_CLIENT_CREDENTIALS {
            Grant::check_type(grant).unwrap();
        }
    }
    assert!(grants.contains(&"authorization_code"));
    assert!(grants.contains(&"client_credentials"));
    assert!(!grants.contains(&"implicit"));
}

//! An independent JWT implementation (`jsonwebtoken`) verifies the ID token
//! and the access token of the authorization-code flow — password + TOTP,
//! PKCE S256 — from the realm's JWKS alone, for both signing algorithms,
//! and checks every OIDC Core §2 claim the flow promises.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::crypto::jws::JwsAlgorithm;
use keystead::mfa::MfaAnswer;
use keystead::oauth::code::pkce_challenge;
use keystead::oauth::{AuthorizationRequest, LoginStep, NewClient};
use keystead::realm::RealmSettings;
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::token::{ExchangeOutcome, Grant};
use keystead::user::Authority;

const ISSUER: &str = "https://id.example/realms/acme";
const REDIRECT: &str = "https://app.example.com/cb";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

/// Decode `token` with jsonwebtoken, finding its key in `jwks` by `kid`.
fn verify_independently(
    token: &str,
    jwks: &serde_json::Value,
    alg: Algorithm,
    typ: &str,
    audience: &str,
) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWKS jsonwebtoken reads");
    let header = decode_header(token)?;
    assert_eq!(header.typ.as_deref(), Some(typ));
    let jwk = set.find(&header.kid.expect("a kid")).expect("published");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    decode::<serde_json::Value>(token, &key, &validation).map(|data| data.claims)
}

/// The TOTP code of a key `ahead` seconds from now, as an authenticator
/// app shows it.
fn totp(key: &keystead::mfa::NewTotpKey, ahead: u64) -> SecretString {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keystead::mfa::totp_code(key.key.params, key.secret_base32.expose(), now + ahead).unwrap()
}

/// An active TOTP key and recovery codes for `user`, set up as the
/// embedder's operator.
async fn enrol(
    mfa: &keystead::mfa::Mfa,
    user: keystead::id::UserId,
) -> (keystead::mfa::NewTotpKey, Vec<SecretString>) {
    let key = mfa
        .create_totp_key(user, Authority::Operator)
        .await
        .unwrap();
    mfa.activate(user, key.key.id, &totp(&key, 0))
        .await
        .unwrap();
    let recovery = mfa
        .generate_recovery_codes(user, Authority::Operator)
        .await
        .unwrap();
    (key, recovery)
}

#[tokio::test]
async fn jsonwebtoken_verifies_the_code_flow_tokens_from_the_jwks_alone() {
    // The system clock: jsonwebtoken checks `exp` against real time.
    let ks = Keystead::builder()
        .store(MemoryStore::new())
        .keys(StaticKeyProvider::generate().unwrap())
        .build()
        .unwrap();
    let settings = RealmSettings {
        issuer_url: Some(ISSUER.into()),
        ..keystead::suite::user::cheap_settings()
    };
    let realm = ks.realms().create("acme", settings).await.unwrap();
    let alice = ks
        .users(realm.id)
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    let (key, recovery) = enrol(&ks.mfa(realm.id), alice.id).await;
    let oauth = ks.oauth(realm.id);
    let tokens = ks.tokens(realm.id);
    oauth
        .create_client(NewClient::public("spa", REDIRECT))
        .await
        .unwrap();

    for (round, (ours, theirs)) in [
        (JwsAlgorithm::EdDsa, Algorithm::EdDSA),
        (JwsAlgorithm::Es256, Algorithm::ES256),
    ]
    .into_iter()
    .enumerate()
    {
        tokens
            .rotate_signing_key(ours, chrono::Duration::hours(1))
            .await
            .unwrap();
        let nonce = format!("nonce-{round}");
        let tx = oauth
            .authorize(&AuthorizationRequest {
                response_type: Some("code".into()),
                client_id: Some("spa".into()),
                redirect_uri: Some(REDIRECT.into()),
                scope: Some("openid".into()),
                state: Some("xyz".into()),
                nonce: Some(nonce.clone()),
                code_challenge: Some(pkce_challenge(VERIFIER)),
                code_challenge_method: Some("S256".into()),
            })
            .await
            .unwrap();
        let step = oauth
            .login_password(&tx.handle, "alice", SecretString::from("correct horse"))
            .await
            .unwrap();
        assert!(matches!(step, LoginStep::MfaRequired { .. }));
        // A TOTP step is accepted once: the first round answers with the
        // next step's code (within the skew), the second with a recovery
        // code instead of waiting for another step.
        let answer = if round == 0 {
            MfaAnswer::Totp(totp(&key, 30))
        } else {
            MfaAnswer::Recovery(recovery[0].clone())
        };
        let LoginStep::Authorized(response) = oauth
            .login_second_factor(&tx.handle, &answer)
            .await
            .unwrap()
        else {
            panic!("expected a code");
        };
        let ExchangeOutcome::Tokens(t) = tokens
            .exchange(Grant::AuthorizationCode {
                code: response.code,
                redirect_uri: REDIRECT.into(),
                client_id: "spa".into(),
                code_verifier: Some(SecretString::from(VERIFIER)),
                client_secret: None,
            })
            .await
            .unwrap()
        else {
            panic!("expected tokens");
        };
        let jwks = tokens.jwks().await.unwrap();
        let id_token = t.id_token.expect("openid was asked");
        let claims = verify_independently(id_token.expose(), &jwks, theirs, "JWT", "spa").unwrap();
        assert_eq!(claims["sub"], alice.id.to_string());
        assert_eq!(claims["nonce"], nonce.as_str());
        assert_eq!(claims["azp"], "spa");
        assert_eq!(claims["sid"], t.session.to_string());
        assert_eq!(claims["acr"], keystead::token::id_token::ACR_MFA);
        let second = if round == 0 { "otp" } else { "recovery" };
        assert_eq!(claims["amr"], serde_json::json!(["pwd", second]));
        assert!(claims["auth_time"].as_i64().unwrap() <= claims["iat"].as_i64().unwrap());
        // The ID token is for the client only.
        assert!(verify_independently(id_token.expose(), &jwks, theirs, "JWT", "other").is_err());
        let access =
            verify_independently(t.access_token.expose(), &jwks, theirs, "at+jwt", "spa").unwrap();
        assert_eq!(access["client_id"], "spa");
        assert_eq!(access["scope"], "openid");
    }
}

//! An independent JWT implementation (`jsonwebtoken`) verifies keystead's
//! access tokens using nothing but the realm's JWKS document — for both
//! signing algorithms — and refuses them for another audience.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use keystead::Keystead;
use keystead::crypto::at_rest::StaticKeyProvider;
use keystead::crypto::jws::JwsAlgorithm;
use keystead::realm::RealmSettings;
use keystead::secret::SecretString;
use keystead::store::MemoryStore;
use keystead::token::AccessRequest;
use keystead::user::LoginOutcome;

const ISSUER: &str = "https://id.example/realms/acme";
const AUDIENCE: &str = "https://api.example";

/// Decode `token` with jsonwebtoken, finding its key in `jwks` by `kid`.
fn verify_independently(
    token: &str,
    jwks: &serde_json::Value,
    alg: Algorithm,
    audience: &str,
) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    let set: JwkSet = serde_json::from_value(jwks.clone()).expect("a JWKS jsonwebtoken reads");
    let header = decode_header(token)?;
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let kid = header.kid.expect("a kid");
    let jwk = set.find(&kid).expect("the kid is published");
    let key = DecodingKey::from_jwk(jwk)?;
    let mut validation = Validation::new(alg);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[ISSUER]);
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
    decode::<serde_json::Value>(token, &key, &validation).map(|data| data.claims)
}

#[tokio::test]
async fn jsonwebtoken_verifies_access_tokens_from_the_jwks_alone() {
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
    let users = ks.users(realm.id);
    let tokens = ks.tokens(realm.id);
    let alice = users
        .register("alice", None, SecretString::from("correct horse"))
        .await
        .unwrap();
    ks.oauth(realm.id)
        .create_client(keystead::oauth::NewClient::first_party(
            "web",
            AUDIENCE,
            vec!["read".into()],
        ))
        .await
        .unwrap();
    let request = AccessRequest::public("web", vec!["read".into()]);

    for (ours, theirs) in [
        (JwsAlgorithm::EdDsa, Algorithm::EdDSA),
        (JwsAlgorithm::Es256, Algorithm::ES256),
    ] {
        tokens
            .rotate_signing_key(ours, chrono::Duration::hours(1))
            .await
            .unwrap();
        let LoginOutcome::Authenticated(session) = users
            .authenticate("alice", SecretString::from("correct horse"))
            .await
            .unwrap()
        else {
            panic!("unexpected MFA");
        };
        let pair = tokens.issue(session.id, &request).await.unwrap();
        let token = pair.access_token.expose();
        let jwks = tokens.jwks().await.unwrap();
        let claims = verify_independently(token, &jwks, theirs, AUDIENCE).unwrap();
        assert_eq!(claims["sub"], alice.id.to_string());
        assert_eq!(claims["client_id"], "web");
        assert_eq!(claims["scope"], "read");
        assert_eq!(claims["sid"], session.id.to_string());
        assert!(verify_independently(token, &jwks, theirs, "https://other.example").is_err());
    }
}

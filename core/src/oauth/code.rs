//! Authorization codes: issued by a finished login transaction, redeemed
//! once at the token endpoint.
//!
//! A code (`ksac_…`, 256 random bits) is stored only as its SHA-256
//! digest, bound to the client, the redirect URI, the PKCE challenge, the
//! nonce and the session the login made, and lives
//! [`CODE_TTL_SECS`](super::CODE_TTL_SECS). Redemption
//! ([`Grant::AuthorizationCode`](crate::token::Grant::AuthorizationCode))
//! checks, in order: the client's authentication (`invalid_client`) and
//! that it may use the code flow (`unauthorized_client`); then, each an
//! `invalid_grant`: the code's shape and existence, that it is this
//! client's, not expired, the same `redirect_uri`, the PKCE verifier
//! (RFC 7636 §4.6: `BASE64URL(SHA256(verifier))` equals the challenge,
//! compared in constant time; a verifier for a code that had no challenge
//! is refused too, RFC 9700 §2.1.1), and that the session is still valid.
//!
//! The record is then rewritten as redeemed with compare-and-swap in the
//! batch that creates the refresh-token family, so of two redemptions —
//! concurrent or not — exactly one issues tokens. Every later presentation
//! of the code is reuse (RFC 6749 §4.1.2): the session the code was bound
//! to and the family it issued are deleted, which ends every access and
//! refresh token of that redemption at once, and the caller gets
//! `OAUTH_CODE_REUSED`. A failed PKCE or redirect check does not burn the
//! code: the caller who fails it is not the one who holds the verifier.

use super::client::GrantType;
use super::policy::{self, Ask, Ceiling};
use super::{Bearer, OAuth, OAuthError, SCOPE_OPENID, layout};
use crate::crypto::sha256;
use crate::error::Error;
use crate::id::{SessionId, TokenFamilyId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::secret::SecretString;
use crate::store::{Batch, Precondition, StorageError, record};
use crate::token::TokenResponse;
use crate::token::service::AccessGrant;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// Shortest PKCE verifier (RFC 7636 §4.1).
pub const MIN_VERIFIER_LEN: usize = 43;
/// Longest PKCE verifier (RFC 7636 §4.1).
pub const MAX_VERIFIER_LEN: usize = 128;

/// What a redemption issued, kept so a reuse can revoke it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Redemption {
    pub(crate) at: DateTime<Utc>,
    /// The refresh-token family, when the client gets refresh tokens.
    pub(crate) family: Option<TokenFamilyId>,
}

/// An authorization code as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredCode {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scope: Vec<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) code_challenge: Option<String>,
    pub(crate) session: SessionId,
    pub(crate) user: UserId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
    /// Set by the one redemption that issued tokens.
    pub(crate) redeemed: Option<Redemption>,
}

/// How an authorization code is stored. Never change a released variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CodeRecord {
    V1(StoredCode),
}

/// The S256 challenge of a PKCE verifier: `BASE64URL(SHA256(verifier))`
/// (RFC 7636 §4.2). Clients use it to build the authorization request.
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()))
}

/// A well-formed verifier: 43 to 128 characters of `A-Z a-z 0-9 - . _ ~`
/// (RFC 7636 §4.1).
pub fn is_valid_verifier(verifier: &str) -> bool {
    (MIN_VERIFIER_LEN..=MAX_VERIFIER_LEN).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The PKCE check of a redemption; see the [module docs](self).
fn check_pkce(challenge: Option<&str>, verifier: Option<&SecretString>) -> Result<(), OAuthError> {
    let grant = |reason| OAuthError::InvalidGrant { reason };
    match (challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(grant(
            "code_verifier sent for a code without code_challenge",
        )),
        (Some(_), None) => Err(grant("code_verifier is required")),
        (Some(challenge), Some(verifier)) => {
            let verifier = verifier.expose();
            let matches = is_valid_verifier(verifier)
                && bool::from(
                    pkce_challenge(verifier)
                        .as_bytes()
                        .ct_eq(challenge.as_bytes()),
                );
            if matches {
                Ok(())
            } else {
                Err(grant("code_verifier does not match code_challenge"))
            }
        }
    }
}

/// What the issuance policy grants a code's redemption now: the code's
/// scope was checked when it was asked for, but the client may have been
/// narrowed since (the client authenticated already).
fn granted_now(client: &super::Client, code: &StoredCode) -> Result<policy::Granted, OAuthError> {
    policy::decide(
        client,
        GrantType::AuthorizationCode,
        true,
        Ask {
            scope: &code.scope,
            resource: None,
        },
        Ceiling::default(),
    )
}

/// What [`OAuth::redeem_code`] needs from the token request.
pub(crate) struct Redeem<'a> {
    pub(crate) code: &'a SecretString,
    pub(crate) redirect_uri: &'a str,
    pub(crate) client_id: &'a str,
    pub(crate) code_verifier: Option<&'a SecretString>,
    pub(crate) client_secret: Option<&'a SecretString>,
}

impl OAuth {
    /// The client redeeming a code, admitted by the issuance policy before
    /// the code is looked at: who asks, and whether it may use the grant.
    async fn redeeming_client(&self, request: &Redeem<'_>) -> Result<(super::Client, u64), Error> {
        let loaded = self.load_client(request.client_id).await?;
        policy::admit(
            loaded.as_ref().map(|(c, _)| c),
            request.client_secret,
            GrantType::AuthorizationCode,
            Ask::default(),
            Ceiling::default(),
        )?;
        let (stored, version) = loaded.ok_or(OAuthError::InvalidClient)?;
        Ok((stored.client, version))
    }

    /// Redeem an authorization code; see the [module docs](self).
    pub(crate) async fn redeem_code(&self, request: Redeem<'_>) -> Result<TokenResponse, Error> {
        let realm = self.active_realm().await?;
        let (client, client_version) = self.redeeming_client(&request).await?;
        let grant = |reason| -> Error { OAuthError::InvalidGrant { reason }.into() };
        let digest = Bearer::Code
            .digest(request.code.expose())
            .ok_or_else(|| grant("not an authorization code"))?;
        let key = layout::code(self.realm, &digest);
        let now = self.now();
        let users = self.users();
        let tokens = self.tokens();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let stored = self
                .ctx
                .store
                .get(key.as_bytes())
                .await?
                .ok_or_else(|| grant("unknown authorization code"))?;
            let CodeRecord::V1(code) = record::decode(key.as_bytes(), &stored.value)?;
            if let Some(redemption) = code.redeemed {
                self.revoke_redemption(&code, redemption).await?;
                return Err(OAuthError::CodeReused.into());
            }
            if code.client_id != client.client_id {
                return Err(grant("code issued to another client"));
            }
            if now >= code.expires_at {
                return Err(grant("code expired"));
            }
            if code.redirect_uri != request.redirect_uri {
                return Err(grant("redirect_uri differs from the authorization request"));
            }
            check_pkce(code.code_challenge.as_deref(), request.code_verifier)?;
            let (session, session_version) = match users.live_session(code.session).await {
                Ok(found) => found,
                Err(Error::Auth(crate::user::AuthError::SessionNotFound)) => {
                    return Err(grant("the login session ended"));
                }
                Err(e) => return Err(e),
            };
            let granted = granted_now(&client, &code)?;
            let mut batch = Batch::new();
            let refresh = if client.allows(GrantType::RefreshToken) {
                Some(tokens.family_writes(
                    &mut batch,
                    &session.session,
                    &client.client_id,
                    &granted,
                    now,
                )?)
            } else {
                None
            };
            let redeemed = StoredCode {
                redeemed: Some(Redemption {
                    at: now,
                    family: refresh.as_ref().map(|(family, _)| family.id),
                }),
                ..code.clone()
            };
            batch
                .put(
                    key.clone(),
                    record::encode(key.as_bytes(), &CodeRecord::V1(redeemed))?,
                    Precondition::Version(stored.version),
                )?
                .check(
                    crate::user::keys::session(self.realm, code.session),
                    Precondition::Version(session_version),
                )?
                .check(
                    layout::client(self.realm, &client.client_id),
                    Precondition::Version(client_version),
                )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => {}
                Err(e @ StorageError::Conflict { .. }) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            // What the policy granted now (the client may have lost a
            // scope since the code was made); the audience is the client's.
            let code = StoredCode {
                scope: granted.scope,
                ..code
            };
            return self
                .sign_redeemed(&realm, &client, &session.session, code, refresh, now)
                .await;
        }
        Err(last.map_or_else(|| grant("lost every retry"), Error::from))
    }

    /// Sign the tokens of a redemption that committed: the access token
    /// (client's lifetime and audience) and, with `openid` in scope, the ID
    /// token.
    async fn sign_redeemed(
        &self,
        realm: &crate::realm::Realm,
        client: &super::Client,
        session: &crate::user::Session,
        code: StoredCode,
        refresh: Option<(crate::token::StoredFamily, SecretString)>,
        now: DateTime<Utc>,
    ) -> Result<TokenResponse, Error> {
        let tokens = self.tokens();
        let signed = AccessGrant {
            client_id: &client.client_id,
            audience: &client.audience,
            scope: &code.scope,
            lifetime_secs: client.access_token_secs,
            name: None,
            act: None,
            one_time: false,
        };
        let (access_token, expires_in) = tokens.sign_access(realm, session, &signed, now).await?;
        let id_token = if code.scope.iter().any(|s| s == SCOPE_OPENID) {
            let nonce = code.nonce.as_deref();
            let id =
                tokens.sign_id_token(realm, session, &client.client_id, nonce, expires_in, now);
            Some(id.await?)
        } else {
            None
        };
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: refresh.map(|(_, token)| token),
            scope: code.scope,
            session: code.session,
            id_token,
        })
    }

    /// Revoke what a redemption issued: its session (so every access token
    /// of it fails verification) and its refresh-token family, in one
    /// batch. Idempotent: a third presentation deletes nothing new.
    async fn revoke_redemption(
        &self,
        code: &StoredCode,
        redemption: Redemption,
    ) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch
            .delete(
                crate::user::keys::session(self.realm, code.session),
                Precondition::Any,
            )?
            .delete(
                crate::user::keys::user_session(self.realm, code.user, code.session),
                Precondition::Any,
            )?;
        if let Some(family) = redemption.family {
            batch.delete(
                crate::token::layout::family(self.realm, family),
                Precondition::Any,
            )?;
        }
        self.ctx.store.commit(batch).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B, from the copy in `testdata/vectors/`.
    #[test]
    fn rfc7636_appendix_b() {
        let vectors: serde_json::Value = serde_json::from_str(include_str!(
            "../../../testdata/vectors/rfc/rfc7636_pkce.json"
        ))
        .unwrap();
        let cases = vectors["cases"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let verifier = case["code_verifier"].as_str().unwrap();
            let challenge = case["code_challenge"].as_str().unwrap();
            let octets: Vec<u8> = case["verifier_octets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| u8::try_from(v.as_u64().unwrap()).unwrap())
                .collect();
            assert_eq!(URL_SAFE_NO_PAD.encode(&octets), verifier);
            assert!(is_valid_verifier(verifier));
            assert_eq!(pkce_challenge(verifier), challenge);
            let secret = SecretString::from(verifier);
            check_pkce(Some(challenge), Some(&secret)).unwrap();
        }
    }

    #[test]
    fn pkce_refusals() {
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = pkce_challenge(verifier);
        let wrong = SecretString::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXl");
        assert!(check_pkce(Some(&challenge), Some(&wrong)).is_err());
        assert!(check_pkce(Some(&challenge), None).is_err());
        assert!(check_pkce(None, Some(&wrong)).is_err(), "PKCE downgrade");
        check_pkce(None, None).unwrap();
        // `plain`: the challenge itself as verifier never matches S256.
        let plain = SecretString::from(challenge.as_str());
        assert!(check_pkce(Some(&challenge), Some(&plain)).is_err());
        for bad in ["short", &"a".repeat(129), &format!("{}+", "a".repeat(43))] {
            assert!(!is_valid_verifier(bad), "{bad}");
        }
    }

    #[test]
    fn code_record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = |last| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let record = CodeRecord::V1(StoredCode {
            client_id: "web".into(),
            redirect_uri: "https://a.example/cb".into(),
            scope: vec!["openid".into()],
            nonce: Some("n".into()),
            code_challenge: Some("c".into()),
            session: SessionId::from_bytes(id(3)).unwrap(),
            user: UserId::from_bytes(id(2)).unwrap(),
            created_at: at,
            expires_at: at + chrono::Duration::seconds(60),
            redeemed: Some(Redemption {
                at,
                family: Some(TokenFamilyId::from_bytes(id(6)).unwrap()),
            }),
        });
        crate::store::record::assert_golden(&record, GOLDEN_CODE_V1);
    }

    const GOLDEN_CODE_V1: &str = "0100037765621468747470733a2f2f612e6578616d706c652f636201066f70656e696401016e01016310018bcfe568007000800000000000000310018bcfe568007000800000000000000214323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31343a32305a0114323032332d31312d31345432323a31333a32305a0110018bcfe5680070008000000000000006";
}

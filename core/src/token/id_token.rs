//! OpenID Connect ID tokens (OIDC Core §2, §3.1.3.6).
//!
//! Issued with the token response of an authorization code whose request
//! had the `openid` scope: a compact JWS (`typ: JWT`) signed by the realm's
//! current signing key — the same key and algorithm as access tokens, so a
//! client verifies both from the one JWKS — with the claims of
//! [`IdTokenClaims`]. `aud` is the client, `nonce` the one of the
//! authorization request (absent when it had none), `auth_time` and `amr`
//! come from the login session, and `acr` says whether that login passed a
//! second factor ([`ACR_MFA`]) or not ([`ACR_SINGLE_FACTOR`]).

use super::service::Tokens;
use crate::crypto::CryptoError;
use crate::crypto::jws::{self, HeaderParams};
use crate::error::Error;
use crate::id::{SessionId, UserId};
use crate::realm::Realm;
use crate::secret::SecretString;
use crate::user::{AuthMethod, Session};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The `typ` header of ID tokens.
pub const ID_TOKEN_TYP: &str = "JWT";
/// `acr` of a login with one factor (password, magic link).
pub const ACR_SINGLE_FACTOR: &str = "urn:keystead:acr:single-factor";
/// `acr` of a login that passed a second factor (TOTP or recovery code).
pub const ACR_MFA: &str = "urn:keystead:acr:mfa";

/// The claims of an ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    /// Issuer: the realm's issuer.
    pub iss: String,
    /// Subject: the user id.
    pub sub: UserId,
    /// Audience: the client.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// When the user authenticated, seconds since the epoch.
    pub auth_time: i64,
    /// The authorization request's nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// How the user authenticated.
    pub amr: Vec<AuthMethod>,
    /// [`ACR_MFA`] or [`ACR_SINGLE_FACTOR`].
    pub acr: String,
    /// Authorized party: the client (OIDC Core §2).
    pub azp: String,
    /// The session the login made (OIDC Front-Channel Logout `sid`).
    pub sid: SessionId,
}

/// The `acr` of a login that used `methods`.
pub fn acr_of(methods: &[AuthMethod]) -> &'static str {
    if methods
        .iter()
        .any(|m| matches!(m, AuthMethod::Otp | AuthMethod::Recovery))
    {
        ACR_MFA
    } else {
        ACR_SINGLE_FACTOR
    }
}

impl Tokens {
    /// Sign an ID token for `session` and `client_id`, living
    /// `lifetime_secs` from `now`.
    pub(crate) async fn sign_id_token(
        &self,
        realm: &Realm,
        session: &Session,
        client_id: &str,
        nonce: Option<&str>,
        lifetime_secs: u32,
        now: DateTime<Utc>,
    ) -> Result<SecretString, Error> {
        let claims = IdTokenClaims {
            iss: super::service::issuer(realm),
            sub: session.user,
            aud: client_id.to_owned(),
            exp: now.timestamp() + i64::from(lifetime_secs),
            iat: now.timestamp(),
            auth_time: session.created_at.timestamp(),
            nonce: nonce.map(str::to_owned),
            amr: session.methods.clone(),
            acr: acr_of(&session.methods).to_owned(),
            azp: client_id.to_owned(),
            sid: session.id,
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| CryptoError::InvalidInput {
            field: "claims",
            reason: e.to_string(),
        })?;
        let key = self.signer().await?;
        let token = jws::sign(&key, &HeaderParams::with_typ(ID_TOKEN_TYP), &payload)?;
        Ok(SecretString::new(token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acr_follows_the_factors() {
        assert_eq!(acr_of(&[AuthMethod::Pwd]), ACR_SINGLE_FACTOR);
        assert_eq!(acr_of(&[AuthMethod::MagicLink]), ACR_SINGLE_FACTOR);
        assert_eq!(acr_of(&[AuthMethod::Pwd, AuthMethod::Otp]), ACR_MFA);
        assert_eq!(acr_of(&[AuthMethod::Pwd, AuthMethod::Recovery]), ACR_MFA);
    }
}

//! The client-credentials grant (RFC 6749 §4.4): service-to-service tokens.
//!
//! A confidential client allowed [`GrantType::ClientCredentials`]
//! authenticates with its secret and gets an access token for itself: a
//! JWS `at+jwt` signed with the realm's current key like user tokens, whose
//! `sub` is the `client_id` (RFC 9068 §2.2) and which has no session,
//! user, `amr` or refresh token. The scope is the requested values, each
//! allowed for the client, or all of the client's when none is asked;
//! `openid` is refused (there is no user to identify).
//!
//! Such a token is not a user's: [`Tokens::verify_access_token`](crate::token::Tokens::verify_access_token)
//! refuses it, [`OAuth::verify_client_token`] checks it — signature
//! against the realm's published keys, `typ`, `iss`, `aud`, time with the
//! same leeway, the exact claim set (a user's token never passes), that
//! the client still exists and may use the grant, and the realm's and the
//! client's expire-all marks. Deleting the client therefore ends its
//! tokens at once.

use super::client::GrantType;
use super::{OAuth, OAuthError};
use crate::crypto::jws::{self, HeaderParams};
use crate::crypto::{CryptoError, random_array};
use crate::error::Error;
use crate::secret::SecretString;
use crate::token::service::{check_jws_shape, issuer, jws_error};
use crate::token::{ACCESS_TOKEN_TYP, CLOCK_LEEWAY_SECS, TokenError};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};

/// The claims of a client-credentials access token (RFC 9068 §2.2 without
/// the user's claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientClaims {
    /// Issuer: the realm's issuer.
    pub iss: String,
    /// Subject: the client itself.
    pub sub: String,
    /// Audience: the client's audience.
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Unique token id (128 random bits, base64url).
    pub jti: String,
    /// The client (equal to `sub`).
    pub client_id: String,
    /// Space-separated scope values (may be empty).
    pub scope: String,
}

/// A client-credentials token response (no refresh token: the client can
/// always ask again).
#[derive(Debug)]
pub struct ClientToken {
    /// The access token (JWS).
    pub access_token: SecretString,
    /// Always `"Bearer"`.
    pub token_type: &'static str,
    /// Seconds until it expires.
    pub expires_in: u32,
    /// The granted scope.
    pub scope: Vec<String>,
}

impl OAuth {
    /// The client-credentials grant: authenticate the confidential client
    /// `client_id` with `client_secret` (`invalid_client`), check that it
    /// may use the grant (`unauthorized_client`), the scope
    /// (`invalid_scope`) and the `resource` (`invalid_target`, one it
    /// registered; its default audience when `None`) through the issuance
    /// policy, and sign its token; see the [module docs](self).
    pub async fn client_credentials(
        &self,
        client_id: &str,
        client_secret: &SecretString,
        scope: &[String],
        resource: Option<&str>,
    ) -> Result<ClientToken, Error> {
        let realm = self.active_realm().await?;
        let loaded = self.load_client(client_id).await?;
        let stored = loaded.as_ref().map(|(c, _)| c);
        let granted = super::policy::admit(
            stored,
            Some(client_secret),
            GrantType::ClientCredentials,
            super::policy::Ask { scope, resource },
            super::policy::Ceiling::default(),
        )?;
        let client = &stored.ok_or(OAuthError::InvalidClient)?.client;
        let now = self.now();
        let lifetime = client
            .access_token_secs
            .unwrap_or(realm.settings.tokens.access_secs);
        let jti = random_array::<16>()?;
        let claims = ClientClaims {
            iss: issuer(&realm),
            sub: client.client_id.clone(),
            aud: granted.audience,
            exp: now.timestamp() + i64::from(lifetime),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: URL_SAFE_NO_PAD.encode(jti.as_ref()),
            client_id: client.client_id.clone(),
            scope: granted.scope.join(" "),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| CryptoError::InvalidInput {
            field: "claims",
            reason: e.to_string(),
        })?;
        let key = self.tokens().signer().await?;
        let token = jws::sign(&key, &HeaderParams::with_typ(ACCESS_TOKEN_TYP), &payload)?;
        Ok(ClientToken {
            access_token: SecretString::new(token),
            token_type: "Bearer",
            expires_in: lifetime,
            scope: granted.scope,
        })
    }

    /// Verify a client-credentials token of this realm for `audience`; see
    /// the [module docs](self) for every check. Errors are
    /// [`TokenError`]s, as for user tokens.
    pub async fn verify_client_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<ClientClaims, Error> {
        self.client_token_claims(token, Some(audience)).await
    }

    /// [`verify_client_token`](Self::verify_client_token) for `audience`,
    /// or for any audience when `None` (introspection, which answers for
    /// every resource server).
    pub(crate) async fn client_token_claims(
        &self,
        token: &str,
        audience: Option<&str>,
    ) -> Result<ClientClaims, Error> {
        check_jws_shape(token)?;
        let realm = self.active_realm().await?;
        let now = self.now();
        let tokens = self.tokens();
        let keys = tokens.verification_keys(now).await?;
        let verified = jws::verify(token, &keys).map_err(jws_error)?;
        if !verified
            .header
            .typ
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP))
        {
            return Err(TokenError::WrongType.into());
        }
        let claims: ClientClaims =
            serde_json::from_slice(&verified.payload).map_err(|_| TokenError::Malformed {
                reason: "claims are not a client-credentials claim set",
            })?;
        if claims.sub != claims.client_id {
            return Err(TokenError::Malformed {
                reason: "sub is not the client",
            }
            .into());
        }
        if claims.iss != issuer(&realm) {
            return Err(TokenError::WrongIssuer.into());
        }
        if audience.is_some_and(|a| a != claims.aud) {
            return Err(TokenError::WrongAudience.into());
        }
        let now_secs = now.timestamp();
        if now_secs >= claims.exp.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(TokenError::Expired.into());
        }
        if claims.nbf > now_secs.saturating_add(CLOCK_LEEWAY_SECS)
            || claims.iat > now_secs.saturating_add(CLOCK_LEEWAY_SECS)
        {
            return Err(TokenError::NotYetValid.into());
        }
        let alive = self
            .load_client(&claims.client_id)
            .await?
            .is_some_and(|(c, _)| c.client.allows(GrantType::ClientCredentials));
        if !alive
            || tokens
                .expired_by_expire_all(Some(&claims.client_id), claims.iat, now)
                .await?
        {
            return Err(TokenError::Revoked.into());
        }
        Ok(claims)
    }
}

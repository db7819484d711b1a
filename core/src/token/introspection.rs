//! Introspection (RFC 7662): whether a token is active, and its claims.
//!
//! [`Tokens::introspect`] answers for any token of the realm — a user's
//! access or refresh token, or a client-credentials token — and gives
//! exactly `{"active":false}` for anything else (unknown, expired,
//! revoked, malformed, foreign), revealing nothing more.
//!
//! [`Tokens::introspect_as`] is the endpoint's rule (§2.1: the caller must
//! be authorized, so introspection can't be used to scan tokens): the
//! caller is either a confidential client that authenticates and has the
//! [`INTROSPECT_SCOPE`] among its registered scopes (a resource server
//! with its own credentials), or the bearer of a live token of this realm —
//! a user's or a client-credentials token — that carries that scope.

use super::service::{Tokens, check_jws_shape, issuer};
use super::{ClientAuth, TokenError};
use crate::crypto::CryptoError;
use crate::crypto::secret::TokenKind;
use crate::error::Error;
use crate::oauth::{ClientKind, OAuthError, policy};
use crate::realm::Realm;
use crate::secret::SecretString;
use chrono::Duration;
use serde_json::{Value, json};

/// The scope a caller of [`Tokens::introspect_as`] needs (registered for
/// a client that authenticates, or carried by a bearer token).
pub const INTROSPECT_SCOPE: &str = "introspect";

/// Who calls the introspection endpoint.
#[derive(Debug, Clone, Copy)]
pub enum Introspector<'a> {
    /// A client with its credentials (`client_secret_basic` or
    /// `client_secret_post`).
    Client(&'a ClientAuth),
    /// The bearer of an access token (a user's or a client-credentials
    /// token).
    Bearer(&'a str),
}

fn inactive() -> Value {
    json!({ "active": false })
}

fn to_json(claims: &impl serde::Serialize) -> Result<Value, Error> {
    let mut value = serde_json::to_value(claims).map_err(|e| CryptoError::InvalidInput {
        field: "claims",
        reason: e.to_string(),
    })?;
    if let Some(map) = value.as_object_mut() {
        map.insert("active".into(), true.into());
        map.insert("token_type".into(), "access_token".into());
    }
    Ok(value)
}

impl Tokens {
    /// Introspect `token` for `caller`, if it may (see the
    /// [module docs](self)): `invalid_client` for a client that is not
    /// registered or did not authenticate, `unauthorized_client` for one
    /// that is public or lacks the scope, `INSUFFICIENT_SCOPE` (or the
    /// token's own error) for a bearer without it.
    pub async fn introspect_as(
        &self,
        caller: Introspector<'_>,
        token: &SecretString,
    ) -> Result<Value, Error> {
        let has_scope = |scope: &str| scope.split(' ').any(|s| s == INTROSPECT_SCOPE);
        match caller {
            Introspector::Client(auth) => {
                let loaded = self.oauth().load_client(&auth.client_id).await?;
                let stored =
                    policy::identify(loaded.as_ref().map(|(c, _)| c), auth.secret.as_ref())?;
                let client = &stored.client;
                if client.kind != ClientKind::Confidential
                    || !client.scopes.iter().any(|s| s == INTROSPECT_SCOPE)
                {
                    return Err(OAuthError::UnauthorizedClient.into());
                }
            }
            Introspector::Bearer(bearer) => {
                let realm = self.active_realm().await?;
                let scope = match self.verify_with(&realm, bearer, None).await {
                    Ok(claims) => claims.scope,
                    Err(Error::Token(_)) => {
                        self.oauth().client_token_claims(bearer, None).await?.scope
                    }
                    Err(e) => return Err(e),
                };
                if !has_scope(&scope) {
                    return Err(TokenError::InsufficientScope.into());
                }
            }
        }
        self.introspect(token).await
    }

    /// Token introspection (RFC 7662 §2.2) for the embedder, with no caller
    /// to authorize: see the [module docs](self).
    pub async fn introspect(&self, token: &SecretString) -> Result<Value, Error> {
        let token = token.expose();
        let realm = self.active_realm().await?;
        if token.starts_with(TokenKind::Refresh.prefix()) {
            return self.introspect_refresh(&realm, token).await;
        }
        if check_jws_shape(token).is_err() {
            return Ok(inactive());
        }
        match self.verify_with(&realm, token, None).await {
            Ok(claims) => return to_json(&claims),
            Err(Error::Token(_)) => {}
            Err(e) => return Err(e),
        }
        // Not a user's token: perhaps a client's own.
        match self.oauth().client_token_claims(token, None).await {
            Ok(claims) => to_json(&claims),
            Err(Error::Token(_)) => Ok(inactive()),
            Err(e) => Err(e),
        }
    }

    async fn introspect_refresh(&self, realm: &Realm, token: &str) -> Result<Value, Error> {
        let Some(family) = self.current_family(token).await? else {
            return Ok(inactive());
        };
        let now = self.now();
        let live = !Self::family_expired(realm, &family, now)
            && !self
                .expired_by_expire_all(Some(&family.client_id), family.issued_at.timestamp(), now)
                .await?
            && self.users().live_session(family.session).await.is_ok();
        if !live {
            return Ok(inactive());
        }
        let t = realm.settings.tokens;
        let exp = (family.created_at + Duration::seconds(i64::from(t.refresh_absolute_secs)))
            .min(family.issued_at + Duration::seconds(i64::from(t.refresh_idle_secs)));
        Ok(json!({
            "active": true,
            "token_type": "refresh_token",
            "iss": issuer(realm),
            "sub": family.user.to_string(),
            "aud": family.audience,
            "client_id": family.client_id,
            "scope": family.scope.join(" "),
            "sid": family.session.to_string(),
            "iat": family.issued_at.timestamp(),
            "exp": exp.timestamp(),
        }))
    }
}

//! Revocation (RFC 7009): a client ends a token it was issued.
//!
//! The client authenticates first — a confidential client with its
//! secret, a public client by its `client_id` — and a failure is
//! `invalid_client` (§2.1, RFC 6749 §5.2). Then a token issued to *another*
//! client, like an unknown, malformed, expired or foreign one, is answered
//! as a success that changes nothing (§2.2): a client can neither revoke
//! nor probe other clients' tokens.

use super::ClientAuth;
use super::service::{Tokens, check_jws_shape};
use crate::crypto::secret::TokenKind;
use crate::error::Error;
use crate::oauth::policy;
use crate::secret::SecretString;

impl Tokens {
    /// Revoke `token` on behalf of `client` (see the [module docs](self)):
    /// a refresh token ends its family and its session; an access token
    /// ends its session. Errors: `invalid_client` for a client that is not
    /// registered or did not authenticate; nothing else about the token.
    pub async fn revoke(&self, token: &SecretString, client: &ClientAuth) -> Result<(), Error> {
        let realm = self.active_realm().await?;
        let loaded = self.oauth().load_client(&client.client_id).await?;
        policy::identify(loaded.as_ref().map(|(c, _)| c), client.secret.as_ref())?;
        let token = token.expose();
        if token.starts_with(TokenKind::Refresh.prefix()) {
            if let Some(family) = self.current_family(token).await?
                && family.client_id == client.client_id
            {
                self.kill_family(&family, true).await?;
            }
            return Ok(());
        }
        if check_jws_shape(token).is_err() {
            return Ok(());
        }
        match self.verify_with(&realm, token, None).await {
            Ok(claims) if claims.client_id == client.client_id => self.logout(claims.sid).await,
            Ok(_) | Err(Error::Token(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

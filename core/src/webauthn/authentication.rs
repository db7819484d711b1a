//! The authentication ceremony: request options, then verification of an
//! assertion — as passwordless login or as the second factor of a login.

use super::ceremony::{Ceremony, CeremonyKind};
use super::credential::{CredentialId, StoredCredential, WebauthnCredential};
use super::registration::{from_json, to_json};
use super::response::parse_authentication_response;
use super::service::Webauthn;
use super::{CEREMONY_TTL_SECS, WebauthnError, keys};
use crate::error::Error;
use crate::id::{ChallengeId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::store::{Batch, Precondition, StorageError};
use crate::user::{AuthMethod, Session, UserStatus};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use webauthn_rs::prelude::{
    AuthenticationResult, Credential, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PublicKeyCredential, WebauthnError as RsError,
};

/// What [`Webauthn::request_options`] returns: hand `options` to
/// `navigator.credentials.get()` and keep `challenge_id` for
/// [`Webauthn::authenticate`] or [`Webauthn::authenticate_for_user`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RequestOptions {
    /// Names the stored ceremony; single use.
    pub challenge_id: ChallengeId,
    /// When the ceremony stops being accepted.
    pub expires_at: DateTime<Utc>,
    /// `{"publicKey": PublicKeyCredentialRequestOptions}` as JSON
    /// (base64url binary fields); discoverable requests also carry
    /// `"mediation": "conditional"`.
    pub options: serde_json::Value,
}

/// The `amr` (RFC 8176) value a passkey assertion proves; see the
/// [module docs](super) for the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasskeyAmr {
    /// Proof of possession of a hardware-bound key (not backup eligible).
    Hwk,
    /// Proof of possession of a software-protected key (backup eligible:
    /// synced or exportable).
    Swk,
}

impl PasskeyAmr {
    /// The key's `amr` from its BE (backup eligible) flag.
    pub fn from_backup_eligible(backup_eligible: bool) -> Self {
        if backup_eligible {
            PasskeyAmr::Swk
        } else {
            PasskeyAmr::Hwk
        }
    }

    /// The RFC 8176 wire name: `hwk` or `swk`.
    pub fn as_str(self) -> &'static str {
        match self {
            PasskeyAmr::Hwk => "hwk",
            PasskeyAmr::Swk => "swk",
        }
    }
}

/// A verified assertion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebauthnAssertion {
    /// Who authenticated.
    pub user: UserId,
    /// The credential used, with its new sign count and last use.
    pub credential: WebauthnCredential,
    /// What the assertion proves, for the session's `amr`.
    pub amr: PasskeyAmr,
    /// Whether the authenticator verified the user (always true today:
    /// every ceremony requires it).
    pub user_verified: bool,
}

/// Why an assertion is being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// Passwordless login: needs the realm's policy.
    Passwordless,
    /// The second factor of this user, who passed the password.
    SecondFactor(UserId),
}

/// The sign-count rule (WebAuthn §7.2 step 21): when either count is
/// non-zero, the presented one must exceed the stored one.
pub(crate) fn sign_count_regressed(stored: u32, presented: u32) -> bool {
    (stored > 0 || presented > 0) && presented <= stored
}

/// The webauthn-rs passkey of a stored credential, with the counter and
/// flags of the record (the authoritative copy).
fn passkey_of(key: &[u8], stored: &StoredCredential) -> Result<Passkey, Error> {
    let passkey: Passkey = from_json(key, &stored.passkey)?;
    let mut cred: Credential = passkey.into();
    cred.counter = stored.credential.sign_count;
    cred.backup_eligible = stored.credential.backup_eligible;
    cred.backup_state = stored.credential.backup_state;
    Ok(cred.into())
}

/// What one verification attempt loaded.
struct Loaded {
    ceremony: Ceremony,
    ceremony_version: u64,
    owner: UserId,
    stored: StoredCredential,
    credential_version: u64,
    user_version: u64,
}

/// What verifying an assertion against the loaded state found.
enum Verdict {
    Valid(AuthenticationResult),
    /// A valid signature whose counter did not advance.
    Regressed,
}

impl Webauthn {
    /// Start an authentication. With `Some(user)`: the options list that
    /// user's usable (unflagged) credentials — for the second factor after
    /// a password, or username-first passwordless login. With `None`: a
    /// discoverable (usernameless) request, only where the realm allows
    /// passwordless login. Stores the ceremony for [`CEREMONY_TTL_SECS`].
    /// `WEBAUTHN_NOT_CONFIGURED`, `WEBAUTHN_PASSWORDLESS_NOT_ALLOWED`,
    /// `USER_NOT_FOUND`, `USER_DISABLED`, `WEBAUTHN_NO_CREDENTIALS`.
    pub async fn request_options(&self, user: Option<UserId>) -> Result<RequestOptions, Error> {
        let (rp_config, rp) = self.relying_party_in_use().await?;
        let now = self.now();
        let id = ChallengeId::generate(now);
        let key = keys::ceremony(self.realm(), id);
        let (options, kind) = if let Some(user) = user {
            self.active_user(user).await?;
            let mut passkeys = Vec::new();
            for (stored, _) in self.user_credentials(user).await? {
                if stored.credential.flagged_at.is_none() {
                    let k = keys::credential(self.realm(), user, &stored.credential.id.digest());
                    passkeys.push(passkey_of(k.as_bytes(), &stored)?);
                }
            }
            if passkeys.is_empty() {
                return Err(WebauthnError::NoCredentials.into());
            }
            let (options, state) = rp
                .start_passkey_authentication(&passkeys)
                .map_err(|e| StorageError::backend(format!("request options: {e}")))?;
            let state = to_json(key.as_bytes(), &state)?;
            (options, CeremonyKind::Authentication { user, state })
        } else {
            if !rp_config.passwordless {
                return Err(WebauthnError::PasswordlessNotAllowed.into());
            }
            let (options, state) = rp
                .start_discoverable_authentication()
                .map_err(|e| StorageError::backend(format!("request options: {e}")))?;
            let state = to_json(key.as_bytes(), &state)?;
            (options, CeremonyKind::Discoverable { state })
        };
        let ceremony = Ceremony {
            id,
            kind,
            created_at: now,
            expires_at: now + chrono::Duration::seconds(CEREMONY_TTL_SECS),
        };
        self.insert_ceremony(&ceremony).await?;
        Ok(RequestOptions {
            challenge_id: id,
            expires_at: ceremony.expires_at,
            options: serde_json::to_value(&options)
                .map_err(|e| StorageError::backend(format!("request options: {e}")))?,
        })
    }

    /// Passwordless login: verify the browser's assertion `response`
    /// (JSON) for the ceremony `challenge`, whoever it names. Needs the
    /// realm's [`RelyingParty::passwordless`](super::RelyingParty::passwordless)
    /// (`WEBAUTHN_PASSWORDLESS_NOT_ALLOWED`). On success, in one batch: the
    /// ceremony is deleted (`Version`: of two calls with one challenge
    /// exactly one succeeds), the credential's sign count, backup state and
    /// last use are updated (`Version`), and the owner's record is checked
    /// (`Version`). The embedder opens the session for the returned user
    /// with `amr` [`WebauthnAssertion::amr`].
    pub async fn authenticate(
        &self,
        challenge: ChallengeId,
        response: &str,
    ) -> Result<WebauthnAssertion, Error> {
        self.finish(challenge, response, Purpose::Passwordless)
            .await
    }

    /// Passwordless login that opens the session: verify like
    /// [`authenticate`](Self::authenticate) and, in the same batch, open a
    /// session for the credential's owner with the one method the
    /// assertion proves (`hwk` or `swk`, [`WebauthnAssertion::amr`]) and
    /// check the owner's record (`Version`). So the ceremony is spent if
    /// and only if a session exists — an embedder never holds a verified
    /// assertion it failed to turn into a login. Issue tokens for the
    /// session with [`Tokens::issue`](crate::token::Tokens::issue). Errors
    /// are those of [`authenticate`](Self::authenticate).
    pub async fn login(&self, challenge: ChallengeId, response: &str) -> Result<Session, Error> {
        let response = parse_authentication_response(response)?;
        let now = self.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let mut batch = Batch::new();
            let assertion = self
                .assertion_writes(
                    &mut batch,
                    challenge,
                    &response,
                    Purpose::Passwordless,
                    false,
                    now,
                )
                .await?;
            // The owner as the session records it (its session epoch); the
            // version check below makes a concurrent disable, password
            // change or deletion retry, and the retry then refuses.
            let (owner, version) = match self.users.load_user(assertion.user).await? {
                Some((u, v)) if u.user.status == UserStatus::Active => (u, v),
                _ => return Err(WebauthnError::UnknownCredential.into()),
            };
            batch.check(
                crate::user::keys::user(self.realm(), owner.user.id),
                Precondition::Version(version),
            )?;
            let method = match assertion.amr {
                PasskeyAmr::Hwk => AuthMethod::Hwk,
                PasskeyAmr::Swk => AuthMethod::Swk,
            };
            let session =
                self.users
                    .add_session(&mut batch, &owner, vec![method], Vec::new(), None, now)?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(session),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| WebauthnError::ChallengeNotFound.into(), Error::from))
    }

    /// The second factor of a login: like [`authenticate`](Self::authenticate),
    /// but the credential must belong to `user` (who already passed the
    /// password), and the realm's passwordless policy does not apply. This
    /// is what the login's MFA challenge calls.
    pub async fn authenticate_for_user(
        &self,
        user: UserId,
        challenge: ChallengeId,
        response: &str,
    ) -> Result<WebauthnAssertion, Error> {
        self.finish(challenge, response, Purpose::SecondFactor(user))
            .await
    }

    /// Everything one verification attempt needs, with the versions its
    /// batch is conditional on; the typed refusals that need no signature.
    async fn load(
        &self,
        challenge: ChallengeId,
        digest: &[u8; 32],
        purpose: Purpose,
        now: DateTime<Utc>,
    ) -> Result<Loaded, Error> {
        let (ceremony, ceremony_version) = self
            .load_ceremony(challenge)
            .await?
            .ok_or(WebauthnError::ChallengeNotFound)?;
        let bound = match &ceremony.kind {
            CeremonyKind::Authentication { user, .. } => Some(*user),
            CeremonyKind::Discoverable { .. } => None,
            CeremonyKind::Registration { .. } => {
                return Err(WebauthnError::ChallengeNotFound.into());
            }
        };
        if let (Purpose::SecondFactor(user), Some(b)) = (purpose, bound)
            && b != user
        {
            return Err(WebauthnError::ChallengeNotFound.into());
        }
        if ceremony.is_expired(now) {
            return Err(WebauthnError::ChallengeExpired.into());
        }
        // Whose credential is it? Unknown ids, other realms' (not in this
        // realm's index) and other users' all end here alike.
        let (owner, _) = self
            .indexed_owner(digest)
            .await?
            .ok_or(WebauthnError::UnknownCredential)?;
        let expected = match purpose {
            Purpose::SecondFactor(user) => Some(user),
            Purpose::Passwordless => bound,
        };
        if bound.is_some_and(|b| b != owner) || expected.is_some_and(|e| e != owner) {
            return Err(WebauthnError::UnknownCredential.into());
        }
        let (stored, credential_version) = self
            .load_credential(owner, digest)
            .await?
            .ok_or(WebauthnError::UnknownCredential)?;
        if stored.credential.flagged_at.is_some() {
            return Err(WebauthnError::CredentialFlagged.into());
        }
        let user_version = match self.users.load_user(owner).await? {
            Some((u, v)) if u.user.status == UserStatus::Active => v,
            _ => return Err(WebauthnError::UnknownCredential.into()),
        };
        Ok(Loaded {
            ceremony,
            ceremony_version,
            owner,
            stored,
            credential_version,
            user_version,
        })
    }

    /// Parse, verify and commit, retrying (bounded) when a concurrent
    /// commit moved a record it depends on.
    async fn finish(
        &self,
        challenge: ChallengeId,
        response: &str,
        purpose: Purpose,
    ) -> Result<WebauthnAssertion, Error> {
        let response = parse_authentication_response(response)?;
        let now = self.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let mut batch = Batch::new();
            let assertion = self
                .assertion_writes(&mut batch, challenge, &response, purpose, true, now)
                .await?;
            match self.ctx().store.commit(batch).await {
                Ok(_) => return Ok(assertion),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| WebauthnError::ChallengeNotFound.into(), Error::from))
    }

    /// Verify the assertion `response` for the ceremony `challenge` and add
    /// its writes to the caller's `batch`: the ceremony's deletion
    /// (`Version`, single use), the credential's new sign count, backup
    /// state and last use (`Version`), and — with `check_user` — a
    /// `Version` check of the owner's record. The caller commits the batch
    /// and, on a conflict, builds a new one and calls this again.
    ///
    /// This is the hook for the login's MFA challenge: it calls it with
    /// [`Purpose::SecondFactor`] and `check_user: false` (its own batch
    /// checks the user record already), so consuming the WebAuthn ceremony,
    /// consuming the login challenge and opening the session are one
    /// atomic commit.
    ///
    /// A sign-count regression is the one outcome committed here, in its
    /// own batch (the flag must persist although the caller fails):
    /// `WEBAUTHN_SIGN_COUNT_REGRESSION`, and nothing is added to `batch`.
    pub(crate) async fn assertion_writes(
        &self,
        batch: &mut Batch,
        challenge: ChallengeId,
        response: &PublicKeyCredential,
        purpose: Purpose,
        check_user: bool,
        now: DateTime<Utc>,
    ) -> Result<WebauthnAssertion, Error> {
        let (rp_config, rp) = self.relying_party_in_use().await?;
        if purpose == Purpose::Passwordless && !rp_config.passwordless {
            return Err(WebauthnError::PasswordlessNotAllowed.into());
        }
        let digest = CredentialId::from_bytes(response.raw_id.as_ref().to_vec())?.digest();
        let ceremony_key = keys::ceremony(self.realm(), challenge);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let Loaded {
                ceremony,
                ceremony_version,
                owner,
                mut stored,
                credential_version,
                user_version,
            } = self.load(challenge, &digest, purpose, now).await?;
            let credential_key = keys::credential(self.realm(), owner, &digest);
            let mut passkey = passkey_of(credential_key.as_bytes(), &stored)?;
            let verdict = verify(
                &rp,
                &ceremony_key,
                &ceremony.kind,
                response,
                &passkey,
                owner,
                &stored,
            )?;
            let Verdict::Valid(result) = verdict else {
                // Flag the credential and spend the ceremony, now.
                stored.credential.flagged_at = Some(now);
                let mut flag = Batch::new();
                flag.delete(
                    ceremony_key.clone(),
                    Precondition::Version(ceremony_version),
                )?;
                self.put_credential(
                    &mut flag,
                    &stored,
                    Precondition::Version(credential_version),
                )?;
                match self.ctx().store.commit(flag).await {
                    Ok(_) => return Err(WebauthnError::SignCountRegression.into()),
                    Err(e @ StorageError::Conflict { .. }) => {
                        last = Some(e);
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            passkey.update_credential(&result);
            let c = &mut stored.credential;
            c.sign_count = result.counter();
            c.backup_state = result.backup_state();
            c.backup_eligible = c.backup_eligible || result.backup_eligible();
            c.last_used_at = Some(now);
            stored.passkey = to_json(credential_key.as_bytes(), &passkey)?;
            batch.delete(ceremony_key, Precondition::Version(ceremony_version))?;
            self.put_credential(batch, &stored, Precondition::Version(credential_version))?;
            if check_user {
                batch.check(
                    crate::user::keys::user(self.realm(), owner),
                    Precondition::Version(user_version),
                )?;
            }
            return Ok(WebauthnAssertion {
                user: owner,
                amr: PasskeyAmr::from_backup_eligible(stored.credential.backup_eligible),
                credential: stored.credential,
                user_verified: result.user_verified(),
            });
        }
        Err(last.map_or_else(|| WebauthnError::ChallengeNotFound.into(), Error::from))
    }
}

/// Verify `response` against the ceremony state and the owner's
/// current credential; any failure but a counter regression is a typed
/// error here, before anything is written.
fn verify(
    rp: &webauthn_rs::Webauthn,
    ceremony_key: &crate::store::key::Key,
    kind: &CeremonyKind,
    response: &PublicKeyCredential,
    passkey: &Passkey,
    owner: UserId,
    stored: &StoredCredential,
) -> Result<Verdict, Error> {
    let result = match kind {
        CeremonyKind::Authentication { state, .. } => {
            let state: PasskeyAuthentication = from_json(ceremony_key.as_bytes(), state)?;
            rp.finish_passkey_authentication(response, &state)
        }
        CeremonyKind::Discoverable { state } => {
            let state: DiscoverableAuthentication = from_json(ceremony_key.as_bytes(), state)?;
            // The user handle must name the credential's owner.
            let (handle, _) = rp
                .identify_discoverable_authentication(response)
                .map_err(|e| WebauthnError::from_rs(&e))?;
            if handle.as_bytes() != &owner.to_bytes() {
                return Err(WebauthnError::UnknownCredential.into());
            }
            rp.finish_discoverable_authentication(
                response,
                state,
                &[DiscoverableKey::from(passkey)],
            )
        }
        CeremonyKind::Registration { .. } => {
            return Err(WebauthnError::ChallengeNotFound.into());
        }
    };
    match result {
        // webauthn-rs compared with the counter the ceremony started
        // with; the stored one may have moved on since.
        Ok(r) if sign_count_regressed(stored.credential.sign_count, r.counter()) => {
            Ok(Verdict::Regressed)
        }
        Ok(r) => Ok(Verdict::Valid(r)),
        Err(RsError::CredentialPossibleCompromise) => Ok(Verdict::Regressed),
        Err(e) => Err(WebauthnError::from_rs(&e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_follows_backup_eligibility() {
        assert_eq!(PasskeyAmr::from_backup_eligible(false), PasskeyAmr::Hwk);
        assert_eq!(PasskeyAmr::from_backup_eligible(true), PasskeyAmr::Swk);
        assert_eq!(PasskeyAmr::Hwk.as_str(), "hwk");
        assert_eq!(PasskeyAmr::Swk.as_str(), "swk");
        assert_eq!(serde_json::to_string(&PasskeyAmr::Swk).unwrap(), "\"swk\"");
    }

    #[test]
    fn sign_count_rule() {
        // Authenticators without a counter always send 0.
        assert!(!sign_count_regressed(0, 0));
        assert!(!sign_count_regressed(0, 1));
        assert!(!sign_count_regressed(5, 6));
        assert!(sign_count_regressed(5, 5));
        assert!(sign_count_regressed(5, 4));
        assert!(sign_count_regressed(5, 0));
    }
}

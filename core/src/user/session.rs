//! Sessions: what a successful login produces.
//!
//! A session records who logged in, in which realm, when, and with which
//! methods. It stays valid while its record exists, the user exists and is
//! active, the user's session epoch is the one the session was made in
//! (password changes, `revoke_all_sessions` and `disable` move it), and —
//! for sessions opened with an application token — that token still exists.

use super::service::Users;
use super::{
    AppTokenId, AuthError, SessionRecord, StoredSession, StoredUser, UserRecord, UserStatus, keys,
    last_id_bytes,
};
use crate::error::Error;
use crate::id::{RealmId, SessionId, UserId};
use crate::keystead::MAX_RETRIES;
use crate::page::{Page, check_limit};
use crate::store::{Batch, Precondition, StorageError, record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a session's validity needs of its user's record: the cached view
/// (see [`crate::store::decoded`]), so verifying a token does not decode
/// the whole user (password hash, names) each time.
struct SessionOwner {
    id: UserId,
    active: bool,
    session_epoch: u64,
}

impl SessionOwner {
    fn of(user: &super::StoredUser) -> Self {
        Self {
            id: user.user.id,
            active: user.user.status == UserStatus::Active,
            session_epoch: user.session_epoch,
        }
    }
}

/// How a user proved who they are (the `amr` of tokens issued later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AuthMethod {
    /// Password.
    Pwd,
    /// One-time password (TOTP).
    Otp,
    /// Recovery code.
    Recovery,
    /// Magic link.
    MagicLink,
    /// Application token.
    AppToken,
    /// A hardware-bound WebAuthn credential (RFC 8176 `hwk`).
    Hwk,
    /// A software or synced WebAuthn credential — a passkey that may be
    /// backed up (RFC 8176 `swk`).
    Swk,
}

impl AuthMethod {
    /// The method's wire name: `pwd`, `otp`, `recovery`, `magic_link`,
    /// `app_token`, `hwk`, `swk`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::Pwd => "pwd",
            AuthMethod::Otp => "otp",
            AuthMethod::Recovery => "recovery",
            AuthMethod::MagicLink => "magic_link",
            AuthMethod::AppToken => "app_token",
            AuthMethod::Hwk => "hwk",
            AuthMethod::Swk => "swk",
        }
    }
}

/// A factor proved in a session, and when: what [step-up](super::step_up)
/// judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Proof {
    pub(crate) method: AuthMethod,
    pub(crate) at: DateTime<Utc>,
}

impl Proof {
    /// The proofs of a login: each of its methods, at the session's start.
    pub(crate) fn at_login(session: &Session) -> Vec<Proof> {
        session
            .methods
            .iter()
            .map(|&method| Proof {
                method,
                at: session.created_at,
            })
            .collect()
    }
}

/// An authenticated session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Stable id.
    pub id: SessionId,
    /// Who is logged in.
    pub user: UserId,
    /// The realm of the user.
    pub realm: RealmId,
    /// When the login happened.
    pub created_at: DateTime<Utc>,
    /// When the session was last used (see [`Users::touch_session`]).
    pub last_seen: DateTime<Utc>,
    /// The methods used to log in, in order.
    pub methods: Vec<AuthMethod>,
    /// For application-token sessions, the scopes of the token; empty
    /// otherwise.
    pub scopes: Vec<String>,
}

impl Users {
    /// Add a new session for `user` to `batch` (session record with
    /// `Absent`, per-user index entry).
    pub(crate) fn add_session(
        &self,
        batch: &mut Batch,
        user: &StoredUser,
        methods: Vec<AuthMethod>,
        scopes: Vec<String>,
        app_token: Option<AppTokenId>,
        now: DateTime<Utc>,
    ) -> Result<Session, Error> {
        let session = Session {
            id: SessionId::generate(now),
            user: user.user.id,
            realm: self.realm,
            created_at: now,
            last_seen: now,
            methods,
            scopes,
        };
        let key = keys::session(self.realm, session.id);
        let stored = SessionRecord::V2(StoredSession {
            proofs: Proof::at_login(&session),
            session: session.clone(),
            epoch: user.session_epoch,
            app_token,
        });
        batch
            .put(
                key.clone(),
                record::encode(key.as_bytes(), &stored)?,
                Precondition::Absent,
            )?
            .put(
                keys::user_session(self.realm, session.user, session.id),
                Vec::new(),
                Precondition::Absent,
            )?;
        Ok(session)
    }

    /// Load a session record that is still valid, with its version.
    pub(crate) async fn live_session(&self, id: SessionId) -> Result<(StoredSession, u64), Error> {
        let key = keys::session(self.realm, id);
        let found = self.decode_session(id, self.ctx.store.get(key.as_bytes()).await?)?;
        let user_key = keys::user(self.realm, found.0.session.user);
        let user = self.ctx.store.get(user_key.as_bytes()).await?;
        self.session_alive(found, user).await
    }

    /// The session record `id` read into `slot`; `SESSION_NOT_FOUND` if
    /// absent.
    pub(crate) fn decode_session(
        &self,
        id: SessionId,
        slot: Option<crate::store::Versioned>,
    ) -> Result<(StoredSession, u64), Error> {
        let (session, version) = self.decode_shared_session(id, slot)?;
        Ok((StoredSession::clone(&session), version))
    }

    /// [`decode_session`](Self::decode_session) without the copy: the
    /// cached record itself, for callers that only check it.
    pub(crate) fn decode_shared_session(
        &self,
        id: SessionId,
        slot: Option<crate::store::Versioned>,
    ) -> Result<(Arc<StoredSession>, u64), Error> {
        let stored = slot.ok_or(AuthError::SessionNotFound)?;
        let key = keys::session(self.realm, id);
        let session = self
            .ctx
            .records
            .get_or_decode(key.as_bytes(), &stored.value, |bytes| {
                record::decode::<SessionRecord>(key.as_bytes(), bytes)
                    .map(SessionRecord::into_session)
            })?;
        Ok((session, stored.version))
    }

    /// `session` if it is still valid given its user's record `user` (read
    /// by the caller, possibly together with the session by `get_many`);
    /// see the [module docs](self). Otherwise `SESSION_NOT_FOUND`; a user
    /// record of another user never validates a session.
    pub(crate) async fn session_alive(
        &self,
        (session, version): (StoredSession, u64),
        user: Option<crate::store::Versioned>,
    ) -> Result<(StoredSession, u64), Error> {
        self.check_session_alive(&session, user).await?;
        Ok((session, version))
    }

    /// The check of [`session_alive`](Self::session_alive), on a borrowed
    /// session.
    pub(crate) async fn check_session_alive(
        &self,
        session: &StoredSession,
        user: Option<crate::store::Versioned>,
    ) -> Result<(), Error> {
        let owner = session.session.user;
        let alive = match user {
            None => false,
            Some(slot) => {
                let user_key = keys::user(self.realm, owner);
                let user =
                    self.ctx
                        .records
                        .get_or_decode(user_key.as_bytes(), &slot.value, |bytes| {
                            record::decode::<UserRecord>(user_key.as_bytes(), bytes)
                                .map(|UserRecord::V1(u)| SessionOwner::of(&u))
                        })?;
                user.id == owner && user.active && user.session_epoch == session.epoch
            }
        };
        if !alive {
            return Err(AuthError::SessionNotFound.into());
        }
        if let Some(token) = session.app_token {
            let token_key = keys::user_app_token(self.realm, owner, token);
            if self.ctx.store.get(token_key.as_bytes()).await?.is_none() {
                return Err(AuthError::SessionNotFound.into());
            }
        }
        Ok(())
    }

    /// A valid session of this realm, or `SESSION_NOT_FOUND`.
    pub async fn get_session(&self, id: SessionId) -> Result<Session, Error> {
        self.active_realm().await?;
        Ok(self.live_session(id).await?.0.session)
    }

    /// Record that a session was used now (`last_seen`).
    pub async fn touch_session(&self, id: SessionId) -> Result<Session, Error> {
        self.active_realm().await?;
        let key = keys::session(self.realm, id);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut stored, version) = self.live_session(id).await?;
            stored.session.last_seen = self.now();
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &SessionRecord::V2(stored.clone()))?,
                Precondition::Version(version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(stored.session),
                Err(e @ StorageError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| AuthError::SessionNotFound.into(), Error::from))
    }

    /// A user's valid sessions in creation order, `limit` (1–1000) index
    /// entries at a time (ended sessions not yet swept are skipped, so a
    /// page may hold fewer items).
    pub async fn list_sessions(
        &self,
        user: UserId,
        after: Option<SessionId>,
        limit: usize,
    ) -> Result<Page<Session, SessionId>, Error> {
        self.active_realm().await?;
        let limit = check_limit(limit)?;
        let prefix = keys::user_sessions(self.realm, user);
        let cursor = after.map(|id| keys::user_session(self.realm, user, id).into_bytes());
        let rows = self
            .ctx
            .store
            .scan(prefix.as_bytes(), cursor.as_deref(), limit + 1)
            .await?;
        let mut items = Vec::new();
        let mut last_id = None;
        for (key, _) in rows.iter().take(limit) {
            let Some(id) = last_id_bytes(key).and_then(|b| SessionId::from_bytes(b).ok()) else {
                continue;
            };
            last_id = Some(id);
            match self.live_session(id).await {
                Ok((s, _)) => items.push(s.session),
                Err(Error::Auth(AuthError::SessionNotFound)) => {}
                Err(e) => return Err(e),
            }
        }
        let next = if rows.len() > limit { last_id } else { None };
        Ok(Page { items, next })
    }

    /// End one session.
    pub async fn revoke_session(&self, id: SessionId) -> Result<(), Error> {
        self.active_realm().await?;
        let key = keys::session(self.realm, id);
        let stored = self
            .ctx
            .store
            .get(key.as_bytes())
            .await?
            .ok_or(AuthError::SessionNotFound)?;
        let session =
            record::decode::<SessionRecord>(key.as_bytes(), &stored.value)?.into_session();
        let mut batch = Batch::new();
        batch.delete(key, Precondition::Any)?.delete(
            keys::user_session(self.realm, session.session.user, id),
            Precondition::Any,
        )?;
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// End every session of a user: the user's session epoch moves in one
    /// write (every session dies at once), then the records are swept.
    /// Returns the number of sessions swept.
    pub async fn revoke_all_sessions(&self, user: UserId) -> Result<u64, Error> {
        self.active_realm().await?;
        self.modify_user(user, |u, _| {
            u.session_epoch += 1;
            Ok(())
        })
        .await?;
        self.sweep_sessions(user, None).await
    }

    /// Add to `batch` a rewrite of session `keep` into the user's new epoch
    /// (if it is the user's and still valid), so a password change can keep
    /// the session it was made from.
    pub(crate) async fn carry_session(
        &self,
        batch: &mut Batch,
        keep: SessionId,
        user: &StoredUser,
    ) -> Result<(), Error> {
        let Ok((mut session, version)) = self.live_session(keep).await else {
            return Ok(());
        };
        if session.session.user != user.user.id {
            return Ok(());
        }
        session.epoch = user.session_epoch;
        let key = keys::session(self.realm, keep);
        batch.put(
            key.clone(),
            record::encode(key.as_bytes(), &SessionRecord::V2(session))?,
            Precondition::Version(version),
        )?;
        Ok(())
    }

    /// Remove a user's session records (except `keep`).
    pub(crate) async fn sweep_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> Result<u64, Error> {
        let realm = self.realm;
        let skip = keep.map(|k| keys::user_session(realm, user, k).into_bytes());
        self.sweep(
            &keys::user_sessions(realm, user),
            skip.as_deref(),
            |key, _| {
                let id = SessionId::from_bytes(last_id_bytes(key)?).ok()?;
                Some(keys::session(realm, id).into_bytes())
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_golden_bytes() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let bytes = |last| {
            [
                0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x70, 0x00, 0x80, 0, 0, 0, 0, 0, 0, last,
            ]
        };
        let session = Session {
            id: SessionId::from_bytes(bytes(3)).unwrap(),
            user: UserId::from_bytes(bytes(2)).unwrap(),
            realm: RealmId::from_bytes(bytes(1)).unwrap(),
            created_at: at,
            last_seen: at,
            methods: vec![AuthMethod::Pwd, AuthMethod::AppToken],
            scopes: vec!["read".into()],
        };
        let current = StoredSession {
            proofs: Proof::at_login(&session),
            session,
            epoch: 1,
            app_token: Some(AppTokenId::from_bytes(bytes(4)).unwrap()),
        };
        crate::store::record::assert_golden(&SessionRecord::V2(current.clone()), GOLDEN_V2);
        // A session written before step-up decodes with its login methods
        // proved at its creation.
        let old: SessionRecord =
            crate::store::record::decode(b"k", &crate::store::key::unhex(GOLDEN_V1)).unwrap();
        assert_eq!(old.into_session(), current);
    }

    const GOLDEN_V2: &str = "010110018bcfe568007000800000000000000310018bcfe568007000800000000000000210018bcfe568007000800000000000000114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a020004010472656164010110018bcfe5680070008000000000000004020014323032332d31312d31345432323a31333a32305a0414323032332d31312d31345432323a31333a32305a";

    const GOLDEN_V1: &str = "010010018bcfe568007000800000000000000310018bcfe568007000800000000000000210018bcfe568007000800000000000000114323032332d31312d31345432323a31333a32305a14323032332d31312d31345432323a31333a32305a020004010472656164010110018bcfe5680070008000000000000004";
}

//! Purging token and sign-in records that can never be used again.
//!
//! Tokens die by time (expiry, idle timeout) or by revocation, and neither
//! writes anything at the moment of death: a dead record simply stops being
//! accepted. [`Tokens::purge_expired`] is the periodic job that removes them
//! so the store does not grow without bound. Nothing it deletes could still
//! be accepted, and every deletion is conditional on the version it read,
//! so a record that changes meanwhile (a family rotating) is left for the
//! next run. Index entries of rotated refresh tokens stay while their
//! family lives: they are what tells a replayed old token (reuse: the
//! family dies) from a forgery naming the family.

use super::grants::{MagicLinkRecord, OneTimeRecord};
use super::service::Tokens;
use super::{FamilyRecord, layout};
use crate::error::Error;
use crate::id::TokenFamilyId;
use crate::keystead::SWEEP_PAGE;
use crate::realm::Realm;
use crate::store::{Batch, Precondition, StorageError, Versioned, record};
use chrono::{DateTime, Duration, Utc};

/// What one [`Tokens::purge_expired`] pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Refresh-token families past their absolute lifetime or idle timeout.
    pub refresh_families: u64,
    /// Refresh-token index entries whose family is gone.
    pub refresh_tokens: u64,
    /// Expired one-time tokens.
    pub one_time_tokens: u64,
    /// Expired magic links.
    pub magic_links: u64,
    /// Expired login (MFA and enrolment) challenges.
    pub login_challenges: u64,
    /// Expired WebAuthn registration and authentication ceremonies.
    pub webauthn_ceremonies: u64,
    /// Expired OAuth login transactions (authorization requests never
    /// finished).
    pub login_transactions: u64,
    /// Authorization codes that can never matter again: unredeemed ones
    /// past their expiry, and redeemed ones once everything the redemption
    /// issued is dead (see [`Tokens::purge_expired`]). Until then a
    /// redeemed code stays, so that a late replay still finds it and
    /// revokes what it issued.
    pub authorization_codes: u64,
    /// Expired pending sign-ups (and the decoys of registered addresses).
    pub pending_sign_ups: u64,
}

impl Tokens {
    /// Remove this realm's dead token and sign-in records (see the
    /// [module docs](self)): expired refresh families, index entries of
    /// families that are gone, expired one-time tokens and magic links,
    /// expired login challenges, WebAuthn ceremonies and OAuth login
    /// transactions, and authorization codes: unredeemed ones past their
    /// expiry, redeemed ones once the refresh family they issued is gone
    /// and the longest any token of that redemption could live has passed
    /// (the realm's absolute refresh lifetime, then one last access token
    /// of at most [`MAX_ACCESS_TOKEN_SECS`](crate::oauth::client::MAX_ACCESS_TOKEN_SECS)).
    /// Reads the records page by page; run it from a periodic job.
    pub async fn purge_expired(&self) -> Result<Purged, Error> {
        let realm = self.active_realm().await?;
        let now = self.now();
        let family_prefix = crate::realm::service::data_prefix(self.realm).push("refresh-family");
        let refresh_families = self
            .purge_where(family_prefix.as_bytes(), |key, stored| {
                let FamilyRecord::V1(family) = record::decode(key, &stored.value)?;
                Ok(Self::family_expired(&realm, &family, now))
            })
            .await?;
        let refresh_tokens = self.purge_orphaned_index().await?;
        let one_time_prefix = crate::realm::service::data_prefix(self.realm).push("one-time");
        let one_time_tokens = self
            .purge_where(one_time_prefix.as_bytes(), |key, stored| {
                let OneTimeRecord::V1(token) = record::decode(key, &stored.value)?;
                Ok(expired(token.expires_at, now))
            })
            .await?;
        let link_prefix = crate::realm::service::data_prefix(self.realm).push("magic-link");
        let magic_links = self
            .purge_where(link_prefix.as_bytes(), |key, stored| {
                let MagicLinkRecord::V1(link) = record::decode(key, &stored.value)?;
                Ok(expired(link.expires_at, now))
            })
            .await?;
        let data = crate::realm::service::data_prefix(self.realm);
        let login_challenges = self
            .purge_where(data.clone().push("challenge").as_bytes(), |key, stored| {
                let record: crate::user::ChallengeRecord = record::decode(key, &stored.value)?;
                Ok(expired(record.into_parts().0.expires_at, now))
            })
            .await?;
        let webauthn_ceremonies = self
            .purge_where(
                data.clone().push("webauthn-ceremony").as_bytes(),
                |key, stored| {
                    let crate::webauthn::ceremony::CeremonyRecord::V1(ceremony) =
                        record::decode(key, &stored.value)?;
                    Ok(ceremony.is_expired(now))
                },
            )
            .await?;
        let login_transactions = self
            .purge_where(data.push("oauth-tx").as_bytes(), |key, stored| {
                let crate::oauth::authorize::TransactionRecord::V1(tx) =
                    record::decode(key, &stored.value)?;
                Ok(expired(tx.expires_at, now))
            })
            .await?;
        let pending_sign_ups = self
            .purge_where(
                crate::realm::service::data_prefix(self.realm)
                    .push("sign-up")
                    .as_bytes(),
                |key, stored| {
                    let pending: crate::user::sign_up::PendingRecord =
                        record::decode(key, &stored.value)?;
                    Ok(expired(pending.expires_at(), now))
                },
            )
            .await?;
        let authorization_codes = self.purge_codes(&realm, now).await?;
        Ok(Purged {
            refresh_families,
            refresh_tokens,
            one_time_tokens,
            magic_links,
            login_challenges,
            webauthn_ceremonies,
            login_transactions,
            authorization_codes,
            pending_sign_ups,
        })
    }

    /// Scan `prefix` page by page and delete, unless changed meanwhile,
    /// what `doomed` picks from each page.
    async fn purge_pages(
        &self,
        prefix: &[u8],
        mut doomed: impl AsyncFnMut(&[(Vec<u8>, Versioned)]) -> Result<Vec<(Vec<u8>, u64)>, Error>,
    ) -> Result<u64, Error> {
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .ctx
                .store
                .scan(prefix, after.as_deref(), SWEEP_PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok(removed);
            };
            after = Some(last.clone());
            let picked = doomed(&page).await?;
            removed += self.delete_unchanged(picked).await?;
        }
    }

    /// Delete every record under `prefix` that `dead` says can go.
    async fn purge_where(
        &self,
        prefix: &[u8],
        dead: impl Fn(&[u8], &Versioned) -> Result<bool, Error>,
    ) -> Result<u64, Error> {
        self.purge_pages(prefix, async |page| {
            let mut doomed = Vec::new();
            for (key, stored) in page {
                if dead(key, stored)? {
                    doomed.push((key.clone(), stored.version));
                }
            }
            Ok(doomed)
        })
        .await
    }

    /// The entries of `candidates` — `(key, version, family)` — whose
    /// family record no longer exists, read in one `get_many`.
    async fn without_family(
        &self,
        candidates: Vec<(Vec<u8>, u64, TokenFamilyId)>,
    ) -> Result<Vec<(Vec<u8>, u64)>, Error> {
        // Most pages of codes have none: no read for them.
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let family_keys: Vec<_> = candidates
            .iter()
            .map(|(_, _, family)| layout::family(self.realm, *family))
            .collect();
        let refs: Vec<&[u8]> = family_keys
            .iter()
            .map(crate::store::key::Key::as_bytes)
            .collect();
        let families = self.ctx.store.get_many(&refs).await?;
        Ok(candidates
            .into_iter()
            .zip(families)
            .filter(|(_, family)| family.is_none())
            .map(|((key, version, _), _)| (key, version))
            .collect())
    }

    /// Delete index entries (`refresh-token/<digest>` → family id) whose
    /// family no longer exists.
    async fn purge_orphaned_index(&self) -> Result<u64, Error> {
        let prefix = crate::realm::service::data_prefix(self.realm).push("refresh-token");
        self.purge_pages(prefix.as_bytes(), async |page| {
            let mut candidates = Vec::with_capacity(page.len());
            for (key, stored) in page {
                let bytes: [u8; 16] =
                    stored
                        .value
                        .as_slice()
                        .try_into()
                        .map_err(|_| StorageError::Corrupt {
                            key: key.clone(),
                            reason: "index does not hold a 16-byte family id".into(),
                        })?;
                let id = TokenFamilyId::from_bytes(bytes).map_err(|e| StorageError::Corrupt {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                candidates.push((key.clone(), stored.version, id));
            }
            self.without_family(candidates).await
        })
        .await
    }

    /// Delete authorization codes that can never matter again (see
    /// [`purge_expired`](Self::purge_expired)).
    async fn purge_codes(&self, realm: &Realm, now: DateTime<Utc>) -> Result<u64, Error> {
        // A redemption's tokens all die within the family's absolute
        // lifetime plus one access token refreshed at its last moment
        // (realm and client access lifetimes are both capped at
        // MAX_ACCESS_TOKEN_SECS). ID tokens are not revocable anyway.
        let issued_life = Duration::seconds(i64::from(realm.settings.tokens.refresh_absolute_secs))
            + Duration::seconds(i64::from(crate::oauth::client::MAX_ACCESS_TOKEN_SECS));
        let prefix = crate::realm::service::data_prefix(self.realm).push("oauth-code");
        self.purge_pages(prefix.as_bytes(), async |page| {
            let mut doomed = Vec::new();
            let mut candidates = Vec::new();
            for (key, stored) in page {
                let crate::oauth::code::CodeRecord::V1(code) = record::decode(key, &stored.value)?;
                match code.redeemed {
                    None if expired(code.expires_at, now) => {
                        doomed.push((key.clone(), stored.version));
                    }
                    // Its family must be gone too: a family that outlives
                    // the bound (a raised lifetime) keeps its code.
                    Some(redemption) if expired(redemption.at + issued_life, now) => {
                        match redemption.family {
                            None => doomed.push((key.clone(), stored.version)),
                            Some(family) => candidates.push((key.clone(), stored.version, family)),
                        }
                    }
                    _ => {}
                }
            }
            doomed.extend(self.without_family(candidates).await?);
            Ok(doomed)
        })
        .await
    }

    /// Delete `(key, version)` pairs that still have that version, in one
    /// batch; if one changed meanwhile, one by one (the changed one stays).
    async fn delete_unchanged(&self, doomed: Vec<(Vec<u8>, u64)>) -> Result<u64, Error> {
        if doomed.is_empty() {
            return Ok(0);
        }
        let mut batch = Batch::new();
        for (key, version) in &doomed {
            batch.delete(key.clone(), Precondition::Version(*version))?;
        }
        match self.ctx.store.commit(batch).await {
            Ok(_) => return Ok(doomed.len() as u64),
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let mut removed = 0;
        for (key, version) in doomed {
            let mut one = Batch::new();
            one.delete(key, Precondition::Version(version))?;
            match self.ctx.store.commit(one).await {
                Ok(_) => removed += 1,
                Err(StorageError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }
}

fn expired(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now >= expires_at
}

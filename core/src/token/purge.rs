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
use crate::store::{Batch, Precondition, StorageError, Versioned, record};
use chrono::{DateTime, Utc};

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
    /// finished). Redeemed and expired authorization codes stay: a late
    /// replay of a code must still find it to revoke what it issued.
    pub login_transactions: u64,
}

impl Tokens {
    /// Remove this realm's dead token and sign-in records (see the
    /// [module docs](self)): expired refresh families, index entries of
    /// families that are gone, expired one-time tokens and magic links,
    /// expired login challenges, WebAuthn ceremonies and OAuth login
    /// transactions. Reads the
    /// records page by page; run it from a periodic job.
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
        Ok(Purged {
            refresh_families,
            refresh_tokens,
            one_time_tokens,
            magic_links,
            login_challenges,
            webauthn_ceremonies,
            login_transactions,
        })
    }

    /// Delete every record under `prefix` that `dead` says can go.
    async fn purge_where(
        &self,
        prefix: &[u8],
        dead: impl Fn(&[u8], &Versioned) -> Result<bool, Error>,
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
            let mut doomed = Vec::new();
            for (key, stored) in &page {
                if dead(key, stored)? {
                    doomed.push((key.clone(), stored.version));
                }
            }
            removed += self.delete_unchanged(doomed).await?;
        }
    }

    /// Delete index entries (`refresh-token/<digest>` → family id) whose
    /// family no longer exists.
    async fn purge_orphaned_index(&self) -> Result<u64, Error> {
        let prefix = crate::realm::service::data_prefix(self.realm).push("refresh-token");
        let mut removed = 0;
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self
                .ctx
                .store
                .scan(prefix.as_bytes(), after.as_deref(), SWEEP_PAGE)
                .await?;
            let Some((last, _)) = page.last() else {
                return Ok(removed);
            };
            after = Some(last.clone());
            let mut family_keys = Vec::with_capacity(page.len());
            for (key, stored) in &page {
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
                family_keys.push(layout::family(self.realm, id));
            }
            let refs: Vec<&[u8]> = family_keys
                .iter()
                .map(crate::store::key::Key::as_bytes)
                .collect();
            let families = self.ctx.store.get_many(&refs).await?;
            let doomed = page
                .iter()
                .zip(families)
                .filter(|(_, family)| family.is_none())
                .map(|((key, stored), _)| (key.clone(), stored.version))
                .collect();
            removed += self.delete_unchanged(doomed).await?;
        }
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

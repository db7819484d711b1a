//! Event streams that end with their authorization.
//!
//! A device-event stream (SSE) is opened with an access token, but it can
//! outlive the request that checked it. So every stream carries a
//! watchdog that ends it, with a last `event: end` naming why, as soon as
//! any of these is no longer true:
//!
//! * the token has not expired (the stream ends at its `exp`);
//! * the token's session, user and realm are still live and no expire-all
//!   mark cuts it off ([`Tokens::recheck`](keystead::token::Tokens::recheck):
//!   logout, session revocation, password change, user disabled or
//!   deleted);
//! * the caller is still a member of the group;
//! * the device the stream is for (if any) still exists and is not
//!   revoked.
//!
//! The watchdog re-checks every [`RECHECK`] (and wakes exactly at `exp`),
//! so a revocation ends the stream within seconds. A user holds at most
//! [`AppState::max_streams_per_user`] open streams; one more is
//! `429 TOO_MANY_STREAMS`.

use super::directory;
use super::error::ApiError;
use super::state::AppState;
use axum::http::StatusCode;
use keystead::device::DeviceStatus;
use keystead::id::{DeviceId, GroupId, RealmId, UserId};
use keystead::token::AccessClaims;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// How often a live stream re-checks its authorization.
pub const RECHECK: Duration = Duration::from_secs(2);

/// Open streams per user of a realm.
pub type StreamCounts = Arc<Mutex<HashMap<(RealmId, UserId), usize>>>;

/// One open stream of a user; gives its place back when dropped (the
/// stream ended or the client went away).
#[derive(Debug)]
pub struct StreamSlot {
    counts: StreamCounts,
    owner: (RealmId, UserId),
}

impl StreamSlot {
    /// Take a place for a new stream of `user`, or `429 TOO_MANY_STREAMS`
    /// when they hold the maximum already.
    pub fn claim(state: &AppState, realm: RealmId, user: UserId) -> Result<Self, ApiError> {
        let owner = (realm, user);
        let mut counts = state.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let open = counts.entry(owner).or_insert(0);
        if *open >= state.max_streams_per_user {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_STREAMS",
                format!(
                    "at most {} event streams per user; close one first",
                    state.max_streams_per_user
                ),
            ));
        }
        *open += 1;
        Ok(Self {
            counts: Arc::clone(&state.streams),
            owner,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(open) = counts.get_mut(&self.owner) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                counts.remove(&self.owner);
            }
        }
    }
}

/// What a stream was opened for.
#[derive(Debug, Clone)]
pub struct Watched {
    /// The realm of the token.
    pub realm: RealmId,
    /// The verified claims of the token the stream was opened with.
    pub claims: AccessClaims,
    /// The group whose events it carries.
    pub group: GroupId,
    /// The device it is for, if any.
    pub device: Option<DeviceId>,
}

/// Wait until the stream's authorization ends (see the
/// [module docs](self)); the stable code saying why.
pub async fn until_unauthorized(state: AppState, watched: Watched) -> String {
    let tokens = state.ks.tokens(watched.realm);
    loop {
        let left = watched.claims.exp - chrono::Utc::now().timestamp();
        let Ok(left) = u64::try_from(left) else {
            return "TOKEN_EXPIRED".into();
        };
        if left == 0 {
            return "TOKEN_EXPIRED".into();
        }
        tokio::time::sleep(RECHECK.min(Duration::from_secs(left))).await;
        if let Err(e) = tokens.recheck(watched.claims.clone()).await {
            return e.code().into();
        }
        match still_allowed(&state, &watched).await {
            Ok(None) => {}
            Ok(Some(code)) => return code.into(),
            Err(e) => return e.code().into(),
        }
    }
}

/// `None` while the caller may still follow the stream; else why not.
async fn still_allowed(
    state: &AppState,
    watched: &Watched,
) -> Result<Option<&'static str>, keystead::Error> {
    let store = state.ks.store();
    let member =
        directory::is_member(&**store, watched.realm, watched.group, watched.claims.sub).await?;
    if !member {
        return Ok(Some("NOT_GROUP_MEMBER"));
    }
    if let Some(device) = watched.device {
        let found = state
            .ks
            .devices(watched.realm)
            .get(watched.group, device)
            .await;
        match found {
            Ok(d) if d.status == DeviceStatus::Revoked => return Ok(Some("DEVICE_REVOKED")),
            Ok(_) => {}
            Err(e) if e.code() == "DEVICE_NOT_FOUND" => return Ok(Some("DEVICE_NOT_FOUND")),
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

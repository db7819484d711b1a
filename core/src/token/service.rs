//! The token service: `ks.tokens(realm)`.

use super::{
    ACCESS_TOKEN_TYP, AccessClaims, AccessRequest, Actor, CLOCK_LEEWAY_SECS, ClientAuth,
    ExpireAllRecord, ExpireMark, FamilyRecord, StoredFamily, TokenError, TokenResponse, add_mark,
    expired_by_marks, layout,
};
use crate::crypto::jws::{self, HeaderParams, MAX_TOKEN_LEN};
use crate::crypto::secret::{self, TokenDigest, TokenKind};
use crate::crypto::{CryptoError, random_array};
use crate::error::Error;
use crate::id::{RealmId, SessionId, TokenFamilyId, UserId};
use crate::keystead::{Context, MAX_RETRIES};
use crate::oauth::client::{GrantType, StoredClient, client_in};
use crate::oauth::policy::{self, Ask, Ceiling, Granted};
use crate::realm::Realm;
use crate::secret::SecretString;
use crate::store::{Batch, Committed, Precondition, StorageError, record};
use crate::user::{Session, Users};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Duration, Utc};
use std::sync::Arc;

/// Handle for the tokens of one realm; get one with
/// [`Keystead::tokens`](crate::Keystead::tokens). Cheap to clone. See the
/// [module docs](super) for the rules.
#[derive(Clone)]
pub struct Tokens {
    pub(crate) ctx: Arc<Context>,
    pub(crate) realm: RealmId,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({})", self.realm)
    }
}

/// The `iss` of a realm: its `issuer_url`, or `urn:keystead:realm:<id>`
/// until the embedder sets one.
pub(crate) fn issuer(realm: &Realm) -> String {
    realm
        .settings
        .issuer_url
        .clone()
        .unwrap_or_else(|| format!("urn:keystead:realm:{}", realm.id))
}

/// Whether `iss` is the realm's [`issuer`] (without building it when the
/// realm has an `issuer_url`: verification compares on every call).
fn is_issuer(realm: &Realm, iss: &str) -> bool {
    match &realm.settings.issuer_url {
        Some(url) => url == iss,
        None => iss == issuer(realm),
    }
}

/// The expire-all rule in one place: a token issued at `issued_at_secs` is
/// dead at `now` if the realm's marks, or — for a token of an application —
/// that application's marks, say so.
fn expired_under(
    realm_marks: &[ExpireMark],
    client_marks: Option<&[ExpireMark]>,
    issued_at_secs: i64,
    now: DateTime<Utc>,
) -> bool {
    expired_by_marks(realm_marks, issued_at_secs, now)
        || client_marks.is_some_and(|marks| expired_by_marks(marks, issued_at_secs, now))
}

/// A `get_many` that answered another number of values than keys asked:
/// a broken backend.
fn get_many_miscounted() -> Error {
    StorageError::backend("get_many answered a different number of values than keys").into()
}

/// The expire-all marks stored at `key` (none if absent), decoded once per
/// distinct bytes: once a realm has marks, every verification reads them.
fn decode_marks(
    records: &crate::store::decoded::Decoded,
    key: &crate::store::key::Key,
    slot: Option<crate::store::Versioned>,
) -> Result<Arc<Vec<ExpireMark>>, Error> {
    static NONE: std::sync::LazyLock<Arc<Vec<ExpireMark>>> = std::sync::LazyLock::new(Arc::default);
    match slot {
        None => Ok(Arc::clone(&NONE)),
        Some(stored) => Ok(
            records.get_or_decode(key.as_bytes(), &stored.value, |bytes| {
                record::decode(key.as_bytes(), bytes).map(|ExpireAllRecord::V1 { marks }| marks)
            })?,
        ),
    }
}

/// Cheap shape check of a compact JWS before any storage access.
pub(crate) fn check_jws_shape(token: &str) -> Result<(), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed {
            reason: "longer than 8 KiB",
        });
    }
    // One pass: every byte base64url or a dot, and exactly two dots.
    let mut dots = 0usize;
    let mut alphabet = true;
    for byte in token.bytes() {
        dots += usize::from(byte == b'.');
        alphabet &= byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_' || byte == b'.';
    }
    if dots != 2 || !alphabet {
        return Err(TokenError::Malformed {
            reason: "not a compact JWS",
        });
    }
    Ok(())
}

/// A compact JWS checked against every rule that needs no key
/// ([`jws::parse`]), with the token errors verification reports.
fn parse_jws(token: &str) -> Result<jws::Parsed<'_>, Error> {
    jws::parse(token.as_bytes()).map_err(|e| match e {
        CryptoError::JwsTooLarge { .. } => TokenError::Malformed {
            reason: "longer than 8 KiB",
        }
        .into(),
        other => jws_error(other),
    })
}

pub(crate) fn jws_error(e: CryptoError) -> Error {
    match e {
        CryptoError::JwsTooLarge { .. } | CryptoError::JwsMalformed { .. } => {
            TokenError::Malformed {
                reason: "not a valid JWS",
            }
            .into()
        }
        CryptoError::JwsCritical
        | CryptoError::JwsUnsecured
        | CryptoError::JwsUnknownKey { .. }
        | CryptoError::JwsAlgorithmMismatch { .. }
        | CryptoError::JwsBadSignature => TokenError::Untrusted { jws_code: e.code() }.into(),
        other => other.into(),
    }
}

/// What an access token is issued for.
pub(crate) struct AccessGrant<'a> {
    pub(crate) client_id: &'a str,
    pub(crate) audience: &'a str,
    pub(crate) scope: &'a [String],
    /// Lifetime in seconds; the realm's `access_secs` when `None`.
    pub(crate) lifetime_secs: Option<u32>,
    /// The `token_name` claim of scoped tokens.
    pub(crate) name: Option<&'a str>,
    /// The `act` claim of exchanged tokens.
    pub(crate) act: Option<&'a Actor>,
    /// The `one_time` claim of tokens made from a one-time token.
    pub(crate) one_time: bool,
}

pub(crate) fn is_conflict(e: &StorageError) -> bool {
    matches!(e, StorageError::Conflict { .. })
}

/// Bytes of a refresh token's locator: family ‖ session ‖ user ids.
const REFRESH_LOCATOR_LEN: usize = 48;

/// Where a refresh token's family lives, read from the token itself (see
/// [`secret::generate_located`]): refresh reads the family, its session and
/// its user in one `get_many` instead of four dependent reads. Public ids
/// only; the digest of the whole token must still be the family's current
/// one.
#[derive(Debug, Clone, Copy)]
struct RefreshLocator {
    family: TokenFamilyId,
    session: SessionId,
    user: UserId,
}

fn new_refresh_token(family: &StoredFamily) -> Result<secret::IssuedToken, Error> {
    let mut locator = [0u8; REFRESH_LOCATOR_LEN];
    locator[..16].copy_from_slice(&family.id.to_bytes());
    locator[16..32].copy_from_slice(&family.session.to_bytes());
    locator[32..].copy_from_slice(&family.user.to_bytes());
    Ok(secret::generate_located(TokenKind::Refresh, &locator)?)
}

/// The locator and digest of a presented refresh token; `None` for
/// anything that is not one.
fn parse_refresh_token(token: &str) -> Option<(RefreshLocator, TokenDigest)> {
    let (locator, digest) =
        secret::parse_located(TokenKind::Refresh, token, REFRESH_LOCATOR_LEN).ok()?;
    let id = |range: std::ops::Range<usize>| -> Option<[u8; 16]> { locator[range].try_into().ok() };
    let at = RefreshLocator {
        family: TokenFamilyId::from_bytes(id(0..16)?).ok()?,
        session: SessionId::from_bytes(id(16..32)?).ok()?,
        user: UserId::from_bytes(id(32..48)?).ok()?,
    };
    Some((at, digest))
}

/// What issuing an access token for a session starts from; see
/// [`Tokens::read_for_issue`].
pub(crate) struct IssueRead {
    pub(crate) realm: Arc<Realm>,
    pub(crate) session: Session,
    /// The session record's version, for the commit's check.
    pub(crate) version: u64,
    pub(crate) signer: Arc<jws::SigningKey>,
    /// The client the request named, with its version, if registered.
    pub(crate) client: Option<(Arc<StoredClient>, u64)>,
}

impl IssueRead {
    /// The named client, for the policy.
    pub(crate) fn client(&self) -> Option<&StoredClient> {
        self.client.as_ref().map(|(c, _)| &**c)
    }

    /// The session's own scope bound (sessions of application tokens
    /// carry one), for the policy.
    pub(crate) fn ceiling(&self) -> Ceiling<'_> {
        Ceiling {
            scope: (!self.session.scopes.is_empty()).then_some(self.session.scopes.as_slice()),
            audience: None,
        }
    }
}

/// Where the revocation state of an access token's claims is stored.
struct StateKeys {
    realm_marks: crate::store::key::Key,
    client_marks: crate::store::key::Key,
    session: crate::store::key::Key,
    user: crate::store::key::Key,
}

impl StateKeys {
    fn of(realm: RealmId, claims: &AccessClaims) -> Self {
        Self {
            realm_marks: layout::expire_all(realm, None),
            client_marks: layout::expire_all(realm, Some(&claims.client_id)),
            session: crate::user::keys::session(realm, claims.sid),
            user: crate::user::keys::user(realm, claims.sub),
        }
    }
}

/// The versions (`None`: absent) of the records besides the family and
/// its session that a refresh decides on. A rotation commits only if each
/// is still at its version, so what the refresh decided on still held when
/// it rotated — which is also what lets a remembered rotation be used again
/// without reading them.
#[derive(Debug, Clone, Copy)]
struct BasisVersions {
    realm: Option<u64>,
    realm_marks: Option<u64>,
    client_marks: Option<u64>,
    user: Option<u64>,
    signing: Option<u64>,
    client: Option<u64>,
}

/// What a refresh decides on besides the family and its session.
#[derive(Clone)]
struct RefreshBasis {
    realm: Arc<Realm>,
    realm_marks: Arc<Vec<ExpireMark>>,
    client_marks: Arc<Vec<ExpireMark>>,
    /// The OAuth client the family was issued to, if it still exists.
    client: Option<Arc<StoredClient>>,
    versions: BasisVersions,
}

/// Everything a refresh decides on, read in one `get_many`.
struct RefreshRead {
    basis: RefreshBasis,
    /// The signing-key record, for the new access token.
    signing: Option<crate::store::Versioned>,
    family: Option<(StoredFamily, u64)>,
    /// The family's session if it is still valid.
    session: Result<(crate::user::StoredSession, u64), Error>,
}

/// A rotation about to be made: the family at `version`, its live session
/// at `session_version`, and the rest it rests on. Kept in
/// `Context::rotations` after it is made (with the rotated family and its
/// new version), it is the starting point of the family's next refresh.
#[derive(Clone)]
struct Rotation {
    basis: RefreshBasis,
    signing: Option<crate::store::Versioned>,
    family: StoredFamily,
    version: u64,
    session: crate::user::StoredSession,
    session_version: u64,
    /// What the policy granted the new access token (the family keeps its
    /// own scope: a narrowed refresh narrows only this token).
    granted: Granted,
}

impl Rotation {
    /// The read this rotation would have been decided on.
    fn as_read(&self) -> RefreshRead {
        RefreshRead {
            basis: self.basis.clone(),
            signing: self.signing.clone(),
            family: Some((self.family.clone(), self.version)),
            session: Ok((self.session.clone(), self.session_version)),
        }
    }
}

/// What a refresh read says about the presented token.
enum Judgement {
    /// Unknown family, or a token of another session, user or client.
    Invalid,
    /// The token names a family but is not its live one.
    NotCurrent(StoredFamily),
    /// The family is past its lifetimes, expired by expire-all, or its
    /// session ended: it dies.
    Dead(StoredFamily),
    /// The token is live and all around it valid.
    Rotate(Box<Rotation>),
}

impl Tokens {
    pub(crate) fn new(ctx: Arc<Context>, realm: RealmId) -> Self {
        Self { ctx, realm }
    }

    /// The realm this handle is bound to.
    pub fn realm(&self) -> RealmId {
        self.realm
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.ctx.clock.now()
    }

    pub(crate) async fn active_realm(&self) -> Result<Arc<Realm>, Error> {
        crate::realm::service::load_active(&self.ctx, self.realm).await
    }

    pub(crate) fn users(&self) -> Users {
        Users::new(Arc::clone(&self.ctx), self.realm)
    }

    /// The OAuth service of the same realm (clients, client tokens).
    pub(crate) fn oauth(&self) -> crate::oauth::OAuth {
        crate::oauth::OAuth::new(Arc::clone(&self.ctx), self.realm)
    }

    /// Whether a token of `client_id` issued at `issued_at_secs` is dead at
    /// `now` under the realm's expire-all marks or the application's (both
    /// read in one `get_many`).
    pub(crate) async fn expired_by_expire_all(
        &self,
        client_id: Option<&str>,
        issued_at_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let client = client_id.filter(|c| !c.is_empty());
        let realm_key = layout::expire_all(self.realm, None);
        let client_key = client.map(|c| layout::expire_all(self.realm, Some(c)));
        let mut keys = vec![realm_key.as_bytes()];
        keys.extend(client_key.as_ref().map(crate::store::key::Key::as_bytes));
        let slots = self.ctx.store.get_many(&keys).await?;
        if slots.len() != keys.len() {
            return Err(get_many_miscounted());
        }
        let mut slots = slots.into_iter();
        let realm_marks = decode_marks(&self.ctx.records, &realm_key, slots.next().flatten())?;
        let client_marks = match &client_key {
            Some(key) => Some(decode_marks(
                &self.ctx.records,
                key,
                slots.next().flatten(),
            )?),
            None => None,
        };
        Ok(expired_under(
            &realm_marks,
            client_marks.as_deref().map(Vec::as_slice),
            issued_at_secs,
            now,
        ))
    }

    pub(crate) async fn expire_marks(
        &self,
        client: Option<&str>,
    ) -> Result<(Vec<ExpireMark>, Option<u64>), Error> {
        let key = layout::expire_all(self.realm, client);
        let slot = self.ctx.store.get(key.as_bytes()).await?;
        let version = slot.as_ref().map(|v| v.version);
        let marks = decode_marks(&self.ctx.records, &key, slot)?;
        Ok((Vec::clone(&marks), version))
    }

    /// Sign an access token for `session` as `grant` describes; returns the
    /// token and its lifetime in seconds.
    pub(crate) async fn sign_access(
        &self,
        realm: &Realm,
        session: &Session,
        grant: &AccessGrant<'_>,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, u32), Error> {
        let key = self.signer().await?;
        Self::sign_access_with(&key, realm, session, grant, now)
    }

    /// [`sign_access`](Self::sign_access) with a signer the caller already
    /// has (a refresh reads the key record with everything else).
    pub(crate) fn sign_access_with(
        key: &jws::SigningKey,
        realm: &Realm,
        session: &Session,
        grant: &AccessGrant<'_>,
        now: DateTime<Utc>,
    ) -> Result<(SecretString, u32), Error> {
        let lifetime = grant
            .lifetime_secs
            .unwrap_or(realm.settings.tokens.access_secs);
        let jti = random_array::<16>()?;
        let claims = AccessClaims {
            iss: issuer(realm),
            sub: session.user,
            aud: grant.audience.to_owned(),
            exp: now.timestamp() + i64::from(lifetime),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: URL_SAFE_NO_PAD.encode(jti.as_ref()),
            client_id: grant.client_id.to_owned(),
            scope: grant.scope.join(" "),
            sid: session.id,
            amr: session.methods.clone(),
            auth_time: session.created_at.timestamp(),
            token_name: grant.name.map(str::to_owned),
            act: grant.act.cloned(),
            one_time: grant.one_time,
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| CryptoError::InvalidInput {
            field: "claims",
            reason: e.to_string(),
        })?;
        let token = jws::sign(key, &HeaderParams::with_typ(ACCESS_TOKEN_TYP), &payload)?;
        Ok((SecretString::new(token), lifetime))
    }

    /// Add a new refresh-token family of `session` for `client_id`, with
    /// what the policy `granted`, to `batch` (the family record and its
    /// token's index entry, both `Absent`); returns the family and its
    /// first refresh token. The caller adds the session check and commits
    /// (issue here, authorization-code redemption in [`crate::oauth`]).
    pub(crate) fn family_writes(
        &self,
        batch: &mut Batch,
        session: &Session,
        client_id: &str,
        granted: &Granted,
        now: DateTime<Utc>,
    ) -> Result<(StoredFamily, SecretString), Error> {
        let mut family = StoredFamily {
            id: TokenFamilyId::generate(now),
            realm: self.realm,
            session: session.id,
            user: session.user,
            client_id: client_id.to_owned(),
            audience: granted.audience.clone(),
            scope: granted.scope.clone(),
            current: [0; 32],
            generation: 0,
            created_at: now,
            issued_at: now,
        };
        let refresh = new_refresh_token(&family)?;
        family.current = refresh.digest.0;
        let family_key = layout::family(self.realm, family.id);
        batch
            .put(
                family_key.clone(),
                record::encode(family_key.as_bytes(), &FamilyRecord::V1(family.clone()))?,
                Precondition::Absent,
            )?
            .put(
                layout::refresh_token(self.realm, &refresh.digest.0),
                family.id.to_bytes().to_vec(),
                Precondition::Absent,
            )?;
        Ok((family, refresh.token))
    }

    /// The records at `keys`, read in one `get_many`, as an array (a
    /// backend answering another number of values is an error).
    pub(crate) async fn read_many<const N: usize>(
        &self,
        keys: [&[u8]; N],
    ) -> Result<[Option<crate::store::Versioned>; N], Error> {
        let slots = self.ctx.store.get_many(&keys).await?;
        <[_; N]>::try_from(slots).map_err(|_| get_many_miscounted())
    }

    /// What an access token for `session` issued to `client_id` is made
    /// from — the active realm, the still-valid session with its version,
    /// the current signer and the client's record — in two reads: realm,
    /// session, signing-key and client records in one `get_many` (the
    /// policy's client lookup costs no round trip), then the session's
    /// user (whose id the session names).
    pub(crate) async fn read_for_issue(
        &self,
        session: SessionId,
        client_id: &str,
    ) -> Result<IssueRead, Error> {
        let realm_key = crate::realm::service::realm_key(self.realm);
        let session_key = crate::user::keys::session(self.realm, session);
        let signing_key = layout::signing_keys(self.realm);
        let client_key = crate::oauth::layout::client(self.realm, client_id);
        let [realm, stored_session, signing, client] = self
            .read_many([
                realm_key.as_bytes(),
                session_key.as_bytes(),
                signing_key.as_bytes(),
                client_key.as_bytes(),
            ])
            .await?;
        let client = client_in(&self.ctx.records, &client_key, client.as_ref())?;
        let realm = crate::realm::service::active_from(&self.ctx, &realm_key, realm)?;
        let users = self.users();
        let found = users.decode_session(session, stored_session)?;
        let user_key = crate::user::keys::user(self.realm, found.0.session.user);
        let user = self.ctx.store.get(user_key.as_bytes()).await?;
        let (stored, version) = users.session_alive(found, user).await?;
        let signer = self.signer_from(signing).await?;
        Ok(IssueRead {
            realm,
            session: stored.session,
            version,
            signer,
            client,
        })
    }

    /// Issue tokens to the client `request` names for a valid session,
    /// after a direct login (password, second factor, passkey, magic link:
    /// [`GrantType::Password`]). The issuance policy
    /// ([`crate::oauth::policy`]) decides what they carry: the client must
    /// be registered and allowed the grant, authenticate if confidential,
    /// and every requested scope and the audience must be ones it
    /// registered (within the session's scopes for application-token
    /// sessions) — `OAUTH_INVALID_CLIENT`, `OAUTH_UNAUTHORIZED_CLIENT`,
    /// `OAUTH_INVALID_SCOPE`, `OAUTH_INVALID_TARGET`, with nothing written.
    /// A refresh-token family is created only for clients allowed
    /// [`GrantType::RefreshToken`].
    pub async fn issue(
        &self,
        session: SessionId,
        request: &AccessRequest,
    ) -> Result<TokenResponse, Error> {
        request.validate()?;
        let now = self.now();
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let read = self.read_for_issue(session, &request.client_id).await?;
            let granted = policy::admit(
                read.client(),
                request.client_secret.as_ref(),
                GrantType::Password,
                request.ask(),
                read.ceiling(),
            )?;
            let (client, client_version) = read
                .client
                .clone()
                .ok_or(crate::oauth::OAuthError::InvalidClient)?;
            let live = &read.session;
            let grant = AccessGrant {
                client_id: &request.client_id,
                audience: &granted.audience,
                scope: &granted.scope,
                lifetime_secs: client.client.access_token_secs,
                name: None,
                act: None,
                one_time: false,
            };
            if !client.client.allows(GrantType::RefreshToken) {
                // Nothing to write: the access token lives and dies with
                // the session and the client, which verification checks.
                let (access, expires_in) =
                    Self::sign_access_with(&read.signer, &read.realm, live, &grant, now)?;
                return Ok(TokenResponse {
                    access_token: access,
                    token_type: "Bearer",
                    expires_in,
                    refresh_token: None,
                    scope: granted.scope,
                    session: live.id,
                    id_token: None,
                });
            }
            let mut batch = Batch::new();
            let (_, refresh) =
                self.family_writes(&mut batch, live, &request.client_id, &granted, now)?;
            batch
                .check(
                    crate::user::keys::session(self.realm, live.id),
                    Precondition::Version(read.version),
                )?
                .check(
                    crate::oauth::layout::client(self.realm, &request.client_id),
                    Precondition::Version(client_version),
                )?;
            let (committed, access) = self
                .commit_and_sign(batch, &read.signer, &read.realm, live, &grant, now)
                .await;
            match committed {
                Ok(_) => {
                    let (access, expires_in) = access?;
                    return Ok(TokenResponse {
                        access_token: access,
                        token_type: "Bearer",
                        expires_in,
                        refresh_token: Some(refresh),
                        scope: granted.scope,
                        session: live.id,
                        id_token: None,
                    });
                }
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| TokenError::InvalidGrant.into(), Error::from))
    }

    /// Commit `batch` and sign the access token `grant` describes at the
    /// same time: the signature (tens of microseconds of CPU) is made while
    /// the store works on the commit (an fsync, or a round trip), instead
    /// of after it. The token is only handed out by callers whose commit
    /// succeeded; a lost race throws it away unseen.
    pub(crate) async fn commit_and_sign(
        &self,
        batch: Batch,
        signer: &jws::SigningKey,
        realm: &Realm,
        session: &Session,
        grant: &AccessGrant<'_>,
        now: DateTime<Utc>,
    ) -> (
        Result<Committed, StorageError>,
        Result<(SecretString, u32), Error>,
    ) {
        // `join` polls the commit first, so a backend that hands the work
        // to another thread or to the network has started it before the
        // signature is computed here.
        futures::join!(self.ctx.store.commit(batch), async {
            Self::sign_access_with(signer, realm, session, grant, now)
        })
    }

    /// Read what refreshing the token at `at` for `client_id` decides on,
    /// in one `get_many`: realm, family, the realm's and the client's
    /// expire-all marks, the session and its user, the signing keys, and
    /// the OAuth client's record if `client_id` names one (its
    /// access-token lifetime applies to refreshed tokens too).
    async fn read_for_refresh(
        &self,
        at: &RefreshLocator,
        client_id: &str,
    ) -> Result<RefreshRead, Error> {
        let realm_key = crate::realm::service::realm_key(self.realm);
        let family_key = layout::family(self.realm, at.family);
        let realm_marks_key = layout::expire_all(self.realm, None);
        let client_marks_key = layout::expire_all(self.realm, Some(client_id));
        let session_key = crate::user::keys::session(self.realm, at.session);
        let user_key = crate::user::keys::user(self.realm, at.user);
        let signing_key = layout::signing_keys(self.realm);
        let client_key = crate::oauth::layout::client(self.realm, client_id);
        let [
            realm,
            family,
            realm_marks,
            client_marks,
            session,
            user,
            signing,
            client,
        ] = self
            .read_many([
                realm_key.as_bytes(),
                family_key.as_bytes(),
                realm_marks_key.as_bytes(),
                client_marks_key.as_bytes(),
                session_key.as_bytes(),
                user_key.as_bytes(),
                signing_key.as_bytes(),
                client_key.as_bytes(),
            ])
            .await?;
        let versions = BasisVersions {
            realm: realm.as_ref().map(|r| r.version),
            realm_marks: realm_marks.as_ref().map(|r| r.version),
            client_marks: client_marks.as_ref().map(|r| r.version),
            user: user.as_ref().map(|r| r.version),
            signing: signing.as_ref().map(|r| r.version),
            client: client.as_ref().map(|r| r.version),
        };
        let client = client_in(&self.ctx.records, &client_key, client.as_ref())?.map(|(c, _)| c);
        let realm = crate::realm::service::active_from(&self.ctx, &realm_key, realm)?;
        let family = match family {
            None => None,
            Some(stored) => {
                let FamilyRecord::V1(f) = record::decode(family_key.as_bytes(), &stored.value)?;
                Some((f, stored.version))
            }
        };
        let users = self.users();
        let session = match users.decode_session(at.session, session) {
            Ok(found) => users.session_alive(found, user).await,
            Err(e) => Err(e),
        };
        Ok(RefreshRead {
            basis: RefreshBasis {
                realm,
                realm_marks: decode_marks(&self.ctx.records, &realm_marks_key, realm_marks)?,
                client_marks: decode_marks(&self.ctx.records, &client_marks_key, client_marks)?,
                client,
                versions,
            },
            signing,
            family,
            session,
        })
    }

    /// What `read` says about the presented token (`at`, `digest`) for
    /// the `client` asking `scope` at `now`. Pure: the caller acts on the
    /// judgement. The issuance policy runs last, on a live token: a replay
    /// of a rotated token is reuse whoever presents it, and a live token
    /// presented by the wrong client, or without a confidential client's
    /// secret, or asking a wider scope, is refused without rotating.
    fn judge(
        read: RefreshRead,
        at: &RefreshLocator,
        digest: &TokenDigest,
        client: &ClientAuth,
        scope: &[String],
        now: DateTime<Utc>,
    ) -> Result<Judgement, Error> {
        let client_id = client.client_id.as_str();
        let Some((family, version)) = read.family else {
            return Ok(Judgement::Invalid);
        };
        if family.session != at.session || family.user != at.user {
            return Ok(Judgement::Invalid);
        }
        if !TokenDigest(family.current).matches(digest) {
            return Ok(Judgement::NotCurrent(family));
        }
        if family.client_id != client_id {
            return Ok(Judgement::Invalid);
        }
        let basis = read.basis;
        let issued = family.issued_at.timestamp();
        if Self::family_expired(&basis.realm, &family, now)
            || expired_under(&basis.realm_marks, Some(&basis.client_marks), issued, now)
        {
            return Ok(Judgement::Dead(family));
        }
        let (session, session_version) = match read.session {
            Ok(found) => found,
            Err(Error::Auth(crate::user::AuthError::SessionNotFound)) => {
                return Ok(Judgement::Dead(family));
            }
            Err(e) => return Err(e),
        };
        let granted = policy::admit(
            basis.client.as_deref(),
            client.secret.as_ref(),
            GrantType::RefreshToken,
            Ask {
                scope,
                resource: None,
            },
            Ceiling {
                scope: Some(&family.scope),
                audience: Some(&family.audience),
            },
        )?;
        Ok(Judgement::Rotate(Box::new(Rotation {
            basis,
            signing: read.signing,
            family,
            version,
            session,
            session_version,
            granted,
        })))
    }

    /// Require of `batch` that every record of a refresh's basis is still
    /// at the version it was read at (or still absent).
    fn check_basis(
        &self,
        batch: &mut Batch,
        versions: &BasisVersions,
        user: UserId,
        client_id: &str,
    ) -> Result<(), Error> {
        let held =
            |version: Option<u64>| version.map_or(Precondition::Absent, Precondition::Version);
        batch
            .check(
                crate::realm::service::realm_key(self.realm),
                held(versions.realm),
            )?
            .check(
                layout::expire_all(self.realm, None),
                held(versions.realm_marks),
            )?
            .check(
                layout::expire_all(self.realm, Some(client_id)),
                held(versions.client_marks),
            )?
            .check(
                crate::user::keys::user(self.realm, user),
                held(versions.user),
            )?
            .check(layout::signing_keys(self.realm), held(versions.signing))?
            .check(
                crate::oauth::layout::client(self.realm, client_id),
                held(versions.client),
            )?;
        Ok(())
    }

    /// Make `rotation`: one commit that moves the family to a new token if
    /// the family, its session and every record of the basis are still at
    /// the versions it was decided on, with the access token signed while
    /// the commit is in flight. `Ok(Err(conflict))` when something changed.
    /// A rotation that commits is remembered for the family's next refresh.
    async fn rotate(
        &self,
        rotation: Rotation,
        client_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<TokenResponse, StorageError>, Error> {
        // Opened before the commit, so a committed rotation always gets its
        // access token.
        let signer = self.signer_from(rotation.signing.clone()).await?;
        let next = new_refresh_token(&rotation.family)?;
        let mut rotated = rotation.family.clone();
        rotated.current = next.digest.0;
        rotated.generation += 1;
        rotated.issued_at = now;
        let family_key = layout::family(self.realm, rotated.id);
        let mut batch = Batch::new();
        batch
            .put(
                family_key.clone(),
                record::encode(family_key.as_bytes(), &FamilyRecord::V1(rotated.clone()))?,
                Precondition::Version(rotation.version),
            )?
            .put(
                layout::refresh_token(self.realm, &next.digest.0),
                rotated.id.to_bytes().to_vec(),
                Precondition::Absent,
            )?
            .check(
                crate::user::keys::session(self.realm, rotated.session),
                Precondition::Version(rotation.session_version),
            )?;
        self.check_basis(
            &mut batch,
            &rotation.basis.versions,
            rotated.user,
            client_id,
        )?;
        let grant = AccessGrant {
            client_id: &rotated.client_id,
            audience: &rotation.granted.audience,
            scope: &rotation.granted.scope,
            lifetime_secs: rotation
                .basis
                .client
                .as_ref()
                .and_then(|c| c.client.access_token_secs),
            name: None,
            act: None,
            one_time: false,
        };
        let (committed, access) = self
            .commit_and_sign(
                batch,
                &signer,
                &rotation.basis.realm,
                &rotation.session.session,
                &grant,
                now,
            )
            .await;
        let committed = match committed {
            Ok(committed) => committed,
            Err(e) if is_conflict(&e) => return Ok(Err(e)),
            Err(e) => return Err(e.into()),
        };
        let (access, expires_in) = access?;
        let response = TokenResponse {
            access_token: access,
            token_type: "Bearer",
            expires_in,
            refresh_token: Some(next.token),
            scope: rotation.granted.scope.clone(),
            session: rotated.session,
            id_token: None,
        };
        // A session that came from an application token lives only while
        // that token's record exists, which no precondition here covers:
        // such families are always refreshed on a read.
        if rotation.session.app_token.is_none()
            && let Some(version) = committed.version
        {
            let remembered = Rotation {
                family: rotated,
                version,
                ..rotation
            };
            self.ctx
                .rotations
                .remember(family_key.as_bytes(), &next.digest.0, remembered);
        }
        Ok(Ok(response))
    }

    /// Refresh on the rotation this instance made last of the token's
    /// family, without reading, if the presented token is the one that
    /// rotation handed out. `None` when there is no such rotation, when it
    /// no longer leads to a rotation, or when the commit finds that
    /// anything it rests on changed: the caller then decides on a fresh
    /// read.
    async fn refresh_remembered(
        &self,
        at: &RefreshLocator,
        digest: &TokenDigest,
        client: &ClientAuth,
        scope: &[String],
        now: DateTime<Utc>,
    ) -> Result<Option<TokenResponse>, Error> {
        let family_key = layout::family(self.realm, at.family);
        let Some(last) = self
            .ctx
            .rotations
            .take::<Rotation>(family_key.as_bytes(), &digest.0)
        else {
            return Ok(None);
        };
        // The same judgement as on a read, but only a rotation is acted on:
        // no refusal — above all no reuse verdict — rests on remembered
        // state; anything else is judged again on a fresh read.
        let Ok(Judgement::Rotate(rotation)) =
            Self::judge(last.as_read(), at, digest, client, scope, now)
        else {
            return Ok(None);
        };
        // A conflict is not a lost race: another instance may have rotated
        // the family long ago, and a replay of this token must then still
        // count as reuse. The fresh read decides.
        Ok(self.rotate(*rotation, &client.client_id, now).await?.ok())
    }

    /// The family of a presented refresh token, if the token is its live
    /// one (for revocation and introspection).
    pub(crate) async fn current_family(&self, token: &str) -> Result<Option<StoredFamily>, Error> {
        let Some((at, digest)) = parse_refresh_token(token) else {
            return Ok(None);
        };
        let key = layout::family(self.realm, at.family);
        let Some(stored) = self.ctx.store.get(key.as_bytes()).await? else {
            return Ok(None);
        };
        let FamilyRecord::V1(family) = record::decode(key.as_bytes(), &stored.value)?;
        let genuine = family.session == at.session
            && family.user == at.user
            && TokenDigest(family.current).matches(&digest);
        Ok(genuine.then_some(family))
    }

    /// Whether `digest` is of a token the family `family` issued earlier:
    /// every token's digest is indexed when it is issued, so a presented
    /// token that is not the current one is either a replay of a rotated
    /// token (reuse: the family dies) or a forgery naming the family (it
    /// must not be able to kill it).
    async fn issued_by(&self, digest: &TokenDigest, family: TokenFamilyId) -> Result<bool, Error> {
        let index = layout::refresh_token(self.realm, &digest.0);
        Ok(self
            .ctx
            .store
            .get(index.as_bytes())
            .await?
            .is_some_and(|stored| stored.value.as_slice() == family.to_bytes().as_slice()))
    }

    /// Delete a family and, with `session`, its session (one batch).
    pub(crate) async fn kill_family(
        &self,
        family: &StoredFamily,
        session: bool,
    ) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete(layout::family(self.realm, family.id), Precondition::Any)?;
        if session {
            batch
                .delete(
                    crate::user::keys::session(self.realm, family.session),
                    Precondition::Any,
                )?
                .delete(
                    crate::user::keys::user_session(self.realm, family.user, family.session),
                    Precondition::Any,
                )?;
        }
        self.ctx.store.commit(batch).await?;
        Ok(())
    }

    /// Whether a family is past its absolute lifetime or idle timeout.
    pub(crate) fn family_expired(realm: &Realm, family: &StoredFamily, now: DateTime<Utc>) -> bool {
        let t = realm.settings.tokens;
        now >= family.created_at + Duration::seconds(i64::from(t.refresh_absolute_secs))
            || now >= family.issued_at + Duration::seconds(i64::from(t.refresh_idle_secs))
    }

    /// Use a refresh token of the public client `client_id`: rotate it and
    /// issue a new access token with the family's scope;
    /// [`refresh_as`](Self::refresh_as) with no secret and no narrowing.
    pub async fn refresh(
        &self,
        refresh_token: &SecretString,
        client_id: &str,
    ) -> Result<TokenResponse, Error> {
        self.refresh_as(refresh_token, &ClientAuth::public(client_id), &[])
            .await
    }

    /// Use a refresh token: rotate it and issue a new access token (see the
    /// [module docs](super)). `client` must be the client the family was
    /// issued to, still registered and allowed refresh tokens, with its
    /// secret if confidential; `scope` may narrow the new access token's
    /// scope (RFC 6749 §6), never widen it. Fails with `INVALID_GRANT`
    /// (unknown, expired, revoked, another client, or a lost concurrent
    /// rotation), `REFRESH_TOKEN_REUSED` (an already-rotated token: family
    /// and session are now revoked), or the policy's `OAUTH_INVALID_CLIENT`,
    /// `OAUTH_UNAUTHORIZED_CLIENT`, `OAUTH_INVALID_SCOPE` (nothing written).
    pub async fn refresh_as(
        &self,
        refresh_token: &SecretString,
        client: &ClientAuth,
        scope: &[String],
    ) -> Result<TokenResponse, Error> {
        let Some((at, digest)) = parse_refresh_token(refresh_token.expose()) else {
            return Err(TokenError::InvalidGrant.into());
        };
        let client_id = client.client_id.as_str();
        // An over-long or odd client id can't name a family's client.
        if super::check_ident("client_id", client_id).is_err() {
            return Err(TokenError::InvalidGrant.into());
        }
        super::check_scope(scope).map_err(|_| crate::oauth::OAuthError::InvalidScope)?;
        let now = self.now();
        if let Some(response) = self
            .refresh_remembered(&at, &digest, client, scope, now)
            .await?
        {
            return Ok(response);
        }
        let mut lost_race = false;
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let read = self.read_for_refresh(&at, client_id).await?;
            let rotation = match Self::judge(read, &at, &digest, client, scope, now)? {
                Judgement::Rotate(rotation) => rotation,
                Judgement::Invalid => return Err(TokenError::InvalidGrant.into()),
                Judgement::NotCurrent(family) => {
                    if lost_race {
                        // Another request rotated this very token while we
                        // tried: a concurrent use, not evidence of theft.
                        return Err(TokenError::InvalidGrant.into());
                    }
                    if self.issued_by(&digest, family.id).await? {
                        self.kill_family(&family, true).await?;
                        return Err(TokenError::RefreshReused.into());
                    }
                    return Err(TokenError::InvalidGrant.into());
                }
                Judgement::Dead(family) => {
                    self.kill_family(&family, false).await?;
                    return Err(TokenError::InvalidGrant.into());
                }
            };
            match self.rotate(*rotation, client_id, now).await? {
                Ok(response) => return Ok(response),
                Err(conflict) => {
                    lost_race = true;
                    last = Some(conflict);
                }
            }
        }
        Err(last.map_or_else(|| TokenError::InvalidGrant.into(), Error::from))
    }

    /// Verify an access token of this realm for `audience`; see the
    /// [module docs](super) for every check and its error. Returns the
    /// claims.
    pub async fn verify_access_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<AccessClaims, Error> {
        // Every rule that needs no key, before any storage access.
        let parsed = parse_jws(token)?;
        let now = self.now();
        let realm_key = crate::realm::service::realm_key(self.realm);
        let keys_key = layout::signing_keys(self.realm);
        // The claims name the session, user and application whose state
        // decides revocation: read them (untrusted, not yet acted on) so
        // that realm, keys and that state come in ONE `get_many` — one
        // round trip on a remote store. Nothing is decided on them before
        // the signature is checked; claims that do not parse (or name no
        // application we could have issued to) take the two-read path,
        // where the signature is still checked first.
        let unverified = serde_json::from_slice::<AccessClaims>(parsed.payload())
            .ok()
            .filter(|c| c.client_id.len() <= super::MAX_CLIENT_ID_LEN);
        let Some(claims) = unverified else {
            let [realm, keys] = self
                .read_many([realm_key.as_bytes(), keys_key.as_bytes()])
                .await?;
            let realm = crate::realm::service::active_from(&self.ctx, &realm_key, realm)?;
            let keys = self.verifiers_from(keys, now)?;
            return self
                .verify_signed(&realm, parsed, &keys, Some(audience), now)
                .await;
        };
        let state = StateKeys::of(self.realm, &claims);
        let [realm, keys, realm_marks, client_marks, session, user] = self
            .read_many([
                realm_key.as_bytes(),
                keys_key.as_bytes(),
                state.realm_marks.as_bytes(),
                state.client_marks.as_bytes(),
                state.session.as_bytes(),
                state.user.as_bytes(),
            ])
            .await?;
        let realm = crate::realm::service::active_from(&self.ctx, &realm_key, realm)?;
        let keys = self.verifiers_from(keys, now)?;
        // The payload just verified is the one `claims` came from.
        let claims = Self::check_signed(&realm, parsed, &keys, Some(claims), Some(audience), now)?;
        self.check_state(
            claims,
            &state,
            [realm_marks, client_marks, session, user],
            now,
        )
        .await
    }

    pub(crate) async fn verify_with(
        &self,
        realm: &Realm,
        token: &str,
        audience: Option<&str>,
    ) -> Result<AccessClaims, Error> {
        let parsed = parse_jws(token)?;
        let now = self.now();
        let keys = self.verification_keys(now).await?;
        self.verify_signed(realm, parsed, &keys, audience, now)
            .await
    }

    /// Every check of a parsed access token against the realm's published
    /// `keys`; then the revocation state (expire-all marks, session, user)
    /// is read in one `get_many` and checked.
    async fn verify_signed(
        &self,
        realm: &Realm,
        parsed: jws::Parsed<'_>,
        keys: &jws::JwsKeySet,
        audience: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, Error> {
        let claims = Self::check_signed(realm, parsed, keys, None, audience, now)?;
        self.check_live(claims, now).await
    }

    /// The revocation state of `claims` (expire-all marks, session, user),
    /// read in one `get_many`, and checked at `now`.
    async fn check_live(
        &self,
        claims: AccessClaims,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, Error> {
        let state = StateKeys::of(self.realm, &claims);
        let slots = self
            .read_many([
                state.realm_marks.as_bytes(),
                state.client_marks.as_bytes(),
                state.session.as_bytes(),
                state.user.as_bytes(),
            ])
            .await?;
        self.check_state(claims, &state, slots, now).await
    }

    /// Whether `claims` — of a token this realm verified earlier — still
    /// hold now: the realm is active, the issuer is still the realm's, the
    /// token has not expired (with the leeway), and the revocation state
    /// (expire-all marks, session, user) still lets it live. What a
    /// long-lived connection opened with the token, such as an event
    /// stream, checks again on a timer without keeping the token. Errors
    /// are those of [`verify_access_token`](Self::verify_access_token).
    pub async fn recheck(&self, claims: AccessClaims) -> Result<AccessClaims, Error> {
        let realm = self.active_realm().await?;
        let now = self.now();
        if !is_issuer(&realm, &claims.iss) {
            return Err(TokenError::WrongIssuer.into());
        }
        if now.timestamp() >= claims.exp.saturating_add(CLOCK_LEEWAY_SECS) {
            return Err(TokenError::Expired.into());
        }
        self.check_live(claims, now).await
    }

    /// The checks that need no storage, in order: signature (with the
    /// `alg` pinned by `kid`), `typ`, a claim set, issuer, audience, and
    /// time with the leeway. `claims` are the payload's, parsed by the
    /// caller, if it has them.
    fn check_signed(
        realm: &Realm,
        parsed: jws::Parsed<'_>,
        keys: &jws::JwsKeySet,
        claims: Option<AccessClaims>,
        audience: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, Error> {
        let verified = parsed.verify(keys).map_err(jws_error)?;
        let typ_ok = verified.header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYP) || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(TokenError::WrongType.into());
        }
        let claims = match claims {
            Some(claims) => claims,
            None => {
                serde_json::from_slice(&verified.payload).map_err(|_| TokenError::Malformed {
                    reason: "claims are not an RFC 9068 claim set",
                })?
            }
        };
        if !is_issuer(realm, &claims.iss) {
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
        Ok(claims)
    }

    /// The revocation checks of verified `claims` against the state read
    /// at `keys`: expire-all marks (the realm's, and the application's),
    /// then the session and its user.
    async fn check_state(
        &self,
        claims: AccessClaims,
        keys: &StateKeys,
        [realm_marks, client_marks, session, user]: [Option<crate::store::Versioned>; 4],
        now: DateTime<Utc>,
    ) -> Result<AccessClaims, Error> {
        let client_marks = if claims.client_id.is_empty() {
            None
        } else {
            Some(decode_marks(
                &self.ctx.records,
                &keys.client_marks,
                client_marks,
            )?)
        };
        if expired_under(
            &decode_marks(&self.ctx.records, &keys.realm_marks, realm_marks)?,
            client_marks.as_deref().map(Vec::as_slice),
            claims.iat,
            now,
        ) {
            return Err(TokenError::Revoked.into());
        }
        // `user` is the record of `sub`; a session of anyone else fails here.
        let users = self.users();
        let alive = match users.decode_shared_session(claims.sid, session) {
            Ok((found, _)) => users.check_session_alive(&found, user).await,
            Err(e) => Err(e),
        };
        match alive {
            Ok(()) => Ok(claims),
            Err(Error::Auth(crate::user::AuthError::SessionNotFound)) => {
                Err(TokenError::Revoked.into())
            }
            Err(e) => Err(e),
        }
    }

    /// End one session (logout): its access tokens stop verifying and its
    /// refresh-token families stop refreshing at once. An unknown session
    /// is not an error.
    pub async fn logout(&self, session: SessionId) -> Result<(), Error> {
        match self.users().revoke_session(session).await {
            Ok(()) | Err(Error::Auth(crate::user::AuthError::SessionNotFound)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// End every session of a user (the user's session epoch moves in one
    /// write). Returns the number of session records swept.
    pub async fn logout_all(&self, user: UserId) -> Result<u64, Error> {
        self.users().revoke_all_sessions(user).await
    }

    /// Expire every token of the realm issued up to now: access and refresh
    /// tokens issued at or before this second stop working `grace` from now
    /// (zero: at once). Tokens issued afterwards are unaffected.
    pub async fn expire_all(&self, grace: Duration) -> Result<(), Error> {
        self.add_expire_mark(None, grace).await
    }

    /// Expire every token issued to one application (`client_id`) up to now,
    /// after `grace` (the seed's per-application expire-all with `expiry`).
    /// Tokens of other applications, and tokens issued afterwards, are
    /// unaffected.
    pub async fn expire_all_for_client(
        &self,
        client_id: &str,
        grace: Duration,
    ) -> Result<(), Error> {
        super::check_ident("client_id", client_id)?;
        self.add_expire_mark(Some(client_id), grace).await
    }

    /// Record an expire-all mark for the realm or one application.
    async fn add_expire_mark(&self, client: Option<&str>, grace: Duration) -> Result<(), Error> {
        if grace < Duration::zero() || grace > Duration::days(30) {
            return Err(crate::ValidationError::new("grace", "0 seconds to 30 days").into());
        }
        self.active_realm().await?;
        let now = self.now();
        let key = layout::expire_all(self.realm, client);
        let mut last = None;
        for _ in 0..MAX_RETRIES {
            let (mut marks, version) = self.expire_marks(client).await?;
            add_mark(
                &mut marks,
                ExpireMark {
                    cutoff: now,
                    effective_at: now + grace,
                },
            );
            let mut batch = Batch::new();
            batch.put(
                key.clone(),
                record::encode(key.as_bytes(), &ExpireAllRecord::V1 { marks })?,
                version.map_or(Precondition::Absent, Precondition::Version),
            )?;
            match self.ctx.store.commit(batch).await {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.map_or_else(|| TokenError::InvalidGrant.into(), Error::from))
    }

    /// OIDC userinfo: the claims of the user an access token belongs to:
    /// `sub`, `preferred_username`, and `email` / `name` when set. The token
    /// is one for `audience` (the userinfo endpoint's own server), or one
    /// issued to any client with the `openid` scope (OIDC Core §5.3: the
    /// token a relying party got in the code flow, whatever its audience);
    /// `TOKEN_WRONG_AUDIENCE` otherwise.
    pub async fn userinfo(&self, token: &str, audience: &str) -> Result<serde_json::Value, Error> {
        let realm = self.active_realm().await?;
        let claims = self.verify_with(&realm, token, None).await?;
        if claims.aud != audience && !claims.scopes().any(|s| s == "openid") {
            return Err(TokenError::WrongAudience.into());
        }
        let Some((user, _)) = self.users().load_user(claims.sub).await? else {
            return Err(TokenError::Revoked.into());
        };
        let mut info = serde_json::Map::new();
        info.insert("sub".into(), claims.sub.to_string().into());
        info.insert(
            "preferred_username".into(),
            user.user.username.clone().into(),
        );
        if let Some(email) = &user.user.email {
            info.insert("email".into(), email.clone().into());
        }
        if let Some(name) = &user.user.display_name {
            info.insert("name".into(), name.clone().into());
        }
        Ok(serde_json::Value::Object(info))
    }

    /// The OIDC discovery document (`/.well-known/openid-configuration`) of
    /// the realm, with endpoints under `<issuer>/protocol/openid-connect/`.
    /// Needs the realm's `issuer_url` (`ISSUER_NOT_CONFIGURED` otherwise).
    ///
    /// It lists only what the library implements: the `code` response type
    /// ([`crate::oauth`]; no implicit or hybrid flow), PKCE `S256` only,
    /// the grants of [`Tokens::exchange`] plus `client_credentials`
    /// ([`OAuth::client_credentials`](crate::oauth::OAuth::client_credentials)),
    /// and client authentication by `client_secret_basic`,
    /// `client_secret_post` or `none` (public clients).
    pub async fn discovery(&self) -> Result<serde_json::Value, Error> {
        let realm = self.active_realm().await?;
        let iss = realm
            .settings
            .issuer_url
            .clone()
            .ok_or(TokenError::IssuerNotConfigured)?;
        let base = format!("{}/protocol/openid-connect", iss.trim_end_matches('/'));
        Ok(serde_json::json!({
            "issuer": iss,
            "jwks_uri": format!("{base}/certs"),
            "token_endpoint": format!("{base}/token"),
            "introspection_endpoint": format!("{base}/token/introspect"),
            "revocation_endpoint": format!("{base}/revoke"),
            "userinfo_endpoint": format!("{base}/userinfo"),
            "end_session_endpoint": format!("{base}/logout"),
            "authorization_endpoint": format!("{base}/auth"),
            "grant_types_supported": [
                super::grants::GRANT_AUTHORIZATION_CODE,
                super::grants::GRANT_REFRESH_TOKEN,
                super::grants::GRANT_CLIENT_CREDENTIALS,
                super::grants::GRANT_PASSWORD,
                super::grants::GRANT_TOKEN_EXCHANGE,
                super::grants::GRANT_ONE_TIME,
            ],
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "code_challenge_methods_supported": ["S256"],
            "authorization_response_iss_parameter_supported": true,
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["EdDSA", "ES256"],
            "token_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            // RFC 8414 §2: revocation takes public clients by id; an
            // introspecting resource server authenticates (or presents a
            // bearer token with the `introspect` scope).
            "revocation_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "none"],
            "introspection_endpoint_auth_methods_supported":
                ["client_secret_basic", "client_secret_post", "bearer"],
            "scopes_supported": [crate::oauth::SCOPE_OPENID],
            "acr_values_supported": [super::id_token::ACR_SINGLE_FACTOR, super::id_token::ACR_MFA],
            "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "jti", "client_id",
                "scope", "sid", "amr", "acr", "azp", "nonce", "auth_time", "preferred_username",
                "email", "name"],
        }))
    }
}

//! The entry point: [`Keystead`] holds the store, the clock and the
//! key-encryption keys, and hands out one service handle per domain.
//!
//! ```
//! # async fn demo() -> Result<(), keystead::Error> {
//! use keystead::Keystead;
//! use keystead::crypto::at_rest::StaticKeyProvider;
//! use keystead::store::MemoryStore;
//!
//! let ks = Keystead::builder()
//!     .store(MemoryStore::new())
//!     .keys(StaticKeyProvider::generate()?)
//!     .build()?;
//! let realm = ks.realms().create("acme", Default::default()).await?;
//! assert_eq!(realm.name, "acme");
//! # Ok(()) }
//! ```
//!
//! Every service method follows the same shape: read the clock once, load
//! the records it needs, apply a pure rule, and commit every resulting write
//! (records, indexes, events) in one atomic [`Batch`](crate::store::Batch)
//! with preconditions. When a precondition fails because another caller got
//! there first, the method reloads and retries a bounded number of times
//! ([`MAX_RETRIES`]) or reports the domain conflict.

use crate::clock::{Clock, SystemClock};
use crate::crypto::at_rest::KeyProvider;
use crate::device::Devices;
use crate::error::{Error, ValidationError};
use crate::id::RealmId;
use crate::mfa::Mfa;
use crate::realm::Realms;
use crate::secret::SecretString;
use crate::store::{StorageError, Store};
use crate::token::Tokens;
use crate::user::Users;
use crate::webauthn::Webauthn;
use futures::future::BoxFuture;
use std::sync::Arc;

/// How many times a service method reloads and retries after losing a
/// compare-and-swap race before it reports the conflict.
pub const MAX_RETRIES: usize = 16;

/// Runs CPU-heavy work (argon2 password hashing) off the caller's async
/// executor.
///
/// The default, [`BlockingPool`], uses the `blocking` crate's thread pool and
/// works under any runtime. Embedders that want hashing on their own pool —
/// tokio's `spawn_blocking`, a rayon pool, a bounded pool that caps argon2's
/// memory use — implement this and pass it to
/// [`KeysteadBuilder::blocking`]:
///
/// ```
/// use futures::future::BoxFuture;
/// struct Tokio;
/// impl keystead::BlockingRunner for Tokio {
///     fn run(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> {
///         Box::pin(async move {
///             let _ = tokio::task::spawn_blocking(job).await;
///         })
///     }
/// }
/// ```
pub trait BlockingRunner: Send + Sync + 'static {
    /// Run `job` on a thread where blocking is fine; the future completes
    /// when it has run. A runner that drops `job` makes the calling
    /// operation fail with a `Backend` error, never hang.
    fn run(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()>;
}

/// The default [`BlockingRunner`]: the `blocking` crate's thread pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct BlockingPool;

impl BlockingRunner for BlockingPool {
    fn run(&self, job: Box<dyn FnOnce() + Send>) -> BoxFuture<'static, ()> {
        Box::pin(blocking::unblock(job))
    }
}

/// Screens new passwords against a list of breached passwords (NIST SP
/// 800-63B §5.1.1.2), e.g. a local copy of the Have I Been Pwned corpus or a
/// k-anonymity range query. Optional; set with
/// [`KeysteadBuilder::breached_passwords`]. It sees the password, so it must
/// never log or send it in the clear.
#[async_trait::async_trait]
pub trait BreachedPasswords: Send + Sync + 'static {
    /// Whether `password` is known to be compromised.
    async fn is_breached(&self, password: &SecretString) -> Result<bool, Error>;
}

/// Run `f` on the instance's [`BlockingRunner`] and return its result.
pub(crate) async fn run_blocking<T: Send + 'static>(
    runner: &dyn BlockingRunner,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Error> {
    let (tx, rx) = futures::channel::oneshot::channel();
    runner
        .run(Box::new(move || {
            let _ = tx.send(f());
        }))
        .await;
    rx.await.map_err(|_| {
        StorageError::backend("the blocking runner dropped a job without running it").into()
    })
}

/// Records deleted per batch when a service sweeps a prefix.
pub(crate) const SWEEP_PAGE: usize = 256;

/// Delete every record under `prefix` page by page — except the key `skip` —
/// together with the extra key `also` derives from each row (an index entry
/// pointing at it). Returns the rows removed. Services call it after the
/// owning record is gone, so a sweep cut short leaves only unreachable data.
pub(crate) async fn sweep(
    store: &dyn Store,
    prefix: &crate::store::key::Key,
    skip: Option<&[u8]>,
    also: impl Fn(&[u8], &[u8]) -> Option<Vec<u8>>,
) -> Result<u64, Error> {
    let mut removed = 0u64;
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store
            .scan(prefix.as_bytes(), after.as_deref(), SWEEP_PAGE)
            .await?;
        let Some((last_key, _)) = page.last() else {
            return Ok(removed);
        };
        after = Some(last_key.clone());
        let mut batch = crate::store::Batch::new();
        for (key, stored) in &page {
            if skip == Some(key.as_slice()) {
                continue;
            }
            batch.delete(key.clone(), crate::store::Precondition::Any)?;
            if let Some(extra) = also(key, &stored.value) {
                batch.delete(extra, crate::store::Precondition::Any)?;
            }
            removed += 1;
        }
        if !batch.is_empty() {
            store.commit(batch).await?;
        }
    }
}

/// What every service shares.
pub(crate) struct Context {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) blocking: Arc<dyn BlockingRunner>,
    pub(crate) breached: Option<Arc<dyn BreachedPasswords>>,
    pub(crate) keys: Arc<dyn KeyProvider>,
    /// Opened token-signing keys, so issuing does not unseal per token.
    pub(crate) signers: crate::token::keys::SignerCache,
    /// Decoded verification key sets by realm and record version.
    pub(crate) verifiers: crate::token::keys::VerifierCache,
    /// Decoded realm, session and user records by their stored bytes.
    pub(crate) records: crate::store::decoded::Decoded,
    /// The last rotation this instance made of each refresh family, by the
    /// digest of the token it handed out (see `token::service`).
    pub(crate) rotations: crate::store::decoded::Decoded,
}

impl Context {
    fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        blocking: Arc<dyn BlockingRunner>,
        breached: Option<Arc<dyn BreachedPasswords>>,
        keys: Arc<dyn KeyProvider>,
    ) -> Self {
        Self {
            store,
            clock,
            blocking,
            breached,
            keys,
            signers: crate::token::keys::SignerCache::default(),
            verifiers: crate::token::keys::VerifierCache::default(),
            records: crate::store::decoded::Decoded::default(),
            rotations: crate::store::decoded::Decoded::with_capacity(ROTATIONS_PER_SHARD),
        }
    }
}

/// Remembered refresh rotations per shard of [`Context::rotations`]: 16 ×
/// 1,024 families, one to two kilobytes each (the family, its session and
/// the signing-key record). A family beyond that is refreshed
/// on a fresh read, as every family is after a restart.
const ROTATIONS_PER_SHARD: usize = 1024;

/// The keystead library instance; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct Keystead {
    ctx: Arc<Context>,
}

impl std::fmt::Debug for Keystead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keystead")
    }
}

impl Keystead {
    /// Start building an instance; a store and a key provider are required.
    pub fn builder() -> KeysteadBuilder {
        KeysteadBuilder::default()
    }

    /// Realms (tenants): create, configure, disable, delete.
    pub fn realms(&self) -> Realms {
        Realms::new(Arc::clone(&self.ctx))
    }

    /// Users, passwords, login, sessions and application tokens of one
    /// realm. The handle is bound to `realm`: nothing of another realm can be
    /// read or changed through it. Every call first checks that the realm
    /// exists and is active.
    pub fn users(&self, realm: RealmId) -> Users {
        Users::new(Arc::clone(&self.ctx), realm)
    }

    /// Device groups, devices, presence, push tokens, E2EE group keys with
    /// versioned rotation, and the per-group event stream of one realm.
    /// Bound to `realm` like [`users`](Self::users).
    pub fn devices(&self, realm: RealmId) -> Devices {
        Devices::new(Arc::clone(&self.ctx), realm)
    }

    /// The group-key half of [`devices`](Self::devices) (rotation, key
    /// versions, envelopes): the same handle, under the name DESIGN.md uses.
    pub fn group_keys(&self, realm: RealmId) -> Devices {
        self.devices(realm)
    }

    /// MFA of one realm: TOTP keys, verification, recovery codes and
    /// completion of the login's MFA challenge. Bound to `realm` like
    /// [`users`](Self::users).
    pub fn mfa(&self, realm: RealmId) -> Mfa {
        Mfa::new(Arc::clone(&self.ctx), realm)
    }

    /// Tokens of one realm: signing keys and JWKS, access and refresh
    /// tokens, revocation, logout, expire-all, introspection, userinfo and
    /// discovery. Bound to `realm` like [`Keystead::users`]: a token of
    /// another realm never verifies through it.
    pub fn tokens(&self, realm: RealmId) -> Tokens {
        Tokens::new(Arc::clone(&self.ctx), realm)
    }

    /// Passkeys (WebAuthn) of one realm: the relying party, registration
    /// and authentication ceremonies, credential management. Bound to
    /// `realm` like [`users`](Self::users).
    pub fn webauthn(&self, realm: RealmId) -> Webauthn {
        Webauthn::new(Arc::clone(&self.ctx), realm)
    }

    /// OAuth clients and the authorization-code flow with PKCE of one
    /// realm: client registration, authorization requests, the login
    /// transaction, and the client-credentials grant (codes are redeemed
    /// through [`Tokens::exchange`]). Bound to `realm` like
    /// [`users`](Self::users).
    pub fn oauth(&self, realm: RealmId) -> crate::oauth::OAuth {
        crate::oauth::OAuth::new(Arc::clone(&self.ctx), realm)
    }

    /// The store this instance was built with (for embedders that keep their
    /// own records beside keystead's, under their own key prefix).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.ctx.store
    }

    /// The time by this instance's clock: what a front-end compares token
    /// times with (e.g. [`AccessClaims::authenticated_within`](crate::token::AccessClaims::authenticated_within)),
    /// so a test's manual clock governs those checks too.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ctx.clock.now()
    }

    /// Another instance on the same store, clock and keys with nothing
    /// cached: what a second process of the same deployment is, for tests
    /// of what one instance must see of another's writes.
    #[cfg(any(test, feature = "conformance"))]
    #[must_use]
    pub fn second_instance(&self) -> Keystead {
        let ctx = &self.ctx;
        Keystead {
            ctx: Arc::new(Context::new(
                Arc::clone(&ctx.store),
                Arc::clone(&ctx.clock),
                Arc::clone(&ctx.blocking),
                ctx.breached.clone(),
                Arc::clone(&ctx.keys),
            )),
        }
    }
}

/// Builder for [`Keystead`].
#[derive(Default)]
pub struct KeysteadBuilder {
    store: Option<Arc<dyn Store>>,
    clock: Option<Arc<dyn Clock>>,
    keys: Option<Arc<dyn KeyProvider>>,
    blocking: Option<Arc<dyn BlockingRunner>>,
    breached: Option<Arc<dyn BreachedPasswords>>,
}

impl KeysteadBuilder {
    /// The storage backend (required): e.g. `keystead_sqlite::SqliteStore`.
    #[must_use]
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// The storage backend as a shared trait object.
    #[must_use]
    pub fn shared_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The clock (default [`SystemClock`]); tests pass a `ManualClock`.
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The key-encryption keys that seal secrets at rest (required): back
    /// it with your KMS in production.
    #[must_use]
    pub fn keys(mut self, keys: impl KeyProvider + 'static) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Where password hashing runs (default [`BlockingPool`]).
    #[must_use]
    pub fn blocking(mut self, runner: impl BlockingRunner) -> Self {
        self.blocking = Some(Arc::new(runner));
        self
    }

    /// Screen new passwords (registration, password change) against a
    /// breached-password list; a hit is a validation error on the password.
    #[must_use]
    pub fn breached_passwords(mut self, screen: impl BreachedPasswords) -> Self {
        self.breached = Some(Arc::new(screen));
        self
    }

    /// Build the instance, or name the missing part.
    pub fn build(self) -> Result<Keystead, Error> {
        let store = self
            .store
            .ok_or_else(|| ValidationError::new("store", "Keystead::builder() needs a store"))?;
        let keys = self.keys.ok_or_else(|| {
            ValidationError::new("keys", "Keystead::builder() needs a key provider")
        })?;
        Ok(Keystead {
            ctx: Arc::new(Context::new(
                store,
                self.clock.unwrap_or_else(|| Arc::new(SystemClock)),
                self.blocking.unwrap_or_else(|| Arc::new(BlockingPool)),
                self.breached,
                keys,
            )),
        })
    }
}

//! keystead — embeddable identity and device trust.
//!
//! keystead owns the rules of realms, users, MFA, devices, end-to-end-encrypted
//! group keys and tokens; the embedder owns HTTP, the async runtime and the
//! choice of database. Everything that touches the outside world sits behind a
//! trait:
//!
//! * [`store::Store`] — a versioned key-value store with atomic conditional
//!   batches. [`store::MemoryStore`] is the reference implementation; the
//!   `keystead-sqlite` (embedded default) and `keystead-sled` crates are the
//!   durable ones. Every backend runs the same conformance suite
//!   (`store_conformance_tests!`, feature `conformance`).
//! * [`clock::Clock`] — time is always passed in, never read behind your back,
//!   so expiry and lockout rules are testable with a `clock::ManualClock`
//!   (feature `test-utils`).
//!
//! Device groups, the device lifecycle, E2EE group-key rotation, presence,
//! key requests and per-group event streams live in [`device`]
//! (`ks.devices(realm)`); [`client`] is the front-end side (a device's
//! secret key, opening and sealing envelopes).
//!
//! Passkeys — WebAuthn registration and authentication, as a second factor
//! or passwordless login — live in [`webauthn`] (`ks.webauthn(realm)`).
//! OAuth clients, the authorization-code flow with PKCE and its login
//! transaction, and the client-credentials grant live in [`oauth`]
//! (`ks.oauth(realm)`); codes are redeemed at [`token::Tokens::exchange`].
//!
//! Identifiers are typed UUID v7 newtypes ([`id`]); secrets live in
//! [`secret`] wrappers that never print and are wiped on drop; every failure is
//! one [`Error`] with a stable [`Error::code`]. All cryptography (device keys,
//! group-key envelopes, at-rest sealing) goes through [`crypto`].
#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod crypto;
pub mod device;
pub mod error;
pub mod id;
mod keystead;
pub mod mfa;
pub mod oauth;
pub mod page;
pub mod realm;
pub mod secret;
pub mod store;
#[cfg(feature = "conformance")]
pub mod suite;
pub mod token;
pub mod user;
pub mod webauthn;

pub use crypto::CryptoError;
pub use error::{Error, ValidationError};
pub use keystead::{
    BlockingPool, BlockingRunner, BreachedPasswords, Keystead, KeysteadBuilder, MAX_RETRIES,
};
pub use store::StorageError;

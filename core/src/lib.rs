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
//! Identifiers are typed UUID v7 newtypes ([`id`]); secrets live in
//! [`secret`] wrappers that never print and are wiped on drop; every failure is
//! one [`Error`] with a stable [`Error::code`]. All cryptography (device keys,
//! group-key envelopes, at-rest sealing) goes through [`crypto`].
#![forbid(unsafe_code)]

pub mod clock;
pub mod crypto;
pub mod error;
pub mod id;
mod keystead;
pub mod page;
pub mod realm;
pub mod secret;
pub mod store;
#[cfg(feature = "conformance")]
pub mod suite;
pub mod token;
pub mod user;

pub use crypto::CryptoError;
pub use error::{Error, ValidationError};
pub use keystead::{Keystead, KeysteadBuilder, MAX_RETRIES};
pub use store::StorageError;

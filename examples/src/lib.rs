//! Support for keystead's runnable examples.
//!
//! The programs themselves live next to this crate (`quickstart.rs`, …) and
//! run with `cargo run --example <name>`. This library holds the code they
//! share, and compiles the README's embedding example as a doctest so the
//! README can't drift from the API.
#![forbid(unsafe_code)]

/// The README, compiled and run as doctests (`cargo test --workspace`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

//! Support for keystead's runnable examples.
//!
//! The programs themselves live next to this crate (`quickstart.rs`,
//! `server.rs`, `embed_axum.rs`, `cli.rs`) and run with
//! `cargo run --example <name>`. The HTTP layer they use is the
//! `keystead-axum` crate; this library holds the device front-end's logic
//! ([`cli`]), so its tests drive the same code in-process, and compiles
//! the README's examples as doctests so the README can't drift from the
//! API.
#![forbid(unsafe_code)]

pub mod cli;

/// The README, compiled and run as doctests (`cargo test --workspace`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

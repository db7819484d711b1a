//! Support for keystead's runnable examples.
//!
//! The programs themselves live next to this crate (`quickstart.rs`,
//! `server.rs`, `cli.rs`) and run with `cargo run --example <name>`. This
//! library holds the code they share — the HTTP server of the seed APIs
//! ([`server`]) and the device front-end's logic ([`cli`]) — so the
//! end-to-end tests drive the same code in-process, and compiles the
//! README's embedding example as a doctest so the README can't drift from
//! the API.
#![forbid(unsafe_code)]

pub mod cli;
pub mod server;

/// The README, compiled and run as doctests (`cargo test --workspace`).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

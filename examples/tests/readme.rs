//! The README's embedding block is `examples/embed_axum.rs`, word for word
//! (the file adds only its module docs): the README's doctest runs the
//! block and `cargo run --example embed_axum` runs the file, so neither can
//! drift from the other or from the API.

#[test]
fn the_readme_embedding_block_is_the_embed_axum_example() {
    let readme = include_str!("../../README.md");
    let example = include_str!("../embed_axum.rs");
    let section = readme
        .split("### Embedding in an existing axum app")
        .nth(1)
        .expect("the README has the embedding section");
    let block = section
        .split("```rust\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n").next())
        .expect("the section has a rust block");
    let body = &example[example
        .find("use axum::")
        .expect("the example's first import")..];
    assert_eq!(
        block, body,
        "README's embedding block differs from examples/embed_axum.rs"
    );
}

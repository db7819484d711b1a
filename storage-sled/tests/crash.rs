//! SIGKILL crash test and two-process test for keystead-sled. sled locks its
//! directory, so the second process of the two-process part is refused.

fn main() {
    keystead::store::conformance::crash::main(keystead::store::conformance::opener(
        |dir: std::path::PathBuf| async move { keystead_sled::SledStore::open(dir.join("db")).await },
    ));
}

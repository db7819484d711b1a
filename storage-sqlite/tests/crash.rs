//! SIGKILL mid-commit and two processes on one file; see
//! `keystead::store::conformance::crash`.

fn main() {
    keystead::store::conformance::crash::main(keystead::store::conformance::opener(
        |dir: std::path::PathBuf| async move {
            keystead_sqlite::SqliteStore::open(dir.join("keystead.db")).await
        },
    ));
}

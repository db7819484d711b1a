//! Several OS processes on one PostgreSQL database: the suite's SIGKILL test
//! (a committer killed mid-commit loses no acknowledged commit) and its
//! two-process compare-and-swap race (no lost increment); see
//! `keystead::store::conformance::crash`.
//!
//! `harness = false`, so this `main` owns the process tree. Without
//! `KEYSTEAD_TEST_POSTGRES_URL` it starts a throwaway cluster, re-executes
//! itself with the variable set — that process and the children it spawns
//! all connect to the same server — and stops the cluster (a drop guard) when
//! the run ends, whatever its outcome.

use keystead_postgres::testing::{Cluster, URL_ENV, open_in};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    if std::env::var_os(URL_ENV).is_some() {
        keystead::store::conformance::crash::main(keystead::store::conformance::opener(
            |dir: std::path::PathBuf| async move { open_in(&dir).await },
        ));
        return ExitCode::SUCCESS;
    }
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let status = Command::new(std::env::current_exe().expect("own executable"))
        .args(std::env::args_os().skip(1))
        .env(URL_ENV, cluster.url())
        .status()
        .expect("re-execute the crash test");
    drop(cluster);
    if status.success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("crash test failed: {status}");
        ExitCode::FAILURE
    }
}

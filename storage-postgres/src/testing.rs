//! A throwaway PostgreSQL cluster for tests and benchmarks (feature
//! `test-server`).
//!
//! [`Cluster::start`] runs `initdb` in a fresh temporary directory and starts
//! the server with `pg_ctl`, listening only on a unix socket inside that
//! directory (no TCP port, so clusters of parallel runs never collide), with
//! `fsync=on` like production. The binaries are looked up on `PATH`, then
//! under `/usr/lib/postgresql/<version>/bin` (newest first). When running as
//! root they run as the `postgres` user (`runuser -u postgres --`), since
//! PostgreSQL refuses to run as root. Missing binaries are an error naming
//! the fix — never a skipped test.
//!
//! # Cleanup
//!
//! Dropping a [`Cluster`] stops it (`pg_ctl stop -m immediate`) and removes
//! its directory. A cluster shared by a whole test binary ([`server_url`])
//! lives in a `static` and is never dropped, so each cluster also starts a
//! small watchdog shell in its own process group: it blocks reading a pipe
//! whose only writer is the test process. When that process exits — normally,
//! by panic or by SIGKILL — the kernel closes the pipe, the watchdog wakes,
//! stops the server and removes the directory. Terminal signals (Ctrl-C) go
//! to the test's process group, not the watchdog's, so it still runs.
//!
//! # External server
//!
//! If `KEYSTEAD_TEST_POSTGRES_URL` is set, [`server_url`] returns it and no
//! cluster is started. Its role must be allowed to create schemas; every
//! store opened by [`open_in`] lives in its own schema, which is left behind.

use crate::{PostgresOptions, PostgresStore};
use keystead::StorageError;
use std::ffi::OsString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

/// The environment variable naming an existing server to test against.
pub const URL_ENV: &str = "KEYSTEAD_TEST_POSTGRES_URL";

/// The port in the socket file name; the socket directory is private, so
/// any number works.
const PORT: u16 = 5432;

/// Why the test server could not be provided.
#[derive(Debug, Clone)]
pub struct HarnessError(String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgreSQL test server: {}", self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<HarnessError> for StorageError {
    fn from(e: HarnessError) -> Self {
        StorageError::backend(e)
    }
}

fn error(message: impl Into<String>) -> HarnessError {
    HarnessError(message.into())
}

/// A PostgreSQL cluster in a temporary directory, stopped and removed on
/// drop (or, failing that, when the process exits; see the module docs).
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    as_postgres: bool,
    url: String,
    /// Closing this pipe makes the watchdog stop the server and clean up.
    watchdog_pipe: Option<ChildStdin>,
    watchdog: Option<Child>,
}

impl Cluster {
    /// `initdb` and start a new cluster; see the module docs.
    pub fn start() -> Result<Self, HarnessError> {
        let bin = find_bin_dir()?;
        let initdb = bin.join("initdb");
        let pg_ctl = bin.join("pg_ctl");
        let as_postgres = is_root()?;
        let base = std::env::temp_dir();
        // Unix socket paths are limited to ~107 bytes.
        let base = if base.as_os_str().len() > 60 {
            PathBuf::from("/tmp")
        } else {
            base
        };
        let dir = tempfile::Builder::new()
            .prefix("keystead-pg-")
            .tempdir_in(&base)
            .map_err(|e| error(format!("creating a temporary directory: {e}")))?
            .keep();
        let mut cluster = Self {
            dir,
            pg_ctl,
            as_postgres,
            url: String::new(),
            watchdog_pipe: None,
            watchdog: None,
        };
        // From here on, dropping `cluster` cleans up whatever exists.
        if as_postgres {
            let (uid, gid) = postgres_ids()?;
            std::os::unix::fs::chown(&cluster.dir, Some(uid), Some(gid)).map_err(|e| {
                error(format!(
                    "chown of {} to postgres: {e}",
                    cluster.dir.display()
                ))
            })?;
        }
        cluster.spawn_watchdog()?;
        let data = cluster.data_dir();
        run(cluster.command(&initdb).arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "-N",
        ]))?;
        cluster.launch()?;
        cluster.url = format!(
            "host={} port={PORT} user=postgres dbname=postgres",
            cluster.dir.display()
        );
        Ok(cluster)
    }

    /// Start the server on the existing data directory (`pg_ctl start`,
    /// waiting until it accepts connections).
    fn launch(&self) -> Result<(), HarnessError> {
        let options = format!(
            "-k '{}' -c listen_addresses='' -p {PORT} -c fsync=on -c max_connections=300",
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let started = run(self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "-o", &options, "start"]));
        started.map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            error(format!("{e}\nserver log:\n{log}"))
        })
    }

    /// Crash and restart the server: `pg_ctl stop -m immediate` (every
    /// session is cut, no shutdown checkpoint — what a killed server
    /// leaves), then start it again on the same data directory, which
    /// replays the WAL. The URL stays valid.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        self.stop()?;
        self.launch()
    }

    /// The connection string (`key=value` form) of the cluster's `postgres`
    /// database, as its superuser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The temporary directory holding the data directory and the socket.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` as the user that runs the server, in the cluster directory.
    fn command(&self, program: &Path) -> Command {
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.current_dir(&self.dir).stdin(Stdio::null());
        command
    }

    /// Start the shell that cleans up when this process goes away.
    fn spawn_watchdog(&mut self) -> Result<(), HarnessError> {
        let mut stop: Vec<OsString> = Vec::new();
        if self.as_postgres {
            stop.extend(["runuser", "-u", "postgres", "--"].map(OsString::from));
        }
        stop.push(self.pg_ctl.clone().into_os_string());
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(
                r#"cat >/dev/null 2>&1; data=$1; dir=$2; shift 2; "$@" -D "$data" -m immediate -w stop >/dev/null 2>&1; rm -rf "$dir""#,
            )
            .arg("keystead-pg-watchdog")
            .arg(self.data_dir())
            .arg(&self.dir)
            .args(stop)
            .current_dir(&self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| error(format!("starting the cleanup watchdog: {e}")))?;
        self.watchdog_pipe = child.stdin.take();
        self.watchdog = Some(child);
        Ok(())
    }

    /// Stop the server now (`pg_ctl stop -m immediate`); the directory is
    /// removed on drop.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        if !self.data_dir().join("postmaster.pid").exists() {
            return Ok(());
        }
        run(self
            .command(&self.pg_ctl)
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"]))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // Let the watchdog finish (it finds nothing left to do).
        drop(self.watchdog_pipe.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}

/// Run a command to completion; an error carries its output.
fn run(command: &mut Command) -> Result<(), HarnessError> {
    let output = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| error(format!("running {command:?}: {e}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(error(format!(
            "{command:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// The output of a command that must succeed, trimmed.
fn output_of(program: &str, args: &[&str]) -> Result<String, HarnessError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| error(format!("running {program}: {e}")))?;
    if !output.status.success() {
        return Err(error(format!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn is_root() -> Result<bool, HarnessError> {
    Ok(output_of("id", &["-u"])? == "0")
}

fn postgres_ids() -> Result<(u32, u32), HarnessError> {
    let parse = |flag: &str| -> Result<u32, HarnessError> {
        output_of("id", &[flag, "postgres"])
            .map_err(|e| {
                error(format!(
                    "running as root needs a `postgres` user to run the server ({e})"
                ))
            })?
            .parse()
            .map_err(|e| error(format!("id {flag} postgres: {e}")))
    };
    Ok((parse("-u")?, parse("-g")?))
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin_dir() -> Result<PathBuf, HarnessError> {
    find_bin_dir_in(std::env::var_os("PATH"), Path::new("/usr/lib/postgresql"))
}

/// [`find_bin_dir`] with the search path and Debian's version root given.
pub(crate) fn find_bin_dir_in(
    path: Option<OsString>,
    versions_root: &Path,
) -> Result<PathBuf, HarnessError> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = path
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_both(dir))
    {
        return Ok(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(versions_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_both(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        error(format!(
            "initdb and pg_ctl not found on PATH nor under /usr/lib/postgresql/*/bin; \
             install PostgreSQL (Debian: apt-get install postgresql) or set {URL_ENV} to a server's URL"
        ))
    })
}

/// The server this test process uses: `KEYSTEAD_TEST_POSTGRES_URL` if set,
/// else a [`Cluster`] started on first use and shared by the whole process.
pub fn server_url() -> Result<String, HarnessError> {
    static SHARED: OnceLock<Result<Cluster, HarnessError>> = OnceLock::new();
    if let Some(url) = std::env::var_os(URL_ENV) {
        return url
            .into_string()
            .map_err(|_| error(format!("{URL_ENV} is not valid UTF-8")));
    }
    SHARED
        .get_or_init(Cluster::start)
        .as_ref()
        .map(|cluster| cluster.url().to_owned())
        .map_err(Clone::clone)
}

/// A schema name derived from `dir`: the same directory always maps to the
/// same schema, in every process (FNV-1a of the path).
pub fn schema_for(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in dir.as_os_str().as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("keystead_test_{hash:016x}")
}

/// Open a store on [`server_url`] in the schema [`schema_for`] `dir` — the
/// opener the conformance suite and the process tests use.
pub async fn open_in(dir: &Path) -> Result<PostgresStore, StorageError> {
    open_in_with(dir, PostgresOptions::default()).await
}

/// [`open_in`] with `options` (its `schema` is replaced).
pub async fn open_in_with(
    dir: &Path,
    options: PostgresOptions,
) -> Result<PostgresStore, StorageError> {
    let url = server_url()?;
    PostgresStore::connect_with(&url, options.with_schema(schema_for(dir))).await
}

/// A plain `tokio-postgres` connection to `url`, its connection task spawned
/// on the current tokio runtime; for tests that inspect or damage the tables.
pub async fn raw_client(url: &str) -> Result<tokio_postgres::Client, HarnessError> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| error(format!("connecting to {url}: {}", crate::chain(&e))))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Test hook: while `silent`, `store`'s writing commits send no `NOTIFY`
/// after `COMMIT` — what other processes see of a writer that crashed
/// between its `COMMIT` and its `NOTIFY`. Its own process's watches are
/// still woken in-process. Lets a test show that the listeners' timer alone
/// delivers such a commit (see the [crate docs](crate#watch)).
pub fn suppress_notifications(store: &PostgresStore, silent: bool) {
    store
        .inner
        .silent
        .store(silent, std::sync::atomic::Ordering::Relaxed);
}

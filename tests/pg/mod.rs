//! A throwaway PostgreSQL cluster for the database-source tests: `initdb` + `pg_ctl` from the
//! machine's PostgreSQL, on 127.0.0.1 and a free port, with its socket and data in a temp dir.
//!
//! One cluster serves the whole test binary ([`shared`]); each test gets its own database, so tests
//! stay parallel. The server refuses to run as root, so as root (CI, this container) every server
//! command runs as the `postgres` user through `runuser`. The cluster is stopped when the test
//! binary exits, however it exits: a watchdog process (run as the server's user) blocks reading a
//! pipe whose only writer is the test binary; the kernel closes the pipe at exit, the read returns,
//! and the watchdog runs `pg_ctl stop -m immediate` and removes the directory. A test that cannot
//! start PostgreSQL fails; it never skips.

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::support::PASSWORD;

pub(crate) mod bouncer;

/// The superuser of every test cluster; its password is the canary that must never be printed.
pub(crate) const SUPERUSER: &str = "postgres";

/// A running cluster.
pub(crate) struct Cluster {
    pub(crate) port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Run server commands as this user (when the tests run as root).
    run_as: Option<String>,
    /// The watchdog's stdin; closing it (exit, or [`Cluster::stop`]) stops the cluster.
    watchdog: Mutex<Option<Child>>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The cluster shared by every test of this binary, started on first use.
pub(crate) fn shared() -> &'static Cluster {
    SHARED.get_or_init(Cluster::start)
}

/// The directory holding `initdb`, `pg_ctl`, `postgres` and `psql`: the first on PATH that has all
/// four, else Debian's `/usr/lib/postgresql/<version>/bin` (newest version).
fn bin_dir() -> PathBuf {
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    debian.reverse();
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(debian)
        .find(|dir| {
            ["initdb", "pg_ctl", "postgres", "psql"]
                .iter()
                .all(|b| dir.join(b).is_file())
        })
        .expect(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres, psql) not found together in a \
             directory of PATH nor in /usr/lib/postgresql/*/bin; install the Debian package \
             postgresql (.ci/run does)",
        )
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

impl Cluster {
    /// `initdb`, then `pg_ctl start`, waiting until the server accepts connections.
    #[track_caller]
    pub(crate) fn start() -> Cluster {
        Cluster::start_with(false)
    }

    /// A cluster that also offers TLS, with a certificate for `127.0.0.1` signed by a fresh CA;
    /// returns the CA certificate (PEM file) to trust.
    #[track_caller]
    pub(crate) fn start_with_tls() -> (Cluster, PathBuf) {
        let cluster = Cluster::start_with(true);
        let ca = cluster.dir.join("ca.pem");
        (cluster, ca)
    }

    #[track_caller]
    fn start_with(tls: bool) -> Cluster {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("exporter-pg-")
            .tempdir()
            .expect("cannot create a temp dir for PostgreSQL")
            .keep();
        let run_as = is_root().then(|| SUPERUSER.to_owned());
        if let Some(user) = &run_as {
            let account = nix::unistd::User::from_name(user)
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    panic!("running as root needs the `{user}` user to run PostgreSQL")
                });
            std::os::unix::fs::chown(&dir, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
                .expect("cannot hand the temp dir to the postgres user");
        }
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD).unwrap();
        if let Some(user) = &run_as {
            let account = nix::unistd::User::from_name(user).unwrap().unwrap();
            std::os::unix::fs::chown(&pwfile, Some(account.uid.as_raw()), None).unwrap();
        }
        let mut cluster = Cluster {
            port: free_port(),
            dir,
            bin,
            run_as,
            watchdog: Mutex::new(None),
        };
        cluster.server_command(
            "initdb",
            &[
                "-D",
                &cluster.data().to_string_lossy(),
                "-U",
                SUPERUSER,
                "--pwfile",
                &pwfile.to_string_lossy(),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        // The watchdog first, so that even a failed start leaves nothing behind.
        cluster.start_watchdog();
        let tls_options = if tls {
            cluster.make_certificates();
            " -c ssl=on -c ssl_cert_file=server.pem -c ssl_key_file=server.key"
        } else {
            ""
        };
        // The free port is only free until someone else takes it: try another if the start fails.
        let mut failures = Vec::new();
        for _ in 0..3 {
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200{tls_options}",
                cluster.port,
                cluster.dir.display()
            );
            let started = cluster.try_server_command(
                "pg_ctl",
                &[
                    "-D",
                    &cluster.data().to_string_lossy(),
                    "-l",
                    &cluster.dir.join("server.log").to_string_lossy(),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    &options,
                    "start",
                ],
            );
            match started {
                Ok(()) => return cluster,
                Err(failure) => failures.push(failure),
            }
            cluster.port = free_port();
        }
        panic!("PostgreSQL did not start: {failures:#?}");
    }

    /// The cluster's temp dir, owned by the server's user.
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// `program` run as the server's user (through `runuser` when the tests run as root).
    pub(crate) fn as_server_user(&self, program: impl AsRef<OsStr>) -> Command {
        if let Some(user) = &self.run_as {
            // Named on its own: without it every server command would seem to be initdb's fault.
            let runuser =
                crate::support::tool("runuser", "util-linux", &crate::support::debian_bin_dirs());
            let mut command = Command::new(runuser);
            command.args(["-u", user, "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    #[track_caller]
    fn server_command(&self, program: &str, args: &[&str]) {
        if let Err(failure) = self.try_server_command(program, args) {
            panic!("{failure}");
        }
    }

    fn try_server_command(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let output = self
            .as_server_user(self.bin.join(program))
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(format!(
            "{program} failed: {}\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        ))
    }

    /// `ca.pem` and `server.pem`/`server.key` in the data directory, owned by the server's user as
    /// PostgreSQL insists.
    #[track_caller]
    fn make_certificates(&self) {
        make_certificates(&self.data(), self.as_server_user("sh"));
    }

    fn start_watchdog(&self) {
        let script = format!(
            "cat >/dev/null; '{}' -D '{}' stop -m immediate >/dev/null 2>&1; rm -rf '{}'",
            self.bin.join("pg_ctl").display(),
            self.data().display(),
            self.dir.display()
        );
        let child = self
            .as_server_user("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the PostgreSQL watchdog");
        *self.watchdog.lock().unwrap() = Some(child);
    }

    /// Stops the server now (`-m immediate`) and waits until it is gone.
    pub(crate) fn stop(&self) {
        if let Some(mut child) = self.watchdog.lock().unwrap().take() {
            drop(child.stdin.take());
            child.wait().unwrap();
        }
    }

    /// `psql` on `database` over the socket as the superuser: quiet, unaligned, tuples only, stopping
    /// at the first error.
    fn psql_command(&self, database: &str) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args([
                "-h",
                &self.dir.to_string_lossy(),
                "-p",
                &self.port.to_string(),
            ])
            .args(["-U", SUPERUSER, "-d", database]);
        command
    }

    /// Runs SQL through `psql` over the socket as the superuser; panics on the first error.
    #[track_caller]
    pub(crate) fn psql(&self, database: &str, sql: &str) -> String {
        crate::support::run_sql(self.psql_command(database), "psql", sql)
    }

    /// Holds an `ACCESS EXCLUSIVE` lock on `table` until the returned guard is dropped: every read
    /// of the table waits meanwhile. Returns once the lock is held.
    #[track_caller]
    pub(crate) fn lock_table(&self, database: &str, table: &str) -> TableLock {
        use std::io::{BufRead as _, Write as _};
        let mut child = self
            .psql_command(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run psql");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"
        )
        .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        TableLock {
            child,
            stdin: Some(stdin),
        }
    }

    /// Runs SQL as `user` over TCP (password auth) and returns the error it must fail with.
    #[track_caller]
    pub(crate) fn psql_as_error(&self, user: &str, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", user, "-d", database])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("cannot run psql");
        assert!(!output.status.success(), "{sql} succeeded as {user}");
        String::from_utf8(output.stderr).unwrap()
    }

    /// A fresh database with Dify's tables (tests/data/dify-schema.sql).
    #[track_caller]
    pub(crate) fn dify_database(&self) -> String {
        let name = format!("dify_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name};"));
        self.psql(&name, include_str!("../data/dify-schema.sql"));
        name
    }

    /// The URL the exporter connects with: `user`, the canary password, TCP on 127.0.0.1.
    pub(crate) fn url(&self, user: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

/// A table lock held by a `psql` session; dropping it ends the session (and the lock).
pub(crate) struct TableLock {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// `ca.pem` (a fresh CA, also copied to the parent directory) and `server.pem`/`server.key` (for IP
/// 127.0.0.1, signed by it) in `dir`, made with openssl by `sh` (a shell as the server's user).
#[track_caller]
pub(crate) fn make_certificates(dir: &std::path::Path, mut sh: Command) {
    let script = format!(
        "set -e; cd '{}'
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
           -subj /CN=exporter-test-ca -keyout ca.key -out ca.pem \
           -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
           -keyout server.key -out server.csr
         printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' > server.ext
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
           -extfile server.ext -out server.pem
         chmod 600 server.key
         cp ca.pem ..",
        dir.display()
    );
    let output = sh
        .args(["-c", &script])
        .output()
        .expect("cannot run openssl");
    assert!(
        output.status.success(),
        "making certificates failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

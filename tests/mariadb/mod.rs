//! Throwaway MariaDB servers for the MySQL dialect of the database source: `mariadb-install-db` and
//! `mariadbd` from the machine's MariaDB (Debian package `mariadb-server`), on 127.0.0.1 and a free
//! port, with socket and data in a temp dir: the counterpart of `tests/pg`.
//!
//! Two servers serve the whole test binary, one per time zone Dify may meet: [`tokyo`] runs in
//! `Asia/Tokyo` with the default `time_zone = SYSTEM` (what a server installed in Japan has), [`utc`]
//! with `--default-time-zone=+00:00`. Each test gets its own database. A server is stopped when the
//! test binary exits, however it exits: a watchdog blocks reading a pipe whose only writer is the
//! test binary, and kills the server and removes its directory once the pipe closes. A test that
//! cannot start MariaDB fails; it never skips.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::pg::free_port;
use crate::support::{PASSWORD, tool};

/// The account the exporter connects as in most tests (all privileges, like Dify's own).
pub(crate) const SUPERUSER: &str = "dify";

/// A running server.
pub(crate) struct Server {
    pub(crate) port: u16,
    dir: PathBuf,
    client: PathBuf,
    watchdog: Mutex<Option<Child>>,
}

static TOKYO: OnceLock<Server> = OnceLock::new();
static UTC: OnceLock<Server> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// The server at Tokyo time (`SYSTEM`, JST, +09:00), shared by the tests of this binary.
pub(crate) fn tokyo() -> &'static Server {
    TOKYO.get_or_init(|| Server::start(&[], Some("Asia/Tokyo")))
}

/// The server at UTC, shared by the tests of this binary.
pub(crate) fn utc() -> &'static Server {
    UTC.get_or_init(|| Server::start(&["--default-time-zone=+00:00"], Some("UTC")))
}

fn server_dirs() -> Vec<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

impl Server {
    /// `mariadb-install-db`, then `mariadbd` with `options`, waiting until it answers.
    #[track_caller]
    pub(crate) fn start(options: &[&str], tz: Option<&str>) -> Server {
        Server::start_with(options, tz, false)
    }

    /// A server that also offers TLS, with a certificate for `127.0.0.1` signed by a fresh CA; returns
    /// the CA certificate (PEM file) to trust.
    #[track_caller]
    pub(crate) fn start_with_tls() -> (Server, PathBuf) {
        let server = Server::start_with(&[], Some("UTC"), true);
        let ca = server.dir.join("ca.pem");
        (server, ca)
    }

    #[track_caller]
    fn start_with(options: &[&str], tz: Option<&str>, tls: bool) -> Server {
        let install = tool("mariadb-install-db", "mariadb-server", &server_dirs());
        let daemon = tool("mariadbd", "mariadb-server", &server_dirs());
        let client = tool("mariadb", "mariadb-client", &server_dirs());
        let dir = tempfile::Builder::new()
            .prefix("exporter-mariadb-")
            .tempdir()
            .expect("cannot create a temp dir for MariaDB")
            .keep();
        let root = nix::unistd::Uid::effective().is_root();
        let user = if root {
            "mysql".to_owned()
        } else {
            nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                .ok()
                .flatten()
                .map_or_else(|| "nobody".to_owned(), |u| u.name)
        };
        if root {
            let account = nix::unistd::User::from_name("mysql")
                .ok()
                .flatten()
                .expect("running as root needs the `mysql` user (Debian package mariadb-server)");
            std::os::unix::fs::chown(&dir, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
                .expect("cannot hand the temp dir to the mysql user");
        }
        // A temp dir of its own: servers bootstrapped at once would clash over names in /tmp.
        let tmp = dir.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        if root {
            let account = nix::unistd::User::from_name("mysql").unwrap().unwrap();
            std::os::unix::fs::chown(&tmp, Some(account.uid.as_raw()), Some(account.gid.as_raw()))
                .unwrap();
        }
        let data = dir.join("data");
        let output = Command::new(&install)
            .env("TMPDIR", &tmp)
            .args(["--no-defaults", "--auth-root-authentication-method=normal"])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .args(["--skip-test-db", "--skip-name-resolve"])
            .output()
            .expect("cannot run mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let tls_options = if tls {
            certificates(&dir, root)
        } else {
            Vec::new()
        };
        let port = free_port();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut command = Command::new(&daemon);
        command
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--user={user}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--innodb-buffer-pool-size=64M",
            ])
            .args(options)
            .args(&tls_options)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(tz) = tz {
            command.env("TZ", tz);
        }
        let child = command.spawn().expect("cannot start mariadbd");
        let server = Server {
            port,
            client,
            watchdog: Mutex::new(None),
            dir,
        };
        server.start_watchdog(child.id());
        server.wait_until_ready(child);
        server.mariadb(
            "mysql",
            &format!(
                "CREATE USER '{SUPERUSER}'@'%' IDENTIFIED BY '{PASSWORD}';
                 GRANT ALL PRIVILEGES ON *.* TO '{SUPERUSER}'@'%' WITH GRANT OPTION;"
            ),
        );
        server
    }

    /// The socket answers once the server accepts connections; the server ending first is a failure.
    fn wait_until_ready(&self, mut child: Child) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "mariadbd exited ({status}) before accepting connections:\n{}",
                    std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
                );
            }
            let ping = self
                .command("mysql")
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("cannot run mariadb");
            if ping.success() {
                // The server is the watchdog's to end; its exit status is of no interest here.
                std::thread::spawn(move || child.wait());
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "MariaDB did not accept connections within 60 s:\n{}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn start_watchdog(&self, pid: u32) {
        let script = format!(
            "cat >/dev/null; kill -9 {pid} 2>/dev/null; while kill -0 {pid} 2>/dev/null; do sleep 0.05; done; rm -rf '{}'",
            self.dir.display()
        );
        let child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start the MariaDB watchdog");
        *self.watchdog.lock().unwrap() = Some(child);
    }

    /// Kills the server now (as a crash or an OOM kill would) and waits until it is gone.
    pub(crate) fn kill(&self) {
        if let Some(mut child) = self.watchdog.lock().unwrap().take() {
            drop(child.stdin.take());
            child.wait().unwrap();
        }
    }

    /// The server's socket directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `mariadb` client on `database` over the socket as root: batch mode, no column names.
    fn command(&self, database: &str) -> Command {
        let mut command = Command::new(&self.client);
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args([
                "-u",
                "root",
                "--batch",
                "--unbuffered",
                "--skip-column-names",
                database,
            ]);
        command
    }

    /// Runs SQL through `mariadb` as root; panics on the first error.
    #[track_caller]
    pub(crate) fn mariadb(&self, database: &str, sql: &str) -> String {
        crate::support::run_sql(self.command(database), "mariadb", sql)
    }

    /// Runs SQL as `user` over TCP (password auth) and returns the error it must fail with.
    #[track_caller]
    pub(crate) fn mariadb_as_error(&self, user: &str, database: &str, sql: &str) -> String {
        let output = Command::new(&self.client)
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string()])
            .args(["-u", user, &format!("-p{PASSWORD}"), database, "-e", sql])
            .output()
            .expect("cannot run mariadb");
        assert!(!output.status.success(), "{sql} succeeded as {user}");
        String::from_utf8(output.stderr).unwrap()
    }

    /// Holds `LOCK TABLES table WRITE` until the guard is dropped: every read of the table waits
    /// meanwhile. Returns once the lock is held, with the session's connection id.
    #[track_caller]
    pub(crate) fn lock_table(&self, database: &str, table: &str) -> TableLock {
        let mut child = self
            .command(database)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cannot run mariadb");
        let mut stdin = child.stdin.take().unwrap();
        writeln!(
            stdin,
            "LOCK TABLES {table} WRITE; SELECT CONCAT('locked ', CONNECTION_ID());"
        )
        .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let id = line
            .trim()
            .strip_prefix("locked ")
            .unwrap_or_else(|| panic!("no lock: {line}"))
            .parse()
            .unwrap();
        TableLock {
            child,
            stdin: Some(stdin),
            id,
        }
    }

    /// A fresh database with Dify's tables (tests/data/dify-schema-mysql.sql).
    #[track_caller]
    pub(crate) fn dify_database(&self) -> String {
        let name = format!("dify_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.mariadb("mysql", &format!("CREATE DATABASE {name};"));
        self.mariadb(&name, include_str!("../data/dify-schema-mysql.sql"));
        name
    }

    /// The URL the exporter connects with: `user`, the canary password, TCP on 127.0.0.1.
    pub(crate) fn url(&self, user: &str, database: &str) -> String {
        format!(
            "mysql://{user}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

/// Certificates for `127.0.0.1` signed by a fresh CA (`ca.pem` in `dir`), readable by the server, as
/// `mariadbd` options.
fn certificates(dir: &Path, root: bool) -> Vec<String> {
    let certs = dir.join("certs");
    std::fs::create_dir(&certs).unwrap();
    crate::pg::make_certificates(&certs, Command::new("sh"));
    if root {
        let account = nix::unistd::User::from_name("mysql").unwrap().unwrap();
        for file in ["server.pem", "server.key", "ca.pem"] {
            std::os::unix::fs::chown(certs.join(file), Some(account.uid.as_raw()), None).unwrap();
        }
    }
    [
        ("cert", "server.pem"),
        ("key", "server.key"),
        ("ca", "ca.pem"),
    ]
    .iter()
    .map(|(option, file)| format!("--ssl-{option}={}", certs.join(file).display()))
    .collect()
}

/// A table lock held by a `mariadb` session; dropping it ends the session (and the lock).
pub(crate) struct TableLock {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    /// The locking session's connection id.
    pub(crate) id: u64,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The simulator's psql script (`COPY … FROM STDIN` blocks) as MySQL `INSERT`s, the way Dify
/// writes the same rows on a MySQL server: booleans as 1/0, and `messages.created_at` and
/// `updated_at` as the server's `CURRENT_TIMESTAMP` would have them (local time of the session's
/// zone), while every other timestamp stays UTC, as Dify's Python writes it.
pub(crate) fn inserts(copy_script: &str) -> String {
    let mut out = String::new();
    let mut lines = copy_script.lines();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("COPY ") else {
            continue;
        };
        let (table, rest) = header.split_once(' ').unwrap();
        let columns: Vec<&str> = rest
            .trim_start_matches('(')
            .split_once(')')
            .unwrap()
            .0
            .split(", ")
            .collect();
        let head = format!(
            "INSERT INTO {table} ({}) VALUES\n",
            columns
                .iter()
                .map(|c| format!("`{c}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut batch = Vec::new();
        for row in lines.by_ref() {
            if row == "\\." {
                break;
            }
            let values: Vec<String> = row
                .split('\t')
                .zip(&columns)
                .map(|(field, column)| literal(table, column, field))
                .collect();
            batch.push(format!("({})", values.join(", ")));
            if batch.len() == 200 {
                out.push_str(&head);
                out.push_str(&batch.join(",\n"));
                out.push_str(";\n");
                batch.clear();
            }
        }
        if !batch.is_empty() {
            out.push_str(&head);
            out.push_str(&batch.join(",\n"));
            out.push_str(";\n");
        }
    }
    out
}

/// One COPY text field as a MySQL literal.
fn literal(table: &str, column: &str, field: &str) -> String {
    if field == "\\N" {
        return "NULL".to_owned();
    }
    let mut text = String::new();
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('t') => text.push('\t'),
                Some('n') => text.push('\n'),
                Some('r') => text.push('\r'),
                Some(other) => text.push(other),
                None => {}
            }
        } else {
            text.push(c);
        }
    }
    match (table, column, text.as_str()) {
        (_, "is_deleted" | "is_anonymous", "t") => "1".to_owned(),
        (_, "is_deleted" | "is_anonymous", "f") => "0".to_owned(),
        ("messages", "created_at" | "updated_at", utc) => {
            format!("CONVERT_TZ('{utc}', '+00:00', @@session.time_zone)")
        }
        _ => format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'")),
    }
}

//! A real PgBouncer (Debian's `pgbouncer`) in front of a test cluster, in transaction pooling with
//! one server connection per database and user: what a Dify deployment behind PgBouncer looks like to
//! the exporter when the pool is exhausted. Runs in the foreground as the server's user; dropping it
//! stops it (SIGTERM, forwarded by `runuser`). A test that cannot start it fails; it never skips.

use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, SUPERUSER, free_port};
use crate::support::PASSWORD;

/// A running PgBouncer.
pub(crate) struct Bouncer {
    pub(crate) port: u16,
    child: Child,
}

impl Bouncer {
    /// PgBouncer on 127.0.0.1 and a free port, `pool_mode = transaction`, `default_pool_size = 1`,
    /// every database of `cluster`, the superuser with the canary password.
    #[track_caller]
    pub(crate) fn start(cluster: &Cluster) -> Bouncer {
        let binary = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .expect("pgbouncer not found in /usr/sbin or /usr/bin; install the `pgbouncer` package (.ci/run does)");
        let port = free_port();
        let dir = cluster.dir().join(format!("pgbouncer-{port}"));
        let script = format!(
            "set -e; mkdir -p '{dir}'; cd '{dir}'
             printf '\"{SUPERUSER}\" \"{PASSWORD}\"\\n' > userlist.txt
             cat > pgbouncer.ini <<'INI'
[databases]
* = host=127.0.0.1 port={server}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {dir}/userlist.txt
pool_mode = transaction
default_pool_size = 1
max_client_conn = 50
logfile = {dir}/pgbouncer.log
INI",
            dir = dir.display(),
            server = cluster.port,
        );
        let made = cluster
            .as_server_user("sh")
            .args(["-c", &script])
            .output()
            .expect("cannot run sh");
        assert!(
            made.status.success(),
            "cannot write the PgBouncer configuration: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let child = cluster
            .as_server_user(binary)
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start pgbouncer");
        let bouncer = Bouncer { port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen on port {port}: {}",
                std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// The URL through PgBouncer, as the superuser with the canary password.
    pub(crate) fn url(&self, database: &str) -> String {
        format!(
            "postgres://{SUPERUSER}:{PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

//! The crontab files work as written on Debian: the command line of each, executed by `/bin/sh` as
//! a non-root user through `runuser` (as cron would), after the setup their comments document,
//! exports a simulated Dify's usage to a simulated meter and logs where that user can write.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use dify_sim::{DifySim, MeterSim};
use nix::unistd::User;

use crate::deliver::{dify, meter};
use crate::support::{EXTERNAL_TOKEN, debian_bin_dirs, json_lines, tool};

/// The system user the `/etc/cron.d` file names.
const USER: &str = "dify-exporter";

/// Held by each test for its whole length: one creates the user, the last one removes it again.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The repository's crontab file `name`.
fn crontab_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/crontab")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

/// The command of the file's one schedule line: what follows the five time fields (and the user
/// field of an `/etc/cron.d` file), exactly as written.
fn command_of(text: &str, leading_fields: usize) -> String {
    let line = text
        .lines()
        .filter(|l| l.starts_with(|c: char| c.is_ascii_digit() || c == '@'))
        .collect::<Vec<_>>();
    assert_eq!(line.len(), 1, "one schedule line: {line:?}");
    let mut rest = line[0];
    for _ in 0..leading_fields {
        rest = rest.trim_start();
        rest = &rest[rest.find(char::is_whitespace).unwrap()..];
    }
    rest.trim().to_owned()
}

/// The system user, created as the cron.d file documents when it does not exist yet, and removed
/// again afterwards if this test created it.
struct SystemUser {
    user: User,
    created: bool,
    /// This test's turn, released after the user is removed.
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl SystemUser {
    fn ensure() -> Self {
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the crontab test runs the command as {USER} through runuser, which needs root"
        );
        let sbin = [PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")];
        let existing = User::from_name(USER).unwrap();
        let created = existing.is_none();
        if created {
            // As documented, but without a home: the test keeps everything in its temporary root.
            run(Command::new(tool("useradd", "passwd", &sbin)).args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ]));
        }
        SystemUser {
            user: User::from_name(USER).unwrap().unwrap(),
            created,
            _turn: turn,
        }
    }
}

impl Drop for SystemUser {
    fn drop(&mut self) {
        if self.created {
            let _ = Command::new("/usr/sbin/userdel").arg(USER).status();
        }
    }
}

#[track_caller]
fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `install -d -o USER -g USER -m MODE dir` (parents 0755, root's).
fn directory(dir: &Path, owner: &User, mode: u32) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    chown(dir, Some(owner.uid.as_raw()), Some(owner.gid.as_raw())).unwrap();
}

fn parents_readable(root: &Path, dir: &Path) {
    let mut current = dir.parent();
    while let Some(parent) = current.filter(|p| p.starts_with(root)) {
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
        current = parent.parent();
    }
}

/// The env file the setup installs: the simulators, and an absolute STATE_DIR.
fn env_file(dify: &DifySim, meter: &MeterSim, state_dir: &Path) -> String {
    let credentials = dify.credentials();
    format!(
        "DIFY_API_URL={}\nDIFY_API_TOKEN={}\nDIFY_WORKSPACE_ID={}\nEXTERNAL_API_URL={}\n\
         EXTERNAL_API_TOKEN={EXTERNAL_TOKEN}\nSTATE_DIR={}\nCRON_SCHEDULE=\"15 0 * * *\"\nDIFY_FETCH_DAYS=3\n",
        dify.base_url(),
        credentials.admin_api_key,
        credentials.workspace_id,
        meter.url(),
        state_dir.display()
    )
}

/// Runs `command` the way cron does: `/bin/sh -c` as `user`, with the crontab's PATH and SHELL.
fn as_cron_would(user: &User, home: &Path, command: &str) {
    let runuser = tool("runuser", "util-linux", &debian_bin_dirs());
    run(Command::new(runuser)
        // --preserve-environment: the HOME given here, where cron would take the user's home.
        .args([
            "--preserve-environment",
            "-u",
            USER,
            "--",
            "/bin/sh",
            "-c",
            command,
        ])
        .env_clear()
        .env("SHELL", "/bin/sh")
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", home)
        .env("LOGNAME", &user.name)
        .current_dir("/"));
}

/// The log a run left: JSON lines ending with a completed `run finished`, no secret in them.
#[track_caller]
fn assert_completed_run(log: &Path, user: &User, meter: &MeterSim) {
    let text = std::fs::read_to_string(log).unwrap();
    assert!(!text.contains(EXTERNAL_TOKEN), "{text}");
    let lines = json_lines(&text);
    let last = lines.last().unwrap();
    assert_eq!(
        (&last["message"], &last["context"]["outcome"]),
        (
            &serde_json::json!("run finished"),
            &serde_json::json!("completed")
        ),
        "{text}"
    );
    assert_eq!(std::fs::metadata(log).unwrap().uid(), user.uid.as_raw());
    assert!(!meter.records().is_empty());
}

#[test]
fn the_cron_d_line_runs_as_the_system_user_with_the_documented_setup() {
    let account = SystemUser::ensure();
    let user = &account.user;
    let root_user = User::from_uid(nix::unistd::Uid::from_raw(0))
        .unwrap()
        .unwrap();
    let (dify, meter) = (dify(), meter());
    let root = tempfile::tempdir().unwrap();
    let at = |path: &str| root.path().join(path.trim_start_matches('/'));
    let (etc, log_dir, state) = (
        at("/etc/dify-usage-exporter"),
        at("/var/log/dify-usage-exporter"),
        at("/var/lib/dify-usage-exporter"),
    );
    // install -d -o root -g dify-exporter -m 0750 /etc/dify-usage-exporter, and the env file 0640.
    directory(&etc, &root_user, 0o750);
    chown(&etc, None, Some(user.gid.as_raw())).unwrap();
    let env = etc.join("exporter.env");
    std::fs::write(&env, env_file(&dify, &meter, &state)).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o640)).unwrap();
    chown(&env, None, Some(user.gid.as_raw())).unwrap();
    directory(&log_dir, user, 0o750);
    // The user's home (useradd --create-home), which is STATE_DIR.
    directory(&state, user, 0o700);
    for dir in [&etc, &log_dir, &state] {
        parents_readable(root.path(), dir);
    }
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let binary = assert_cmd::cargo::cargo_bin!("exporter");
    let command = command_of(&crontab_file("dify-usage-exporter"), 6)
        .replace("/usr/local/bin/exporter", binary.to_str().unwrap())
        .replace("/etc/dify-usage-exporter", etc.to_str().unwrap())
        .replace("/var/log/dify-usage-exporter", log_dir.to_str().unwrap());
    as_cron_would(user, Path::new("/nonexistent"), &command);

    assert_completed_run(&log_dir.join("exporter.log"), user, &meter);
    assert_eq!(
        std::fs::metadata(state.join("state.db")).unwrap().uid(),
        user.uid.as_raw()
    );
}

#[test]
fn the_user_crontab_line_runs_from_the_users_home() {
    let account = SystemUser::ensure();
    let user = &account.user;
    let (dify, meter) = (dify(), meter());
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.path().join("home");
    directory(&home, user, 0o755);
    // cargo install's place, then the two directories of the documented setup.
    let bin = home.join(".cargo/bin");
    let config = home.join(".config/dify-usage-exporter");
    let state = home.join(".local/state/dify-usage-exporter");
    for dir in [&bin, &config, &state] {
        directory(dir, user, 0o700);
        let mut parent = dir.parent();
        while let Some(p) = parent.filter(|p| *p != home) {
            directory(p, user, 0o755);
            parent = p.parent();
        }
    }
    symlink(
        assert_cmd::cargo::cargo_bin!("exporter"),
        bin.join("exporter"),
    )
    .unwrap();
    let env = config.join("exporter.env");
    std::fs::write(&env, env_file(&dify, &meter, &state)).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
    chown(&env, Some(user.uid.as_raw()), Some(user.gid.as_raw())).unwrap();

    let command = command_of(&crontab_file("user-crontab.txt"), 5);
    as_cron_would(user, &home, &command);

    assert_completed_run(&state.join("exporter.log"), user, &meter);
}

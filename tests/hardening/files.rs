//! Issue 18 classes 6 and 8 on the file system: a link planted where the metrics textfile's
//! temporary file used to be named, and a full disk under STATE_DIR.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::support::Exporter;

#[test]
fn links_planted_beside_the_metrics_textfile_are_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let textfile_dir = dir.path().join("textfile");
    std::fs::create_dir(&textfile_dir).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    // The names the exporter's next process ids would have given its temporary file.
    let next_pid = std::process::Command::new("true").spawn().unwrap().id();
    for pid in next_pid..next_pid + 3000 {
        std::os::unix::fs::symlink(
            &victim,
            textfile_dir.join(format!(".dify_usage_exporter.prom.{pid}.tmp")),
        )
        .unwrap();
    }
    let textfile = textfile_dir.join("dify_usage_exporter.prom");
    let finished = Exporter::configured("http://127.0.0.1:9")
        .env("STATE_DIR", dir.path().join("state").to_str().unwrap())
        .env("METRICS_TEXTFILE", textfile.to_str().unwrap())
        .args(["resend", "--all-dead"])
        .run();
    finished.code(0);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let meta = std::fs::symlink_metadata(&textfile).unwrap();
    assert!(
        meta.file_type().is_file(),
        "the textfile is a file of its own"
    );
    assert!(
        std::fs::read_to_string(&textfile)
            .unwrap()
            .contains("dify_usage_exporter_last_run_exit_code")
    );
    let entries = std::fs::read_dir(&textfile_dir).unwrap().count();
    assert_eq!(
        entries, 3001,
        "the links are left alone and no temporary file is left"
    );
}

/// A small tmpfs mounted at a new directory while it lives (the tests run as root); the temporary
/// directory holding the mount point goes after the unmount.
struct SmallDisk(PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl SmallDisk {
    fn mount() -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let point = dir.path().join("disk");
        std::fs::create_dir(&point).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&point)
            .status()
            .expect("mount (Debian package mount) is needed, as root, for the full-disk test");
        assert!(
            status.success(),
            "cannot mount a tmpfs: the full-disk test runs as root"
        );
        SmallDisk(point, dir)
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.0.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        while file.write_all(&[0]).is_ok() {}
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn state_command(state: &Path, args: &[&str]) -> crate::support::Finished {
    Exporter::configured("http://127.0.0.1:9")
        .env("STATE_DIR", state.to_str().unwrap())
        .args(args)
        .run()
}

#[test]
fn a_full_disk_under_state_dir_is_named_as_such() {
    let disk = SmallDisk::mount();
    let state = disk.0.join("state");
    state_command(&state, &["watermark", "set", "2026-11-01", "--yes"]).code(0);
    disk.fill();
    let finished = state_command(&state, &["status"]);
    finished.code(1);
    let error = finished.stderr_lines()[0]["context"]["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with(&format!(
            "cannot open the state database {}: the file system of STATE_DIR is full (0 bytes free); the database \
             itself was not touched: free space there and run again",
            state.join("state.db").display()
        )),
        "{error}"
    );
    assert!(!error.contains("read-only"), "{error}");
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    let finished = state_command(&state, &["watermark", "show"]);
    finished.code(0);
    assert_eq!(finished.stdout, "2026-11-01\n");
}

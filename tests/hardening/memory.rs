//! Issue 18 class 5: an endless answer is read only as far as it is kept, whether it is a Dify
//! page (at most the documented 32 MiB) or a receiver's error page (its first 4 KiB). The peak
//! memory is read from the exporter's `/proc/<pid>/status` (VmHWM) while the server streams.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::deliver::{dify, exporter, meter};
use crate::support::Exporter;

/// Answers every request with `status` and a chunked body that never ends, noting the peak memory
/// of the process whose id is in `pid` after every chunk.
struct EndlessServer {
    url: String,
    pid: Arc<AtomicU32>,
    peak_kib: Arc<AtomicU64>,
}

impl EndlessServer {
    fn start(status: &'static str) -> EndlessServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let pid = Arc::new(AtomicU32::new(0));
        let peak_kib = Arc::new(AtomicU64::new(0));
        let (watched, peak) = (pid.clone(), peak_kib.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
                );
                let chunk = format!("100000\r\n{}\r\n", "[".repeat(0x10_0000));
                if stream.write_all(head.as_bytes()).is_err() {
                    continue;
                }
                while stream.write_all(chunk.as_bytes()).is_ok() {
                    if let Some(kib) = peak_kib_of(watched.load(Ordering::Relaxed)) {
                        peak.fetch_max(kib, Ordering::Relaxed);
                    }
                }
            }
        });
        EndlessServer { url, pid, peak_kib }
    }

    fn peak_mib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed) / 1024
    }
}

/// VmHWM of `pid`, in KiB.
fn peak_kib_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn run_watched(server: &EndlessServer, exporter: Exporter) -> crate::support::Finished {
    let running = exporter.spawn();
    server.pid.store(running.child.id(), Ordering::Relaxed);
    running.wait()
}

#[test]
fn an_endless_dify_answer_stops_at_32_mib_and_an_endless_error_page_at_4_kib() {
    let dify_server = EndlessServer::start("200 OK");
    let finished = run_watched(
        &dify_server,
        Exporter::configured(&dify_server.url)
            .env("MAX_RETRY", "0")
            .args(["run"]),
    );
    finished.code(1);
    let error = finished.failure();
    assert!(
        error.contains(
            "answered with a body of more than 32 MiB, the most the exporter reads (far more than Dify sends); \
             the answer was dropped"
        ),
        "{error}"
    );
    let peak = dify_server.peak_mib();
    assert!(peak > 0 && peak < 100, "peak memory {peak} MiB");

    let (dify, meter) = (dify(), meter());
    let receiver = EndlessServer::start("400 Bad Request");
    let dir = tempfile::tempdir().unwrap();
    let finished = run_watched(
        &receiver,
        exporter(&dify, &meter, &dir.path().join("state"))
            .env("EXTERNAL_API_URL", &format!("{}/usage", receiver.url))
            .args(["run"]),
    );
    finished.code(1);
    let dead = finished.log(
        "batch dead-lettered; fix the cause, then `exporter resend --batch ID` or `--all-dead`",
    );
    let reason = dead["context"]["reason"].as_str().unwrap().to_owned();
    // The 4 KiB kept of the page, nothing more.
    assert!(reason.contains("answered 400 Bad Request"), "{dead}");
    assert!(reason.len() < 10_000, "{} bytes kept", reason.len());
    let peak = receiver.peak_mib();
    assert!(peak > 0 && peak < 60, "peak memory {peak} MiB");
}

//! A small builder for driving the `exporter` binary, and fakes of the servers it talks to.

use std::ffi::OsStr;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use tempfile::TempDir;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Recognisable secret values: none of them may ever appear in any output.
pub(crate) const DIFY_TOKEN: &str = "dify-canary-7f3a9c51";
pub(crate) const EXTERNAL_TOKEN: &str = "meter-canary-2b8e4177";
pub(crate) const PASSWORD: &str = "pw-canary-93d1e0aa";
pub(crate) const CANARIES: [&str; 3] = [DIFY_TOKEN, EXTERNAL_TOKEN, PASSWORD];

/// The path of the apps listing.
pub(crate) const APPS_PATH: &str = "/console/api/apps";

/// One invocation of `exporter` with a clean environment and its own working directory.
#[must_use]
pub(crate) struct Exporter {
    command: Command,
    dir: TempDir,
}

impl Exporter {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        // assert_cmd finds the binary cargo built for this test run (also with a custom build-dir).
        let mut command = Command::new(assert_cmd::cargo::cargo_bin!("exporter"));
        command.env_clear().current_dir(dir.path());
        Exporter { command, dir }
    }

    /// A configuration that validates, pointing Dify at `dify_url`, with canary secrets.
    pub(crate) fn configured(dify_url: &str) -> Self {
        Exporter::new()
            .env("DIFY_API_URL", dify_url)
            .env("DIFY_API_TOKEN", DIFY_TOKEN)
            .env("EXTERNAL_API_URL", "http://127.0.0.1:9/usage")
            .env("EXTERNAL_API_TOKEN", EXTERNAL_TOKEN)
            .env("MAX_RETRY", "3")
            // One day keeps the fakes' request counts small and exact.
            .env("DIFY_FETCH_DAYS", "1")
    }

    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    pub(crate) fn env_remove(mut self, key: &str) -> Self {
        self.command.env_remove(key);
        self
    }

    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(
        mut self,
        args: I,
    ) -> Self {
        self.command.args(args);
        self
    }

    /// Runs the exporter under `wrapper` (`wrapper ARGS… exporter …`, same environment and
    /// directory): a tracer that injects a fault at an exact system call, say.
    pub(crate) fn under(mut self, wrapper: &Path, wrapper_args: &[&str]) -> Self {
        let mut command = Command::new(wrapper);
        command
            .args(wrapper_args)
            .arg(self.command.get_program())
            .args(self.command.get_args())
            .env_clear()
            .current_dir(self.dir.path());
        for (key, value) in self.command.get_envs() {
            if let Some(value) = value {
                command.env(key, value);
            }
        }
        self.command = command;
        self
    }

    /// Sends stderr to `stdio` (e.g. a pseudo-terminal) instead of capturing it.
    pub(crate) fn stderr_to(mut self, stdio: Stdio) -> Self {
        self.command.stderr(stdio);
        self
    }

    /// Sets a variable to bytes that need not be UTF-8.
    pub(crate) fn env_os(mut self, key: &str, value: &std::ffi::OsStr) -> Self {
        self.command.env(key, value);
        self
    }

    /// Sends stdout to `stdio` (e.g. a pipe nobody reads) instead of capturing it.
    pub(crate) fn stdout_to(mut self, stdio: Stdio) -> Self {
        self.command.stdout(stdio);
        self
    }

    /// Writes a file into the working directory.
    pub(crate) fn file(self, name: &str, text: &str) -> Self {
        std::fs::write(self.dir.path().join(name), text).unwrap();
        self
    }

    /// The working directory (also the default `STATE_DIR` parent).
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs to completion.
    #[track_caller]
    pub(crate) fn run(mut self) -> Finished {
        let output = self.command.output().unwrap();
        Finished::new(output, self.dir)
    }

    /// Starts the process with piped output, for signal tests.
    pub(crate) fn spawn(mut self) -> Running {
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().map(BufReader::new);
        Running {
            child,
            dir: self.dir,
            stdout,
            seen: String::new(),
        }
    }
}

/// A started `exporter`.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) dir: TempDir,
    stdout: Option<BufReader<ChildStdout>>,
    /// Stdout read so far by [`Running::wait_for_line`].
    seen: String,
}

impl Running {
    /// Reads stdout until a line containing `needle` has been written: an event to act on, instead
    /// of a guess with a sleep. Panics if the process ends first.
    #[track_caller]
    pub(crate) fn wait_for_line(&mut self, needle: &str) {
        let reader = self.stdout.as_mut().unwrap();
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).unwrap();
            assert!(
                read > 0,
                "the process ended before writing {needle:?}:\n{}",
                self.seen
            );
            self.seen.push_str(&line);
            if line.contains(needle) {
                return;
            }
        }
    }

    pub(crate) fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    #[track_caller]
    pub(crate) fn wait(mut self) -> Finished {
        let mut rest = String::new();
        if let Some(mut reader) = self.stdout.take() {
            reader.read_to_string(&mut rest).unwrap();
        }
        let mut output = self.child.wait_with_output().unwrap();
        output.stdout = format!("{}{rest}", self.seen).into_bytes();
        Finished::new(output, self.dir)
    }
}

/// A finished invocation.
pub(crate) struct Finished {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// Keeps the working directory alive until the assertions are done.
    _dir: TempDir,
}

impl Finished {
    fn new(output: Output, dir: TempDir) -> Self {
        let finished = Finished {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
            _dir: dir,
        };
        finished.assert_no_secrets();
        finished
    }

    /// Every canary secret is absent from both streams (checked for every invocation).
    #[track_caller]
    fn assert_no_secrets(&self) {
        for canary in CANARIES {
            assert!(
                !self.stdout.contains(canary),
                "secret in stdout:\n{}",
                self.stdout
            );
            assert!(
                !self.stderr.contains(canary),
                "secret in stderr:\n{}",
                self.stderr
            );
        }
    }

    #[track_caller]
    pub(crate) fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Stdout parsed as JSON lines; panics on a line that is not a JSON object.
    #[track_caller]
    pub(crate) fn stdout_lines(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    #[track_caller]
    pub(crate) fn stderr_lines(&self) -> Vec<Value> {
        json_lines(&self.stderr)
    }

    /// The error of the `run failed` line, on whichever stream the command logs to.
    #[track_caller]
    pub(crate) fn failure(&self) -> String {
        let lines = if self.stdout.contains("\"run failed\"") {
            self.stdout_lines()
        } else {
            self.stderr_lines()
        };
        let line = lines
            .into_iter()
            .find(|l| l["message"] == "run failed")
            .unwrap_or_else(|| panic!("no `run failed` line in:\n{}{}", self.stdout, self.stderr));
        assert_eq!(line["level"], "error");
        line["context"]["error"].as_str().unwrap().to_owned()
    }

    /// The log line with this message (on stdout, where `run` logs).
    #[track_caller]
    pub(crate) fn log(&self, message: &str) -> Value {
        self.stdout_lines()
            .into_iter()
            .find(|line| line["message"] == message)
            .unwrap_or_else(|| panic!("no log line {message:?} in:\n{}", self.stdout))
    }
}

/// What `exporter status --output OUTPUT` prints for the state in `state_dir` (it must exit 0).
#[track_caller]
pub(crate) fn status(state_dir: &Path, output: &str) -> String {
    let finished = Exporter::new()
        .env("STATE_DIR", state_dir.to_str().unwrap())
        .args(["status", "--output", output])
        .run();
    finished.code(0);
    finished.stdout.clone()
}

/// The database and its write-ahead log, as a thief would copy them.
pub(crate) fn database_bytes(state: &Path) -> Vec<u8> {
    ["state.db", "state.db-wal"]
        .iter()
        .filter_map(|name| std::fs::read(state.join(name)).ok())
        .flatten()
        .collect()
}

#[track_caller]
pub(crate) fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(value.is_object(), "not an object: {line}");
            value
        })
        .collect()
}

/// `n` apps, cycling through the five modes, as Dify lists them (chat types with their model).
pub(crate) fn apps(n: usize) -> Vec<Value> {
    const MODES: [&str; 5] = [
        "workflow",
        "advanced-chat",
        "chat",
        "agent-chat",
        "completion",
    ];
    (0..n)
        .map(|i| {
            let mode = MODES[i % MODES.len()];
            let model_config = if i % MODES.len() >= 2 {
                serde_json::json!({"model": {"provider": "langgenius/openai/openai", "name": "gpt-4o"}})
            } else {
                Value::Null
            };
            serde_json::json!({
                "id": format!("00000000-0000-4000-8000-{i:012}"),
                "name": format!("App {i}"),
                "mode": mode,
                "model_config": model_config,
                "icon": "🤖",
            })
        })
        .collect()
}

/// The one page of a page-numbered Dify list (`apps`, `chat-conversations`, `workflow-app-logs`):
/// page 1 of 100 rows, holding all of `data`.
pub(crate) fn only_page(data: &[Value]) -> Value {
    serde_json::json!({"page": 1, "limit": 100, "total": data.len(), "has_more": false, "data": data})
}

/// Answers every usage endpoint with "nothing in the window", so a run's job succeeds on any apps.
pub(crate) async fn serve_no_usage(server: &MockServer) {
    let empty_page = only_page(&[]);
    let answers = [
        (
            r"/account/profile$",
            serde_json::json!({"id": "u1", "email": "owner@example.com", "timezone": "UTC"}),
        ),
        (r"/workflow-app-logs$", empty_page.clone()),
        (r"/chat-conversations$", empty_page.clone()),
        (
            r"/workflow-runs$",
            serde_json::json!({"limit": 100, "has_more": false, "data": []}),
        ),
        (
            r"/statistics/(token-costs|daily-messages)$",
            serde_json::json!({"data": []}),
        ),
    ];
    for (pattern, body) in answers {
        Mock::given(method("GET"))
            .and(wiremock::matchers::path_regex(pattern))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(server)
            .await;
    }
}

/// Serves `apps` through `GET /console/api/apps`, 100 per page, as Dify does, and no usage.
pub(crate) async fn serve_apps(server: &MockServer, apps: &[Value]) {
    serve_no_usage(server).await;
    let pages: Vec<&[Value]> = apps.chunks(100).collect();
    for (i, chunk) in pages.iter().enumerate() {
        let page = i + 1;
        Mock::given(method("GET"))
            .and(path(APPS_PATH))
            .and(wiremock::matchers::query_param("page", page.to_string()))
            .and(wiremock::matchers::query_param("limit", "100"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "page": page, "limit": 100, "total": apps.len(),
                "has_more": page < pages.len(), "data": chunk,
            })))
            .mount(server)
            .await;
    }
}

/// A responder that reports each request on a channel the moment it arrives, then answers with
/// `template` (whose delay, if any, starts after the report): lets a test act while a request is
/// in flight without guessing with sleeps.
pub(crate) struct Announce {
    arrived: std::sync::Mutex<mpsc::Sender<()>>,
    template: ResponseTemplate,
}

impl Announce {
    pub(crate) fn new(template: ResponseTemplate) -> (Self, mpsc::Receiver<()>) {
        let (sender, receiver) = mpsc::channel();
        (
            Announce {
                arrived: std::sync::Mutex::new(sender),
                template,
            },
            receiver,
        )
    }
}

impl Respond for Announce {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let _ = self.arrived.lock().unwrap().send(());
        self.template.clone()
    }
}

/// How long a test waits for an event before declaring it lost.
pub(crate) const EVENT_TIMEOUT: Duration = Duration::from_secs(20);

/// A page of one app, with the given delay: a slow Dify.
pub(crate) fn slow_apps_page(delay: Duration) -> ResponseTemplate {
    ResponseTemplate::new(200)
        .set_body_json(
            serde_json::json!({"page":1,"limit":100,"total":1,"has_more":false,"data":apps(1)}),
        )
        .set_delay(delay)
}

/// The fields a record is compared on, cost as an exact decimal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Row {
    pub(crate) day: String,
    pub(crate) app_id: String,
    pub(crate) app_name: String,
    pub(crate) user: String,
    pub(crate) provider: String,
    pub(crate) model: String,
    pub(crate) currency: String,
    pub(crate) tokens: (u64, u64, u64),
    pub(crate) request_count: u64,
    pub(crate) cost: Decimal,
    pub(crate) token_split: String,
}

/// A record of the Dify simulator's truth, in the compared shape.
pub(crate) fn truth_row(r: dify_sim::TruthRecord) -> Row {
    Row {
        day: r.usage_date.to_string(),
        app_id: r.app_id,
        app_name: r.app_name,
        user: r.user,
        provider: r.provider,
        model: r.model,
        currency: r.currency,
        tokens: (r.input_tokens, r.output_tokens, r.total_tokens),
        request_count: r.request_count,
        cost: r.cost,
        token_split: split_name(r.token_split).to_owned(),
    }
}

/// A record the metering simulator holds, in the same shape.
pub(crate) fn held_row(r: dify_sim::HeldRecord) -> Row {
    truth_row(r.into())
}

fn split_name(split: dify_sim::TokenSplit) -> &'static str {
    match split {
        dify_sim::TokenSplit::Exact => "exact",
        dify_sim::TokenSplit::TotalOnly => "total_only",
    }
}

/// Debian's directories of programs, looked in after `PATH`.
pub(crate) const DEBIAN_BIN_DIRS: [&str; 3] = ["/usr/bin", "/usr/local/bin", "/bin"];

/// A program a test needs (and `.ci/run` installs): the first `name` on `PATH`, else in one of
/// `fallback_dirs`. Never skipped: missing, it fails the test naming the Debian package.
#[track_caller]
pub(crate) fn tool(name: &str, package: &str, fallback_dirs: &[PathBuf]) -> PathBuf {
    find_tool(name, std::env::var_os("PATH").as_deref(), fallback_dirs).unwrap_or_else(|| {
        panic!(
            "`{name}` is missing: not on PATH nor in {fallback_dirs:?}; install the Debian package \
             {package} (.ci/run does)"
        )
    })
}

/// Where `name` is: the directories of `path` in order, then `fallback_dirs`.
pub(crate) fn find_tool(
    name: &str,
    path: Option<&OsStr>,
    fallback_dirs: &[PathBuf],
) -> Option<PathBuf> {
    path.into_iter()
        .flat_map(std::env::split_paths)
        .chain(fallback_dirs.iter().cloned())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// [`DEBIAN_BIN_DIRS`] as paths.
pub(crate) fn debian_bin_dirs() -> Vec<PathBuf> {
    DEBIAN_BIN_DIRS.iter().map(PathBuf::from).collect()
}

/// Runs `exporter` with stderr on a fresh pseudo-terminal (40 rows, 300 columns); returns it and
/// everything the terminal got.
pub(crate) fn on_a_terminal(exporter: Exporter) -> (Finished, String) {
    let size = nix::pty::Winsize {
        ws_row: 40,
        ws_col: 300,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(&size, None).unwrap();
    let mut terminal = std::fs::File::from(pty.master);
    // Read while the exporter writes, so a full terminal buffer never blocks it; the read ends
    // with an error (EIO) once the last holder of the other side is gone.
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut chunk = [0; 4096];
        while let Ok(n @ 1..) = terminal.read(&mut chunk) {
            seen.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&seen).into_owned()
    });
    let finished = exporter.stderr_to(Stdio::from(pty.slave)).run();
    (finished, reader.join().unwrap())
}

/// Feeds `sql` to a database client (`psql`, `mariadb`) on its stdin and returns what it printed;
/// panics, naming `program`, when it fails.
#[track_caller]
pub(crate) fn run_sql(mut command: Command, program: &str, sql: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let sql = sql.to_owned();
    // Written from a thread: a client that answers as it reads would block on a full pipe otherwise.
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        stdin.write_all(sql.as_bytes())
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        output.status.success(),
        "{program} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

//! The simulated Dify console API and its handle.
//!
//! [`DifySim::start`] binds 127.0.0.1, then serves from its own thread with its own tokio runtime (as wiremock
//! does), so a test may block on `std::process` calls to the real exporter while the simulator keeps
//! answering. Every handle method is a plain sync call; dropping the handle stops the server.
//!
//! Modules: `config` (what to simulate), `data` (the seeded workspace and lazy node executions), `truth` (the
//! records each exporter source must produce), `auth` (version-specific login, cookies, CSRF, expiry), `faults`
//! (request accounting, delays, injected errors), `live` (the little state requests change), `routes` (the HTTP
//! surface), `rows` (the world as rows of Dify's tables, for the exporter's database source). Which Dify file each response shape follows is in `sim/DIFY-SOURCES.md`.

mod archive;
mod auth;
mod chat;
mod config;
mod data;
mod faults;
mod live;
mod routes;
mod rows;
mod truth;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use chrono::NaiveDate;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::oneshot;

pub use config::{AuthMode, Credentials, Faults, SimConfig};
pub use faults::{LoginAttempt, SimStats};
pub use truth::{TokenSplit, TruthRecord, normalize_provider};

/// Which exporter source a truth is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Api,
    Database,
}

/// Everything the request handlers share.
#[derive(Debug)]
struct SimState {
    config: SimConfig,
    credentials: Credentials,
    workspace: data::Workspace,
    /// Computed on first use: they walk every run's nodes, which the benchmark's 200,000 runs make slow-ish.
    truth_api: OnceLock<Vec<TruthRecord>>,
    truth_database: OnceLock<Vec<TruthRecord>>,
    /// What requests changed: the bump fault's messages and conversations marked read.
    live: Mutex<live::Live>,
    auth: auth::AuthState,
    counters: faults::Counters,
    fault_rng: Mutex<ChaCha8Rng>,
}

impl SimState {
    fn truth(&self, source: Source, from: NaiveDate, to: NaiveDate) -> Vec<TruthRecord> {
        let all = match source {
            Source::Api => self
                .truth_api
                .get_or_init(|| truth::compute_api(&self.workspace)),
            Source::Database => self
                .truth_database
                .get_or_init(|| truth::compute_database(&self.workspace)),
        };
        all.iter()
            .filter(|r| r.usage_date >= from && r.usage_date <= to)
            .cloned()
            .collect()
    }
}

/// A running simulated Dify; stops when dropped.
#[derive(Debug)]
pub struct DifySim {
    state: Arc<SimState>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DifySim {
    /// Generates the workspace, binds `127.0.0.1:config.port` and starts serving on a background thread.
    ///
    /// # Errors
    /// `InvalidInput` for an unknown account timezone, more than 80,000 runs per app and day or an error share
    /// outside 0..=1; any error of binding the port or building the runtime.
    pub fn start(config: SimConfig) -> std::io::Result<DifySim> {
        let tz = chrono_tz::Tz::from_str(&config.account_timezone)
            .map_err(|e| invalid(&format!("account timezone: {e}")))?;
        // Timestamps within a day are drawn distinct per app, so a day cannot hold more runs than seconds.
        if config.runs_per_app_per_day > 80_000 {
            return Err(invalid("runs_per_app_per_day must be at most 80000"));
        }
        if !(0.0..=1.0).contains(&config.faults.error_share) {
            return Err(invalid("faults.error_share must be between 0.0 and 1.0"));
        }
        let modes = config
            .modes
            .iter()
            .map(|name| {
                data::Mode::parse(name).ok_or_else(|| {
                    invalid(&format!(
                        "modes: unknown app mode {name:?}; allowed: workflow, advanced-chat, chat, agent-chat, completion, agent"
                    ))
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let workspace =
            data::Workspace::generate(&config, tz, &modes, chrono::Utc::now().timestamp());
        // Streams derived from the seed, distinct from the workspace's so a fault draw never shifts the data.
        let auth = auth::AuthState::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0xA07A_0000));
        let fault_rng = Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0xFA17_0000));
        let console_token = auth.preissue_access_token();
        let credentials = Credentials {
            email: workspace.owner().email.clone(),
            password: "Sim-passw0rd!".to_owned(),
            admin_api_key: format!("sim-admin-key-{:016x}", config.seed),
            workspace_id: workspace.id.to_string(),
            console_token,
        };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("dify-sim")
            .enable_all()
            .build()?;
        let state = Arc::new(SimState {
            config,
            credentials,
            workspace,
            truth_api: OnceLock::new(),
            truth_database: OnceLock::new(),
            live: Mutex::default(),
            auth,
            counters: faults::Counters::default(),
            fault_rng,
        });
        let (shutdown, stop) = oneshot::channel();
        let app = routes::router(Arc::clone(&state));
        let thread = std::thread::Builder::new()
            .name("dify-sim".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    // Stop at once on shutdown rather than waiting for clients' keep-alive connections to close.
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop => {}
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(DifySim {
            state,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`; the console API is under `/console/api`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The exact records the exporter's console API source must produce for the UTC days `from..=to`, sorted
    /// by key (docs/run.md#aggregation).
    #[must_use]
    pub fn truth(&self, from: NaiveDate, to: NaiveDate) -> Vec<TruthRecord> {
        self.state.truth(Source::Api, from, to)
    }

    /// The exact records the exporter's database source must produce for the UTC days `from..=to` once this
    /// workspace is loaded into PostgreSQL, sorted by key (docs/database.md#rules).
    #[must_use]
    pub fn truth_database(&self, from: NaiveDate, to: NaiveDate) -> Vec<TruthRecord> {
        self.state.truth(Source::Database, from, to)
    }

    /// Writes this workspace as rows of Dify's tables: a psql script of `COPY … FROM STDIN` blocks for the
    /// exporter's `tests/data/dify-schema.sql`, plus rows Dify has that must never count (see `rows`).
    ///
    /// # Errors
    /// Any error of writing to `out`.
    pub fn write_database_rows(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        rows::write(&self.state.workspace, out)
    }

    /// Counters of what the simulator has seen so far.
    #[must_use]
    pub fn stats(&self) -> SimStats {
        self.state.counters.snapshot()
    }

    #[must_use]
    pub fn credentials(&self) -> &Credentials {
        &self.state.credentials
    }

    #[must_use]
    pub fn config(&self) -> &SimConfig {
        &self.state.config
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_owned())
}

impl Drop for DifySim {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

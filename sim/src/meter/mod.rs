//! The simulated metering API (the exporter's receiver) and its handle.
//!
//! [`MeterSim::start`] binds 127.0.0.1, then serves from its own thread with its own tokio runtime (as
//! [`crate::DifySim`] does), so a test may block on `std::process` calls to the real exporter while the
//! receiver keeps answering. Every handle method is a plain sync call; dropping the handle stops the server.
//!
//! Modules: `config` (what to accept, which faults), `wire` (the rules of docs/wire-format.md as a validator),
//! `store` (held records, accepted keys, the request log), `faults` (fault injection, logging and the
//! listener that can reset connections), `routes` (the HTTP surface).

mod config;
mod faults;
mod routes;
mod store;
mod wire;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::sync::{oneshot, watch};

pub use config::{MeterConfig, MeterFaults};
pub use store::{HeldRecord, MeterStats, RequestLog};

/// Everything the request handlers share.
#[derive(Debug)]
struct MeterState {
    config: MeterConfig,
    /// A watch channel rather than a mutex, so hung requests wake when the faults change.
    faults: watch::Sender<MeterFaults>,
    fault_rng: Mutex<ChaCha8Rng>,
    store: Mutex<store::Store>,
}

impl MeterState {
    // A panic while holding these locks cannot leave them inconsistent, so poisoning is ignored.
    fn store(&self) -> MutexGuard<'_, store::Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn rng(&self) -> MutexGuard<'_, ChaCha8Rng> {
        self.fault_rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running simulated metering API; stops when dropped.
#[derive(Debug)]
pub struct MeterSim {
    state: Arc<MeterState>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MeterSim {
    /// Binds `127.0.0.1:config.port` and starts serving on a background thread, with no faults.
    ///
    /// # Errors
    /// `InvalidInput` for a `max_batch` of 0 or an empty token; any error of binding the port or building the
    /// runtime.
    pub fn start(config: MeterConfig) -> std::io::Result<MeterSim> {
        if config.max_batch == 0 {
            return Err(invalid("max_batch must be at least 1"));
        }
        if config.token.is_empty() {
            return Err(invalid("token must not be empty"));
        }
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, config.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("meter-sim")
            .enable_all()
            .build()?;
        // A stream derived from the seed, so the fault draws repeat for the same seed.
        let fault_rng = Mutex::new(ChaCha8Rng::seed_from_u64(config.seed ^ 0x3E7E_0000));
        let state = Arc::new(MeterState {
            config,
            faults: watch::Sender::new(MeterFaults::default()),
            fault_rng,
            store: Mutex::default(),
        });
        let (shutdown, stop) = oneshot::channel();
        let app = routes::router(Arc::clone(&state))
            .into_make_service_with_connect_info::<faults::Conn>();
        let thread = std::thread::Builder::new()
            .name("meter-sim".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    // Stop at once on shutdown rather than waiting for keep-alive or hung connections.
                    tokio::select! {
                        _ = axum::serve(faults::MeterListener(listener), app) => {}
                        _ = stop => {}
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            })?;
        Ok(MeterSim {
            state,
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT/v1/usage`, the value for `EXTERNAL_API_URL`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}/v1/usage", self.addr)
    }

    /// `http://127.0.0.1:PORT`; `GET /_meter/records` and `GET /_meter/stats` are under it.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults for the requests that arrive from now on (and wakes hung ones to decide again).
    pub fn set_faults(&self, faults: MeterFaults) {
        self.state.faults.send_replace(faults);
    }

    /// The faults as they are now (`down_for_next` and `reject_next` count down as requests arrive).
    #[must_use]
    pub fn faults(&self) -> MeterFaults {
        self.state.faults.borrow().clone()
    }

    /// Records held, sorted by (usage_date, app_id, user, provider, model, currency).
    #[must_use]
    pub fn records(&self) -> Vec<HeldRecord> {
        self.state.store().records()
    }

    /// What the receiver has seen so far.
    #[must_use]
    pub fn stats(&self) -> MeterStats {
        self.state.store().stats()
    }

    #[must_use]
    pub fn config(&self) -> &MeterConfig {
        &self.state.config
    }
}

fn invalid(message: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, message.to_owned())
}

impl Drop for MeterSim {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

//! The embedded Kafka-protocol broker of `kusanagi run`.
//!
//! Design: the broker is the `noida-db` crate's Kafka engine (transactions,
//! `read_committed`, producer fencing, consumer groups; our patched copy in
//! `vendor/noida-db`), served on background threads of this process. It is
//! durable the way a Kafka broker is: every change (a produce, a
//! transaction marker, an offset commit, a producer id or epoch) is
//! appended to a checksummed journal under `<data_dir>` before the request
//! is answered, so a `kill -9` loses nothing acknowledged. A checkpoint
//! (`kafka.json`, the whole state) is written at most every
//! `checkpoint_interval`, once the journal since the last one holds half
//! its size ([`checkpoint_due`]), and lets the journal before it go; a
//! start replays the journal after the last checkpoint (`docs/broker.md`).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use noida::kafka::connection::handle_connection;
use noida::kafka::durable::CHECKPOINT;
use noida::kafka::engine::Engine;
pub use noida::kafka::journal::FlushPolicy;

use crate::ConnectorError;

/// A Kafka-protocol broker running inside this process.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    engine: Engine,
    data_dir: PathBuf,
    stop: Arc<AtomicBool>,
    saver: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Sets one of the broker's configs, as a line of `server.properties`
    /// would: call it at start, before clients join. Honoured:
    /// `group.initial.rebalance.delay.ms`, `num.partitions`,
    /// `auto.create.topics.enable`.
    pub fn set_config(&self, name: &str, value: &str) {
        self.engine.set_broker_config(name, value);
    }

    /// Starts a broker on `listen` (`127.0.0.1:0` picks a free port),
    /// recovering the state kept under `data_dir` if there is one, with the
    /// journal written to the OS before each answer ([`FlushPolicy::Os`]).
    pub fn start(
        listen: &str,
        data_dir: &Path,
        checkpoint_interval: Duration,
    ) -> Result<Self, ConnectorError> {
        Self::start_with(listen, data_dir, checkpoint_interval, FlushPolicy::Os)
    }

    /// [`EmbeddedBroker::start`] with the journal's flush policy.
    pub fn start_with(
        listen: &str,
        data_dir: &Path,
        checkpoint_interval: Duration,
        flush: FlushPolicy,
    ) -> Result<Self, ConnectorError> {
        let fail = |detail: String| ConnectorError::EmbeddedBroker { detail };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", data_dir.display())))?;
        let listener = TcpListener::bind(listen)
            .map_err(|e| fail(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail(format!("no local address: {e}")))?;
        let (engine, recovery) = Engine::open_durable(
            data_dir,
            addr.ip().to_string(),
            i32::from(addr.port()),
            flush,
        )
        .map_err(fail)?;
        tracing::info!(
            data_dir = %data_dir.display(),
            checkpoint = recovery.checkpoint,
            replayed = recovery.replayed,
            torn_tail = ?recovery.torn_tail,
            aborted_open_transactions = recovery.aborted_open_transactions,
            took_ms = recovery.took.as_millis() as u64,
            flush = ?flush,
            "embedded broker recovered"
        );
        engine.spawn_log_cleaner();

        let serving = engine.clone();
        std::thread::Builder::new()
            .name("kafka-accept".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let engine = serving.clone();
                    let _ = std::thread::Builder::new()
                        .name("kafka-conn".into())
                        .spawn(move || handle_connection(stream, engine));
                }
            })
            .map_err(|e| fail(format!("cannot start the accept thread: {e}")))?;

        let stop = Arc::new(AtomicBool::new(false));
        let saver = {
            let engine = engine.clone();
            let dir = data_dir.to_path_buf();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-checkpoint".into())
                .spawn(move || {
                    let mut next = Instant::now() + checkpoint_interval;
                    let mut last_size =
                        std::fs::metadata(dir.join(CHECKPOINT)).map_or(0, |m| m.len());
                    // Wake often to notice a stop at once; checkpoint on schedule.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        if Instant::now() >= next {
                            let due = checkpoint_due(
                                engine.journaled_since_checkpoint(),
                                engine.journaled_bytes_since_checkpoint(),
                                last_size,
                            );
                            if due && let Some(size) = checkpoint(&engine, &dir) {
                                last_size = size;
                            }
                            next = Instant::now() + checkpoint_interval;
                        }
                    }
                })
                .map_err(|e| fail(format!("cannot start the checkpoint thread: {e}")))?
        };
        Ok(Self {
            addr,
            engine,
            data_dir: data_dir.to_path_buf(),
            stop,
            saver: Some(saver),
        })
    }

    /// The address clients connect to (`bootstrap.servers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes a checkpoint now (everything is in the journal already).
    pub fn save(&self) {
        checkpoint_if_journaled(&self.engine, &self.data_dir);
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(saver) = self.saver.take() {
            let _ = saver.join();
        }
        self.save();
    }
}

/// Writes a checkpoint if anything was journaled since the last one.
fn checkpoint_if_journaled(engine: &Engine, dir: &Path) {
    if engine.journaled_since_checkpoint() > 0 {
        checkpoint(engine, dir);
    }
}

/// Writes a checkpoint; returns its size, or `None` (logged) if it failed.
fn checkpoint(engine: &Engine, dir: &Path) -> Option<u64> {
    match engine.checkpoint(dir) {
        Ok(size) => Some(size),
        Err(e) => {
            // The journal still holds everything: nothing is lost, recovery
            // just replays more.
            tracing::error!(dir = %dir.display(), error = %e, "cannot write the embedded broker's checkpoint");
            None
        }
    }
}

/// Whether a scheduled checkpoint is worth writing: something was journaled
/// since the last one, and the journal after it holds at least half the
/// last checkpoint's size. A checkpoint rewrites the whole state, so
/// writing one every interval whatever the state's size would cost disk
/// and CPU in proportion to the data held, forever; this way its cost is
/// at most twice the bytes journaled, and a start replays at most half a
/// checkpoint's worth of journal (or one interval's, when the state is
/// small).
fn checkpoint_due(entries: u64, journal_bytes: u64, last_checkpoint_bytes: u64) -> bool {
    entries > 0 && journal_bytes.saturating_mul(2) >= last_checkpoint_bytes
}

#[cfg(test)]
mod tests {
    use super::checkpoint_due;

    #[test]
    fn a_checkpoint_waits_for_half_its_size_of_journal() {
        // Nothing journaled: nothing to checkpoint, whatever the sizes.
        assert!(!checkpoint_due(0, 0, 0));
        // A small state is checkpointed on schedule.
        assert!(checkpoint_due(1, 100, 150));
        // A large one once the journal holds half of it.
        assert!(!checkpoint_due(5_000, 49 << 20, 100 << 20));
        assert!(checkpoint_due(5_000, 50 << 20, 100 << 20));
    }
}

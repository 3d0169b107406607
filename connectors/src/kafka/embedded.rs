//! The embedded Kafka-protocol broker of `kusanagi run`.
//!
//! Design: the broker is the `noida-db` crate's Kafka engine (transactions,
//! `read_committed`, producer fencing, consumer groups), served on
//! background threads of this process. Its whole state lives in memory and
//! is written to `<data_dir>/kafka.json` by a snapshot thread whenever it
//! changed (checked every `snapshot_interval`), by an atomic rename, and once
//! more when the broker is dropped. A clean stop therefore loses nothing; a
//! hard kill (`kill -9`) of the process rolls the broker back to its last
//! snapshot, which is consistent: records, transaction markers and committed
//! consumer offsets are saved together, and transactions still open are
//! saved as aborted.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use noida::kafka::connection::handle_connection;
use noida::kafka::engine::{Engine, Snapshot};

use crate::ConnectorError;

const SNAPSHOT_FILE: &str = "kafka.json";

/// A Kafka-protocol broker running inside this process.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    engine: Engine,
    snapshot_path: PathBuf,
    stop: Arc<AtomicBool>,
    saver: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .field("snapshot_path", &self.snapshot_path)
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a broker on `listen` (`127.0.0.1:0` picks a free port),
    /// restoring the state saved under `data_dir` if there is one.
    pub fn start(
        listen: &str,
        data_dir: &Path,
        snapshot_interval: Duration,
    ) -> Result<Self, ConnectorError> {
        let fail = |detail: String| ConnectorError::EmbeddedBroker { detail };
        std::fs::create_dir_all(data_dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", data_dir.display())))?;
        let listener = TcpListener::bind(listen)
            .map_err(|e| fail(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| fail(format!("no local address: {e}")))?;
        let snapshot_path = data_dir.join(SNAPSHOT_FILE);
        let host = addr.ip().to_string();
        let port = i32::from(addr.port());
        let engine = if snapshot_path.exists() {
            let bytes = std::fs::read(&snapshot_path)
                .map_err(|e| fail(format!("cannot read {}: {e}", snapshot_path.display())))?;
            let snapshot = serde_json::from_slice::<Snapshot>(&bytes).map_err(|e| {
                fail(format!(
                    "{} is not a broker snapshot ({e}); move it away to start empty",
                    snapshot_path.display()
                ))
            })?;
            Engine::new_persistent(snapshot, host, port)
        } else {
            Engine::new(host, port)
        };
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
            let path = snapshot_path.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-snapshot".into())
                .spawn(move || {
                    let mut last = None;
                    let mut next = Instant::now() + snapshot_interval;
                    // Wake often to notice a stop at once; save on schedule.
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                        if Instant::now() >= next {
                            last = save_if_changed(&engine, &path, last);
                            next = Instant::now() + snapshot_interval;
                        }
                    }
                })
                .map_err(|e| fail(format!("cannot start the snapshot thread: {e}")))?
        };
        Ok(Self {
            addr,
            engine,
            snapshot_path,
            stop,
            saver: Some(saver),
        })
    }

    /// The address clients connect to (`bootstrap.servers`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Writes the broker's state to disk now.
    pub fn save(&self) {
        save_if_changed(&self.engine, &self.snapshot_path, None);
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

/// What changes when the broker's durable state changes: every partition's
/// high watermark, log start and aborted transactions, and every committed
/// offset. (A save turns open transactions into aborted ones; if one later
/// commits, the high watermark and batch count come out the same, and only
/// the count of aborted transactions tells the states apart.)
fn signature(s: &Snapshot) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (name, topic) in &s.topics {
        name.hash(&mut h);
        for (id, p) in &topic.partitions {
            (
                id,
                p.high_watermark,
                p.log_start_offset,
                p.record_batches.len(),
                p.aborted_txns.len(),
            )
                .hash(&mut h);
        }
    }
    let mut offsets: Vec<_> = s.committed_offsets.iter().collect();
    offsets.sort();
    offsets.hash(&mut h);
    s.next_producer_id.hash(&mut h);
    h.finish()
}

fn save_if_changed(engine: &Engine, path: &Path, last: Option<u64>) -> Option<u64> {
    let snapshot = engine.snapshot();
    let sig = signature(&snapshot);
    if Some(sig) == last {
        return last;
    }
    let bytes = match serde_json::to_vec(&snapshot) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise the embedded broker's state");
            return last;
        }
    };
    let tmp = path.with_extension("json.tmp");
    match std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Some(sig),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot save the embedded broker's state");
            last
        }
    }
}

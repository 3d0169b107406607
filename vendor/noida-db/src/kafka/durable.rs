//! [Kusanagi patch] A durable engine: every change journaled before it is
//! answered (journal.rs), checkpoints that let the journal be truncated,
//! and recovery from the last checkpoint plus the journal after it.
//!
//! Design. [`Engine::open_durable`] loads `kafka.json` (the checkpoint:
//! the whole state, open transactions and producer epochs included, and the
//! first journal file it does not cover), replays the journal from there
//! through the same handlers the requests first went through, with the
//! clock held at each entry's time, then aborts the transactions that were
//! open at the crash (as the engine always did on a restart: their
//! producers are gone) and writes a fresh checkpoint. [`Engine::checkpoint`]
//! starts a new journal file and writes the state as of that instant under
//! the state lock, so the checkpoint and the journal after it never overlap
//! nor leave a gap; once the checkpoint is on disk the older journal files
//! go. Recovery time is the time to load a checkpoint plus to replay at most
//! one checkpoint interval of requests.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, AlterConfigsRequest, ApiKey,
    CreatePartitionsRequest, CreateTopicsRequest, DeleteRecordsRequest, DeleteTopicsRequest,
    EndTxnRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, ProduceRequest,
    TxnOffsetCommitRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use super::engine::{Engine, EngineState, Snapshot};
use super::journal::{self, Entry, FlushPolicy, Journal, OffsetChange};

/// The checkpoint's file name in the data directory.
pub const CHECKPOINT: &str = "kafka.json";

/// What [`Engine::open_durable`] found and did.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// A checkpoint was loaded.
    pub checkpoint: bool,
    /// Journal entries replayed after it.
    pub replayed: usize,
    /// A torn last frame dropped: (file, offset, bytes).
    pub torn_tail: Option<(PathBuf, usize, usize)>,
    /// Transactions open at the crash, aborted.
    pub aborted_open_transactions: usize,
    /// How long it took, the new checkpoint included.
    pub took: Duration,
}

/// Stops the process: a broker that cannot write its journal must not
/// answer what it could not keep (as a database stops on a failed fsync).
fn fatal(what: &str) -> ! {
    eprintln!("noida-db: {what}; stopping rather than acknowledge what it cannot keep");
    std::process::abort()
}

impl EngineState {
    fn journal_append(&mut self, entry: &Entry) {
        if let Some(j) = self.journal.as_mut()
            && let Err(e) = j.append(entry)
        {
            fatal(&format!("cannot write the journal: {e}"));
        }
    }

    /// The background tick's durable part: transactions past their
    /// timeout aborted (timeouts.rs), then a pass of the log cleaner.
    fn tick(&mut self) {
        self.expire_transactions();
        self.run_log_cleaner();
    }

    /// [`EngineState::tick`], journaled when it changed anything (a tick
    /// that changes nothing changes nothing on replay either).
    pub fn run_log_cleaner_journaled(&mut self) {
        let now = self.now_ms();
        let before = self.journal.is_some().then(|| self.log_shape());
        self.frozen_now = Some(now);
        self.tick();
        self.frozen_now = None;
        if before.is_some_and(|b| b != self.log_shape()) {
            self.journal_append(&Entry::Clean { now_ms: now });
        }
    }

    /// What the tick can change: every partition's log start, compacted
    /// prefix, tombstone horizons, batch count and bytes; the producers'
    /// epochs and the transactions in progress.
    fn log_shape(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let mut epochs: Vec<_> = self.producer_epochs.iter().collect();
        epochs.sort();
        epochs.hash(&mut h);
        self.txn_info.values().filter(|i| i.state == "Ongoing").count().hash(&mut h);
        let mut topics: Vec<_> = self.topics.iter().collect();
        topics.sort_by(|a, b| a.0.cmp(b.0));
        for (name, t) in topics {
            name.hash(&mut h);
            let mut parts: Vec<_> = t.partitions.iter().collect();
            parts.sort_by_key(|(id, _)| **id);
            for (id, p) in parts {
                let bytes: usize = p.record_batches.iter().map(|(_, b)| b.len()).sum();
                (id, p.log_start_offset, p.clean_offset, p.record_batches.len(), bytes)
                    .hash(&mut h);
                p.tombstone_horizons.len().hash(&mut h);
            }
        }
        h.finish()
    }

    /// Every committed offset with its metadata.
    fn offsets_view(&self) -> BTreeMap<(String, String, i32), (i64, Option<String>)> {
        self.committed_offsets
            .iter()
            .map(|(k, &o)| (k.clone(), (o, self.offset_metadata.get(k).cloned())))
            .collect()
    }

    /// Applies one journal entry (recovery).
    fn apply_entry(&mut self, entry: Entry) -> Result<(), String> {
        match entry {
            Entry::Request { api_key, version, now_ms, body } => {
                self.frozen_now = Some(now_ms);
                let result = self.apply_request(api_key, version, Bytes::from(body));
                self.frozen_now = None;
                result
            }
            Entry::Offsets { changes, .. } => {
                for c in changes {
                    let key = (c.group, c.topic, c.partition);
                    match c.offset {
                        Some(offset) => {
                            self.committed_offsets.insert(key.clone(), offset);
                            self.set_offset_metadata(key, c.metadata.as_deref());
                        }
                        None => {
                            self.committed_offsets.remove(&key);
                            self.offset_metadata.remove(&key);
                        }
                    }
                }
                Ok(())
            }
            Entry::Clean { now_ms } => {
                self.frozen_now = Some(now_ms);
                self.tick();
                self.frozen_now = None;
                Ok(())
            }
        }
    }

    fn apply_request(&mut self, api_key: i16, v: i16, mut body: Bytes) -> Result<(), String> {
        fn decode<T: Decodable>(body: &mut Bytes, v: i16) -> Result<T, String> {
            T::decode(body, v).map_err(|e| format!("cannot decode the request: {e}"))
        }
        let b = &mut body;
        match ApiKey::try_from(api_key) {
            Ok(ApiKey::Produce) => drop(self.handle_produce(&decode::<ProduceRequest>(b, v)?, v)),
            Ok(ApiKey::InitProducerId) => {
                drop(self.handle_init_producer_id(&decode::<InitProducerIdRequest>(b, v)?, v))
            }
            Ok(ApiKey::CreateTopics) => {
                drop(self.handle_create_topics(&decode::<CreateTopicsRequest>(b, v)?, v))
            }
            Ok(ApiKey::DeleteTopics) => {
                drop(self.handle_delete_topics(&decode::<DeleteTopicsRequest>(b, v)?, v))
            }
            Ok(ApiKey::CreatePartitions) => {
                drop(self.handle_create_partitions(&decode::<CreatePartitionsRequest>(b, v)?, v))
            }
            Ok(ApiKey::AddPartitionsToTxn) => drop(
                self.handle_add_partitions_to_txn(&decode::<AddPartitionsToTxnRequest>(b, v)?, v),
            ),
            Ok(ApiKey::AddOffsetsToTxn) => {
                drop(self.handle_add_offsets_to_txn(&decode::<AddOffsetsToTxnRequest>(b, v)?, v))
            }
            Ok(ApiKey::EndTxn) => drop(self.handle_end_txn(&decode::<EndTxnRequest>(b, v)?, v)),
            Ok(ApiKey::TxnOffsetCommit) => {
                drop(self.handle_txn_offset_commit(&decode::<TxnOffsetCommitRequest>(b, v)?, v))
            }
            Ok(ApiKey::AlterConfigs) => {
                drop(self.handle_alter_configs(&decode::<AlterConfigsRequest>(b, v)?, v))
            }
            Ok(ApiKey::IncrementalAlterConfigs) => drop(self.handle_incremental_alter_configs(
                &decode::<IncrementalAlterConfigsRequest>(b, v)?,
                v,
            )),
            Ok(ApiKey::DeleteRecords) => {
                drop(self.handle_delete_records(&decode::<DeleteRecordsRequest>(b, v)?, v))
            }
            _ => return Err(format!("API key {api_key} is not journaled")),
        }
        Ok(())
    }

    /// Aborts every transaction left open (its producer is gone with the
    /// crash) and fences its producer: abort markers, offsets dropped, the
    /// epoch bumped, as Apache Kafka's coordinator does when it aborts a
    /// transaction on its own. Returns how many there were.
    fn abort_open_transactions(&mut self) -> usize {
        let open: Vec<(String, (i64, i16))> = self
            .txn_producers
            .iter()
            .filter(|(tid, _)| self.txn_is_open(tid))
            .map(|(tid, &p)| (tid.clone(), p))
            .collect();
        for (tid, (pid, epoch)) in &open {
            self.complete_txn(tid, *pid, *epoch, false);
            let bumped = epoch.wrapping_add(1);
            self.txn_producers.insert(tid.clone(), (*pid, bumped));
            self.producer_epochs.insert(*pid, bumped);
        }
        // Anything still open without a transactional id (it cannot
        // happen through the protocol): aborted as the shutdown save did.
        self.resolve_open_transactions_for_shutdown();
        open.len()
    }
}

impl Engine {
    /// Applies a state-changing request under the state lock, journaled
    /// first (so a request is never answered before it is in the journal)
    /// and with the clock held for the whole request.
    pub(super) fn journaled<Req: Encodable, Res>(
        &self,
        api: ApiKey,
        req: &Req,
        version: i16,
        apply: impl FnOnce(&mut EngineState) -> Res,
    ) -> Res {
        let mut state = self.state.lock().unwrap();
        let now = state.now_ms();
        if state.journal.is_some() {
            let mut body = BytesMut::new();
            if let Err(e) = req.encode(&mut body, version) {
                fatal(&format!("cannot encode a {api:?} request for the journal: {e}"));
            }
            state.journal_append(&Entry::Request {
                api_key: api as i16,
                version,
                now_ms: now,
                body: body.to_vec(),
            });
        }
        state.frozen_now = Some(now);
        let res = apply(&mut state);
        state.frozen_now = None;
        res
    }

    /// Applies a request that changes committed offsets according to
    /// group membership (not durable), journaling the offsets it changed.
    pub(super) fn offsets_journaled<Res>(
        &self,
        apply: impl FnOnce(&mut EngineState) -> Res,
    ) -> Res {
        let mut state = self.state.lock().unwrap();
        let now = state.now_ms();
        let before = state.journal.is_some().then(|| state.offsets_view());
        state.frozen_now = Some(now);
        let res = apply(&mut state);
        state.frozen_now = None;
        if let Some(before) = before {
            let after = state.offsets_view();
            let mut changes = Vec::new();
            for (k, v) in &after {
                if before.get(k) != Some(v) {
                    changes.push(OffsetChange {
                        group: k.0.clone(),
                        topic: k.1.clone(),
                        partition: k.2,
                        offset: Some(v.0),
                        metadata: v.1.clone(),
                    });
                }
            }
            for k in before.keys().filter(|k| !after.contains_key(*k)) {
                changes.push(OffsetChange {
                    group: k.0.clone(),
                    topic: k.1.clone(),
                    partition: k.2,
                    offset: None,
                    metadata: None,
                });
            }
            if !changes.is_empty() {
                state.journal_append(&Entry::Offsets { now_ms: now, changes });
            }
        }
        res
    }

    /// Opens the durable engine kept in `dir`: the checkpoint, the journal
    /// after it replayed, open transactions aborted, a fresh checkpoint
    /// written; from then on every change is journaled with `policy`.
    /// Refuses (naming the file and what is wrong) a checkpoint it cannot
    /// read or a journal damaged before its tail.
    pub fn open_durable(
        dir: &Path,
        host: String,
        port: i32,
        policy: FlushPolicy,
    ) -> Result<(Engine, Recovery), String> {
        let started = Instant::now();
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(CHECKPOINT);
        let mut recovery = Recovery::default();
        let (mut state, from_seq) = if path.exists() {
            let bytes =
                std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let snapshot: Snapshot = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not a broker checkpoint ({e}); move it away to start empty",
                    path.display()
                )
            })?;
            recovery.checkpoint = true;
            let seq = snapshot.journal_seq;
            (EngineState::from_snapshot(snapshot), seq)
        } else {
            (EngineState::new(host.clone(), port), 0)
        };
        state.host = host;
        state.port = port;
        let replay = journal::read(dir, from_seq).map_err(|e| e.to_string())?;
        recovery.torn_tail = replay.torn_tail.clone();
        for (i, entry) in replay.entries.into_iter().enumerate() {
            state.apply_entry(entry).map_err(|e| {
                format!("cannot replay entry {i} of the journal in {}: {e}", dir.display())
            })?;
            recovery.replayed += 1;
        }
        recovery.aborted_open_transactions = state.abort_open_transactions();
        let next = journal::files(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .last()
            .map_or(from_seq, |(s, _)| s + 1)
            .max(from_seq);
        state.journal = Some(
            Journal::create(dir, next, policy)
                .map_err(|e| format!("cannot start the journal in {}: {e}", dir.display()))?,
        );
        let engine = Engine::from_state(state);
        engine
            .checkpoint(dir)
            .map_err(|e| format!("cannot write a checkpoint in {}: {e}", dir.display()))?;
        recovery.took = started.elapsed();
        Ok((engine, recovery))
    }

    /// Entries journaled since the last checkpoint (0 without a journal).
    pub fn journaled_since_checkpoint(&self) -> u64 {
        self.state.lock().unwrap().journal.as_ref().map_or(0, Journal::written)
    }

    /// [Kusanagi patch] Bytes journaled since the last checkpoint (0
    /// without a journal).
    pub fn journaled_bytes_since_checkpoint(&self) -> u64 {
        self.state.lock().unwrap().journal.as_ref().map_or(0, Journal::written_bytes)
    }

    /// Writes a checkpoint to `dir` and drops the journal files it covers;
    /// returns the checkpoint's size in bytes. An engine without a journal
    /// writes a plain snapshot.
    pub fn checkpoint(&self, dir: &Path) -> std::io::Result<u64> {
        let snapshot = {
            let mut state = self.state.lock().unwrap();
            let seq = match state.journal.as_mut() {
                Some(j) => j.rotate()?,
                None => 0,
            };
            let mut snapshot = state.to_snapshot();
            snapshot.journal_seq = seq;
            snapshot
        };
        // [Kusanagi patch] The snapshot shares the log's batches (`Bytes`)
        // and is written out after the lock is released, in a stream: it
        // is never a second copy of the log in memory.
        let path = dir.join(CHECKPOINT);
        let tmp = path.with_extension("json.tmp");
        let size = {
            let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            serde_json::to_writer(&mut out, &snapshot).map_err(std::io::Error::other)?;
            out.flush()?;
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            file.metadata()?.len()
        };
        std::fs::rename(&tmp, &path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        if snapshot.journal_seq > 0 {
            for (seq, file) in journal::files(dir)? {
                if seq < snapshot.journal_seq {
                    std::fs::remove_file(file)?;
                }
            }
        }
        Ok(size)
    }
}

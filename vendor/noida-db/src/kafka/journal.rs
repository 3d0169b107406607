//! [Kusanagi patch] The engine's journal: an append-only log of every change
//! to the broker's durable state, written before the request that made the
//! change is answered (see PATCHES.md and Kusanagi's docs/broker.md).
//!
//! Design. The engine applies requests one at a time under its state lock,
//! and every handler that changes durable state is a function of the state,
//! the request and the clock. So the journal records *what was applied*:
//! the request itself with the clock's value ([`Entry::Request`]), or, for
//! the few changes whose outcome depends on state that is not durable
//! (consumer-group membership decides whether an offset commit is
//! accepted), the change itself ([`Entry::Offsets`]). A checkpoint (the
//! engine's snapshot, `kafka.json`) records the journal file it was taken
//! at; recovery loads it and replays the journal files from that one on,
//! through the same handlers, with the clock held at each entry's time. The
//! state it rebuilds is the state that answered the last acknowledged
//! request.
//!
//! Files. `journal-<seq>.log`, a new one at each checkpoint (older ones are
//! removed once the checkpoint is on disk). Each starts with [`MAGIC`];
//! then frames: `len: u32 LE`, `crc32c(len): u32 LE`, `crc32c(payload): u32
//! LE`, `payload` (`len` bytes). The length has its own checksum, so a
//! damaged length is told apart from a frame cut short by a crash.
//!
//! Torn tails. A crash can cut the last write short (a power loss; a killed
//! process leaves every completed `write` in the page cache). Recovery
//! drops the last frame of the last file when it is incomplete, or fails
//! its checksum with nothing after it, or when the tail is all zeros (a
//! file extended but never written); the request it held was never
//! answered. Damage anywhere else is refused with the file, the byte
//! offset and what is wrong: replaying past it would lose acknowledged
//! writes silently.
//!
//! Flush. [`FlushPolicy::Os`] (the default, as Apache Kafka's
//! `log.flush.interval.messages` default) writes each frame to the OS
//! before answering: a killed process loses nothing, a power loss may lose
//! what the OS had not written back. [`FlushPolicy::Always`] also
//! `fdatasync`s before answering: nothing acknowledged is lost even then,
//! at the cost of a disk flush per request.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The first bytes of every journal file.
pub const MAGIC: &[u8; 8] = b"NOIDAJ1\n";
const HEADER: usize = 12;
/// The largest frame a journal accepts (a produce request is far smaller).
const MAX_FRAME: usize = 1 << 30;

/// When an appended frame is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Written to the OS before the answer (survives a process crash).
    #[default]
    Os,
    /// Also `fdatasync`ed before the answer (survives a power loss).
    Always,
}

impl FlushPolicy {
    /// `os` or `always`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "os" => Some(FlushPolicy::Os),
            "always" => Some(FlushPolicy::Always),
            _ => None,
        }
    }
}

/// A committed offset as applied (`offset: None` removes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    /// The consumer group.
    pub group: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The committed offset, or `None` when the commit was deleted.
    pub offset: Option<i64>,
    /// The metadata committed with it.
    pub metadata: Option<String>,
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A request the engine applied, to be applied again through the same
    /// handler with the clock at `now_ms`.
    Request {
        /// The Kafka API key.
        api_key: i16,
        /// The request's version.
        version: i16,
        /// The engine's clock when it was applied.
        now_ms: i64,
        /// The request body, encoded at `version`.
        body: Vec<u8>,
    },
    /// Committed offsets as they were applied.
    Offsets {
        /// The engine's clock when they were applied.
        now_ms: i64,
        /// The changes.
        changes: Vec<OffsetChange>,
    },
    /// A pass of the log cleaner (compaction and retention) at `now_ms`.
    Clean {
        /// The engine's clock.
        now_ms: i64,
    },
}

const REQUEST: u8 = 1;
const OFFSETS: u8 = 2;
const CLEAN: u8 = 3;

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

impl Entry {
    /// The entry's payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Entry::Request { api_key, version, now_ms, body } => {
                out.reserve(13 + body.len());
                out.push(REQUEST);
                out.extend_from_slice(&api_key.to_le_bytes());
                out.extend_from_slice(&version.to_le_bytes());
                out.extend_from_slice(&now_ms.to_le_bytes());
                out.extend_from_slice(body);
            }
            Entry::Offsets { now_ms, changes } => {
                out.push(OFFSETS);
                out.extend_from_slice(&now_ms.to_le_bytes());
                out.extend_from_slice(&(changes.len() as u32).to_le_bytes());
                for c in changes {
                    put_str(&mut out, &c.group);
                    put_str(&mut out, &c.topic);
                    out.extend_from_slice(&c.partition.to_le_bytes());
                    match c.offset {
                        Some(o) => {
                            out.push(1);
                            out.extend_from_slice(&o.to_le_bytes());
                        }
                        None => out.push(0),
                    }
                    match &c.metadata {
                        Some(m) => {
                            out.push(1);
                            put_str(&mut out, m);
                        }
                        None => out.push(0),
                    }
                }
            }
            Entry::Clean { now_ms } => {
                out.push(CLEAN);
                out.extend_from_slice(&now_ms.to_le_bytes());
            }
        }
        out
    }

    /// Reads a payload written by [`Entry::encode`].
    pub fn decode(payload: &[u8]) -> Result<Entry, String> {
        let mut r = Reader { buf: payload };
        let entry = match r.u8()? {
            REQUEST => Entry::Request {
                api_key: i16::from_le_bytes(r.take(2)?.try_into().unwrap()),
                version: i16::from_le_bytes(r.take(2)?.try_into().unwrap()),
                now_ms: r.i64()?,
                body: r.rest(),
            },
            OFFSETS => {
                let now_ms = r.i64()?;
                let n = r.u32()? as usize;
                let mut changes = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    let group = r.string()?;
                    let topic = r.string()?;
                    let partition = i32::from_le_bytes(r.take(4)?.try_into().unwrap());
                    let offset = match r.u8()? {
                        0 => None,
                        _ => Some(r.i64()?),
                    };
                    let metadata = match r.u8()? {
                        0 => None,
                        _ => Some(r.string()?),
                    };
                    changes.push(OffsetChange { group, topic, partition, offset, metadata });
                }
                Entry::Offsets { now_ms, changes }
            }
            CLEAN => Entry::Clean { now_ms: r.i64()? },
            other => return Err(format!("unknown entry kind {other}")),
        };
        if !r.buf.is_empty() {
            return Err(format!("{} bytes after the entry", r.buf.len()));
        }
        Ok(entry)
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!("cut short: {n} bytes wanted, {} left", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "a string is not UTF-8".into())
    }
    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf).to_vec()
    }
}

/// One frame: header and payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The path of journal file `seq` in `dir`.
pub fn file_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("journal-{seq:020}.log"))
}

/// The journal files in `dir`, by sequence number.
pub fn files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("journal-"))
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            out.push((seq, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The journal being written.
pub struct Journal {
    dir: PathBuf,
    seq: u64,
    file: File,
    policy: FlushPolicy,
    /// Entries appended to this file.
    written: u64,
    /// [Kusanagi patch] Their bytes, frames included.
    written_bytes: u64,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("seq", &self.seq)
            .field("policy", &self.policy)
            .finish()
    }
}

impl Journal {
    /// Starts journal file `seq` in `dir` (replacing one of that number).
    pub fn create(dir: &Path, seq: u64, policy: FlushPolicy) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut file =
            OpenOptions::new().create(true).write(true).truncate(true).open(file_path(dir, seq))?;
        file.write_all(MAGIC)?;
        if policy == FlushPolicy::Always {
            file.sync_all()?;
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(Self { dir: dir.to_path_buf(), seq, file, policy, written: 0, written_bytes: 0 })
    }

    /// The file being written.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Entries appended since this file was started (the last checkpoint).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// [Kusanagi patch] Bytes appended since this file was started.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Appends `entry`, durable as the policy says when this returns.
    pub fn append(&mut self, entry: &Entry) -> io::Result<()> {
        let payload = entry.encode();
        if payload.len() > MAX_FRAME {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "journal entry too large"));
        }
        let frame = frame(&payload);
        self.file.write_all(&frame)?;
        if self.policy == FlushPolicy::Always {
            self.file.sync_data()?;
        }
        self.written += 1;
        self.written_bytes += frame.len() as u64;
        Ok(())
    }

    /// Starts the next file; entries appended from now on go there.
    pub fn rotate(&mut self) -> io::Result<u64> {
        let next = Journal::create(&self.dir, self.seq + 1, self.policy)?;
        *self = next;
        Ok(self.seq)
    }

    /// Removes the files before `seq` (a checkpoint covers them).
    pub fn remove_before(&self, seq: u64) -> io::Result<()> {
        for (s, path) in files(&self.dir)? {
            if s < seq {
                std::fs::remove_file(path)?;
            }
        }
        Ok(())
    }
}

/// Why a journal cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The file.
    pub path: PathBuf,
    /// Where in it.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the broker's journal {} is damaged at byte {}: {}; it will not start on a journal \
             it cannot replay in full (acknowledged writes would be lost). Restore the data \
             directory from a backup, or move the journal away to start from the last checkpoint",
            self.path.display(),
            self.offset,
            self.what
        )
    }
}

impl std::error::Error for Damaged {}

/// What reading the journal found.
#[derive(Debug, Default)]
pub struct Replay {
    /// Entries in order.
    pub entries: Vec<Entry>,
    /// A torn last frame was dropped: (file, offset, bytes dropped).
    pub torn_tail: Option<(PathBuf, usize, usize)>,
}

/// Reads every entry of the files in `dir` from `from_seq` on. Only the
/// last file may end in a torn frame; damage anywhere else is an error.
pub fn read(dir: &Path, from_seq: u64) -> Result<Replay, Damaged> {
    let io_err = |path: &Path, e: io::Error| Damaged {
        path: path.to_path_buf(),
        offset: 0,
        what: format!("cannot read it: {e}"),
    };
    let list: Vec<(u64, PathBuf)> = files(dir)
        .map_err(|e| io_err(dir, e))?
        .into_iter()
        .filter(|(s, _)| *s >= from_seq)
        .collect();
    let mut replay = Replay::default();
    for (i, (_, path)) in list.iter().enumerate() {
        let last = i + 1 == list.len();
        let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
        let damaged = |offset: usize, what: String| Damaged { path: path.clone(), offset, what };
        if bytes.len() < MAGIC.len() {
            if last && MAGIC.starts_with(&bytes) {
                replay.torn_tail = Some((path.clone(), 0, bytes.len()));
                continue;
            }
            return Err(damaged(0, "shorter than its header".into()));
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(damaged(0, "not a journal file (wrong magic)".into()));
        }
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let rest = &bytes[at..];
            let torn = |what: &str| -> Result<(), Damaged> {
                if last {
                    Ok(())
                } else {
                    Err(damaged(at, format!("{what} in a file that is not the last")))
                }
            };
            if rest.iter().all(|b| *b == 0) {
                torn("a zero-filled tail")?;
                replay.torn_tail = Some((path.clone(), at, rest.len()));
                break;
            }
            if rest.len() < HEADER {
                torn("a frame header cut short")?;
                replay.torn_tail = Some((path.clone(), at, rest.len()));
                break;
            }
            let len_bytes: [u8; 4] = rest[..4].try_into().unwrap();
            let hcrc = u32::from_le_bytes(rest[4..8].try_into().unwrap());
            let pcrc = u32::from_le_bytes(rest[8..12].try_into().unwrap());
            if crc32c::crc32c(&len_bytes) != hcrc {
                return Err(damaged(at, "a frame length fails its checksum".into()));
            }
            let len = u32::from_le_bytes(len_bytes) as usize;
            if rest.len() < HEADER + len {
                torn("a frame cut short")?;
                replay.torn_tail = Some((path.clone(), at, rest.len()));
                break;
            }
            let payload = &rest[HEADER..HEADER + len];
            if crc32c::crc32c(payload) != pcrc {
                if last && rest.len() == HEADER + len {
                    replay.torn_tail = Some((path.clone(), at, rest.len()));
                    break;
                }
                return Err(damaged(at, "a frame fails its checksum".into()));
            }
            let entry = Entry::decode(payload)
                .map_err(|e| damaged(at, format!("a frame does not hold an entry: {e}")))?;
            replay.entries.push(entry);
            at += HEADER + len;
        }
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("noida-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn entries() -> Vec<Entry> {
        vec![
            Entry::Request { api_key: 0, version: 9, now_ms: 17, body: vec![1, 2, 3] },
            Entry::Offsets {
                now_ms: 18,
                changes: vec![
                    OffsetChange {
                        group: "g".into(),
                        topic: "events".into(),
                        partition: 2,
                        offset: Some(41),
                        metadata: Some("screen.v1 replay_from=3".into()),
                    },
                    OffsetChange {
                        group: "g".into(),
                        topic: "t".into(),
                        partition: 0,
                        offset: None,
                        metadata: None,
                    },
                ],
            },
            Entry::Clean { now_ms: 19 },
        ]
    }

    fn written(name: &str, policy: FlushPolicy) -> (PathBuf, PathBuf) {
        let d = dir(name);
        let mut j = Journal::create(&d, 7, policy).unwrap();
        for e in entries() {
            j.append(&e).unwrap();
        }
        (d.clone(), file_path(&d, 7))
    }

    #[test]
    fn entries_round_trip_through_a_file() {
        for policy in [FlushPolicy::Os, FlushPolicy::Always] {
            let (d, _) = written("roundtrip", policy);
            let r = read(&d, 0).unwrap();
            assert_eq!(r.entries, entries());
            assert!(r.torn_tail.is_none());
            assert!(read(&d, 8).unwrap().entries.is_empty(), "files before 8 are skipped");
        }
    }

    #[test]
    fn a_torn_last_frame_is_dropped_at_any_cut() {
        let (d, path) = written("torn", FlushPolicy::Os);
        let full = std::fs::read(&path).unwrap();
        let last_frame = full.len() - frame(&Entry::Clean { now_ms: 19 }.encode()).len();
        for cut in last_frame + 1..full.len() {
            std::fs::write(&path, &full[..cut]).unwrap();
            let r = read(&d, 0).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            assert_eq!(r.entries, entries()[..2], "cut at {cut}");
            assert_eq!(r.torn_tail.as_ref().map(|t| t.1), Some(last_frame));
        }
        // A frame whose payload was not written back (garbage, complete
        // length) and a zero-filled tail are torn too.
        let mut garbage = full.clone();
        let n = garbage.len();
        garbage[n - 1] ^= 0xff;
        std::fs::write(&path, &garbage).unwrap();
        assert_eq!(read(&d, 0).unwrap().entries.len(), 2);
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0u8; 4096]);
        std::fs::write(&path, &zeros).unwrap();
        assert_eq!(read(&d, 0).unwrap().entries.len(), 3);
    }

    #[test]
    fn damage_before_the_tail_is_refused_with_the_file_and_offset() {
        let (d, path) = written("flip", FlushPolicy::Os);
        let full = std::fs::read(&path).unwrap();
        // A flipped byte in every position of the first two frames.
        let second_end = full.len() - frame(&Entry::Clean { now_ms: 19 }.encode()).len();
        for at in MAGIC.len()..second_end {
            let mut bad = full.clone();
            bad[at] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let err = read(&d, 0).expect_err(&format!("flipped byte {at}"));
            assert_eq!(err.path, path);
            assert!(err.offset <= at, "{err}");
            assert!(err.to_string().contains("journal-00000000000000000007.log"), "{err}");
        }
        let mut bad = full.clone();
        bad[0] = b'X';
        std::fs::write(&path, &bad).unwrap();
        assert!(read(&d, 0).unwrap_err().what.contains("magic"));
    }

    #[test]
    fn only_the_last_file_may_be_torn() {
        let d = dir("two");
        let mut j = Journal::create(&d, 1, FlushPolicy::Os).unwrap();
        j.append(&Entry::Clean { now_ms: 1 }).unwrap();
        j.rotate().unwrap();
        j.append(&Entry::Clean { now_ms: 2 }).unwrap();
        assert_eq!(read(&d, 1).unwrap().entries.len(), 2);
        let first = file_path(&d, 1);
        let bytes = std::fs::read(&first).unwrap();
        std::fs::write(&first, &bytes[..bytes.len() - 3]).unwrap();
        let err = read(&d, 1).unwrap_err();
        assert!(err.what.contains("not the last"), "{err}");
        j.remove_before(2).unwrap();
        assert_eq!(files(&d).unwrap().len(), 1);
        assert_eq!(read(&d, 0).unwrap().entries, vec![Entry::Clean { now_ms: 2 }]);
    }
}

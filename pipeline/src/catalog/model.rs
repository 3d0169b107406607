//! The catalog's pure core: which Parquet files exist, in which tier, what
//! they hold, and how far each Kafka partition has been archived.
//!
//! Design: the catalog is a sequence of [`Commit`]s, each a list of
//! [`Action`]s applied all together or not at all. [`CatalogState`] is the
//! result of applying them in order. A commit is checked against the state
//! it follows before it is applied ([`CatalogState::check`]):
//! - a file is added once per tier and removed only if present, so a file
//!   moved between tiers (add in the new tier, remove from the old, one
//!   commit) is never listed twice or not at all;
//! - [`Action::Progress`] says "partition p was archived up to offset `from`
//!   and is now archived up to `to`": it holds only if the catalog still
//!   says `from`. Two writers that read the same offsets (a copy that lost
//!   its partitions in a rebalance and the one that got them) therefore
//!   cannot both commit them: the second commit is refused and its writer
//!   starts again from what the catalog says.
//!
//! No I/O here; [`super::log`] stores the commits in object storage.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A storage tier, by the age of the events it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The newest events (7 days by default); where the archive stage writes.
    Hot,
    /// Older events (up to 30 days by default).
    Warm,
    /// The rest.
    Cold,
}

impl Tier {
    /// Every tier, hot first.
    pub const ALL: [Tier; 3] = [Tier::Hot, Tier::Warm, Tier::Cold];

    /// `hot`, `warm` or `cold`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Hot => "hot",
            Tier::Warm => "warm",
            Tier::Cold => "cold",
        }
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The offsets of one Kafka partition whose records a file holds: every
/// record of `topic`/`partition` with an offset in `first..=last` that
/// belongs to the file's table partition (tenant, day, hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetRange {
    /// The source topic.
    pub topic: String,
    /// The source partition.
    pub partition: i32,
    /// The first offset held.
    pub first: i64,
    /// The last offset held.
    pub last: i64,
    /// How many times the catalog's offset of `topic`/`partition` had been
    /// rewound (`Action::Rewind`) when these records were archived: after
    /// a rewind the same offsets hold other records, so their files get
    /// other names. Absent (0) until a first rewind.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rewinds: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One Parquet file of the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// The tier holding it.
    pub tier: Tier,
    /// Its path within the tier: `<table>/tenant=<t>/dt=<day>/hour=<HH>/<name>.parquet`.
    pub path: String,
    /// The table (`events`, `screenings`, `transitions`).
    pub table: String,
    /// The tenant of every row.
    pub tenant: String,
    /// The UTC day of every row's event time, `YYYY-MM-DD`.
    pub dt: String,
    /// The UTC hour of every row's event time.
    pub hour: u8,
    /// Rows in the file.
    pub rows: u64,
    /// Earliest event time, microseconds since the epoch.
    pub min_event_time_us: i64,
    /// Latest event time, microseconds since the epoch.
    pub max_event_time_us: i64,
    /// Size of the object in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the object, lowercase hex.
    pub sha256: String,
    /// Bytes the same rows take as JSON (the compression baseline).
    pub json_bytes: u64,
    /// The Kafka records it holds.
    pub offsets: Vec<OffsetRange>,
    /// When this file was committed in its tier, milliseconds since the epoch.
    pub created_at_ms: i64,
    /// The filter of the account ids it holds ([`super::subjects`]),
    /// base64; `None`: unknown (it may hold any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<String>,
}

impl FileEntry {
    /// Where the file is: its tier and path.
    pub fn key(&self) -> FileKey {
        FileKey {
            tier: self.tier,
            path: self.path.clone(),
        }
    }
}

/// A file's identity: its tier and its path within it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileKey {
    /// The tier.
    pub tier: Tier,
    /// The path within the tier.
    pub path: String,
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tier, self.path)
    }
}

/// How far one Kafka partition is archived, moved forward by a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The source topic.
    pub topic: String,
    /// The source partition.
    pub partition: i32,
    /// The next offset to archive as the writer last read it from the
    /// catalog (`None`: nothing archived yet).
    pub from: Option<i64>,
    /// The next offset to archive once this commit holds.
    pub to: i64,
}

/// An operator moves a partition's archived offset back, after the broker
/// lost records it had acknowledged (`kusanagi catalog rewind`): the
/// records it holds from `to` on are new ones that reuse offsets the
/// archive already has, and are archived again from `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewind {
    /// The source topic.
    pub topic: String,
    /// The source partition.
    pub partition: i32,
    /// The next offset to archive before the rewind (what the operator saw).
    pub from: i64,
    /// The next offset to archive after it: the broker's log end.
    pub to: i64,
    /// Why, in the operator's words (kept in the catalog's history).
    pub reason: String,
}

/// An erasure request as the archive knows it: its subject is marked
/// deleted from the commit that records it on (the logical delete every
/// reader of the archive honours), and the files rewritten for it are
/// recorded with the rewrites themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// The request (`ErasureRequest::request_id`).
    pub request_id: String,
    /// The salted hash of the subject; the catalog never holds the id.
    pub subject_hash: String,
    /// When it was asked for, milliseconds since the epoch.
    pub requested_at_ms: i64,
    /// Who asked.
    pub requested_by: String,
}

/// One file rewritten without a subject's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedFile {
    /// The tier.
    pub tier: Tier,
    /// The path within it (a rewrite keeps the path).
    pub path: String,
    /// SHA-256 of the file before.
    pub sha256_before: String,
    /// SHA-256 after (`None`: every row was the subject's; the file is gone).
    pub sha256_after: Option<String>,
    /// Rows before.
    pub rows_before: u64,
    /// Rows removed.
    pub rows_removed: u64,
}

/// The files one purge of an erasure rewrote (in the same commit as the
/// rewrites).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// The erasure request.
    pub request_id: String,
    /// The files, each rewritten (or removed) in this commit.
    pub files: Vec<PurgedFile>,
    /// Catalog files whose filters did not rule the subject out, opened
    /// and read by this purge.
    pub files_opened: u64,
    /// Files in the catalog when the purge planned.
    pub files_listed: u64,
}

/// An erasure and what was done for it, as of a catalog version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureState {
    /// The request.
    pub erasure: Erasure,
    /// When the catalog marked it deleted, milliseconds since the epoch.
    pub marked_at_ms: i64,
    /// Every file rewritten for it, in commit order.
    pub files: Vec<PurgedFile>,
    /// When its last purge was committed (`None`: not purged yet).
    pub purged_at_ms: Option<i64>,
    /// The catalog version of its last purge.
    pub purged_in_version: Option<u64>,
    /// Files its purges opened (their filters did not rule its subject out).
    #[serde(default)]
    pub files_opened: u64,
    /// Files the catalog listed when its first purge planned.
    #[serde(default)]
    pub files_listed: u64,
}

/// One change in a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A new file.
    Add(FileEntry),
    /// A file is gone (moved to another tier, or rewritten).
    Remove(FileKey),
    /// A partition's archived offsets move forward.
    Progress(Progress),
    /// A partition's archived offset moves back (an operator's decision).
    Rewind(Rewind),
    /// A subject is marked deleted (an erasure request is recorded).
    Erase(Erasure),
    /// Files were rewritten without an erased subject's rows (with their
    /// `Remove`/`Add` in the same commit).
    Purge(Purge),
    /// A precondition: the file is listed with these bytes. A writer that
    /// rewrites or moves a file it read says so, so that a file another
    /// writer rewrote meanwhile (a purge, at the same path) is never
    /// replaced by one made from its old bytes.
    Unchanged(Unchanged),
    /// A precondition: the catalog records exactly this many erasures. The
    /// archive stage drops the rows of erased subjects before it writes;
    /// this makes its commit fail (and the stage read again) if a subject
    /// was erased after it filtered.
    ErasuresKnown(u64),
}

/// The file at `tier`/`path` as a writer read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unchanged {
    /// The tier.
    pub tier: Tier,
    /// The path.
    pub path: String,
    /// Its SHA-256 when read.
    pub sha256: String,
}

impl Unchanged {
    /// The precondition that `f` is still what it is.
    pub fn of(f: &FileEntry) -> Self {
        Self {
            tier: f.tier,
            path: f.path.clone(),
            sha256: f.sha256.clone(),
        }
    }
}

/// One atomic change to the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// 1 for the first commit, then one more each time.
    pub version: u64,
    /// When it was made, milliseconds since the epoch.
    pub committed_at_ms: i64,
    /// Who made it (`archive@<instance>`, `tier`, ...).
    pub writer: String,
    /// What it does (`archive`, `tier`, ...).
    pub operation: String,
    /// Unique per attempt: a writer told "that version exists" after a
    /// retried upload recognises its own commit by it.
    #[serde(default)]
    pub id: String,
    /// The changes, all or nothing.
    pub actions: Vec<Action>,
}

/// Why a commit cannot follow the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Conflict {
    /// The commit's version does not follow the state's.
    #[error("version {found} does not follow {current}")]
    Version {
        /// The state's version.
        current: u64,
        /// The commit's version.
        found: u64,
    },
    /// The file is already in the catalog.
    #[error("{0} is already in the catalog")]
    AlreadyListed(FileKey),
    /// The file to remove is not in the catalog.
    #[error("{0} is not in the catalog")]
    NotListed(FileKey),
    /// The erasure request is already recorded.
    #[error("erasure {0} is already recorded")]
    AlreadyErased(String),
    /// A purge names an erasure request the catalog does not hold.
    #[error("erasure {0} is not recorded")]
    NotErased(String),
    /// The file was changed (rewritten, moved or removed) since it was read.
    #[error("{0} changed since it was read")]
    Changed(FileKey),
    /// Subjects were erased since the writer filtered its rows.
    #[error("{found} erasures are recorded, the writer filtered with {expected}")]
    Erasures {
        /// What the writer saw.
        expected: u64,
        /// What the catalog holds.
        found: u64,
    },
    /// Another writer archived the partition's offsets first.
    #[error(
        "{topic}/{partition}: expected archived up to {expected:?}, the catalog says {found:?}"
    )]
    Progress {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// What the writer read.
        expected: Option<i64>,
        /// What the catalog says now.
        found: Option<i64>,
    },
}

pub use super::state::{CatalogState, Snapshot};

/// A catalog entry for tests: one row of `events` at the epoch.
#[cfg(test)]
pub(crate) fn test_entry(tier: Tier, path: &str) -> FileEntry {
    FileEntry {
        tier,
        path: path.into(),
        table: "events".into(),
        tenant: "t".into(),
        dt: "1970-01-01".into(),
        hour: 0,
        rows: 1,
        min_event_time_us: 0,
        max_event_time_us: 0,
        size_bytes: 4,
        sha256: "00".into(),
        json_bytes: 10,
        offsets: vec![],
        created_at_ms: 0,
        subjects: None,
    }
}

/// Partition 0 of `events` archived from `from` to `to`, for tests.
#[cfg(test)]
pub(crate) fn test_progress(from: Option<i64>, to: i64) -> Action {
    Action::Progress(Progress {
        topic: "events".into(),
        partition: 0,
        from,
        to,
    })
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;

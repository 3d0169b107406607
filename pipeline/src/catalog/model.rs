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

use std::collections::BTreeMap;
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

/// The catalog as of one version: every file and every partition's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogState {
    version: u64,
    files: BTreeMap<FileKey, FileEntry>,
    progress: BTreeMap<(String, i32), i64>,
    rewinds: BTreeMap<(String, i32), u32>,
    erasures: BTreeMap<String, ErasureState>,
}

/// The serialised form of a [`CatalogState`] (a checkpoint).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The version.
    pub version: u64,
    /// Every file.
    pub files: Vec<FileEntry>,
    /// Every partition's next offset to archive: (topic, partition, offset).
    pub progress: Vec<(String, i32, i64)>,
    /// Every erasure recorded.
    #[serde(default)]
    pub erasures: Vec<ErasureState>,
    /// How many times each partition's offset was rewound: (topic,
    /// partition, rewinds); only those rewound.
    #[serde(default)]
    pub rewinds: Vec<(String, i32, u32)>,
}

impl CatalogState {
    /// The version of the last commit applied (0: empty).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Every file, by tier then path.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.values()
    }

    /// The file at `key`, if listed.
    pub fn file(&self, key: &FileKey) -> Option<&FileEntry> {
        self.files.get(key)
    }

    /// The next offset of `topic`/`partition` to archive (`None`: nothing
    /// archived yet).
    pub fn next_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.progress.get(&(topic.to_owned(), partition)).copied()
    }

    /// How many times `topic`/`partition`'s offset was rewound.
    pub fn rewinds(&self, topic: &str, partition: i32) -> u32 {
        self.rewinds
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }

    /// Every partition's next offset to archive: (topic, partition, offset).
    pub fn progress(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.progress.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// Every erasure recorded, by request id.
    pub fn erasures(&self) -> impl Iterator<Item = &ErasureState> {
        self.erasures.values()
    }

    /// The erasure `request_id`, if recorded.
    pub fn erasure(&self, request_id: &str) -> Option<&ErasureState> {
        self.erasures.get(request_id)
    }

    /// The subject hashes marked deleted.
    pub fn erased_subjects(&self) -> std::collections::HashSet<&str> {
        self.erasures
            .values()
            .map(|e| e.erasure.subject_hash.as_str())
            .collect()
    }

    /// Whether `actions` can follow this state.
    pub fn check(&self, actions: &[Action]) -> Result<(), Conflict> {
        // Within one commit a file may be removed and another added at the
        // same key only in that order (a rewrite in place).
        let mut removed = Vec::new();
        let mut added = Vec::new();
        let mut progressed: Vec<(&String, i32)> = Vec::new();
        for action in actions {
            match action {
                Action::Add(f) => {
                    let key = f.key();
                    let present = (self.files.contains_key(&key) && !removed.contains(&key))
                        || added.contains(&key);
                    if present {
                        return Err(Conflict::AlreadyListed(key));
                    }
                    added.push(key);
                }
                Action::Remove(key) => {
                    let present = (self.files.contains_key(key) && !removed.contains(key))
                        || added.contains(key);
                    if !present {
                        return Err(Conflict::NotListed(key.clone()));
                    }
                    removed.push(key.clone());
                    added.retain(|k| k != key);
                }
                Action::Progress(p) => {
                    let found = self.next_offset(&p.topic, p.partition);
                    let backwards = p.from.is_some_and(|from| p.to < from);
                    let twice = progressed.contains(&(&p.topic, p.partition));
                    if found != p.from || backwards || twice {
                        return Err(Conflict::Progress {
                            topic: p.topic.clone(),
                            partition: p.partition,
                            expected: p.from,
                            found,
                        });
                    }
                    progressed.push((&p.topic, p.partition));
                }
                Action::Rewind(r) => {
                    let found = self.next_offset(&r.topic, r.partition);
                    let twice = progressed.contains(&(&r.topic, r.partition));
                    if found != Some(r.from) || !(0..r.from).contains(&r.to) || twice {
                        return Err(Conflict::Progress {
                            topic: r.topic.clone(),
                            partition: r.partition,
                            expected: Some(r.from),
                            found,
                        });
                    }
                    progressed.push((&r.topic, r.partition));
                }
                Action::Erase(e) => {
                    let twice = actions
                        .iter()
                        .filter(|a| matches!(a, Action::Erase(o) if o.request_id == e.request_id))
                        .count()
                        > 1;
                    if self.erasures.contains_key(&e.request_id) || twice {
                        return Err(Conflict::AlreadyErased(e.request_id.clone()));
                    }
                }
                Action::Unchanged(u) => {
                    let key = FileKey {
                        tier: u.tier,
                        path: u.path.clone(),
                    };
                    let same = self.files.get(&key).is_some_and(|f| f.sha256 == u.sha256);
                    if !same || removed.contains(&key) || added.contains(&key) {
                        return Err(Conflict::Changed(key));
                    }
                }
                Action::ErasuresKnown(n) => {
                    let found = self.erasures.len() as u64;
                    if found != *n {
                        return Err(Conflict::Erasures {
                            expected: *n,
                            found,
                        });
                    }
                }
                Action::Purge(p) => {
                    let in_commit = actions
                        .iter()
                        .any(|a| matches!(a, Action::Erase(e) if e.request_id == p.request_id));
                    if !self.erasures.contains_key(&p.request_id) && !in_commit {
                        return Err(Conflict::NotErased(p.request_id.clone()));
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies `commit` if it follows this state; leaves the state as it
    /// was otherwise.
    pub fn apply(&mut self, commit: &Commit) -> Result<(), Conflict> {
        if commit.version != self.version + 1 {
            return Err(Conflict::Version {
                current: self.version,
                found: commit.version,
            });
        }
        self.check(&commit.actions)?;
        for action in &commit.actions {
            match action {
                Action::Add(f) => {
                    self.files.insert(f.key(), f.clone());
                }
                Action::Remove(key) => {
                    self.files.remove(key);
                }
                Action::Progress(p) => {
                    self.progress.insert((p.topic.clone(), p.partition), p.to);
                }
                Action::Rewind(r) => {
                    self.progress.insert((r.topic.clone(), r.partition), r.to);
                    *self
                        .rewinds
                        .entry((r.topic.clone(), r.partition))
                        .or_default() += 1;
                }
                Action::Erase(e) => {
                    self.erasures.insert(
                        e.request_id.clone(),
                        ErasureState {
                            erasure: e.clone(),
                            marked_at_ms: commit.committed_at_ms,
                            files: Vec::new(),
                            purged_at_ms: None,
                            purged_in_version: None,
                            files_opened: 0,
                            files_listed: 0,
                        },
                    );
                }
                Action::Unchanged(_) | Action::ErasuresKnown(_) => {}
                Action::Purge(p) => {
                    if let Some(state) = self.erasures.get_mut(&p.request_id) {
                        state.files.extend(p.files.iter().cloned());
                        state.purged_at_ms = Some(commit.committed_at_ms);
                        state.purged_in_version = Some(commit.version);
                        state.files_opened += p.files_opened;
                        if state.files_listed == 0 {
                            state.files_listed = p.files_listed;
                        }
                    }
                }
            }
        }
        self.version = commit.version;
        Ok(())
    }

    /// The state as a checkpoint.
    pub fn to_snapshot(&self) -> Snapshot {
        Snapshot {
            version: self.version,
            files: self.files.values().cloned().collect(),
            progress: self
                .progress
                .iter()
                .map(|((t, p), o)| (t.clone(), *p, *o))
                .collect(),
            erasures: self.erasures.values().cloned().collect(),
            rewinds: self
                .rewinds
                .iter()
                .map(|((t, p), n)| (t.clone(), *p, *n))
                .collect(),
        }
    }

    /// The state a checkpoint holds.
    pub fn from_snapshot(s: Snapshot) -> Self {
        Self {
            version: s.version,
            files: s.files.into_iter().map(|f| (f.key(), f)).collect(),
            progress: s
                .progress
                .into_iter()
                .map(|(t, p, o)| ((t, p), o))
                .collect(),
            erasures: s
                .erasures
                .into_iter()
                .map(|e| (e.erasure.request_id.clone(), e))
                .collect(),
            rewinds: s.rewinds.into_iter().map(|(t, p, n)| ((t, p), n)).collect(),
        }
    }
}

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
mod tests {
    use super::*;

    fn progress(from: Option<i64>, to: i64) -> Action {
        test_progress(from, to)
    }

    fn file(tier: Tier, path: &str) -> FileEntry {
        test_entry(tier, path)
    }

    fn commit(version: u64, actions: Vec<Action>) -> Commit {
        Commit {
            version,
            committed_at_ms: 0,
            writer: "test".into(),
            operation: "test".into(),
            id: String::new(),
            actions,
        }
    }

    #[test]
    fn a_rewind_moves_an_offset_back_only_from_where_the_operator_saw_it() {
        let mut s = CatalogState::default();
        s.apply(&commit(1, vec![progress(None, 100)])).unwrap();
        let rewind = |from, to| {
            Action::Rewind(Rewind {
                topic: "events".into(),
                partition: 0,
                from,
                to,
                reason: "broker lost its disk".into(),
            })
        };
        assert!(s.check(&[rewind(90, 60)]).is_err(), "not where it stands");
        assert!(s.check(&[rewind(100, 100)]).is_err(), "not back");
        assert!(s.check(&[rewind(100, 120)]).is_err(), "not forward");
        assert!(s.check(&[rewind(100, -1)]).is_err());
        assert!(
            s.check(&[rewind(100, 60), progress(Some(100), 110)])
                .is_err(),
            "and not moved twice in one commit"
        );
        assert_eq!(s.rewinds("events", 0), 0);
        s.apply(&commit(2, vec![rewind(100, 60)])).unwrap();
        assert_eq!(s.next_offset("events", 0), Some(60));
        assert_eq!(s.rewinds("events", 0), 1, "counted, for the files' names");
        let again = CatalogState::from_snapshot(s.to_snapshot());
        assert_eq!(again.rewinds("events", 0), 1, "and kept in checkpoints");
        // The archive goes on from there as from any offset.
        s.apply(&commit(3, vec![progress(Some(60), 75)])).unwrap();
        assert_eq!(s.next_offset("events", 0), Some(75));
        // A partition never archived cannot be rewound.
        assert!(
            s.check(&[Action::Rewind(Rewind {
                topic: "events".into(),
                partition: 1,
                from: 5,
                to: 0,
                reason: String::new(),
            })])
            .is_err()
        );
    }

    #[test]
    fn commits_apply_in_order_and_all_or_nothing() {
        let mut s = CatalogState::default();
        s.apply(&commit(
            1,
            vec![Action::Add(file(Tier::Hot, "a")), progress(None, 10)],
        ))
        .unwrap();
        assert_eq!(s.next_offset("events", 0), Some(10));
        // A stale writer that read "nothing archived" is refused, and the
        // file it would add is not listed.
        let err = s
            .apply(&commit(
                2,
                vec![Action::Add(file(Tier::Hot, "b")), progress(None, 5)],
            ))
            .unwrap_err();
        assert!(matches!(
            err,
            Conflict::Progress {
                found: Some(10),
                ..
            }
        ));
        assert_eq!(s.files().count(), 1);
        assert_eq!(s.version(), 1);
        // Offsets never move backwards, nor twice in one commit.
        assert!(s.check(&[progress(Some(10), 9)]).is_err());
        assert!(
            s.check(&[progress(Some(10), 12), progress(Some(10), 14)])
                .is_err()
        );
        assert!(s.check(&[progress(Some(10), 12)]).is_ok());
        // Versions must follow each other.
        assert!(matches!(
            s.apply(&commit(3, vec![])),
            Err(Conflict::Version {
                current: 1,
                found: 3
            })
        ));
    }

    #[test]
    fn a_move_between_tiers_is_one_commit() {
        let mut s = CatalogState::default();
        s.apply(&commit(1, vec![Action::Add(file(Tier::Hot, "a"))]))
            .unwrap();
        let moved = commit(
            2,
            vec![
                Action::Add(file(Tier::Warm, "a")),
                Action::Remove(FileKey {
                    tier: Tier::Hot,
                    path: "a".into(),
                }),
            ],
        );
        s.apply(&moved).unwrap();
        let tiers: Vec<Tier> = s.files().map(|f| f.tier).collect();
        assert_eq!(tiers, [Tier::Warm]);
        // Moving it again from hot is refused: it is not there any more.
        let mut again = moved.clone();
        again.version = 3;
        assert!(matches!(s.apply(&again), Err(Conflict::AlreadyListed(_))));
    }

    #[test]
    fn a_rewrite_in_place_removes_then_adds() {
        let mut s = CatalogState::default();
        s.apply(&commit(1, vec![Action::Add(file(Tier::Cold, "a"))]))
            .unwrap();
        let key = FileKey {
            tier: Tier::Cold,
            path: "a".into(),
        };
        let mut rewritten = file(Tier::Cold, "a");
        rewritten.rows = 0;
        s.apply(&commit(
            2,
            vec![Action::Remove(key.clone()), Action::Add(rewritten)],
        ))
        .unwrap();
        assert_eq!(s.file(&key).map(|f| f.rows), Some(0));
        // Adding twice in one commit is refused.
        assert!(matches!(
            s.check(&[
                Action::Add(file(Tier::Hot, "x")),
                Action::Add(file(Tier::Hot, "x"))
            ]),
            Err(Conflict::AlreadyListed(_))
        ));
    }

    #[test]
    fn a_snapshot_round_trips() {
        let mut s = CatalogState::default();
        s.apply(&commit(
            1,
            vec![Action::Add(file(Tier::Hot, "a")), progress(None, 3)],
        ))
        .unwrap();
        let json = serde_json::to_string(&s.to_snapshot()).unwrap();
        let back = CatalogState::from_snapshot(serde_json::from_str(&json).unwrap());
        assert_eq!(back, s);
    }

    fn erasure(id: &str) -> Erasure {
        Erasure {
            request_id: id.into(),
            subject_hash: format!("hash-{id}"),
            requested_at_ms: 1,
            requested_by: "test".into(),
        }
    }

    #[test]
    fn a_file_rewritten_meanwhile_is_not_replaced_from_its_old_bytes() {
        let mut s = CatalogState::default();
        let old = file(Tier::Warm, "a");
        s.apply(&commit(1, vec![Action::Add(old.clone())])).unwrap();
        // A purge rewrites it in place (new bytes, same path).
        let mut purged = old.clone();
        purged.sha256 = "11".into();
        s.apply(&commit(
            2,
            vec![
                Action::Unchanged(Unchanged::of(&old)),
                Action::Remove(old.key()),
                Action::Add(purged.clone()),
            ],
        ))
        .unwrap();
        // A tier pass that read the old bytes cannot commit its move.
        let mut moved = old.clone();
        moved.tier = Tier::Cold;
        assert!(matches!(
            s.check(&[
                Action::Unchanged(Unchanged::of(&old)),
                Action::Add(moved.clone()),
                Action::Remove(old.key()),
            ]),
            Err(Conflict::Changed(_))
        ));
        // One that read the new bytes can.
        assert!(
            s.check(&[
                Action::Unchanged(Unchanged::of(&purged)),
                Action::Add(moved),
                Action::Remove(purged.key()),
            ])
            .is_ok()
        );
    }

    #[test]
    fn erasures_are_recorded_once_purged_after_and_fence_stale_writers() {
        let mut s = CatalogState::default();
        assert!(matches!(
            s.check(&[Action::Purge(Purge {
                request_id: "er-1".into(),
                files: vec![],
                files_opened: 0,
                files_listed: 0,
            })]),
            Err(Conflict::NotErased(_))
        ));
        s.apply(&commit(1, vec![Action::Erase(erasure("er-1"))]))
            .unwrap();
        assert!(matches!(
            s.check(&[Action::Erase(erasure("er-1"))]),
            Err(Conflict::AlreadyErased(_))
        ));
        assert_eq!(s.erased_subjects().len(), 1);
        // A writer that filtered with no erasure known is fenced off.
        assert!(matches!(
            s.check(&[Action::ErasuresKnown(0), Action::Add(file(Tier::Hot, "n"))]),
            Err(Conflict::Erasures {
                expected: 0,
                found: 1
            })
        ));
        assert!(s.check(&[Action::ErasuresKnown(1)]).is_ok());
        s.apply(&commit(
            2,
            vec![Action::Purge(Purge {
                request_id: "er-1".into(),
                files: vec![],
                files_opened: 3,
                files_listed: 9,
            })],
        ))
        .unwrap();
        let e = s.erasure("er-1").unwrap();
        assert_eq!(
            (e.purged_in_version, e.files_opened, e.files_listed),
            (Some(2), 3, 9)
        );
        let json = serde_json::to_string(&s.to_snapshot()).unwrap();
        assert_eq!(
            CatalogState::from_snapshot(serde_json::from_str(&json).unwrap()),
            s
        );
    }
}

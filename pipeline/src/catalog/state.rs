//! [`CatalogState`]: the catalog as of one version, the result of applying
//! its commits in order ([`super::model`] has the design), and its
//! checkpoint form ([`Snapshot`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::*;

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

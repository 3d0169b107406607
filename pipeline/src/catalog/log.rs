//! The catalog in object storage: a log of commits, one object each.
//!
//! Layout under the catalog's URL:
//! - `log/<version, 20 digits>.json`: one [`Commit`] per object. A commit
//!   is made by creating the object of the next version *only if it does
//!   not exist yet* (`If-None-Match: *` on S3, an exclusive create on a
//!   local folder), so of two writers racing for a version exactly one
//!   wins; the loser reads the winner's commit, checks its own still
//!   holds, and tries the next version. A commit is therefore atomic and
//!   durable the moment its object exists: a crash before leaves nothing,
//!   a crash after leaves all of it.
//! - `checkpoints/<version>.json`: the whole state as of a version, written
//!   every [`CHECKPOINT_EVERY`] commits so that opening the catalog reads
//!   one checkpoint and the commits after it, not the whole history. A
//!   checkpoint is derived data: losing one costs only time.

use bytes::Bytes;
use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::storage::TierStore;

use super::model::{Action, CatalogState, Commit, Conflict, Snapshot};

/// Commits between two checkpoints.
pub const CHECKPOINT_EVERY: u64 = 100;

const LOG: &str = "log";
const CHECKPOINTS: &str = "checkpoints";

/// Why the catalog could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// The catalog's store failed (an external system; a retry may help).
    #[error("catalog: {0}")]
    Storage(#[from] ConnectorError),
    /// An object of the catalog is not what it should be (ours or the
    /// operator's: someone edited or truncated it).
    #[error("catalog {url}: {path} is corrupt: {detail}")]
    Corrupt {
        /// The catalog's URL.
        url: String,
        /// The object.
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// The commit no longer follows the catalog: another writer changed
    /// what it was based on. The caller re-reads and decides again.
    #[error("catalog: commit refused: {0}")]
    Conflict(#[from] Conflict),
}

/// The archive catalog: its state, kept up to date from its store.
#[derive(Debug, Clone)]
pub struct Catalog {
    store: TierStore,
    state: CatalogState,
    writer: String,
}

fn log_path(version: u64) -> String {
    format!("{LOG}/{version:020}.json")
}

fn checkpoint_path(version: u64) -> String {
    format!("{CHECKPOINTS}/{version:020}.json")
}

fn version_of(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.strip_suffix(".json")?.parse().ok()
}

/// Unique per commit attempt: process, time and a counter.
fn commit_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{:x}-{nanos:x}-{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Catalog {
    /// Opens the catalog in `store` (empty if nothing was committed yet);
    /// `writer` names this process in the commits it makes.
    pub async fn open(store: TierStore, writer: impl Into<String>) -> Result<Self, CatalogError> {
        let mut catalog = Self {
            store,
            state: CatalogState::default(),
            writer: writer.into(),
        };
        let checkpoints = catalog.store.list(CHECKPOINTS).await?;
        if let Some((path, _)) = checkpoints
            .iter()
            .rev()
            .find(|(p, _)| version_of(p).is_some())
        {
            let bytes = catalog.store.get(path).await?;
            let snapshot: Snapshot =
                serde_json::from_slice(&bytes).map_err(|e| catalog.corrupt(path, e))?;
            catalog.state = CatalogState::from_snapshot(snapshot);
        }
        catalog.refresh().await?;
        Ok(catalog)
    }

    /// The URL of the catalog's store.
    pub fn url(&self) -> &str {
        self.store.url()
    }

    /// The state as of the last refresh or commit.
    pub fn state(&self) -> &CatalogState {
        &self.state
    }

    fn corrupt(&self, path: &str, detail: impl std::fmt::Display) -> CatalogError {
        CatalogError::Corrupt {
            url: self.store.url().to_owned(),
            path: path.to_owned(),
            detail: detail.to_string(),
        }
    }

    /// Reads the commits made since the last refresh.
    pub async fn refresh(&mut self) -> Result<(), CatalogError> {
        let after = log_path(self.state.version());
        for (path, _) in self.store.list_after(LOG, &after).await? {
            let Some(version) = version_of(&path) else {
                continue;
            };
            if version != self.state.version() + 1 {
                return Err(self.corrupt(
                    &path,
                    format!("commit {} is missing", self.state.version() + 1),
                ));
            }
            let bytes = self.store.get(&path).await?;
            let commit: Commit =
                serde_json::from_slice(&bytes).map_err(|e| self.corrupt(&path, e))?;
            if commit.version != version {
                return Err(self.corrupt(&path, format!("holds version {}", commit.version)));
            }
            // A stored commit was checked before it was made; failing now
            // means the log was edited. (`apply` changes nothing on failure.)
            if let Err(e) = self.state.apply(&commit) {
                return Err(self.corrupt(&path, e));
            }
        }
        Ok(())
    }

    /// Commits `actions` as `operation`, atomically: all of them hold from
    /// the returned version on, or none does. Commits other writers made
    /// meanwhile are read first; if `actions` no longer follow them the
    /// result is [`CatalogError::Conflict`] and nothing is written.
    pub async fn commit(
        &mut self,
        operation: &str,
        actions: Vec<Action>,
    ) -> Result<u64, CatalogError> {
        let id = commit_id();
        loop {
            self.state.check(&actions)?;
            let commit = Commit {
                version: self.state.version() + 1,
                committed_at_ms: now_ms(),
                writer: self.writer.clone(),
                operation: operation.to_owned(),
                id: id.clone(),
                actions: actions.clone(),
            };
            let bytes = serde_json::to_vec_pretty(&commit)
                .map_err(|e| self.corrupt(&log_path(commit.version), e))?;
            let path = log_path(commit.version);
            if self.store.put_if_absent(&path, Bytes::from(bytes)).await? {
                self.state.apply(&commit)?;
                if commit.version.is_multiple_of(CHECKPOINT_EVERY) {
                    self.write_checkpoint().await;
                }
                return Ok(commit.version);
            }
            // That version exists: ours, if an earlier attempt of this very
            // upload landed and its answer was lost (the store retried it),
            // else another writer's. Read it and go on accordingly.
            let existing: Commit = serde_json::from_slice(&self.store.get(&path).await?)
                .map_err(|e| self.corrupt(&path, e))?;
            if existing.id == id {
                self.state.apply(&existing)?;
                return Ok(existing.version);
            }
            self.refresh().await?;
        }
    }

    /// Writes a checkpoint of the current state. Best effort: a checkpoint
    /// only saves time when opening, so a failure is logged, not returned.
    async fn write_checkpoint(&self) {
        let path = checkpoint_path(self.state.version());
        let result = match serde_json::to_vec(&self.state.to_snapshot()) {
            Ok(bytes) => self.store.put(&path, Bytes::from(bytes)).await,
            Err(e) => {
                tracing::warn!(%path, error = %e, "cannot serialise a catalog checkpoint");
                return;
            }
        };
        if let Err(e) = result {
            tracing::warn!(%path, error = %e, "cannot write a catalog checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::catalog::model::{FileKey, Tier, test_entry, test_progress};

    fn memory() -> TierStore {
        TierStore::open("memory://", &BTreeMap::new()).unwrap()
    }

    fn add(path: &str) -> Action {
        Action::Add(test_entry(Tier::Hot, path))
    }

    fn progress(from: Option<i64>, to: i64) -> Action {
        test_progress(from, to)
    }

    #[tokio::test]
    async fn two_writers_share_one_log() {
        let store = memory();
        let mut a = Catalog::open(store.clone(), "a").await.unwrap();
        let mut b = Catalog::open(store.clone(), "b").await.unwrap();
        assert_eq!(
            a.commit("archive", vec![add("x"), progress(None, 5)])
                .await
                .unwrap(),
            1
        );
        // b has not seen a's commit; its own file lands at version 2.
        assert_eq!(b.commit("archive", vec![add("y")]).await.unwrap(), 2);
        // b read "nothing archived" for the partition, but a archived it.
        let err = b
            .commit("archive", vec![add("z"), progress(None, 3)])
            .await
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::Conflict(Conflict::Progress { .. })),
            "{err}"
        );
        a.refresh().await.unwrap();
        let paths: Vec<&str> = a.state().files().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["x", "y"]);
        assert_eq!(a.state().next_offset("events", 0), Some(5));
    }

    #[tokio::test]
    async fn reopening_reads_checkpoint_then_later_commits() {
        let store = memory();
        let mut c = Catalog::open(store.clone(), "w").await.unwrap();
        for i in 0..(CHECKPOINT_EVERY + 3) {
            c.commit("archive", vec![add(&format!("f{i:04}"))])
                .await
                .unwrap();
        }
        assert!(
            store
                .exists(&checkpoint_path(CHECKPOINT_EVERY))
                .await
                .unwrap()
        );
        // Drop the early log: opening must not need it.
        for v in 1..=CHECKPOINT_EVERY {
            store.delete(&log_path(v)).await.unwrap();
        }
        let again = Catalog::open(store, "r").await.unwrap();
        assert_eq!(again.state(), c.state());
        assert_eq!(again.state().files().count() as u64, CHECKPOINT_EVERY + 3);
        let key = FileKey {
            tier: Tier::Hot,
            path: "f0000".into(),
        };
        assert!(again.state().file(&key).is_some());
    }

    #[tokio::test]
    async fn a_missing_or_edited_commit_is_reported() {
        let store = memory();
        let mut c = Catalog::open(store.clone(), "w").await.unwrap();
        c.commit("archive", vec![add("x")]).await.unwrap();
        c.commit("archive", vec![add("y")]).await.unwrap();
        store
            .put(&log_path(2), Bytes::from_static(b"{not json"))
            .await
            .unwrap();
        let err = Catalog::open(store.clone(), "r")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("log/00000000000000000002.json"), "{err}");
        store.delete(&log_path(1)).await.unwrap();
        let err = Catalog::open(store, "r").await.unwrap_err().to_string();
        assert!(err.contains("commit 1 is missing"), "{err}");
    }
}

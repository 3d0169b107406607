//! The three tiers' stores together, and the reconciliation that makes
//! every tier's folders hold exactly what the catalog lists.
//!
//! Every writer (the archive stage, the tier job, the purge) follows the
//! same protocol: upload under `<tier>/_staging/<path>`, commit the
//! catalog, move the object to `<path>`, delete what the commit removed.
//! A crash can leave two kinds of debris, both harmless to a catalog
//! reader and both cleared by [`Tiers::reconcile`]:
//! - an object under `_staging/` the catalog lists: the move into place
//!   did not happen; it is done now;
//! - an object at a final path the catalog does not list in that tier:
//!   the source of a move or the old version of a rewrite whose delete did
//!   not happen; it is deleted now. Objects are listed *before* the
//!   catalog is read, so a file committed and moved into place meanwhile
//!   is always in the catalog read afterwards and is never taken for debris.
//!
//! A staged object is named `_staging/<path>.<first 16 hex of its SHA-256>`,
//! so that two writers staging the same file with different bytes (a
//! rolling change of the zstd level) never overwrite each other, and only
//! the bytes the catalog lists are ever moved into place. Staged objects
//! the catalog does not list were never committed (or not yet: a writer may
//! be between its upload and its commit); they stay under `_staging/`, out
//! of every table's glob, and are deleted once a day old.

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::storage::TierStore;

use super::log::{Catalog, CatalogError};
use super::model::{FileKey, Tier};

/// The folder, inside a tier, of files not yet (or never) committed.
pub const STAGING: &str = "_staging";

/// Unlisted staged objects older than this are debris of refused or
/// crashed writers (a writer commits within seconds of uploading).
pub const STAGED_GRACE_MS: i64 = 24 * 3_600_000;

/// Where the file `path` with SHA-256 `sha256` is staged.
pub fn staged(path: &str, sha256: &str) -> String {
    format!("{STAGING}/{path}.{}", sha256.get(..16).unwrap_or(sha256))
}

/// The path and SHA-256 prefix a staged object's name holds.
fn parse_staged(staged_path: &str) -> Option<(&str, &str)> {
    let rest = staged_path.strip_prefix(STAGING)?.trim_start_matches('/');
    rest.rsplit_once('.')
}

/// The stores of the hot, warm and cold tiers.
#[derive(Debug, Clone)]
pub struct Tiers {
    stores: [TierStore; 3],
}

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Committed files moved into place from `_staging/`.
    pub promoted: Vec<FileKey>,
    /// Objects the catalog no longer lists, deleted.
    pub deleted: Vec<FileKey>,
}

impl Tiers {
    /// The three tiers' stores (`ArchiveConfig::open_tiers` opens those a
    /// topology names).
    pub fn new(hot: TierStore, warm: TierStore, cold: TierStore) -> Self {
        Self {
            stores: [hot, warm, cold],
        }
    }

    /// The store of `tier`.
    pub fn store(&self, tier: Tier) -> &TierStore {
        &self.stores[tier as usize]
    }

    /// Finishes what crashed writers left half done in every tier (see the
    /// module notes); `tables` limits the final-path sweep to those tables'
    /// folders.
    pub async fn reconcile(
        &self,
        catalog: &mut Catalog,
        tables: &[&str],
    ) -> Result<Reconciled, CatalogError> {
        let mut staged_objects = Vec::new();
        let mut final_objects = Vec::new();
        for tier in Tier::ALL {
            let store = self.store(tier);
            for (path, modified_ms) in store.list_modified(STAGING).await? {
                staged_objects.push((tier, path, modified_ms));
            }
            for table in tables {
                for (path, _) in store.list(table).await? {
                    final_objects.push(FileKey { tier, path });
                }
            }
        }
        // Listed first, read second: see the module notes.
        catalog.refresh().await?;
        let mut done = Reconciled::default();
        for tier in Tier::ALL {
            let staged_here: Vec<(String, i64)> = staged_objects
                .iter()
                .filter(|(t, ..)| *t == tier)
                .map(|(_, p, m)| (p.clone(), *m))
                .collect();
            done.promoted
                .extend(settle_staged(self.store(tier), tier, catalog, staged_here).await?);
        }
        for key in final_objects {
            if catalog.state().file(&key).is_none() {
                self.store(key.tier).delete(&key.path).await?;
                done.deleted.push(key);
            }
        }
        if !done.promoted.is_empty() || !done.deleted.is_empty() {
            tracing::info!(
                promoted = done.promoted.len(),
                deleted = done.deleted.len(),
                "reconciled the tiers with the catalog"
            );
        }
        Ok(done)
    }
}

/// The catalog entry a staged object is the committed bytes of, if any.
fn committed_staged(catalog: &Catalog, tier: Tier, staged_path: &str) -> Option<FileKey> {
    let (path, sha) = parse_staged(staged_path)?;
    let key = FileKey {
        tier,
        path: path.to_owned(),
    };
    let entry = catalog.state().file(&key)?;
    entry.sha256.starts_with(sha).then_some(key)
}

/// Moves the committed files `(path, sha256)` from `store`'s `_staging/`
/// into place. A file another process moved already is fine.
pub async fn promote(store: &TierStore, files: &[(String, String)]) -> Result<(), ConnectorError> {
    for (path, sha) in files {
        if let Err(e) = store.rename(&staged(path, sha), path).await
            && !store.exists(path).await?
        {
            return Err(e);
        }
    }
    Ok(())
}

/// Moves the committed files among `staged_objects` (path, last modified)
/// of `tier` into place and deletes the unlisted ones older than
/// [`STAGED_GRACE_MS`]; returns what it moved.
async fn settle_staged(
    store: &TierStore,
    tier: Tier,
    catalog: &mut Catalog,
    staged_objects: Vec<(String, i64)>,
) -> Result<Vec<FileKey>, CatalogError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut promoted = Vec::new();
    for (staged_path, modified_ms) in staged_objects {
        match committed_staged(catalog, tier, &staged_path) {
            Some(key) => match store.rename(&staged_path, &key.path).await {
                Ok(()) => promoted.push(key),
                Err(e) => {
                    // Moved meanwhile (a tier pass), or no longer listed.
                    catalog.refresh().await?;
                    if catalog.state().file(&key).is_some() && !store.exists(&key.path).await? {
                        return Err(e.into());
                    }
                    store.delete(&staged_path).await?;
                }
            },
            None if now_ms - modified_ms > STAGED_GRACE_MS => store.delete(&staged_path).await?,
            None => {}
        }
    }
    Ok(promoted)
}

/// Moves every committed file of `tier` still under `_staging/` into place
/// (what a writer that crashed after its commit left) and clears old
/// debris; returns what it moved.
pub async fn promote_staged(
    store: &TierStore,
    tier: Tier,
    catalog: &mut Catalog,
) -> Result<Vec<FileKey>, CatalogError> {
    let staged_objects = store.list_modified(STAGING).await?;
    if staged_objects.is_empty() {
        return Ok(Vec::new());
    }
    catalog.refresh().await?;
    settle_staged(store, tier, catalog, staged_objects).await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;

    use super::*;
    use crate::catalog::model::{Action, FileEntry, test_entry};

    fn memory() -> TierStore {
        TierStore::open("memory://", &BTreeMap::new()).unwrap()
    }

    fn entry(tier: Tier, path: &str) -> FileEntry {
        test_entry(tier, path)
    }

    /// A move hot -> warm that crashed after its commit, before moving the
    /// new file into place and deleting the source; and an upload to cold
    /// that was never committed.
    #[tokio::test]
    async fn reconcile_finishes_a_move_that_crashed_after_its_commit() {
        let tiers = Tiers {
            stores: [memory(), memory(), memory()],
        };
        let mut catalog = Catalog::open(memory(), "test").await.unwrap();
        let path = "events/tenant=t/dt=2026-01-01/hour=00/part-a.parquet";
        let data = Bytes::from_static(b"PAR1");
        tiers
            .store(Tier::Hot)
            .put(path, data.clone())
            .await
            .unwrap();
        catalog
            .commit("archive", vec![Action::Add(entry(Tier::Hot, path))])
            .await
            .unwrap();
        tiers
            .store(Tier::Warm)
            .put(&staged(path, "00"), data.clone())
            .await
            .unwrap();
        catalog
            .commit(
                "tier",
                vec![
                    Action::Add(entry(Tier::Warm, path)),
                    Action::Remove(entry(Tier::Hot, path).key()),
                ],
            )
            .await
            .unwrap();
        let never_committed = staged("events/tenant=t/dt=2026-01-01/hour=00/part-z.parquet", "00");
        tiers
            .store(Tier::Cold)
            .put(&never_committed, data.clone())
            .await
            .unwrap();

        // Another writer staged the same path with other bytes: never moved.
        let other_bytes = staged(path, "ff");
        tiers
            .store(Tier::Warm)
            .put(&other_bytes, Bytes::from_static(b"PAR2"))
            .await
            .unwrap();

        let done = tiers.reconcile(&mut catalog, &["events"]).await.unwrap();
        assert_eq!(done.promoted, [entry(Tier::Warm, path).key()]);
        assert_eq!(done.deleted, [entry(Tier::Hot, path).key()]);
        assert_eq!(tiers.store(Tier::Warm).get(path).await.unwrap(), data);
        assert!(tiers.store(Tier::Warm).exists(&other_bytes).await.unwrap());
        assert!(!tiers.store(Tier::Hot).exists(path).await.unwrap());
        assert!(
            tiers
                .store(Tier::Cold)
                .exists(&never_committed)
                .await
                .unwrap(),
            "an uncommitted upload stays staged, out of every glob"
        );
        // Nothing is left to do.
        let again = tiers.reconcile(&mut catalog, &["events"]).await.unwrap();
        assert_eq!(again, Reconciled::default());
    }
}

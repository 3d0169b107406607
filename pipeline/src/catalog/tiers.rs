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
//! Staged objects the catalog does not list were never committed (or not
//! yet: a writer may be between its upload and its commit); they stay
//! under `_staging/`, out of every table's glob.

use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::storage::TierStore;

use super::log::{Catalog, CatalogError};
use super::model::{FileKey, Tier};
use crate::config::ArchiveConfig;

/// The folder, inside a tier, of files not yet (or never) committed.
pub const STAGING: &str = "_staging";

/// `path` under a tier's staging folder.
pub fn staged(path: &str) -> String {
    format!("{STAGING}/{path}")
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
    /// Opens the tiers `config` names.
    pub fn open(config: &ArchiveConfig) -> Result<Self, ConnectorError> {
        Ok(Self {
            stores: [
                config.open_tier(Tier::Hot)?,
                config.open_tier(Tier::Warm)?,
                config.open_tier(Tier::Cold)?,
            ],
        })
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
            for (path, _) in store.list(STAGING).await? {
                staged_objects.push((tier, path));
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
        for (tier, staged_path) in staged_objects {
            if let Some(key) = committed_staged(catalog, tier, &staged_path) {
                promote(self.store(tier), std::slice::from_ref(&key.path)).await?;
                done.promoted.push(key);
            }
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

/// The catalog entry of a staged object, if it was committed.
fn committed_staged(catalog: &Catalog, tier: Tier, staged_path: &str) -> Option<FileKey> {
    let path = staged_path.strip_prefix(STAGING)?.trim_start_matches('/');
    let key = FileKey {
        tier,
        path: path.to_owned(),
    };
    catalog.state().file(&key).is_some().then_some(key)
}

/// Moves committed files from `store`'s `_staging/` into place. A file
/// another process moved already is fine.
pub async fn promote(store: &TierStore, paths: &[String]) -> Result<(), ConnectorError> {
    for path in paths {
        if let Err(e) = store.rename(&staged(path), path).await {
            if !store.exists(path).await? {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Moves every committed file of `tier` still under `_staging/` into place
/// (what a writer that crashed after its commit left); returns them.
pub async fn promote_staged(
    store: &TierStore,
    tier: Tier,
    catalog: &mut Catalog,
) -> Result<Vec<FileKey>, CatalogError> {
    let staged_objects = store.list(STAGING).await?;
    if staged_objects.is_empty() {
        return Ok(Vec::new());
    }
    catalog.refresh().await?;
    let keys: Vec<FileKey> = staged_objects
        .iter()
        .filter_map(|(p, _)| committed_staged(catalog, tier, p))
        .collect();
    let paths: Vec<String> = keys.iter().map(|k| k.path.clone()).collect();
    promote(store, &paths).await?;
    Ok(keys)
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
            .put(&staged(path), data.clone())
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
        let never_committed = staged("events/tenant=t/dt=2026-01-01/hour=00/part-z.parquet");
        tiers
            .store(Tier::Cold)
            .put(&never_committed, data.clone())
            .await
            .unwrap();

        let done = tiers.reconcile(&mut catalog, &["events"]).await.unwrap();
        assert_eq!(done.promoted, [entry(Tier::Warm, path).key()]);
        assert_eq!(done.deleted, [entry(Tier::Hot, path).key()]);
        assert_eq!(tiers.store(Tier::Warm).get(path).await.unwrap(), data);
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

//! The files of one rotation on their way into the archive, as explicit
//! states (STYLE rule 9, arroyo's `OpenFileState`):
//!
//! ```text
//! Written --upload--> Staged --catalog commit--> Committed --move--> InPlace
//!                        \--conflict: staged copies deleted, read again
//! ```
//!
//! - [`Flight::Written`]: Parquet in memory with deterministic names (a
//!   hash of the partition and offsets, so a retry makes the same names);
//!   nothing stored. A crash loses only memory: the records are read again
//!   from the catalog's offsets.
//! - [`Flight::Staged`]: uploaded under `_staging/`, where no table glob
//!   sees them; not listed. A crash leaves debris that
//!   [`promote_staged`] deletes after a grace period.
//! - [`Flight::Committed`]: listed in the catalog, with the partitions'
//!   new offsets, in one atomic commit: archived. Still under `_staging/`;
//!   a crash here is finished by the next start ([`promote_staged`]).
//! - [`Flight::InPlace`]: moved to their table paths: visible to DuckDB.

use futures::StreamExt;
use kusanagi_connectors::ConnectorError;
use kusanagi_connectors::storage::TierStore;

use super::file::WrittenFile;
use crate::catalog::tiers::{promote, promote_staged};
use crate::catalog::{Action, Catalog, CatalogError, FileKey, Tier, staged};

/// Uploads at once.
const UPLOADS_IN_FLIGHT: usize = 8;

/// Where a rotation's files are.
#[derive(Debug)]
pub enum Flight {
    /// Written in memory, not stored.
    Written(Vec<WrittenFile>),
    /// Uploaded under `_staging/`, not listed.
    Staged(Vec<WrittenFile>),
    /// Listed in the catalog at `version`; `(path, sha256)` of each file
    /// still under `_staging/`.
    Committed {
        /// The catalog version that lists them.
        version: u64,
        /// The files to move into place.
        files: Vec<(String, String)>,
    },
    /// Moved into place.
    InPlace,
}

/// Why a flight did not reach its next state.
#[derive(Debug, thiserror::Error)]
pub enum FlightError {
    /// Another writer committed these offsets first: nothing of this flight
    /// is listed (its staged copies were deleted).
    #[error("another copy archived these offsets first: {0}")]
    Conflict(String),
    /// The store or the catalog failed; the flight stays where it was.
    #[error(transparent)]
    Store(#[from] CatalogError),
}

impl From<ConnectorError> for FlightError {
    fn from(e: ConnectorError) -> Self {
        FlightError::Store(e.into())
    }
}

impl Flight {
    /// The state's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Flight::Written(_) => "written",
            Flight::Staged(_) => "staged",
            Flight::Committed { .. } => "committed",
            Flight::InPlace => "in place",
        }
    }

    /// Written -> Staged: uploads every file under `_staging/`.
    pub async fn upload(self, hot: &TierStore) -> Result<Self, FlightError> {
        let Flight::Written(files) = self else {
            return Ok(self);
        };
        let results = futures::stream::iter(files.iter().map(|w| {
            let (path, bytes) = (staged(&w.entry.path, &w.entry.sha256), w.bytes.clone());
            async move { hot.put(&path, bytes).await }
        }))
        .buffer_unordered(UPLOADS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await;
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
        Ok(Flight::Staged(files))
    }

    /// Staged -> Committed: one catalog commit lists the files with
    /// `with` (the partitions' new offsets, the erasures known). On a
    /// conflict the staged copies are deleted.
    pub async fn commit(
        self,
        catalog: &mut Catalog,
        hot: &TierStore,
        with: Vec<Action>,
    ) -> Result<Self, FlightError> {
        let Flight::Staged(files) = self else {
            return Ok(self);
        };
        let mut actions: Vec<Action> = files.iter().map(|w| Action::Add(w.entry.clone())).collect();
        actions.extend(with);
        match catalog.commit("archive", actions).await {
            Ok(version) => Ok(Flight::Committed {
                version,
                files: files
                    .iter()
                    .map(|w| (w.entry.path.clone(), w.entry.sha256.clone()))
                    .collect(),
            }),
            Err(CatalogError::Conflict(c)) => {
                // Best effort: what is left is cleared after the grace period.
                for w in &files {
                    let _ = hot.delete(&staged(&w.entry.path, &w.entry.sha256)).await;
                }
                Err(FlightError::Conflict(c.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Committed -> InPlace: moves the files to their table paths.
    pub async fn promote(self, hot: &TierStore) -> Result<Self, (Self, FlightError)> {
        let Flight::Committed { version, files } = self else {
            return Ok(self);
        };
        match promote(hot, &files).await {
            Ok(()) => Ok(Flight::InPlace),
            Err(e) => Err((Flight::Committed { version, files }, e.into())),
        }
    }
}

/// Recovery from [`Flight::Committed`] after a crash or a failed move:
/// every file the catalog lists that still sits under `_staging/` is
/// moved into place (through the catalog, so a file a tier pass moved
/// meanwhile does not come back); unlisted debris past its grace period
/// is deleted. Returns what it moved.
pub async fn recover(hot: &TierStore, catalog: &mut Catalog) -> Result<Vec<FileKey>, CatalogError> {
    promote_staged(hot, Tier::Hot, catalog).await
}

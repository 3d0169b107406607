//! The view stage: `accounts` and `accounts.transitions` -> the state API.
//!
//! Every copy reads every partition of both topics from their beginning
//! (no consumer group: each copy holds the whole index), so any number of
//! copies can serve behind a load balancer. A copy answers `503` until it
//! has caught up with what the topics held when it started
//! (`GET /healthz/ready`), then follows them.
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[stages.view]` |
//! | [`index`] | latest state per account, its versions, state at a time, the withdrawal answer |
//! | [`stage`] | the stage that keeps the index up to date, on the shared loop |

pub mod config;
pub mod index;
pub mod stage;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub use config::{SPEC, ViewConfig};
pub use index::{AccountIndex, Gone, Version, Withdrawal};
pub use stage::{ViewStage, ViewTopics};

/// The stage's name in metrics and logs.
pub const STAGE: &str = "view";

/// The index a view copy serves, shared by its stage (the one writer) and
/// the HTTP handlers.
#[derive(Debug)]
pub struct View {
    index: RwLock<AccountIndex>,
    ready: AtomicBool,
    /// Most versions one answer lists.
    pub max_versions: usize,
}

impl View {
    /// An empty view, not ready.
    pub fn new(max_versions: usize) -> Self {
        Self {
            index: RwLock::new(AccountIndex::new()),
            ready: AtomicBool::new(false),
            max_versions,
        }
    }

    /// Reads the index (many readers at once).
    pub fn read(&self) -> RwLockReadGuard<'_, AccountIndex> {
        // The writer cannot leave the index half-updated (each apply is
        // one insert or remove), so a poisoned lock is still a valid index.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the index. The stage is its one writer; benches and
    /// the load test fill it directly.
    pub fn write(&self) -> RwLockWriteGuard<'_, AccountIndex> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the index if it has caught up, else `None`. The stage marks it
    /// not ready only under the write lock, so an index read through this
    /// cannot be emptied by a restart of the stage while it is held.
    pub fn read_ready(&self) -> Option<RwLockReadGuard<'_, AccountIndex>> {
        let index = self.read();
        self.is_ready().then_some(index)
    }

    /// Whether the index has caught up with the topics as they were when
    /// this copy started.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the index caught up (or not): the state routes answer only
    /// when it is.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;

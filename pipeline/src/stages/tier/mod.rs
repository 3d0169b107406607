//! The tier job: moves archive files from hot to warm to cold by the age
//! of their events, merging each hour's small files into one, with atomic
//! catalog commits (`kusanagi tier` runs one pass).
//!
//! | module | what |
//! |---|---|
//! | [`plan`] | which files move where (pure) |
//! | [`mover`] | one pass: read, check, merge, stage, commit, move into place |

pub mod mover;
pub mod plan;

pub use mover::{PassReport, TierError};
pub use plan::{Move, plan, tier_for};

use crate::catalog::{Catalog, Tiers};
use crate::config::ArchiveConfig;
use crate::stages::archive::Table;

/// What one pass will do or did.
#[derive(Debug, Clone, Default)]
pub struct Pass {
    /// The moves planned.
    pub moves: Vec<Move>,
    /// What was done (`None` for a dry run).
    pub report: Option<PassReport>,
}

/// Runs one tiering pass over `archive` at `now_us`: reconciles the tiers
/// with the catalog, plans, and (unless `dry_run`) moves. `on_planned(n)`
/// is told how many moves there are, `on_done(k)` as they finish.
pub async fn pass(
    archive: &ArchiveConfig,
    writer: &str,
    zstd_level: i32,
    now_us: i64,
    dry_run: bool,
    on_planned: impl FnOnce(u64),
    on_done: impl FnMut(u64),
) -> Result<Pass, TierError> {
    let tiers = Tiers::open(archive)?;
    let mut catalog = Catalog::open(archive.open_catalog_store()?, writer).await?;
    if !dry_run {
        let tables: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        tiers.reconcile(&mut catalog, &tables).await?;
    }
    let moves = plan(
        catalog.state(),
        now_us,
        archive.warm_after_days,
        archive.cold_after_days,
    );
    on_planned(moves.len() as u64);
    if dry_run {
        return Ok(Pass {
            moves,
            report: None,
        });
    }
    let report = mover::run_pass(&mut catalog, &tiers, &moves, zstd_level, on_done).await?;
    Ok(Pass {
        moves,
        report: Some(report),
    })
}

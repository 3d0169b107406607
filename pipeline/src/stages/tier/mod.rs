//! The tier job: moves archive files from hot to warm to cold by the age
//! of their events, merging each hour's small files into one, with atomic
//! catalog commits (`kusanagi tier` runs one pass).
//!
//! | module | what |
//! |---|---|
//! | [`config`] | `[stages.tier]`: how often a pass runs |
//! | [`plan`] | which files move where (pure) |
//! | [`mover`] | one pass: read, check and merge the files of each move |
//! | [`moving`] | a group of moves as explicit states: planned, staged, committed, in place |

pub mod config;
pub mod mover;
pub mod moving;
pub mod plan;
#[cfg(test)]
mod tests;

pub use config::{SPEC, TierStageConfig};
pub use mover::{PassReport, TierError};
pub use plan::{Move, plan, tier_for};

use self::mover::Rewrite;
use crate::catalog::Catalog;
use crate::config::ArchiveConfig;
use crate::stages::archive::Table;

/// The stage's name (logs, metrics).
pub const STAGE: &str = "tier";

/// The tier stage: a pass at start, then one every `interval_seconds`,
/// until `shutdown`, on the blocking thread it is given (its I/O on `rt`).
/// A failed pass is logged and tried again at the next.
pub fn run_periodically(
    config: &TierStageConfig,
    archive: &ArchiveConfig,
    zstd_level: i32,
    shutdown: &crate::runtime::Shutdown,
    rt: &tokio::runtime::Handle,
) -> Result<(), crate::runtime::RuntimeError> {
    while !shutdown.is_triggered() {
        let now_us = chrono::Utc::now().timestamp_micros();
        let result = rt.block_on(pass(
            archive,
            STAGE,
            zstd_level,
            now_us,
            false,
            |_| {},
            |_| {},
        ));
        match result {
            Ok(Pass {
                report: Some(r), ..
            }) => tracing::info!(
                stage = STAGE,
                moved = r.files_moved,
                written = r.files_written,
                rows = r.rows,
                deferred = r.deferred,
                damaged = r.damaged.len(),
                "tiering pass done"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(stage = STAGE, error = %e, "tiering pass failed; trying again at the next")
            }
        }
        shutdown.sleep(std::time::Duration::from_secs(config.interval_seconds));
    }
    Ok(())
}

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
    let tiers = archive.open_tiers()?;
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
    let report = mover::run_pass(
        &mut catalog,
        &tiers,
        &moves,
        Rewrite {
            zstd_level,
            subject_filter_fpp: archive.subject_filter_fpp,
        },
        on_done,
    )
    .await?;
    Ok(Pass {
        moves,
        report: Some(report),
    })
}

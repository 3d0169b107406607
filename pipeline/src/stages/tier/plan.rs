//! Which files move to which tier: a pure function of the catalog, the
//! clock and the tier ages.
//!
//! A file is as young as its newest event: it moves to warm once that is
//! older than `warm_after_days`, to cold once older than `cold_after_days`,
//! never back. Files of one table partition (table, tenant, day, hour)
//! moving to the same tier in one pass are merged into one file there, so
//! the many small files a day of archiving leaves in hot become one per
//! hour in warm and cold.

use std::collections::BTreeMap;

use crate::catalog::{CatalogState, FileEntry, Tier};

const DAY_US: i64 = 86_400_000_000;

/// Files of one table partition going to one tier together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Where they go.
    pub to: Tier,
    /// The files, by path.
    pub sources: Vec<FileEntry>,
}

/// The tier a file whose newest event is at `max_event_time_us` belongs in
/// at `now_us`.
pub fn tier_for(
    max_event_time_us: i64,
    now_us: i64,
    warm_after_days: u32,
    cold_after_days: u32,
) -> Tier {
    let age = now_us.saturating_sub(max_event_time_us);
    if age > i64::from(cold_after_days) * DAY_US {
        Tier::Cold
    } else if age > i64::from(warm_after_days) * DAY_US {
        Tier::Warm
    } else {
        Tier::Hot
    }
}

/// The moves due at `now_us`, oldest partitions first.
pub fn plan(
    state: &CatalogState,
    now_us: i64,
    warm_after_days: u32,
    cold_after_days: u32,
) -> Vec<Move> {
    let mut groups: BTreeMap<(String, String, String, u8, Tier), Vec<FileEntry>> = BTreeMap::new();
    for f in state.files() {
        let to = tier_for(
            f.max_event_time_us,
            now_us,
            warm_after_days,
            cold_after_days,
        );
        if to > f.tier {
            groups
                .entry((f.dt.clone(), f.table.clone(), f.tenant.clone(), f.hour, to))
                .or_default()
                .push(f.clone());
        }
    }
    groups
        .into_iter()
        .map(|((.., to), sources)| Move { to, sources })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::test_entry;
    use crate::catalog::{Action, Commit};

    fn file(tier: Tier, path: &str, hour: u8, max_event_time_us: i64) -> FileEntry {
        FileEntry {
            hour,
            min_event_time_us: max_event_time_us,
            max_event_time_us,
            ..test_entry(tier, path)
        }
    }

    #[test]
    fn files_move_by_their_newest_event_and_merge_per_partition() {
        let now = 100 * DAY_US;
        let mut state = CatalogState::default();
        let files = vec![
            file(Tier::Hot, "a", 0, now - DAY_US),       // stays
            file(Tier::Hot, "b", 1, now - 8 * DAY_US),   // to warm
            file(Tier::Hot, "c", 1, now - 9 * DAY_US),   // to warm, with b
            file(Tier::Hot, "d", 2, now - 31 * DAY_US),  // straight to cold
            file(Tier::Warm, "e", 3, now - 40 * DAY_US), // warm to cold
            file(Tier::Cold, "f", 4, now - 10 * DAY_US), // never back
            file(Tier::Warm, "g", 5, now - 8 * DAY_US),  // stays
        ];
        state
            .apply(&Commit {
                version: 1,
                committed_at_ms: 0,
                writer: "t".into(),
                operation: "t".into(),
                id: String::new(),
                actions: files.into_iter().map(Action::Add).collect(),
            })
            .unwrap();
        let moves = plan(&state, now, 7, 30);
        let summary: Vec<(Tier, Vec<&str>)> = moves
            .iter()
            .map(|m| (m.to, m.sources.iter().map(|f| f.path.as_str()).collect()))
            .collect();
        assert_eq!(
            summary,
            [
                (Tier::Warm, vec!["b", "c"]),
                (Tier::Cold, vec!["d"]),
                (Tier::Cold, vec!["e"]),
            ]
        );
    }

    #[test]
    fn the_boundaries_are_exclusive() {
        let now = 100 * DAY_US;
        assert_eq!(tier_for(now - 7 * DAY_US, now, 7, 30), Tier::Hot);
        assert_eq!(tier_for(now - 7 * DAY_US - 1, now, 7, 30), Tier::Warm);
        assert_eq!(tier_for(now - 30 * DAY_US, now, 7, 30), Tier::Warm);
        assert_eq!(tier_for(now - 30 * DAY_US - 1, now, 7, 30), Tier::Cold);
        assert_eq!(tier_for(now + DAY_US, now, 7, 30), Tier::Hot);
    }
}

//! `kusanagi restore`: the rows of a time range from whatever tiers hold
//! them, in event-time order (then Kafka partition and offset), read
//! through the catalog so that a file being moved is read exactly once.

use kusanagi_schemas::GameEvent;
use serde_json::{Map, Value};

use super::rows::{RowOrder, events_from_batch, json_rows};
use crate::catalog::parquet::read_batches;
use crate::catalog::{Catalog, CatalogError, Tiers};
use crate::erasure::Erased;
use crate::stages::archive::Table;
use crate::stages::tier::TierError;
use crate::stages::tier::mover::read_checked;

/// A half-open range of event times, `[from_us, to_us)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    /// First instant included, microseconds since the epoch.
    pub from_us: i64,
    /// First instant excluded.
    pub to_us: i64,
}

/// A `--from`/`--to` pair that is not a range (the user's to fix).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Neither a day nor an RFC 3339 instant.
    #[error("expected a day (2026-11-01) or an RFC 3339 time, found {0:?}")]
    NotATime(String),
    /// `--to` is not after `--from`.
    #[error("--to {to} is not after --from {from}")]
    Empty {
        /// `--from` as given.
        from: String,
        /// `--to` as given.
        to: String,
    },
}

impl TimeRange {
    /// `--from`/`--to` as given: a day (`2026-11-01`; `--to` includes the
    /// whole day) or an RFC 3339 instant (`--to` excluded).
    pub fn parse(from: &str, to: &str) -> Result<Self, RangeError> {
        let range = Self {
            from_us: instant(from, false)?,
            to_us: instant(to, true)?,
        };
        if range.to_us <= range.from_us {
            return Err(RangeError::Empty {
                from: from.to_owned(),
                to: to.to_owned(),
            });
        }
        Ok(range)
    }

    /// Whether `t` is in the range.
    pub fn contains(&self, t: i64) -> bool {
        (self.from_us..self.to_us).contains(&t)
    }
}

fn instant(s: &str, end_of_day: bool) -> Result<i64, RangeError> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = if end_of_day {
            day.succ_opt().unwrap_or(day)
        } else {
            day
        };
        return Ok(day
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_micros());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_micros())
        .map_err(|_| RangeError::NotATime(s.to_owned()))
}

/// Why a restore failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The catalog or a store failed, or a file is damaged.
    #[error(transparent)]
    Tier(#[from] TierError),
    /// A file's rows could not be read back.
    #[error("{file}: {detail}")]
    Unreadable {
        /// The file.
        file: String,
        /// Why.
        detail: String,
    },
}

impl From<CatalogError> for RestoreError {
    fn from(e: CatalogError) -> Self {
        RestoreError::Tier(TierError::Catalog(e))
    }
}

/// Restored rows, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Restored {
    /// Events, typed (they can go back into a topic).
    Events(Vec<GameEvent>),
    /// Rows of another table, as JSON objects.
    Json(Vec<Map<String, Value>>),
}

impl Restored {
    /// Rows restored.
    pub fn len(&self) -> usize {
        match self {
            Restored::Events(e) => e.len(),
            Restored::Json(r) => r.len(),
        }
    }

    /// Nothing restored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows as JSON lines (events as producers send them).
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        match self {
            Restored::Events(events) => {
                for e in events {
                    out.push_str(&e.to_json());
                    out.push('\n');
                }
            }
            Restored::Json(rows) => {
                for r in rows {
                    out.push_str(&Value::Object(r.clone()).to_string());
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// The files of `table` that may hold rows of `range`.
pub fn files_for(
    catalog: &Catalog,
    table: Table,
    range: TimeRange,
) -> Vec<crate::catalog::FileEntry> {
    catalog
        .state()
        .files()
        .filter(|f| f.table == table.name())
        .filter(|f| f.max_event_time_us >= range.from_us && f.min_event_time_us < range.to_us)
        .cloned()
        .collect()
}

/// Whether a JSON row names an erased subject.
fn names_erased(row: &Map<String, Value>, erased: &Erased) -> bool {
    ["actor_id", "target_id", "account_id"]
        .iter()
        .filter_map(|c| row.get(*c).and_then(Value::as_str))
        .any(|id| erased.is_deleted(id))
}

/// Reads the rows of `table` in `range`, without the rows of `erased`
/// subjects (a purge may not have removed them yet); `done(bytes)` after
/// each file.
pub async fn restore(
    tiers: &Tiers,
    catalog: &Catalog,
    table: Table,
    range: TimeRange,
    erased: &Erased,
    mut done: impl FnMut(u64),
) -> Result<Restored, RestoreError> {
    let mut events: Vec<(RowOrder, GameEvent)> = Vec::new();
    let mut rows: Vec<(RowOrder, Map<String, Value>)> = Vec::new();
    for f in files_for(catalog, table, range) {
        let bytes = read_checked(tiers, &f).await?;
        let unreadable = |detail: String| RestoreError::Unreadable {
            file: f.key().to_string(),
            detail,
        };
        for batch in read_batches(bytes).map_err(|e| unreadable(e.to_string()))? {
            match table {
                Table::Events => events.extend(
                    events_from_batch(&batch)
                        .map_err(|e| unreadable(e.to_string()))?
                        .into_iter()
                        .filter(|(o, _)| range.contains(o.0))
                        .filter(|(_, e)| {
                            !erased.is_deleted(&e.actor_id) && !erased.is_deleted(&e.target_id)
                        }),
                ),
                Table::Screenings | Table::Transitions | Table::Audit => rows.extend(
                    json_rows(&batch, table.time_column())
                        .map_err(|e| unreadable(e.to_string()))?
                        .into_iter()
                        .filter(|(o, _)| range.contains(o.0))
                        .filter(|(_, r)| !names_erased(r, erased)),
                ),
            }
        }
        done(f.size_bytes);
    }
    Ok(if table == Table::Events {
        events.sort_by_key(|e| e.0);
        Restored::Events(events.into_iter().map(|(_, e)| e).collect())
    } else {
        rows.sort_by_key(|r| r.0);
        Restored::Json(rows.into_iter().map(|(_, r)| r).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_instants_make_half_open_ranges() {
        let r = TimeRange::parse("2026-11-01", "2026-11-03").unwrap();
        let day = 86_400_000_000;
        assert_eq!(r.to_us - r.from_us, 3 * day, "--to includes its day");
        assert!(r.contains(r.from_us) && !r.contains(r.to_us));
        let r = TimeRange::parse("2026-11-01T00:00:00Z", "2026-11-01T01:00:00Z").unwrap();
        assert_eq!(r.to_us - r.from_us, 3_600_000_000);
        let err = TimeRange::parse("yesterday", "2026-11-01").unwrap_err();
        assert_eq!(err, RangeError::NotATime("yesterday".into()));
        assert!(err.to_string().contains("RFC 3339"), "{err}");
        assert!(matches!(
            TimeRange::parse("2026-11-02", "2026-11-01"),
            Err(RangeError::Empty { .. })
        ));
    }
}

//! Whether a partition's log in the broker still holds what the catalog
//! says is archived, and the records after it.
//!
//! The catalog records, per partition, the next offset to archive. Offsets
//! only grow on a broker that keeps what it acknowledged. Two things break
//! that, and the archive must tell them apart:
//! - **Aged out**: retention deleted records before they were archived
//!   (the log starts after the catalog's offset). They are gone; the stage
//!   goes on from the first record still there and says so.
//! - **Went back**: the log *ends* below the catalog's offset. The broker
//!   lost records it had acknowledged (a power loss with `flush = "os"`, a
//!   data directory restored from an old copy, a cluster replaced by an
//!   empty one), and the records it takes from now on reuse offsets the
//!   archive already holds. Reading on from the catalog's offset would
//!   skip them silently, so the stage refuses the partition until an
//!   operator decides (docs/operators.md, "The broker went backwards").

/// What a partition's log says about the catalog's offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogCheck {
    /// The log holds the catalog's offset (or ends exactly there).
    Fine,
    /// Records before `first_available` were deleted unarchived.
    AgedOut {
        /// The log's first offset.
        first_available: i64,
    },
    /// The log ends at `log_end`, below the catalog's offset.
    WentBack {
        /// The log's end (the offset its next record gets).
        log_end: i64,
    },
}

/// Checks `next` (the catalog's next offset to archive; `None`: nothing
/// archived yet) against the partition's log, `low..high` (its first
/// offset and its end).
pub fn check(next: Option<i64>, low: i64, high: i64) -> LogCheck {
    let from = next.unwrap_or(0);
    if from > high {
        LogCheck::WentBack { log_end: high }
    } else if from < low {
        LogCheck::AgedOut {
            first_available: low,
        }
    } else {
        LogCheck::Fine
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_cases() {
        assert_eq!(check(None, 0, 0), LogCheck::Fine, "an empty new partition");
        assert_eq!(check(Some(100), 0, 100), LogCheck::Fine, "all archived");
        assert_eq!(check(Some(40), 0, 100), LogCheck::Fine);
        assert_eq!(
            check(Some(40), 50, 100),
            LogCheck::AgedOut {
                first_available: 50
            }
        );
        assert_eq!(
            check(None, 50, 100),
            LogCheck::AgedOut {
                first_available: 50
            }
        );
        assert_eq!(
            check(Some(100), 0, 60),
            LogCheck::WentBack { log_end: 60 },
            "the broker lost 40 acknowledged records"
        );
        assert_eq!(
            check(Some(100), 0, 0),
            LogCheck::WentBack { log_end: 0 },
            "an empty broker where 100 records were archived"
        );
    }

    proptest! {
        /// Went back exactly when the catalog's offset is past the log's
        /// end, whatever the log's start.
        #[test]
        fn went_back_iff_past_the_end(next in 0i64..1_000, low in 0i64..1_000, len in 0i64..1_000) {
            let high = low + len;
            let went_back = matches!(check(Some(next), low, high), LogCheck::WentBack { .. });
            prop_assert_eq!(went_back, next > high);
        }
    }
}

//! Per-file subject filters: a split-block Bloom filter (Parquet's own,
//! xxHash64) of every account id a file holds, kept in its catalog entry,
//! so that a purge opens only the files that may hold a subject.
//!
//! A filter never says "absent" for an id the file holds; it says
//! "present" for an id the file does not hold at about the configured
//! rate (`gdpr.subject_filter_fpp`). A file with no filter (written before
//! filters existed) may hold anything.

use std::collections::HashSet;

use arrow_array::{Array, RecordBatch, StringArray};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use parquet::bloom_filter::Sbbf;

/// The columns of `table` that hold account ids (a data subject).
pub fn subject_columns(table: &str) -> &'static [&'static str] {
    match table {
        "events" | "screenings" => &["actor_id", "target_id"],
        "transitions" => &["account_id"],
        _ => &[],
    }
}

/// Every distinct subject in `batches` of `table`.
pub fn subjects_of<'a>(table: &str, batches: &'a [RecordBatch]) -> HashSet<&'a str> {
    let mut ids = HashSet::new();
    for batch in batches {
        for column in subject_columns(table) {
            let Some(values) = batch
                .column_by_name(column)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            else {
                continue;
            };
            for i in 0..values.len() {
                if values.is_valid(i) {
                    ids.insert(values.value(i));
                }
            }
        }
    }
    ids
}

/// The filter of `ids` at false-positive rate `fpp`, base64 (the form a
/// catalog entry keeps).
pub fn filter_of<'a>(ids: impl ExactSizeIterator<Item = &'a str>, fpp: f64) -> String {
    let mut sbbf = Sbbf::new_with_ndv_fpp(ids.len().max(1) as u64, fpp)
        .unwrap_or_else(|_| Sbbf::new_with_num_of_bytes(32));
    for id in ids {
        sbbf.insert(id);
    }
    let mut bits = Vec::new();
    sbbf.write_bitset(&mut bits)
        .expect("writing to a Vec cannot fail");
    STANDARD.encode(bits)
}

/// The filter of the subjects in `batches` of `table` (`None` for a table
/// without subjects).
pub fn filter_of_batches(table: &str, batches: &[RecordBatch], fpp: f64) -> Option<String> {
    if subject_columns(table).is_empty() {
        return None;
    }
    let ids = subjects_of(table, batches);
    Some(filter_of(ids.into_iter(), fpp))
}

/// Whether a file whose entry keeps `filter` may hold `subject`: `true`
/// for a file with no filter, or one that cannot be decoded.
pub fn may_hold(filter: Option<&str>, subject: &str) -> bool {
    let Some(encoded) = filter else { return true };
    match STANDARD.decode(encoded) {
        Ok(bits) if !bits.is_empty() && bits.len() % 32 == 0 => Sbbf::new(&bits).check(subject),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn absent_ids_are_mostly_ruled_out_at_the_configured_rate() {
        let held: Vec<String> = (0..2_000).map(|i| format!("acct-{i}")).collect();
        let f = filter_of(held.iter().map(String::as_str), 0.01);
        assert!(held.iter().all(|id| may_hold(Some(&f), id)));
        let false_positives = (0..20_000)
            .filter(|i| may_hold(Some(&f), &format!("other-{i}")))
            .count();
        assert!(
            false_positives < 20_000 / 50,
            "{false_positives} of 20000 absent ids passed a 1% filter"
        );
        assert!(may_hold(None, "anything"), "no filter: may hold anything");
        assert!(may_hold(Some("%%"), "anything"), "an unreadable filter too");
    }

    proptest! {
        #[test]
        fn a_filter_never_rules_out_an_id_it_was_built_from(
            ids in proptest::collection::hash_set("[a-z0-9-]{1,12}", 0..300),
            fpp in 0.001f64..0.3,
        ) {
            let f = filter_of(ids.iter().map(String::as_str), fpp);
            for id in &ids {
                prop_assert!(may_hold(Some(&f), id));
            }
        }
    }
}

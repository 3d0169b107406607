//! One archive file: rows of one table partition written as Parquet (zstd),
//! described by its catalog entry, and read back to check it.

use std::collections::BTreeMap;

use bytes::Bytes;
use parquet::errors::ParquetError;

use super::layout::PartitionKey;
use super::open_files::OpenFile;
use super::table::{Row, to_batch};
use crate::catalog::parquet::{sha256_hex, write_batches};
use crate::catalog::subjects::filter_of_batches;
use crate::catalog::{FileEntry, OffsetRange, Tier};

/// A file written in memory, ready to upload.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// The Parquet bytes.
    pub bytes: Bytes,
    /// Its catalog entry (tier hot).
    pub entry: FileEntry,
}

impl WrittenFile {
    /// Marks each offset range with how many times the catalog rewound its
    /// partition (`rewinds(topic, partition)`), and names the file from
    /// them: after a rewind the same offsets are other records, and their
    /// file must not take the name of one archived before it.
    pub fn after_rewinds(mut self, key: &PartitionKey, rewinds: impl Fn(&str, i32) -> u32) -> Self {
        for r in &mut self.entry.offsets {
            r.rewinds = rewinds(&r.topic, r.partition);
        }
        if self.entry.offsets.iter().any(|r| r.rewinds > 0) {
            self.entry.path = key.file_path(&self.entry.offsets);
        }
        self
    }
}

/// What one rotation writes: the open files with their topics.
pub type Rotation = Vec<(PartitionKey, String, OpenFile)>;

/// Writes every file of a rotation ([`write_file`] each), up to `threads`
/// at once: a rotation writes a file per table (and tenant and hour), and
/// each file's sorting, encoding and compression is its own. Results keep
/// the rotation's order.
pub fn write_files(
    files: Rotation,
    threads: usize,
    write: impl Fn(&PartitionKey, &str, OpenFile) -> Result<WrittenFile, ParquetError> + Sync,
) -> Vec<(PartitionKey, Result<WrittenFile, ParquetError>)> {
    let threads = threads.clamp(1, files.len().max(1));
    if threads == 1 {
        return files
            .into_iter()
            .map(|(key, topic, file)| {
                let w = write(&key, &topic, file);
                (key, w)
            })
            .collect();
    }
    // Each worker takes the next file left; the slots keep the order.
    let slots: Vec<std::sync::Mutex<Option<(PartitionKey, String, OpenFile)>>> = files
        .into_iter()
        .map(|f| std::sync::Mutex::new(Some(f)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, PartitionKey, Result<WrittenFile, ParquetError>)> =
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(slot) = slots.get(i) else {
                                return mine;
                            };
                            let taken = slot.lock().map(|mut s| s.take()).ok().flatten();
                            if let Some((key, topic, file)) = taken {
                                let w = write(&key, &topic, file);
                                mine.push((i, key, w));
                            }
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| match w.join() {
                    Ok(mine) => mine,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        });
    done.sort_by_key(|(i, _, _)| *i);
    done.into_iter().map(|(_, key, w)| (key, w)).collect()
}

/// Writes the rows of `key` read from `topic` as one Parquet file: rows in
/// event-time order (then Kafka partition and offset), zstd at `zstd_level`.
pub fn write_file(
    key: &PartitionKey,
    topic: &str,
    mut file: OpenFile,
    zstd_level: i32,
    subject_filter_fpp: f64,
    now_ms: i64,
) -> Result<WrittenFile, ParquetError> {
    let rows: &mut Vec<Row> = &mut file.rows;
    rows.sort_by_key(|r| (r.record.event_time_us(), r.partition, r.offset));
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for r in rows.iter() {
        let e = ranges.entry(r.partition).or_insert((r.offset, r.offset));
        e.0 = e.0.min(r.offset);
        e.1 = e.1.max(r.offset);
    }
    let offsets: Vec<OffsetRange> = ranges
        .into_iter()
        .map(|(partition, (first, last))| OffsetRange {
            topic: topic.to_owned(),
            partition,
            first,
            last,
            rewinds: 0,
        })
        .collect();
    let batch = to_batch(key.table, rows)?;
    let subjects = filter_of_batches(
        key.table.name(),
        std::slice::from_ref(&batch),
        subject_filter_fpp,
    );
    let out = write_batches(key.table.schema(), &[batch], zstd_level)?;
    let times = rows.iter().map(|r| r.record.event_time_us());
    let entry = FileEntry {
        tier: Tier::Hot,
        path: key.file_path(&offsets),
        table: key.table.name().to_owned(),
        tenant: key.tenant.clone(),
        dt: key.dt.clone(),
        hour: key.hour,
        rows: rows.len() as u64,
        min_event_time_us: times.clone().min().unwrap_or(0),
        max_event_time_us: times.max().unwrap_or(0),
        size_bytes: out.len() as u64,
        sha256: sha256_hex(&out),
        json_bytes: file.json_bytes,
        offsets,
        created_at_ms: now_ms,
        subjects,
    };
    Ok(WrittenFile {
        bytes: Bytes::from(out),
        entry,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::catalog::parquet::{count_rows, read_batches};
    use crate::stages::archive::table::{Record, Table};
    use kusanagi_schemas::{EventTime, GameEvent};

    fn event(i: i64, t: i64) -> Row {
        Row {
            record: Record::Event(GameEvent {
                event_id: format!("e{i}"),
                timestamp: EventTime::from_micros(t),
                event_type: "TRADE".into(),
                actor_id: format!("a{}", i % 7),
                target_id: "b".into(),
                action_details: kusanagi_schemas::ActionDetails {
                    currency_amount: 100 * i,
                    item_id: None,
                    market_avg_price: Some(5),
                },
                context_metadata: Default::default(),
                tenant_id: "t".into(),
            }),
            partition: (i % 2) as i32,
            offset: i,
        }
    }

    #[test]
    fn a_file_is_sorted_described_and_reads_back() {
        let rows: Vec<Row> = (0..100).map(|i| event(i, 1_000_000 * (100 - i))).collect();
        let json: u64 = rows.iter().map(|r| r.record.json_len() as u64).sum();
        let key = PartitionKey::of(Table::Events, "t", 0);
        let open = OpenFile {
            rows,
            bytes: 10_000,
            json_bytes: json,
            opened_at: Instant::now(),
        };
        let w = write_file(&key, "events", open, 6, 0.01, 42).unwrap();
        assert_eq!(w.entry.rows, 100);
        assert_eq!(w.entry.min_event_time_us, 1_000_000);
        assert_eq!(w.entry.max_event_time_us, 100_000_000);
        assert_eq!(w.entry.offsets.len(), 2);
        assert_eq!((w.entry.offsets[0].first, w.entry.offsets[0].last), (0, 98));
        assert_eq!((w.entry.offsets[1].first, w.entry.offsets[1].last), (1, 99));
        assert_eq!(w.entry.sha256, sha256_hex(&w.bytes));
        assert!(w.entry.size_bytes < json, "Parquet is smaller than JSON");
        assert_eq!(count_rows(w.bytes.clone()).unwrap(), 100);

        // A cut file is an error to read, not a panic.
        let cut = w.bytes.slice(..w.bytes.len() - 100);
        assert!(count_rows(cut).is_err());
        assert!(read_batches(Bytes::from_static(b"not parquet")).is_err());
    }

    #[test]
    fn a_rotation_written_on_several_threads_is_the_same_in_the_same_order() {
        let rotation = || -> Rotation {
            (0..5)
                .map(|tenant| {
                    let rows: Vec<Row> = (0..50 + tenant * 30)
                        .map(|i| event(i, 1_000_000 * (200 - i)))
                        .collect();
                    let key = PartitionKey::of(Table::Events, &format!("t{tenant}"), 0);
                    let open = OpenFile {
                        rows,
                        bytes: 1_000,
                        json_bytes: 1_000,
                        opened_at: Instant::now(),
                    };
                    (key, "events".to_owned(), open)
                })
                .collect()
        };
        let write = |key: &PartitionKey, topic: &str, file: OpenFile| {
            if key.tenant == "t3" {
                return Err(ParquetError::General("no room".into()));
            }
            write_file(key, topic, file, 3, 0.01, 42)
        };
        let one = write_files(rotation(), 1, write);
        let four = write_files(rotation(), 4, write);
        assert_eq!(one.len(), 5);
        assert_eq!(four.len(), 5);
        for ((k1, w1), (k4, w4)) in one.iter().zip(&four) {
            assert_eq!(k1, k4);
            match (w1, w4) {
                (Ok(a), Ok(b)) => {
                    assert_eq!(a.entry.path, b.entry.path);
                    assert_eq!(a.bytes, b.bytes, "{}", a.entry.path);
                }
                (Err(_), Err(_)) => assert_eq!(k1.tenant, "t3"),
                _ => panic!("{} written on one thread and not on four", k1.dir()),
            }
        }
        assert!(write_files(Vec::new(), 4, write).is_empty());
    }
}

//! The archive's tables: which topic feeds each, the Parquet columns, and
//! how decoded records become Arrow batches.
//!
//! Columns are flat and typed for analysts: event times are
//! `TIMESTAMP` (microseconds, UTC by convention, no zone attached, so
//! DuckDB and Athena read them as plain timestamps), amounts `BIGINT`.
//! Every table also carries the Kafka partition and offset a row came
//! from (lineage; `restore` orders by event time, then these).

use std::sync::{Arc, OnceLock};

use arrow_array::builder::{
    BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use kusanagi_schemas::{
    AuditRecord, CodecError, GameEvent, GameEventCodec, RecordCodec, Screening, Transition,
};

/// One archived table, fed by one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// `events`: every validated event.
    Events,
    /// `screenings`: every L1 screening.
    Screenings,
    /// `transitions`: every account move, applied or refused.
    Transitions,
    /// `audit`: the audit trail (erasure steps, admin actions); no
    /// personal data. Its rows are filed under the tenant
    /// [`AUDIT_TENANT`].
    Audit,
}

/// The `tenant=` folder of the audit table (the trail is the deployment's).
pub const AUDIT_TENANT: &str = "_system";

impl Table {
    /// Every table.
    pub const ALL: [Table; 4] = [
        Table::Events,
        Table::Screenings,
        Table::Transitions,
        Table::Audit,
    ];

    /// The table's name: the first folder of its paths.
    pub fn name(self) -> &'static str {
        match self {
            Table::Events => "events",
            Table::Screenings => "screenings",
            Table::Transitions => "transitions",
            Table::Audit => "audit",
        }
    }

    /// The column of a row's time (the `dt=`/`hour=` partitions).
    pub fn time_column(self) -> &'static str {
        match self {
            Table::Events => "timestamp",
            Table::Screenings | Table::Transitions => "event_time",
            Table::Audit => "at",
        }
    }

    /// The table called `name`.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The Parquet (Arrow) schema of the table.
    pub fn schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<[SchemaRef; 4]> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| {
            [
                events_schema(),
                screenings_schema(),
                transitions_schema(),
                audit_schema(),
            ]
        });
        all[self as usize].clone()
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

fn lineage() -> [Field; 2] {
    [
        Field::new("kafka_partition", DataType::Int32, false),
        Field::new("kafka_offset", DataType::Int64, false),
    ]
}

fn events_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("timestamp", ts(), false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new("actor_id", DataType::Utf8, false),
        Field::new("target_id", DataType::Utf8, false),
        Field::new("currency_amount", DataType::Int64, false),
        Field::new("item_id", DataType::Utf8, true),
        Field::new("market_avg_price", DataType::Int64, true),
        Field::new("actor_level", DataType::Int32, false),
        Field::new("account_age_days", DataType::Int32, false),
        Field::new("recent_chat_log", DataType::Utf8, true),
        Field::new("tenant_id", DataType::Utf8, false),
    ];
    fields.extend(lineage());
    Arc::new(Schema::new(fields))
}

fn screenings_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_time", ts(), false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("target_id", DataType::Utf8, false),
        Field::new("actor_id", DataType::Utf8, false),
        Field::new("screened", DataType::Boolean, false),
        Field::new("triggered_rules", DataType::Utf8, false),
        Field::new("recommended_action", DataType::Utf8, false),
        Field::new("needs_l2", DataType::Boolean, false),
        Field::new("window_total_received", DataType::Int64, false),
        Field::new("window_transaction_count", DataType::Int32, false),
        Field::new("window_distinct_senders", DataType::Int32, false),
        Field::new("window_rules", DataType::Utf8, false),
        Field::new("evidence_event_ids", DataType::Utf8, false),
        Field::new("late", DataType::Boolean, false),
    ];
    fields.extend(lineage());
    Arc::new(Schema::new(fields))
}

fn transitions_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("account_id", DataType::Utf8, false),
        Field::new("tenant_id", DataType::Utf8, false),
        Field::new("version", DataType::Int64, false),
        Field::new("from_state", DataType::Utf8, false),
        Field::new("to_state", DataType::Utf8, false),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("event_time", ts(), false),
        Field::new("source_id", DataType::Utf8, false),
        Field::new("evidence", DataType::Utf8, false),
        Field::new("applied", DataType::Boolean, false),
        Field::new("refusal", DataType::Utf8, true),
    ];
    fields.extend(lineage());
    Arc::new(Schema::new(fields))
}

fn audit_schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("audit_id", DataType::Utf8, false),
        Field::new("at", ts(), false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("subject_hash", DataType::Utf8, true),
        Field::new("actor", DataType::Utf8, false),
        Field::new("request_id", DataType::Utf8, true),
        Field::new("detail", DataType::Utf8, false),
    ];
    fields.extend(lineage());
    Arc::new(Schema::new(fields))
}

/// A decoded record of one of the tables.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A row of `events`.
    Event(GameEvent),
    /// A row of `screenings`.
    Screening(Screening),
    /// A row of `transitions`.
    Transition(Transition),
    /// A row of `audit`.
    Audit(AuditRecord),
}

impl Record {
    /// The tenant (the `tenant=` partition).
    pub fn tenant(&self) -> &str {
        match self {
            Record::Event(e) => &e.tenant_id,
            Record::Screening(s) => &s.tenant_id,
            Record::Transition(t) => &t.tenant_id,
            Record::Audit(_) => AUDIT_TENANT,
        }
    }

    /// The event time (the `dt=` and `hour=` partitions), microseconds.
    pub fn event_time_us(&self) -> i64 {
        match self {
            Record::Event(e) => e.timestamp.as_micros(),
            Record::Screening(s) => s.event_time.as_micros(),
            Record::Transition(t) => t.event_time.as_micros(),
            Record::Audit(a) => a.at.as_micros(),
        }
    }

    /// The account ids the row names (the subjects an erasure removes).
    pub fn subject_ids(&self) -> [Option<&str>; 2] {
        match self {
            Record::Event(e) => [Some(&e.actor_id), Some(&e.target_id)],
            Record::Screening(s) => [Some(&s.actor_id), Some(&s.target_id)],
            Record::Transition(t) => [Some(&t.account_id), None],
            Record::Audit(_) => [None, None],
        }
    }

    /// The bytes of the record as JSON: the baseline compression is
    /// measured against. Counted as serde_json writes them, without
    /// keeping them: building the string cost the archive a fifth of its
    /// CPU per event.
    pub fn json_len(&self) -> usize {
        let mut count = ByteCount(0);
        let written = match self {
            Record::Event(e) => serde_json::to_writer(&mut count, e),
            Record::Screening(s) => serde_json::to_writer(&mut count, s),
            Record::Transition(t) => serde_json::to_writer(&mut count, t),
            Record::Audit(a) => serde_json::to_writer(&mut count, a),
        };
        written.map_or(0, |()| count.0)
    }
}

/// A writer that only counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Decoders of every table's topic payload (Avro single-object encoding).
#[derive(Debug, Default)]
pub struct Decoders {
    events: GameEventCodec,
    screenings: RecordCodec<Screening>,
    transitions: RecordCodec<Transition>,
    audit: RecordCodec<AuditRecord>,
}

impl Decoders {
    /// Decoders for the current schemas.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one payload of `table`'s topic.
    pub fn decode(&self, table: Table, bytes: &[u8]) -> Result<Record, CodecError> {
        Ok(match table {
            Table::Events => Record::Event(self.events.decode(bytes)?),
            Table::Screenings => Record::Screening(self.screenings.decode(bytes)?),
            Table::Transitions => Record::Transition(self.transitions.decode(bytes)?),
            Table::Audit => Record::Audit(self.audit.decode(bytes)?),
        })
    }
}

/// A record with where it came from in Kafka.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record.
    pub record: Record,
    /// Its Kafka partition.
    pub partition: i32,
    /// Its Kafka offset.
    pub offset: i64,
}

/// `rows` (all of `table`) as one Arrow batch, in the given order.
pub fn to_batch(table: Table, rows: &[Row]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let mut columns: Vec<ArrayRef> = match table {
        Table::Events => event_columns(rows, n),
        Table::Screenings => screening_columns(rows, n),
        Table::Transitions => transition_columns(rows, n),
        Table::Audit => audit_columns(rows, n),
    };
    let mut partition = Int32Builder::with_capacity(n);
    let mut offset = Int64Builder::with_capacity(n);
    for r in rows {
        partition.append_value(r.partition);
        offset.append_value(r.offset);
    }
    columns.push(Arc::new(partition.finish()));
    columns.push(Arc::new(offset.finish()));
    RecordBatch::try_new(table.schema(), columns)
}

fn strings<'a>(n: usize, values: impl Iterator<Item = Option<&'a str>>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(n, n * 16);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn longs(n: usize, values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(n);
    for v in values {
        b.append_option(v);
    }
    Arc::new(b.finish())
}

fn ints(n: usize, values: impl Iterator<Item = i32>) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(n);
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn bools(n: usize, values: impl Iterator<Item = bool>) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(n);
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn times(n: usize, values: impl Iterator<Item = i64>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::with_capacity(n);
    for v in values {
        b.append_value(v);
    }
    Arc::new(b.finish())
}

fn event_columns(rows: &[Row], n: usize) -> Vec<ArrayRef> {
    let e: Vec<&GameEvent> = rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    let s = |f: fn(&GameEvent) -> Option<&str>| strings(n, e.iter().map(|e| f(e)));
    vec![
        s(|e| Some(&e.event_id)),
        times(n, e.iter().map(|e| e.timestamp.as_micros())),
        s(|e| Some(&e.event_type)),
        s(|e| Some(&e.actor_id)),
        s(|e| Some(&e.target_id)),
        longs(n, e.iter().map(|e| Some(e.action_details.currency_amount))),
        s(|e| e.action_details.item_id.as_deref()),
        longs(n, e.iter().map(|e| e.action_details.market_avg_price)),
        ints(n, e.iter().map(|e| e.context_metadata.actor_level)),
        ints(n, e.iter().map(|e| e.context_metadata.account_age_days)),
        s(|e| e.context_metadata.recent_chat_log.as_deref()),
        s(|e| Some(&e.tenant_id)),
    ]
}

fn screening_columns(rows: &[Row], n: usize) -> Vec<ArrayRef> {
    let x: Vec<&Screening> = rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Screening(s) => Some(s),
            _ => None,
        })
        .collect();
    let s = |f: fn(&Screening) -> Option<&str>| strings(n, x.iter().map(|e| f(e)));
    let owned = |f: fn(&Screening) -> String| {
        let v: Vec<String> = x.iter().map(|e| f(e)).collect();
        strings(n, v.iter().map(|s| Some(s.as_str())))
    };
    vec![
        s(|e| Some(&e.event_id)),
        times(n, x.iter().map(|e| e.event_time.as_micros())),
        s(|e| Some(&e.tenant_id)),
        s(|e| Some(&e.target_id)),
        s(|e| Some(&e.actor_id)),
        bools(n, x.iter().map(|e| e.screened)),
        owned(|e| e.triggered_rules.label()),
        s(|e| Some(e.recommended_action.as_str())),
        bools(n, x.iter().map(|e| e.needs_l2)),
        longs(n, x.iter().map(|e| Some(e.window.total_received))),
        ints(n, x.iter().map(|e| e.window.transaction_count)),
        ints(n, x.iter().map(|e| e.window.distinct_senders)),
        owned(|e| e.window_rules.label()),
        owned(|e| e.evidence_event_ids.join(",")),
        bools(n, x.iter().map(|e| e.late)),
    ]
}

fn transition_columns(rows: &[Row], n: usize) -> Vec<ArrayRef> {
    let x: Vec<&Transition> = rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Transition(t) => Some(t),
            _ => None,
        })
        .collect();
    let s = |f: fn(&Transition) -> Option<&str>| strings(n, x.iter().map(|e| f(e)));
    vec![
        s(|e| Some(&e.account_id)),
        s(|e| Some(&e.tenant_id)),
        longs(n, x.iter().map(|e| Some(e.version))),
        s(|e| Some(e.from_state.as_str())),
        s(|e| Some(e.to_state.as_str())),
        s(|e| {
            Some(match e.trigger {
                kusanagi_schemas::Trigger::L1Screening => "L1_SCREENING",
                kusanagi_schemas::Trigger::L2Verdict => "L2_VERDICT",
            })
        }),
        s(|e| Some(&e.rule)),
        times(n, x.iter().map(|e| e.event_time.as_micros())),
        s(|e| Some(&e.source_id)),
        s(|e| Some(&e.evidence)),
        bools(n, x.iter().map(|e| e.applied)),
        s(|e| e.refusal.as_deref()),
    ]
}

fn audit_columns(rows: &[Row], n: usize) -> Vec<ArrayRef> {
    let x: Vec<&AuditRecord> = rows
        .iter()
        .filter_map(|r| match &r.record {
            Record::Audit(a) => Some(a),
            _ => None,
        })
        .collect();
    let s = |f: fn(&AuditRecord) -> Option<&str>| strings(n, x.iter().map(|e| f(e)));
    let kinds: Vec<String> = x
        .iter()
        .map(|a| {
            serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        })
        .collect();
    vec![
        s(|a| Some(&a.audit_id)),
        times(n, x.iter().map(|a| a.at.as_micros())),
        strings(n, kinds.iter().map(|k| Some(k.as_str()))),
        s(|a| a.subject_hash.as_deref()),
        s(|a| Some(&a.actor)),
        s(|a| a.request_id.as_deref()),
        s(|a| Some(&a.detail)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::Traffic;

    #[test]
    fn json_len_counts_the_bytes_serde_json_writes() {
        let mut traffic = Traffic::new("t", 7);
        let mut checked = 0;
        for i in 0..500i64 {
            let at =
                kusanagi_schemas::EventTime::from_micros(4_070_908_800_000_000 + i).to_rfc3339();
            let Ok(mut e) = kusanagi_schemas::parse_event(&traffic.next_record(&at).json) else {
                continue;
            };
            if i % 2 == 0 {
                e.context_metadata.recent_chat_log =
                    Some("quote \" backslash \\ newline \n tab \t nul \u{0} 日本語 ✓".into());
            }
            let record = Record::Event(e);
            let Record::Event(e) = &record else {
                unreachable!()
            };
            assert_eq!(record.json_len(), e.to_json().len());
            checked += 1;
        }
        assert!(checked > 400, "only {checked} valid events");
    }
}

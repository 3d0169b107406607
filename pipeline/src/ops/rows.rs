//! Archive rows read back from Parquet: typed events (to restore them into
//! a topic or as the JSON producers send) and any table's rows as JSON
//! objects.

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use kusanagi_schemas::{ActionDetails, ContextMetadata, EventTime, GameEvent};
use serde_json::{Map, Value};

/// A row's place: its event time and where it came from in Kafka (the
/// order `restore` returns rows in).
pub type RowOrder = (i64, i32, i64);

/// A row as a JSON object, with its place.
pub type JsonRow = (RowOrder, Map<String, Value>);

/// Why a batch could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("column `{column}`: {detail}")]
pub struct RowError {
    column: String,
    detail: String,
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a dyn Array, RowError> {
    batch
        .column_by_name(name)
        .map(|c| c.as_ref())
        .ok_or_else(|| RowError {
            column: name.into(),
            detail: "missing".into(),
        })
}

fn typed<'a, T: 'static>(
    batch: &'a RecordBatch,
    name: &str,
    cast: impl Fn(&'a dyn Array) -> Option<&'a T>,
) -> Result<&'a T, RowError> {
    cast(column(batch, name)?).ok_or_else(|| RowError {
        column: name.into(),
        detail: "unexpected type".into(),
    })
}

/// The events of a batch of the `events` table, with their order keys.
pub fn events_from_batch(batch: &RecordBatch) -> Result<Vec<(RowOrder, GameEvent)>, RowError> {
    let s = |name| typed(batch, name, |a| a.as_string_opt::<i32>());
    let l = |name| typed(batch, name, |a| a.as_primitive_opt::<Int64Type>());
    let i = |name| typed(batch, name, |a| a.as_primitive_opt::<Int32Type>());
    let (event_id, event_type, actor, target, tenant) = (
        s("event_id")?,
        s("event_type")?,
        s("actor_id")?,
        s("target_id")?,
        s("tenant_id")?,
    );
    let (item, chat) = (s("item_id")?, s("recent_chat_log")?);
    let (amount, price, offset) = (
        l("currency_amount")?,
        l("market_avg_price")?,
        l("kafka_offset")?,
    );
    let (level, age, partition) = (
        i("actor_level")?,
        i("account_age_days")?,
        i("kafka_partition")?,
    );
    let ts = typed(batch, "timestamp", |a| {
        a.as_primitive_opt::<TimestampMicrosecondType>()
    })?;
    let opt_s = |a: &arrow_array::StringArray, r| (!a.is_null(r)).then(|| a.value(r).to_owned());
    Ok((0..batch.num_rows())
        .map(|r| {
            let e = GameEvent {
                event_id: event_id.value(r).to_owned(),
                timestamp: EventTime::from_micros(ts.value(r)),
                event_type: event_type.value(r).to_owned(),
                actor_id: actor.value(r).to_owned(),
                target_id: target.value(r).to_owned(),
                action_details: ActionDetails {
                    currency_amount: amount.value(r),
                    item_id: opt_s(item, r),
                    market_avg_price: (!price.is_null(r)).then(|| price.value(r)),
                },
                context_metadata: ContextMetadata {
                    actor_level: level.value(r),
                    account_age_days: age.value(r),
                    recent_chat_log: opt_s(chat, r),
                },
                tenant_id: tenant.value(r).to_owned(),
            };
            ((ts.value(r), partition.value(r), offset.value(r)), e)
        })
        .collect())
}

/// Any table's rows as JSON objects (timestamps as RFC 3339), with their
/// order keys; `time_column` names the event-time column.
pub fn json_rows(batch: &RecordBatch, time_column: &str) -> Result<Vec<JsonRow>, RowError> {
    let times = typed(batch, time_column, |a| {
        a.as_primitive_opt::<TimestampMicrosecondType>()
    })?;
    let partition = typed(batch, "kafka_partition", |a| {
        a.as_primitive_opt::<Int32Type>()
    })?;
    let offset = typed(batch, "kafka_offset", |a| a.as_primitive_opt::<Int64Type>())?;
    let schema = batch.schema();
    let mut rows: Vec<JsonRow> = (0..batch.num_rows())
        .map(|r| {
            (
                (times.value(r), partition.value(r), offset.value(r)),
                Map::new(),
            )
        })
        .collect();
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        for (r, (_, row)) in rows.iter_mut().enumerate() {
            let v = if array.is_null(r) {
                Value::Null
            } else {
                match field.data_type() {
                    DataType::Utf8 => Value::from(array.as_string::<i32>().value(r)),
                    DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(r)),
                    DataType::Int32 => Value::from(array.as_primitive::<Int32Type>().value(r)),
                    DataType::Boolean => Value::from(array.as_boolean().value(r)),
                    DataType::Timestamp(TimeUnit::Microsecond, _) => Value::from(
                        EventTime::from_micros(
                            array.as_primitive::<TimestampMicrosecondType>().value(r),
                        )
                        .to_rfc3339(),
                    ),
                    other => {
                        return Err(RowError {
                            column: field.name().clone(),
                            detail: format!("type {other} is not archived by Kusanagi"),
                        });
                    }
                }
            };
            row.insert(field.name().clone(), v);
        }
    }
    Ok(rows)
}

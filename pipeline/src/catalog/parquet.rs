//! Parquet in and out, as every writer and reader of the archive does it
//! (the archive stage, the tier stage, the purge, `verify`, `restore`):
//! one set of encodings and compression, one checksum.

use arrow_array::RecordBatch;
use arrow_schema::{DataType, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `batches` as one Parquet file, zstd at `zstd_level`.
///
/// Encodings chosen per column: ids unique per row (`event_id`,
/// `source_id`) are delta-encoded strings, event times and offsets
/// delta-encoded integers (a dictionary of unique values only costs);
/// every other column gets a dictionary. Statistics are kept per column
/// chunk (enough to prune files and row groups), and the Arrow schema is
/// not embedded: the Parquet types say it all, and small files stay small.
pub fn write_batches(
    schema: SchemaRef,
    batches: &[RecordBatch],
    zstd_level: i32,
) -> Result<Vec<u8>, ParquetError> {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(zstd_level)?))
        .set_statistics_enabled(EnabledStatistics::Chunk);
    for field in schema.fields() {
        let encoding = match (field.name().as_str(), field.data_type()) {
            ("event_id" | "source_id", _) => Some(Encoding::DELTA_BYTE_ARRAY),
            ("kafka_offset", _) | (_, DataType::Timestamp(..)) => {
                Some(Encoding::DELTA_BINARY_PACKED)
            }
            _ => None,
        };
        if let Some(encoding) = encoding {
            let column = ColumnPath::from(field.name().as_str());
            props = props
                .set_column_dictionary_enabled(column.clone(), false)
                .set_column_encoding(column, encoding);
        }
    }
    let options = ArrowWriterOptions::new()
        .with_properties(props.build())
        .with_skip_arrow_metadata(true);
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new_with_options(&mut out, schema, options)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(out)
}

/// Every row of a Parquet file, as Arrow batches.
pub fn read_batches(bytes: Bytes) -> Result<Vec<RecordBatch>, ParquetError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    reader
        .map(|b| b.map_err(|e| ParquetError::ArrowError(e.to_string())))
        .collect()
}

/// Decodes every page of a Parquet file and counts its rows: a file that
/// cannot be read whole is an error.
pub fn count_rows(bytes: Bytes) -> Result<u64, ParquetError> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.build()?;
    let mut rows = 0u64;
    for batch in reader {
        rows += batch?.num_rows() as u64;
    }
    Ok(rows)
}

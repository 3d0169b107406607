//! The errors of the event contract.

use thiserror::Error;

/// Why an inbound record is not a valid GameEvent.
///
/// Always the producer's fault and never helped by a retry: the ingest
/// stage dead-letters the record with [`InvalidEvent::reason`] and the HTTP
/// API answers 400 (not JSON) or 422 (JSON, but not a valid event) naming
/// [`InvalidEvent::field`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum InvalidEvent {
    /// The bytes are not a JSON document (or not UTF-8).
    #[error("not valid JSON: {detail}")]
    Malformed {
        /// The parser's message, with line and column.
        detail: String,
    },
    /// The document is JSON but not an object.
    #[error("expected a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type found instead.
        found: &'static str,
    },
    /// A required field is absent or null.
    #[error("missing required field `{field}`")]
    MissingField {
        /// Dotted path of the field.
        field: String,
    },
    /// A field has the wrong JSON type.
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// Dotted path of the field.
        field: String,
        /// The type the contract requires.
        expected: &'static str,
        /// The JSON type found.
        found: String,
    },
    /// A field has the right type but a value outside the contract.
    #[error("field `{field}`: expected {expected}, found {found}")]
    InvalidValue {
        /// Dotted path of the field.
        field: String,
        /// What the contract requires.
        expected: &'static str,
        /// The value found (shortened when long).
        found: String,
    },
    /// The record is larger than the configured limit.
    #[error("record is {bytes} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Size of the record.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
}

impl InvalidEvent {
    /// A stable, low-cardinality code for metrics labels and dead-letter
    /// headers: `invalid_json`, `not_an_object`, `missing_field`,
    /// `wrong_type`, `invalid_value` or `too_large`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed { .. } => "invalid_json",
            Self::NotAnObject { .. } => "not_an_object",
            Self::MissingField { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::InvalidValue { .. } => "invalid_value",
            Self::TooLarge { .. } => "too_large",
        }
    }

    /// Every reason code [`InvalidEvent::reason`] can return.
    pub const REASONS: [&'static str; 6] = [
        "invalid_json",
        "not_an_object",
        "missing_field",
        "wrong_type",
        "invalid_value",
        "too_large",
    ];

    /// The dotted path of the offending field, when one field is at fault.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::MissingField { field }
            | Self::WrongType { field, .. }
            | Self::InvalidValue { field, .. } => Some(field),
            _ => None,
        }
    }

    /// True when the input is not even JSON (HTTP 400 rather than 422).
    pub fn is_syntax(&self) -> bool {
        matches!(self, Self::Malformed { .. } | Self::TooLarge { .. })
    }
}

/// Why Avro bytes could not be encoded or decoded.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes do not start with the Avro single-object marker `C3 01`.
    #[error("not Avro single-object encoded: expected marker C3 01, found {found:02X?}")]
    NotSingleObject {
        /// The first bytes found.
        found: Vec<u8>,
    },
    /// The writer schema's fingerprint is not one this reader knows.
    #[error("unknown writer schema fingerprint {fingerprint:016x}; register the schema first")]
    UnknownSchema {
        /// CRC-64-AVRO (Rabin) fingerprint from the header.
        fingerprint: u64,
    },
    /// The Avro body does not match the schema, or a schema is invalid.
    #[error("avro: {0}")]
    Avro(String),
    /// The datum decoded but does not hold a valid record of the expected
    /// type (the message names the type).
    #[error("decoded datum does not fit: {0}")]
    Shape(String),
}

impl From<apache_avro::Error> for CodecError {
    fn from(e: apache_avro::Error) -> Self {
        Self::Avro(e.to_string())
    }
}

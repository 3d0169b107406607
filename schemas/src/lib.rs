//! Kusanagi's event contract.
//!
//! | module | what |
//! |---|---|
//! | [`event`] | [`GameEvent`] v1, the Rust type every stage uses |
//! | [`json`] | JSON in: the Susanoh `GameEventLog` shape, validated, defaults applied |
//! | [`avro`] | Avro out: single-object encoding with schema resolution |
//! | [`error`] | [`InvalidEvent`] (the producer's fault) and [`CodecError`] |
//!
//! The schema files themselves ship in `avro/` (Avro) and `json/` (JSON
//! Schema for the HTTP API); `docs/event-contract.md` explains the wire format.
#![warn(missing_docs)]

pub mod avro;
pub mod error;
pub mod event;
pub mod json;

pub use avro::GameEventCodec;
pub use error::{CodecError, InvalidEvent};
pub use event::{ActionDetails, ContextMetadata, EventTime, GameEvent};
pub use json::parse_event;

/// The JSON Schema of GameEvent v1 for the HTTP API (`json/game_event.v1.schema.json`).
pub const GAME_EVENT_V1_JSON_SCHEMA: &str = include_str!("../json/game_event.v1.schema.json");

//! Kusanagi's event contract.
//!
//! | module | what |
//! |---|---|
//! | [`event`] | [`GameEvent`] v1, the Rust type every stage uses |
//! | [`json`] | JSON in: the Susanoh `GameEventLog` shape, validated, defaults applied |
//! | [`avro`] | Avro out: single-object encoding with schema resolution |
//! | [`error`] | [`InvalidEvent`] (the producer's fault) and [`CodecError`] |
//! | [`screening`] | [`Rule`], [`WindowProfile`], [`Screening`] (topic `screenings`) |
//! | [`verdict`] | [`L2Request`] and [`Verdict`] (topics `l2.requests`, `l2.verdicts`) |
//! | [`state`] | [`AccountState`] and the moves between states |
//! | [`account`] | [`Account`] (`accounts`), [`Transition`] (`accounts.transitions`) |
//! | [`gdpr`] | [`ErasureRequest`] (`erasures`), [`AuditRecord`] (`audit`), [`subject_hash`] |
//! | [`key`] | [`AccountKey`]: an account is (tenant, id); its key in `accounts` |
//! | [`codec`] | [`RecordCodec`]: Avro single-object encoding of the types above |
//!
//! The schema files themselves ship in `avro/` (Avro) and `json/` (JSON
//! Schema for the HTTP API); `docs/event-contract.md` explains the wire format.
#![warn(missing_docs)]

pub mod account;
pub mod avro;
pub mod codec;
pub mod error;
pub mod event;
pub mod gdpr;
pub mod json;
pub mod key;
pub mod screening;
pub mod state;
pub mod verdict;

pub use account::{Account, AccountState, QueuedRequest, Transition, Trigger};
pub use avro::GameEventCodec;
pub use codec::{AvroRecord, RecordCodec};
pub use error::{CodecError, InvalidEvent};
pub use event::{ActionDetails, ContextMetadata, EventTime, GameEvent};
pub use gdpr::{AuditKind, AuditRecord, ErasureRequest, subject_hash};
pub use json::parse_event;
pub use key::{AccountKey, StoredKey};
pub use screening::{EvidenceEvent, Rule, RuleSet, Screening, WindowProfile};
pub use verdict::{FraudType, L2Request, Verdict, action_for_score};

/// The JSON Schema of GameEvent v1 for the HTTP API (`json/game_event.v1.schema.json`).
pub const GAME_EVENT_V1_JSON_SCHEMA: &str = include_str!("../json/game_event.v1.schema.json");

//! Kusanagi's connectors: everything that talks to a system outside the process.
//!
//! | module | what |
//! |---|---|
//! | [`kafka`] | rdkafka clients configured for exactly-once, topic admin, and the embedded broker |
//! | [`llm`] | LLM providers over HTTP (OpenAI-compatible, Gemini): rate limit, retries, classified failures |
//! | [`storage`] | object-storage tiers (memory, local folder, S3) named by URL |
//! | [`secrets`] | which settings are secrets, and how they are printed |
//! | [`error`] | [`ConnectorError`], saying whose fault a failure is and whether a retry helps |
#![warn(missing_docs)]

pub mod error;
pub mod kafka;
pub mod llm;
pub mod secrets;
pub mod storage;

pub use error::{ConnectorError, ErrorClass};

//! Kusanagi's connectors: everything that talks to a system outside the process.
//!
//! | module | what |
//! |---|---|
//! | [`kafka`] | rdkafka clients configured for exactly-once, topic admin, and the embedded broker |
//! | [`error`] | [`ConnectorError`], saying whose fault a failure is and whether a retry helps |
#![warn(missing_docs)]

pub mod error;
pub mod kafka;

pub use error::ConnectorError;

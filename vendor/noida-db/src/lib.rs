//! noida-db: one tiny local binary standing in for Postgres, MySQL, Redis,
//! Kafka, Elasticsearch, ClickHouse and MongoDB during
//! development.
//!
//! Each service is a module behind its own Cargo feature. [Kusanagi patch]
//! Only `kafka` is kept; the trimmed services' module declarations are gone
//! too (see PATCHES.md).

pub mod activity;
pub mod cli;
pub mod config;
pub mod control;
pub mod lifecycle;
pub mod persistence;
pub mod services;

#[cfg(feature = "kafka")]
pub mod kafka;

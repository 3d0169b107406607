//! Kusanagi's pipeline: the stage runtime, the stages, the HTTP API and
//! what the `kusanagi` command runs.
//!
//! The modules, each using only those above it (no circles; checked by
//! reading the `use crate::` lines):
//!
//! | module | what |
//! |---|---|
//! | [`catalog`] | the archive catalog: Parquet files per tier, their contents and checksums, archived offsets; atomic commits; the Parquet reading and writing every archive writer shares ([`catalog::parquet`]) |
//! | [`config`] | the topology file, typed and validated, each stage's settings included ([`config::stages`]); environment overrides |
//! | [`runtime`] | the [`runtime::Stage`] trait and the one [`runtime::StageLoop`] that runs every consuming stage (a Kafka transaction per batch, or a [`runtime::Sink`]'s commit); its ports on Kafka; metrics; dead letters |
//! | [`erasure`] | GDPR erasure: requests, the subjects' secret salt, certificates |
//! | [`stages`] | one folder per stage, each building itself from the topology ([`stages::registry`]), in data-flow order: [`stages::ingest`] (`events.raw` -> `events`), [`stages::screen`] (-> `screenings`), [`stages::decide`] (-> `accounts`, `l2.requests`), [`stages::analyze`] (-> `l2.verdicts`), [`stages::view`] (the state API), [`stages::archive`] (-> Parquet), [`stages::tier`] and [`stages::compact`] (the archive's tiers and erasures) |
//! | [`api`] | HTTP: event intake, health, metrics |
//! | [`ops`] | operator commands over the archive: verify, restore, stats, catalog |
//! | [`demo`] | synthetic game traffic with RMT patterns, a live status line and a summary |
//! | [`run`] | starting a process: broker, topics, the registry's stages on threads sharing one tokio runtime, HTTP |
#![warn(missing_docs)]

pub mod api;
pub mod catalog;
pub mod config;
pub mod demo;
pub mod erasure;
pub mod ops;
pub mod run;
pub mod runtime;
pub mod stages;

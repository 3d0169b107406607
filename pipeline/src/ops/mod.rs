//! Operator work over the archive (`kusanagi catalog`, `verify`,
//! `restore`; `tier` is the tier stage's pass, `stats` the catalog's). Each
//! returns a report; the binary (`src/commands/`) prints it and shows
//! progress.
//!
//! | module | what |
//! |---|---|
//! | [`verify`] | re-read every file: size, SHA-256, rows; nothing unlisted |
//! | [`restore`] | a time range of a table, in event-time order, from any tier |
//! | [`rows`] | Parquet rows back to events or JSON objects |

pub mod restore;
pub mod rows;
pub mod verify;

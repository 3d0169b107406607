//! Operator commands over the archive (`kusanagi catalog`, `verify`,
//! `restore`, `stats`; `tier` is the tier stage's pass). Each returns a
//! report; the binary prints it and shows progress.
//!
//! | module | what |
//! |---|---|
//! | [`commands`] | the commands as the binary runs them: progress and output |
//! | [`verify`] | re-read every file: size, SHA-256, rows; nothing unlisted |
//! | [`restore`] | a time range of a table, in event-time order, from any tier |
//! | [`rows`] | Parquet rows back to events or JSON objects |
//! | [`erasures`] | erasures recorded in the catalog; certificates |

pub mod commands;
pub mod erasures;
pub mod restore;
pub mod rows;
pub mod verify;

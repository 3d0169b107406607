//! GDPR erasure, end to end:
//! 1. `kusanagi erase` / `POST /api/v1/erasures` publish an
//!    `ErasureRequest` to the compacted `erasures` topic, keyed by the
//!    subject (an account id).
//! 2. At once, the logical delete: every view copy answers 410 for the
//!    subject; decide drops its account state and writes the `accounts`
//!    tombstone with a `DELETE_MARKER` audit record; the compact stage
//!    marks the subject deleted in the archive catalog, after which
//!    `restore` and every export skip its rows.
//! 3. The purge (the compact stage): every archive file whose subject
//!    filter may hold the subject is read; those that hold it are
//!    rewritten without its rows and swapped in by one catalog commit.
//! 4. A deletion certificate, signed with the deployment's ed25519 key,
//!    is stored in the archive and listed by `kusanagi erasures ls`.
//!
//! Subjects are named outside Kafka only by their salted hash
//! ([`secrets::Secrets::subject_hash`]).

pub mod certificate;
pub mod erased;
mod error;
pub mod secrets;

pub use erased::Erased;
pub use error::ErasureError;
pub use secrets::Secrets;

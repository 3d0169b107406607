//! The GDPR records: [`ErasureRequest`] (topic `erasures`) and
//! [`AuditRecord`] (topic `audit`), and how a subject is named without
//! being named: [`subject_hash`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::EventTime;

/// A request to erase a data subject (an account id, as `actor_id` or
/// `target_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureRequest {
    /// Unique per request.
    pub request_id: String,
    /// The account id to erase (the topic's key).
    pub subject: String,
    /// When it was asked for.
    #[serde(with = "crate::codec::micros")]
    pub requested_at: EventTime,
    /// Who asked (an API key's name, `cli:<user>`).
    pub requested_by: String,
}

/// What an audit record records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuditKind {
    /// An erasure was asked for.
    ErasureRequested,
    /// The subject was marked deleted (the logical delete).
    DeleteMarker,
    /// An archive file was rewritten without the subject's rows.
    FileRewritten,
    /// A deletion certificate was issued.
    CertificateIssued,
    /// An operator moved an account's state by hand.
    StateOverride,
    /// Another administrative action.
    AdminAction,
}

/// One audited step; no personal data (a subject only as its hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Unique per record.
    pub audit_id: String,
    /// When it happened.
    #[serde(with = "crate::codec::micros")]
    pub at: EventTime,
    /// What happened.
    pub kind: AuditKind,
    /// [`subject_hash`] of the subject concerned, if any.
    pub subject_hash: Option<String>,
    /// Who acted.
    pub actor: String,
    /// The erasure request it belongs to, if any.
    pub request_id: Option<String>,
    /// What happened, without personal data.
    pub detail: String,
}

/// The salted SHA-256 of `subject`, as 64 hex digits: how audit records and
/// certificates name a subject. The salt is the deployment's secret, so the
/// hash of a guessed id cannot be computed without it.
pub fn subject_hash(salt: &[u8], subject: &str) -> String {
    let mut h = Sha256::new();
    h.update((salt.len() as u64).to_be_bytes());
    h.update(salt);
    h.update(subject.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_hash_depends_on_the_salt_and_never_shows_the_subject() {
        let a = subject_hash(b"salt-1", "player-42");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("player"));
        assert_eq!(a, subject_hash(b"salt-1", "player-42"));
        assert_ne!(a, subject_hash(b"salt-2", "player-42"));
        assert_ne!(a, subject_hash(b"salt-1", "player-43"));
        // The salt's length is hashed too: ("ab", "c") is not ("a", "bc").
        assert_ne!(subject_hash(b"ab", "c"), subject_hash(b"a", "bc"));
    }
}

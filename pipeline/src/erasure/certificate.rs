//! Deletion certificates: what an erasure removed, where, and when, signed
//! with the deployment's ed25519 key.
//!
//! A certificate is built from the archive catalog alone (the erasure and
//! the purges recorded there), so making it again gives the same bytes:
//! ed25519 signatures are deterministic and nothing in it is taken from
//! the clock of the process that writes it.
//!
//! The file is the pretty JSON of [`Certificate`]. [`verify`] re-renders
//! what it reads and requires the very same bytes, then checks the
//! signature over the compact JSON of the body: a change of any byte, even
//! of white space, fails.

use ed25519_dalek::{Signature, Signer, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::secrets::{Secrets, hex, parse_hex32};
use crate::catalog::{ErasureState, Tier};

/// The format named in every certificate.
pub const FORMAT: &str = "kusanagi-deletion-certificate/1";

/// One file rewritten without the subject's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifiedFile {
    /// The tier.
    pub tier: Tier,
    /// Its path in the tier.
    pub path: String,
    /// SHA-256 before the rewrite.
    pub sha256_before: String,
    /// SHA-256 after (`null`: every row was the subject's; the file is gone).
    pub sha256_after: Option<String>,
    /// Rows removed.
    pub rows_removed: u64,
}

/// A Kafka topic that may still hold the subject's records until its
/// retention ages them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRetention {
    /// The topic.
    pub topic: String,
    /// Its `retention.ms` (`-1`: forever; `null`: the brokers' default).
    pub retention_ms: Option<i64>,
    /// What it holds and how the subject leaves it.
    pub note: String,
}

/// What a certificate states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// [`FORMAT`].
    pub format: String,
    /// The erasure request.
    pub request_id: String,
    /// The salted hash of the subject (never the id).
    pub subject_hash: String,
    /// Who asked.
    pub requested_by: String,
    /// When it was asked for (RFC 3339).
    pub requested_at: String,
    /// When the archive marked the subject deleted.
    pub marked_deleted_at: String,
    /// When the last purge was committed: from then on no archive file
    /// holds the subject.
    pub completed_at: String,
    /// The catalog version of that commit.
    pub catalog_version: u64,
    /// Every file rewritten.
    pub files: Vec<CertifiedFile>,
    /// Rows removed in all.
    pub rows_removed: u64,
    /// Compacted topics where a tombstone removes the subject.
    pub tombstoned_topics: Vec<String>,
    /// Topics that age the subject's records out on their own.
    pub retained_topics: Vec<TopicRetention>,
}

/// A signed certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// What is certified.
    pub body: Body,
    /// The ed25519 public key that signed it, 64 hex digits.
    pub public_key: String,
    /// The signature of the body's compact JSON, 128 hex digits.
    pub signature: String,
}

/// Why a certificate does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// Not a certificate at all.
    #[error("not a deletion certificate: {0}")]
    Unreadable(String),
    /// The bytes are not exactly those its signer wrote.
    #[error("the file was changed after it was signed (its bytes are not the signed rendering)")]
    Altered,
    /// Signed by another key than the one expected.
    #[error("signed by key {found}, expected {expected}")]
    OtherKey {
        /// The key it names.
        found: String,
        /// The key expected.
        expected: String,
    },
    /// The signature does not match the body.
    #[error("the signature does not match what it certifies")]
    BadSignature,
}

/// The certificate of `erasure`, as the catalog records it, or `None` if
/// it has not been purged yet.
pub fn certify(
    erasure: &ErasureState,
    tombstoned_topics: Vec<String>,
    retained_topics: Vec<TopicRetention>,
    secrets: &Secrets,
) -> Option<Certificate> {
    let completed_at_ms = erasure.purged_at_ms?;
    let e = &erasure.erasure;
    let files: Vec<CertifiedFile> = erasure
        .files
        .iter()
        .map(|f| CertifiedFile {
            tier: f.tier,
            path: f.path.clone(),
            sha256_before: f.sha256_before.clone(),
            sha256_after: f.sha256_after.clone(),
            rows_removed: f.rows_removed,
        })
        .collect();
    let body = Body {
        format: FORMAT.into(),
        request_id: e.request_id.clone(),
        subject_hash: e.subject_hash.clone(),
        requested_by: e.requested_by.clone(),
        requested_at: rfc3339(e.requested_at_ms),
        marked_deleted_at: rfc3339(erasure.marked_at_ms),
        completed_at: rfc3339(completed_at_ms),
        catalog_version: erasure.purged_in_version.unwrap_or_default(),
        rows_removed: files.iter().map(|f| f.rows_removed).sum(),
        files,
        tombstoned_topics,
        retained_topics,
    };
    let signature = secrets.signing_key().sign(&signed_bytes(&body));
    Some(Certificate {
        body,
        public_key: secrets.public_key_hex(),
        signature: hex(&signature.to_bytes()),
    })
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn signed_bytes(body: &Body) -> Vec<u8> {
    serde_json::to_vec(body).expect("a certificate body is plain data")
}

impl Certificate {
    /// The file's bytes (pretty JSON and a final newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a certificate is plain data");
        out.push(b'\n');
        out
    }
}

/// Checks the certificate file `bytes`: unchanged, signed by the key it
/// names and, if given, by `expected_key` (64 hex digits).
pub fn verify(bytes: &[u8], expected_key: Option<&str>) -> Result<Certificate, Invalid> {
    let cert: Certificate =
        serde_json::from_slice(bytes).map_err(|e| Invalid::Unreadable(e.to_string()))?;
    if cert.body.format != FORMAT {
        return Err(Invalid::Unreadable(format!(
            "format {:?}, expected {FORMAT:?}",
            cert.body.format
        )));
    }
    if cert.to_bytes() != bytes {
        return Err(Invalid::Altered);
    }
    if let Some(expected) = expected_key
        && !expected.trim().eq_ignore_ascii_case(&cert.public_key)
    {
        return Err(Invalid::OtherKey {
            found: cert.public_key.clone(),
            expected: expected.trim().to_owned(),
        });
    }
    let key = parse_hex32(&cert.public_key)
        .and_then(|k| VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| Invalid::Unreadable("public_key is not an ed25519 key".into()))?;
    let sig = parse_hex64(&cert.signature)
        .map(|s| Signature::from_bytes(&s))
        .ok_or_else(|| Invalid::Unreadable("signature is not 128 hex digits".into()))?;
    key.verify(&signed_bytes(&cert.body), &sig)
        .map_err(|_| Invalid::BadSignature)?;
    Ok(cert)
}

/// 128 hex digits as 64 bytes. (Slicing the text in halves would panic on
/// a multi-byte character across the middle.)
fn parse_hex64(s: &str) -> Option<[u8; 64]> {
    let mut out = [0u8; 64];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_of_128_bytes_that_are_not_hex_is_unreadable() {
        assert!(parse_hex64(&"ab".repeat(64)).is_some());
        // 128 bytes, a two-byte character across the middle.
        let across = format!("{}é{}", "a".repeat(63), "a".repeat(63));
        assert_eq!(across.len(), 128);
        assert!(parse_hex64(&across).is_none());
        assert!(parse_hex64(&"é".repeat(64)).is_none());
        assert!(parse_hex64(&"ab".repeat(63)).is_none());
    }
    use crate::catalog::{Erasure, PurgedFile};

    fn erasure() -> ErasureState {
        ErasureState {
            erasure: Erasure {
                request_id: "er-1".into(),
                subject_hash: "ab".repeat(32),
                requested_at_ms: 1_000,
                requested_by: "cli:test".into(),
            },
            marked_at_ms: 2_000,
            files: vec![PurgedFile {
                tier: Tier::Warm,
                path: "events/tenant=t/dt=2026-11-01/hour=00/x.parquet".into(),
                sha256_before: "11".repeat(32),
                sha256_after: Some("22".repeat(32)),
                rows_before: 10,
                rows_removed: 3,
            }],
            purged_at_ms: Some(3_000),
            purged_in_version: Some(7),
            files_opened: 3,
            files_listed: 40,
        }
    }

    #[test]
    fn a_certificate_verifies_and_any_changed_byte_fails() {
        let secrets = Secrets::from_parts(b"0123456789abcdef", [7; 32]);
        let retained = vec![TopicRetention {
            topic: "events.raw".into(),
            retention_ms: Some(604_800_000),
            note: "raw events".into(),
        }];
        let cert = certify(
            &erasure(),
            vec!["accounts".into()],
            retained.clone(),
            &secrets,
        )
        .expect("purged");
        let bytes = cert.to_bytes();
        assert_eq!(verify(&bytes, None).unwrap(), cert);
        assert!(verify(&bytes, Some(&secrets.public_key_hex())).is_ok());
        let again = certify(&erasure(), vec!["accounts".into()], retained, &secrets).unwrap();
        assert_eq!(
            again.to_bytes(),
            bytes,
            "the same catalog certifies the same bytes"
        );
        assert_eq!(cert.body.rows_removed, 3);
        assert_eq!(cert.body.completed_at, "1970-01-01T00:00:03.000Z");
        // Every single byte changed makes it fail.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] = if bad[i] == b'0' { b'1' } else { b'0' };
            assert!(
                verify(&bad, None).is_err(),
                "byte {i} changed and still verified"
            );
        }
        // A certificate re-signed with another key is refused against ours.
        let other = Secrets::from_parts(b"0123456789abcdef", [8; 32]);
        let forged = certify(&erasure(), vec![], vec![], &other)
            .unwrap()
            .to_bytes();
        assert!(verify(&forged, None).is_ok());
        assert!(matches!(
            verify(&forged, Some(&secrets.public_key_hex())),
            Err(Invalid::OtherKey { .. })
        ));
    }

    #[test]
    fn nothing_is_certified_before_a_purge() {
        let secrets = Secrets::from_parts(b"0123456789abcdef", [7; 32]);
        let mut e = erasure();
        e.purged_at_ms = None;
        assert!(certify(&e, vec![], vec![], &secrets).is_none());
    }
}

//! The compact stage as a [`Stage`] of the transactional loop: each
//! erasure request of a batch is purged, certified and audited; the audit
//! records commit with the batch's offsets.

use kusanagi_connectors::storage::TierStore;
use kusanagi_schemas::{AuditKind, AuditRecord, ErasureRequest, EventTime, RecordCodec};

use super::purge::{PurgeReport, Step, Target, purge};
use crate::catalog::{Catalog, Erasure, Tiers};
use crate::config::Topology;
use crate::erasure::Secrets;
use crate::erasure::certificate::{TopicRetention, certify};
use crate::runtime::dead_letter::reject_record;
use crate::runtime::trace::TraceCause;
use crate::runtime::{InRecord, OutRecord, Stage, StageError};
use crate::stages::tier::mover::Rewrite;

/// The stage's name in metrics and logs.
pub const STAGE: &str = "compact";

/// Where the certificate of `request_id` is kept in the catalog's store.
pub fn certificate_path(request_id: &str) -> String {
    format!("certificates/{request_id}.json")
}

/// The topics the stage reads and writes, and what a certificate says of
/// them.
#[derive(Debug, Clone)]
pub struct CompactTopics {
    /// Input: erasure requests.
    pub erasures: String,
    /// Output: the audit trail.
    pub audit: String,
    /// Output: requests that cannot be decoded.
    pub dead_letter: String,
    /// Compacted topics where decide writes the subject's tombstone.
    pub tombstoned: Vec<String>,
    /// Topics that keep the subject's records until retention.
    pub retained: Vec<TopicRetention>,
}

impl CompactTopics {
    /// The topics of `topology`.
    pub fn of(topology: &Topology) -> Self {
        let t = &topology.topics;
        let raw = Some(t.raw_retention_ms);
        let keep = |topic: &str, retention_ms: Option<i64>, note: &str| TopicRetention {
            topic: topic.to_owned(),
            retention_ms,
            note: note.to_owned(),
        };
        let broker_default =
            "the brokers' default retention (log.retention.hours; 168 in Apache Kafka)";
        Self {
            erasures: t.erasures.clone(),
            audit: t.audit.clone(),
            dead_letter: t.dead_letter.clone(),
            tombstoned: vec![t.accounts.clone()],
            retained: vec![
                keep(&t.raw, raw, "events as producers sent them"),
                keep(&t.dead_letter, raw, "rejected records, as sent"),
                keep(
                    &t.events,
                    None,
                    &format!("validated events; {broker_default}"),
                ),
                keep(
                    &t.screenings,
                    Some(t.evidence_retention_ms),
                    "L1 screenings; a screened event's record carries the newest events of its \
                     window, with the senders' chat unless the tenant's include_chat is false",
                ),
                keep(
                    &t.l2_requests,
                    Some(t.evidence_retention_ms),
                    "L2 requests: the newest events of a window, with the senders' chat unless \
                     the tenant's include_chat is false",
                ),
                keep(
                    &t.l2_verdicts,
                    None,
                    &format!(
                        "L2 verdicts, whose reasoning may quote the evidence it was given; \
                         {broker_default}"
                    ),
                ),
                keep(
                    &t.transitions,
                    Some(t.transitions_retention_ms),
                    "account moves (the state API forgets the subject at once)",
                ),
                keep(
                    &t.accounts,
                    None,
                    "latest account states (compacted): the subject's own record is tombstoned \
                     at once; another account's queued L2 request may quote the subject's events \
                     and chat until it is sent and compaction drops that record",
                ),
                keep(
                    &t.erasures,
                    None,
                    "the erasure request itself, keyed by the subject (compacted): kept so \
                     that every copy of the state API answers 410 for it",
                ),
            ],
        }
    }
}

/// What the stage did, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CompactStats {
    /// Erasure requests carried out.
    pub requests: u64,
    /// Files opened by their purges.
    pub files_opened: u64,
    /// Files rewritten or removed.
    pub files_rewritten: u64,
    /// Rows removed.
    pub rows_removed: u64,
}

/// `erasures` -> purge, certificates, `audit`.
pub struct CompactStage {
    topics: CompactTopics,
    catalog: Catalog,
    catalog_store: TierStore,
    tiers: Tiers,
    secrets: Secrets,
    rewrite: Rewrite,
    /// The process's async runtime, for object storage.
    rt: tokio::runtime::Handle,
    requests: RecordCodec<ErasureRequest>,
    audit: RecordCodec<AuditRecord>,
    /// A test's crash point: the process aborts right after this step.
    abort_at: Option<String>,
    stats: CompactStats,
    /// What the current batch did, recorded when it commits.
    pending: Pending,
}

/// A batch's purge and requests, for the metrics once it commits.
#[derive(Debug, Default)]
struct Pending {
    purges: Vec<PurgeReport>,
    opened_per_request: Vec<u64>,
}

fn failed(message: impl std::fmt::Display) -> StageError {
    StageError::external(STAGE, message)
}

/// The test-only crash hook: `KUSANAGI_FAULT_COMPACT_ABORT_AT=<step>`
/// (`marked`, `staged`, `committed`, `swapped`, `certified`) makes the
/// process abort, as a `kill -9` would stop it, right after that step.
pub const ABORT_AT_ENV: &str = "KUSANAGI_FAULT_COMPACT_ABORT_AT";

impl CompactStage {
    /// Opens the catalog and the tiers of `topology`; `instance` names this
    /// copy in the catalog commits it makes; object-storage I/O runs on
    /// `rt`.
    pub fn new(
        topology: &Topology,
        secrets: Secrets,
        instance: &str,
        rt: tokio::runtime::Handle,
    ) -> Result<Self, StageError> {
        let archive = &topology.archive;
        let tiers = archive.open_tiers().map_err(failed)?;
        let catalog_store = archive.open_catalog_store().map_err(failed)?;
        let catalog = rt
            .block_on(Catalog::open(
                catalog_store.clone(),
                format!("compact@{instance}"),
            ))
            .map_err(failed)?;
        Ok(Self {
            topics: CompactTopics::of(topology),
            catalog,
            catalog_store,
            tiers,
            secrets,
            rewrite: Rewrite {
                zstd_level: topology.stages.compact.zstd_level,
                subject_filter_fpp: archive.subject_filter_fpp,
            },
            rt,
            requests: RecordCodec::new(),
            audit: RecordCodec::new(),
            abort_at: std::env::var(ABORT_AT_ENV).ok().filter(|s| !s.is_empty()),
            stats: CompactStats::default(),
            pending: Pending::default(),
        })
    }

    /// What the stage did so far.
    pub fn stats(&self) -> CompactStats {
        self.stats
    }

    fn crash_point(abort_at: Option<&str>, step: &str) {
        if abort_at == Some(step) {
            eprintln!("{ABORT_AT_ENV}={step}: aborting");
            std::process::abort();
        }
    }

    /// Purges the subjects of `requests` (one pass over the archive for
    /// all of them), then certifies and audits each.
    fn carry_out(
        &mut self,
        requests: &[ErasureRequest],
        out: &mut Vec<OutRecord>,
    ) -> Result<PurgeReport, StageError> {
        let targets: Vec<Target> = requests
            .iter()
            .map(|r| Target {
                erasure: Erasure {
                    request_id: r.request_id.clone(),
                    subject_hash: self.secrets.subject_hash(&r.subject),
                    requested_at_ms: r.requested_at.as_millis(),
                    requested_by: r.requested_by.clone(),
                },
                subject: r.subject.clone(),
            })
            .collect();
        let abort_at = self.abort_at.clone();
        let report = self
            .rt
            .block_on(purge(
                &mut self.catalog,
                &self.tiers,
                &targets,
                self.rewrite,
                |step: Step| Self::crash_point(abort_at.as_deref(), step.as_str()),
            ))
            .map_err(|e| failed(format!("purging {} requests: {e}", requests.len())))?;
        tracing::info!(
            stage = STAGE,
            requests = requests.len(),
            files_listed = report.files_listed,
            files_opened = report.files_opened,
            files_rewritten = report.files_rewritten,
            files_removed = report.files_removed,
            rows_removed = report.rows_removed,
            "erasures purged"
        );
        for (r, t) in requests.iter().zip(&targets) {
            let opened = report
                .requests
                .iter()
                .find(|q| q.request_id == r.request_id)
                .map_or(0, |q| q.files_opened);
            self.certify_and_audit(r, &t.erasure.subject_hash, opened, report.files_listed, out)?;
            self.pending.opened_per_request.push(opened);
        }
        self.pending.purges.push(report.clone());
        Self::crash_point(self.abort_at.as_deref(), "certified");
        Ok(report)
    }

    /// Writes the certificate of `r` (from the catalog) and queues its
    /// audit records.
    fn certify_and_audit(
        &mut self,
        r: &ErasureRequest,
        subject_hash: &str,
        files_opened: u64,
        files_listed: u64,
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        let state = self
            .catalog
            .state()
            .erasure(&r.request_id)
            .cloned()
            .ok_or_else(|| failed(format!("{} is not in the catalog", r.request_id)))?;
        let certificate = certify(
            &state,
            self.topics.tombstoned.clone(),
            self.topics.retained.clone(),
            &self.secrets,
        )
        .ok_or_else(|| failed(format!("{} has no purge in the catalog", r.request_id)))?;
        let path = certificate_path(&r.request_id);
        let bytes = certificate.to_bytes();
        let sha = crate::catalog::parquet::sha256_hex(&bytes);
        self.rt
            .block_on(self.catalog_store.put(&path, bytes.into()))
            .map_err(|e| failed(format!("writing {path}: {e}")))?;

        let hash = Some(subject_hash.to_owned());
        let mut audit = |suffix: String, kind: AuditKind, detail: String| {
            let record = AuditRecord {
                audit_id: format!("{}:{suffix}", r.request_id),
                at: EventTime::from_micros(chrono::Utc::now().timestamp_micros()),
                kind,
                subject_hash: hash.clone(),
                actor: STAGE.into(),
                request_id: Some(r.request_id.clone()),
                detail,
            };
            out.push(OutRecord {
                topic: self.topics.audit.clone(),
                partition: None,
                key: Some(r.request_id.clone().into_bytes()),
                payload: Some(self.audit.encode(&record)),
                headers: vec![],
                timestamp_ms: None,
                trace: TraceCause::None,
            });
        };
        audit(
            "requested".into(),
            AuditKind::ErasureRequested,
            format!(
                "requested by {} at {}",
                r.requested_by,
                r.requested_at.to_rfc3339()
            ),
        );
        audit(
            "marked".into(),
            AuditKind::DeleteMarker,
            "archive: marked deleted in the catalog (restore and exports skip it)".into(),
        );
        for f in &state.files {
            audit(
                format!("file:{}:{}", f.tier, f.path),
                AuditKind::FileRewritten,
                format!(
                    "{}:{}: {} of {} rows removed; sha256 {} -> {}",
                    f.tier,
                    f.path,
                    f.rows_removed,
                    f.rows_before,
                    f.sha256_before,
                    f.sha256_after.as_deref().unwrap_or("(file removed)")
                ),
            );
        }
        audit(
            "certificate".into(),
            AuditKind::CertificateIssued,
            format!(
                "{path} (sha256 {sha}): {} files, {} rows, completed {}; {files_opened} of {files_listed} files opened",
                certificate.body.files.len(),
                certificate.body.rows_removed,
                certificate.body.completed_at
            ),
        );
        self.stats.requests += 1;
        self.stats.files_opened += files_opened;
        self.stats.files_rewritten += certificate.body.files.len() as u64;
        self.stats.rows_removed += certificate.body.rows_removed;
        Ok(())
    }
}

/// Why an erasure request cannot be carried out (it is dead-lettered).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidErasure {
    /// The request id cannot name a certificate.
    #[error("request_id {0:?}: expected 1 to 128 of A-Z a-z 0-9 . _ : - (not starting with .)")]
    RequestId(String),
    /// The subject is not an account id (request id given).
    #[error("{0}: expected an account id of 1 to 256 bytes as the subject")]
    Subject(String),
}

/// A request Kusanagi can carry out: its id names the certificate's
/// object and its audit records, so it must be a plain name; its subject
/// an account id (what `kusanagi erase` and the API accept). Requests
/// written to `erasures` by another producer are checked here.
pub fn check_request(r: &ErasureRequest) -> Result<(), InvalidErasure> {
    let id_ok = !r.request_id.is_empty()
        && r.request_id.len() <= 128
        && r.request_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        && !r.request_id.starts_with('.');
    if !id_ok {
        return Err(InvalidErasure::RequestId(r.request_id.clone()));
    }
    if r.subject.trim().is_empty() || r.subject.len() > 256 {
        return Err(InvalidErasure::Subject(r.request_id.clone()));
    }
    Ok(())
}

impl Stage for CompactStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        let mut requests = Vec::new();
        for record in batch {
            // A withdrawn request (the topic's tombstone) undoes nothing.
            let Some(bytes) = record.payload else {
                continue;
            };
            match self.requests.decode(bytes) {
                Ok(r) => match check_request(&r) {
                    Ok(()) => requests.push(r),
                    Err(why) => out.push(reject_record(
                        STAGE,
                        &self.topics.dead_letter,
                        record,
                        "invalid_request",
                        why.to_string(),
                    )),
                },
                Err(e) => out.push(reject_record(
                    STAGE,
                    &self.topics.dead_letter,
                    record,
                    "undecodable",
                    e.to_string(),
                )),
            }
        }
        if !requests.is_empty() {
            self.carry_out(&requests, out)?;
        }
        Ok(())
    }

    fn on_rewind(&mut self, _assigned: &[crate::runtime::AssignedPartition]) {
        self.pending = Pending::default();
    }

    fn on_commit(&mut self, metrics: &crate::runtime::Metrics) {
        let pending = std::mem::take(&mut self.pending);
        for p in &pending.purges {
            metrics.erasure.purged(
                p.files_opened,
                p.files_listed,
                p.files_rewritten + p.files_removed,
                p.rows_removed,
            );
        }
        for opened in pending.opened_per_request {
            metrics.erasure.certified(opened);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_must_name_itself_plainly_and_an_account() {
        let r = |id: &str, subject: &str| ErasureRequest {
            request_id: id.into(),
            subject: subject.into(),
            requested_at: EventTime::from_micros(0),
            requested_by: "t".into(),
        };
        assert!(check_request(&r("er-20261130T010203.000001Z-0a1b2c3d", "player_1")).is_ok());
        for (id, subject, word) in [
            ("../../log/00000000000000000001", "p", "request_id"),
            ("", "p", "request_id"),
            ("a/b", "p", "request_id"),
            (".hidden", "p", "request_id"),
            ("er-1", " ", "subject"),
            ("er-1", &"x".repeat(300), "subject"),
        ] {
            let err = check_request(&r(id, subject)).unwrap_err().to_string();
            assert!(err.contains(word), "{id:?} {subject:?}: {err}");
        }
    }

    #[test]
    fn the_certificate_names_every_topic_that_carries_chat_with_its_retention() {
        let topology = Topology::default();
        let topics = CompactTopics::of(&topology);
        let week = Some(7 * 24 * 3_600_000);
        for name in ["l2.requests", "screenings"] {
            let t = topics
                .retained
                .iter()
                .find(|t| t.topic == name)
                .unwrap_or_else(|| panic!("{name} is not listed"));
            assert_eq!(t.retention_ms, week, "{name}");
            assert!(t.note.contains("chat"), "{name}: {}", t.note);
        }
        assert!(topics.retained.iter().any(|t| t.topic == "accounts"));
    }
}

//! The decide stage: `screenings` + `l2.verdicts` + `erasures` ->
//! `accounts` (latest state, compacted), `accounts.transitions` (every
//! move), `l2.requests` and `audit`, co-partitioned with its inputs.
//!
//! Both inputs are keyed by target_id and written to the partition number
//! of their source, so partition `p` of `screenings` and of `l2.verdicts`
//! concern the same accounts; the stage's consumer group uses the range
//! assignor, which gives one copy the same partition number of both topics.
//! State is the accounts of the owned partitions, rebuilt on assignment by
//! reading partition `p` of the compacted `accounts` topic to its end: the
//! stage writes each changed account there in the same transaction as the
//! input offsets, so what it reads is exactly the state at the committed
//! offsets.
//!
//! Accounts are (tenant, id) ([`kusanagi_schemas::key`]): partitions are
//! by id, and a partition's map tells tenants apart
//! ([`super::accounts::PartitionAccounts`]); `accounts` is keyed by the
//! pair, and a record written under the bare id before tenancy still loads.
//!
//! An erasure request (topic `erasures`, keyed by the subject and written
//! by Kusanagi's producers, so co-partitioned like the rest) drops the
//! subject's account from memory and writes its tombstone to `accounts`,
//! with a `DELETE_MARKER` audit record, in the same transaction: the state
//! cannot come back from a later rebuild, and a later screening of the id
//! starts a new account.

use std::collections::HashMap;

use kusanagi_schemas::{
    Account, AccountKey, AuditKind, AuditRecord, ErasureRequest, EventTime, L2Request, RecordCodec,
    Screening, Transition, Verdict,
};

mod records;

use super::accounts::PartitionAccounts;
use super::machine::Effects;
use crate::runtime::dead_letter::reject_record;
use crate::runtime::trace::TraceCause;
use crate::runtime::{
    AssignedPartition, InRecord, Metrics, OutRecord, PartitionSource, Partitions, ScreeningTally,
    Stage, StageError,
};

/// The stage's name in metrics and logs.
pub const STAGE: &str = "decide";

/// The topics the stage reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecideTopics {
    /// Input: L1 screenings.
    pub screenings: String,
    /// Input: L2 verdicts.
    pub verdicts: String,
    /// Output (compacted): latest state per account.
    pub accounts: String,
    /// Output: every move.
    pub transitions: String,
    /// Output: L2 requests.
    pub requests: String,
    /// Output: records that cannot be decoded.
    pub dead_letter: String,
    /// Input: erasure requests.
    pub erasures: String,
    /// Output: the audit trail.
    pub audit: String,
}

impl DecideTopics {
    /// The topics of a topology's `[topics]`.
    pub fn of(t: &crate::config::TopicsConfig) -> Self {
        Self {
            screenings: t.screenings.clone(),
            verdicts: t.l2_verdicts.clone(),
            accounts: t.accounts.clone(),
            transitions: t.transitions.clone(),
            requests: t.l2_requests.clone(),
            dead_letter: t.dead_letter.clone(),
            erasures: t.erasures.clone(),
            audit: t.audit.clone(),
        }
    }
}

enum PartitionState {
    Pending,
    Ready(PartitionAccounts),
}

/// What the stage did, for metrics and the demo.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DecideStats {
    /// Moves applied.
    pub applied: u64,
    /// Moves refused.
    pub refused: u64,
    /// L2 requests sent.
    pub requests: u64,
    /// Verdicts applied.
    pub verdicts: u64,
    /// Account records read back to rebuild state.
    pub rebuilt: u64,
    /// Erasure requests carried out (an account dropped and tombstoned).
    pub erased: u64,
}

/// `screenings` + `l2.verdicts` -> `accounts`, `accounts.transitions`, `l2.requests`.
pub struct DecideStage {
    topics: DecideTopics,
    screenings: RecordCodec<Screening>,
    verdicts: RecordCodec<Verdict>,
    accounts: RecordCodec<Account>,
    transitions: RecordCodec<Transition>,
    requests: RecordCodec<L2Request>,
    erasures: RecordCodec<ErasureRequest>,
    audit: RecordCodec<AuditRecord>,
    source: Box<dyn PartitionSource>,
    partitions: HashMap<i32, PartitionState>,
    stats: DecideStats,
    /// What the current batch did, recorded when it commits.
    tally: ScreeningTally,
}

impl DecideStage {
    /// A stage over `topics`, rebuilding account state through `source`.
    pub fn new(topics: DecideTopics, source: Box<dyn PartitionSource>) -> Self {
        Self {
            topics,
            screenings: RecordCodec::new(),
            verdicts: RecordCodec::new(),
            accounts: RecordCodec::new(),
            transitions: RecordCodec::new(),
            requests: RecordCodec::new(),
            erasures: RecordCodec::new(),
            audit: RecordCodec::new(),
            source,
            partitions: HashMap::new(),
            stats: DecideStats::default(),
            tally: ScreeningTally::default(),
        }
    }

    /// What the stage did so far.
    pub fn stats(&self) -> DecideStats {
        self.stats
    }

    /// The state of the account `id` of `tenant` if its partition is
    /// owned and rebuilt.
    pub fn account(&self, partition: i32, tenant: &str, id: &str) -> Option<&Account> {
        match self.partitions.get(&partition)? {
            PartitionState::Ready(accounts) => accounts.get(tenant, id),
            PartitionState::Pending => None,
        }
    }

    fn ready(&mut self, partition: i32) -> Result<(), StageError> {
        if matches!(
            self.partitions.get(&partition),
            Some(PartitionState::Ready(_))
        ) {
            return Ok(());
        }
        let mut accounts = PartitionAccounts::default();
        let mut undecodable = 0u64;
        let codec = &self.accounts;
        // To the end as it is now, waiting for a transaction still open
        // there (the previous owner's last batch, whose commit marker may
        // reach `accounts` after its offsets were committed).
        let fail = |message: kusanagi_connectors::ConnectorError| {
            StageError::external(
                STAGE,
                format!("rebuilding the accounts of partition {partition}: {message}"),
            )
        };
        let end = self
            .source
            .end(&self.topics.accounts, partition)
            .map_err(fail)?;
        let read = self
            .source
            .read(&self.topics.accounts, partition, 0, end, &mut |r| {
                match r.value.map(|v| codec.decode(v)) {
                    Some(Ok(a)) => {
                        accounts.apply_record(r.key, Some(a));
                    }
                    // A tombstone (an erased account) removes it.
                    None => {
                        accounts.apply_record(r.key, None);
                    }
                    Some(Err(_)) => undecodable += 1,
                }
            })
            .map_err(fail)?;
        tracing::info!(
            stage = STAGE,
            partition,
            read,
            undecodable,
            accounts = accounts.len(),
            "account state rebuilt from the changelog"
        );
        self.stats.rebuilt += read;
        self.partitions
            .insert(partition, PartitionState::Ready(accounts));
        Ok(())
    }

    fn out(
        &self,
        topic: &str,
        partition: i32,
        key: Vec<u8>,
        payload: Option<Vec<u8>>,
        trace: &TraceCause,
    ) -> OutRecord {
        OutRecord {
            topic: topic.to_owned(),
            partition: Some(partition),
            key: Some(key),
            payload,
            headers: vec![],
            timestamp_ms: None,
            trace: trace.clone(),
        }
    }

    /// Produces the moves and the L2 request of `effects`, in the trace of
    /// the record that caused them.
    fn emit(
        &mut self,
        partition: i32,
        effects: Effects,
        trace: &TraceCause,
        out: &mut Vec<OutRecord>,
    ) {
        for t in &effects.transitions {
            self.tally.account_move(t.to_state.as_str(), t.applied);
            if t.applied {
                self.stats.applied += 1;
            } else {
                self.stats.refused += 1;
                tracing::info!(stage = STAGE, account = %t.account_id, from = %t.from_state, to = %t.to_state, refusal = ?t.refusal, "move refused");
            }
            let payload = Some(self.transitions.encode(t));
            out.push(self.out(
                &self.topics.transitions,
                partition,
                t.account_id.as_bytes().to_vec(),
                payload,
                trace,
            ));
        }
        if let Some(r) = &effects.request {
            self.stats.requests += 1;
            let payload = Some(self.requests.encode(r));
            out.push(self.out(
                &self.topics.requests,
                partition,
                r.target_id.as_bytes().to_vec(),
                payload,
                trace,
            ));
        }
    }

    /// Carries out the erasure request `record` of partition `p`: the
    /// subject's account leaves memory, its tombstone goes to `accounts`
    /// and a `DELETE_MARKER` (naming the request, not the subject) to
    /// `audit`.
    fn erase(&mut self, record: &InRecord<'_>, out: &mut Vec<OutRecord>) {
        // A withdrawn request (the topic's own tombstone) undoes nothing.
        let Some(bytes) = record.payload else { return };
        let r = match self.erasures.decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                out.push(self.reject(record, e.to_string()));
                return;
            }
        };
        let p = record.partition;
        let Some(PartitionState::Ready(accounts)) = self.partitions.get_mut(&p) else {
            unreachable!("ready() ran for every partition of the batch")
        };
        // The request names an id, not a tenant: every tenant's account
        // of it goes, each under its key, and the bare id's record written
        // before tenancy with them.
        let dropped = accounts.erase_id(&r.subject);
        let held = !dropped.is_empty();
        self.stats.erased += 1;
        tracing::info!(stage = STAGE, request_id = %r.request_id, partition = p, accounts = dropped.len(), "erasure: account state dropped");
        for key in &dropped {
            out.push(self.out(
                &self.topics.accounts,
                p,
                key.kafka_key(),
                None,
                &TraceCause::None,
            ));
        }
        out.push(self.out(
            &self.topics.accounts,
            p,
            r.subject.as_bytes().to_vec(),
            None,
            &TraceCause::None,
        ));
        let audit = AuditRecord {
            audit_id: format!("{}:decide:{}:{}", r.request_id, p, record.offset),
            at: EventTime::from_micros(chrono::Utc::now().timestamp_micros()),
            kind: AuditKind::DeleteMarker,
            subject_hash: None,
            actor: STAGE.into(),
            request_id: Some(r.request_id.clone()),
            detail: format!(
                "accounts: {} and tombstoned (partition {p})",
                if held {
                    "state dropped"
                } else {
                    "no state held"
                }
            ),
        };
        out.push(OutRecord {
            topic: self.topics.audit.clone(),
            partition: None,
            key: Some(r.request_id.into_bytes()),
            payload: Some(self.audit.encode(&audit)),
            headers: vec![],
            timestamp_ms: None,
            trace: TraceCause::None,
        });
    }

    /// The `STATE_OVERRIDE` audit record of an operator's verdict: what
    /// the state machine did with it (naming the verdict, not the account).
    fn override_audit(&self, v: &Verdict, effects: &Effects) -> OutRecord {
        let moves: Vec<String> = effects
            .transitions
            .iter()
            .map(|t| {
                format!(
                    "{} -> {} {}",
                    t.from_state.as_str(),
                    t.to_state.as_str(),
                    if t.applied {
                        "applied".to_owned()
                    } else {
                        format!("refused ({})", t.refusal.as_deref().unwrap_or("illegal"))
                    }
                )
            })
            .collect();
        let detail = if moves.is_empty() {
            format!(
                "{}: no move (the account is already {})",
                v.recommended_action.as_str(),
                v.recommended_action.as_str()
            )
        } else {
            format!("{}: {}", v.recommended_action.as_str(), moves.join("; "))
        };
        let audit = AuditRecord {
            audit_id: format!("{}:decide", v.request_id),
            at: EventTime::from_micros(chrono::Utc::now().timestamp_micros()),
            kind: AuditKind::StateOverride,
            subject_hash: None,
            actor: v.analyzer.clone(),
            request_id: Some(v.request_id.clone()),
            detail,
        };
        OutRecord {
            topic: self.topics.audit.clone(),
            partition: None,
            key: Some(v.request_id.clone().into_bytes()),
            payload: Some(self.audit.encode(&audit)),
            headers: vec![],
            timestamp_ms: None,
            trace: TraceCause::None,
        }
    }

    fn reject(&self, record: &InRecord<'_>, detail: String) -> OutRecord {
        reject_record(
            STAGE,
            &self.topics.dead_letter,
            record,
            "undecodable",
            detail,
        )
    }
}

impl Stage for DecideStage {
    fn process(
        &mut self,
        batch: &[InRecord<'_>],
        out: &mut Vec<OutRecord>,
    ) -> Result<(), StageError> {
        for record in batch {
            self.ready(record.partition)?;
        }
        // Accounts changed in this batch, in the order of their first change.
        let mut changed: Vec<(i32, AccountKey)> = Vec::new();
        for record in batch {
            let p = record.partition;
            let applied = if record.topic == self.topics.screenings {
                self.on_screening(record, out)
            } else if record.topic == self.topics.verdicts {
                self.on_verdict(record, out)
            } else if record.topic == self.topics.erasures {
                self.erase(record, out);
                None
            } else {
                None
            };
            let Some(effects) = applied else {
                continue;
            };
            let (effects, account) = effects;
            if effects.changed && !changed.iter().any(|(q, a)| *q == p && *a == account) {
                changed.push((p, account));
            }
            self.emit(p, effects, &TraceCause::of(record.trace), out);
        }
        for (p, key) in changed {
            if let Some(PartitionState::Ready(accounts)) = self.partitions.get_mut(&p)
                && let Some(a) = accounts.get(&key.tenant, &key.id)
            {
                let payload = Some(self.accounts.encode(a));
                let write = accounts.write_of(&key);
                let topic = &self.topics.accounts;
                out.push(self.out(topic, p, write.key, payload, &TraceCause::None));
                if let Some(bare) = write.legacy_tombstone {
                    // Its record from before tenancy, superseded.
                    out.push(self.out(topic, p, bare.into_bytes(), None, &TraceCause::None));
                }
            }
        }
        Ok(())
    }

    fn on_assign(&mut self, partitions: &[AssignedPartition]) {
        for p in partitions {
            self.partitions.insert(p.partition, PartitionState::Pending);
        }
    }

    fn on_revoke(&mut self, partitions: &Partitions) {
        for (_, p) in partitions {
            self.partitions.remove(p);
        }
    }

    fn on_rewind(&mut self, assigned: &[AssignedPartition]) {
        self.partitions.clear();
        self.tally = ScreeningTally::default();
        self.on_assign(assigned);
    }

    fn on_commit(&mut self, metrics: &Metrics) {
        metrics.screening.record_committed(&mut self.tally);
    }
}

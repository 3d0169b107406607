//! Applying one record of each input to the accounts: a screening, a
//! verdict (the model's or an operator's).

use std::collections::HashMap;

use kusanagi_schemas::{Account, AccountKey};

use super::{DecideStage, PartitionAccounts, PartitionState, STAGE};
use crate::runtime::{InRecord, OutRecord};
use crate::stages::decide::machine::{Effects, apply_screening, apply_verdict};

impl DecideStage {
    /// A screening: the account it names moves (or not); `None` when it
    /// was dead-lettered or is not one that was screened.
    pub(super) fn on_screening(
        &mut self,
        record: &InRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) -> Option<(Effects, AccountKey)> {
        let s = match record.payload.map(|v| self.screenings.decode(v)) {
            Some(Ok(s)) => s,
            other => {
                out.push(self.reject(record, undecodable(other)));
                return None;
            }
        };
        if !s.screened {
            return None;
        }
        let accounts = ready_accounts(&mut self.partitions, record.partition);
        let account = accounts.get_or_insert_with(&s.tenant_id, &s.target_id, || {
            Account::new(&s.target_id, &s.tenant_id, s.event_time)
        });
        let effects = apply_screening(account, &s);
        Some((effects, AccountKey::new(s.tenant_id, s.target_id)))
    }

    /// A verdict, the model's or an operator's.
    pub(super) fn on_verdict(
        &mut self,
        record: &InRecord<'_>,
        out: &mut Vec<OutRecord>,
    ) -> Option<(Effects, AccountKey)> {
        let v = match record.payload.map(|v| self.verdicts.decode(v)) {
            Some(Ok(v)) => v,
            other => {
                out.push(self.reject(record, undecodable(other)));
                return None;
            }
        };
        self.stats.verdicts += 1;
        let accounts = ready_accounts(&mut self.partitions, record.partition);
        // A verdict for an account this copy does not hold: a model's
        // answered a request of an account erased since, and is dropped
        // without a trace (no transition names the erased id); an
        // operator's is judged against a fresh NORMAL account, kept if the
        // verdict moved it.
        let operator = v.analyzer.starts_with("operator:");
        if !operator && accounts.get(&v.tenant_id, &v.target_id).is_none() {
            tracing::debug!(stage = STAGE, request = %v.request_id, "a verdict for an account no longer held: dropped");
            return None;
        }
        let effects = match accounts.get_mut(&v.tenant_id, &v.target_id) {
            Some(account) => apply_verdict(account, &v),
            None => {
                let mut account = Account::new(&v.target_id, &v.tenant_id, v.event_time);
                let effects = apply_verdict(&mut account, &v);
                if effects.changed {
                    accounts.insert(account);
                }
                effects
            }
        };
        if operator {
            out.push(self.override_audit(&v, &effects));
        }
        Some((effects, AccountKey::new(v.tenant_id, v.target_id)))
    }
}

/// The accounts of `partition`, which `ready` rebuilt for this batch.
fn ready_accounts(
    partitions: &mut HashMap<i32, PartitionState>,
    partition: i32,
) -> &mut PartitionAccounts {
    let Some(PartitionState::Ready(accounts)) = partitions.get_mut(&partition) else {
        unreachable!("ready() ran for every partition of the batch")
    };
    accounts
}

/// Why a record could not be decoded.
fn undecodable<T, E: std::fmt::Display>(decoded: Option<Result<T, E>>) -> String {
    match decoded {
        None => "the record has no value".into(),
        Some(Err(e)) => e.to_string(),
        Some(Ok(_)) => String::new(),
    }
}

//! [Kusanagi patch] Timeouts as in Apache Kafka: a group member whose
//! session expired is removed (its partitions go to the others at the next
//! rebalance), and a transaction open past its `transaction.timeout.ms` is
//! aborted and its producer fenced. noida-db 0.2.3 checked a member's
//! session only when that member itself heartbeated, and never timed a
//! transaction out, so a killed consumer kept its partitions, and a killed
//! transactional producer held back every `read_committed` reader of its
//! partitions, until they came back.
//!
//! Both run on the engine's background tick (sessions every 100 ms,
//! transactions once a second, with the log cleaner). Evictions
//! change only group membership, which is not durable; transaction aborts
//! are part of the journaled tick (`durable.rs`), so recovery repeats them.

use super::engine::{EngineState, GroupLifecycleState};

impl EngineState {
    /// Removes every member whose session expired (no heartbeat for
    /// `session.timeout.ms`), as Kafka's coordinator does: in a stable
    /// group, and in a round being completed (a leader that died after its
    /// JoinGroup was answered would otherwise hold the group there), the
    /// rest start a new round; in a round gathering joins, only members
    /// without an open JoinGroup can expire, and the round may then
    /// complete without them. Members learn of a new round from their next
    /// heartbeat or SyncGroup (REBALANCE_IN_PROGRESS). Returns how many
    /// were removed.
    pub fn expire_sessions(&mut self) -> usize {
        let now = self.now_ms();
        let mut removed = 0;
        for group in self.groups.values_mut() {
            let gathering = match group.state {
                GroupLifecycleState::Stable | GroupLifecycleState::CompletingRebalance => false,
                GroupLifecycleState::PreparingRebalance => true,
                _ => continue,
            };
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| now - m.last_heartbeat_ms > i64::from(m.session_timeout_ms))
                .filter(|m| !(gathering && group.awaiting_members.contains_key(&m.member_id)))
                .map(|m| m.member_id.clone())
                .collect();
            if expired.is_empty() {
                continue;
            }
            for id in &expired {
                group.members.remove(id);
                group.assignments.remove(id);
                group.awaiting_members.remove(id);
            }
            removed += expired.len();
            if group.leader_id.as_ref().is_some_and(|l| !group.members.contains_key(l)) {
                group.leader_id = None;
            }
            if group.members.is_empty() {
                group.state = GroupLifecycleState::Empty;
                group.awaiting_members.clear();
                group.assignments.clear();
            } else if gathering {
                group.try_complete_join();
            } else {
                group.state = GroupLifecycleState::PreparingRebalance;
                group.generation_id += 1;
                group.rebalance_start_ms = now;
                group.assignments.clear();
                group.awaiting_members.clear();
            }
        }
        removed
    }

    /// Aborts every transaction open longer than its timeout (the one its
    /// producer gave in InitProducerId) and fences its producer (epoch
    /// bumped), as Kafka's transaction coordinator does. Returns how many.
    pub fn expire_transactions(&mut self) -> usize {
        let now = self.now_ms();
        let expired: Vec<String> = self
            .txn_info
            .iter()
            .filter(|(tid, info)| {
                info.state == "Ongoing"
                    && info.start_ms >= 0
                    && now - info.start_ms > i64::from(info.timeout_ms)
                    && self.txn_is_open(tid)
            })
            .map(|(tid, _)| tid.clone())
            .collect();
        for tid in &expired {
            let Some(&(pid, epoch)) = self.txn_producers.get(tid) else { continue };
            self.complete_txn(tid, pid, epoch, false);
            let bumped = epoch.wrapping_add(1);
            self.txn_producers.insert(tid.clone(), (pid, bumped));
            self.producer_epochs.insert(pid, bumped);
        }
        expired.len()
    }
}

//! The view stage's in-memory index of every account: its latest state
//! (O(1)), and its applied transitions in order (the state at a time by a
//! binary search, O(log n) over that account's versions).
//!
//! Design: fed from two topics read from their beginning, in any
//! interleaving. `accounts` (compacted) gives the latest state; a tombstone
//! (an erased account) removes it. `accounts.transitions` gives every move;
//! only applied ones make versions. A move *takes effect* when the decide
//! stage commits it: its Kafka record timestamp, which is what "the state
//! at time T" means here (what a withdrawal check would have answered at
//! T). The cause's event time is kept too, but it can go back in time (a
//! late event), so it does not order versions. A redelivered transition
//! (a version already held) changes nothing. No I/O here.

use std::collections::{HashMap, HashSet};

use kusanagi_schemas::{Account, AccountState, Transition};

/// One applied move of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The account's version after the move (1 for its first).
    pub version: i64,
    /// When the move took effect, milliseconds since the epoch.
    pub effective_ms: i64,
    /// The state it left.
    pub from: AccountState,
    /// The state it entered.
    pub to: AccountState,
    /// The transition record (trigger, rule, cause, evidence).
    pub transition: Transition,
}

#[derive(Debug, Default)]
struct History {
    latest: Option<Account>,
    versions: Vec<Version>,
}

/// Every account the view knows.
#[derive(Debug, Default)]
pub struct AccountIndex {
    accounts: HashMap<String, History>,
    /// Accounts whose latest record is a tombstone: their moves, read in
    /// any order around it, are not kept.
    erased: HashSet<String>,
    /// Subjects erased on request (`erasures`): when it was asked for, and
    /// the tenant the account had then (if the view held it).
    gone: HashMap<String, Gone>,
}

/// An erased subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// When the erasure was requested, milliseconds since the epoch.
    pub requested_ms: i64,
    /// The tenant of the account when it was erased, if known.
    pub tenant: Option<String>,
}

impl AccountIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies a record of `accounts`: the latest state of `account_id`, or
    /// `None` (a tombstone) to forget it and its history, including moves
    /// read after the tombstone (the topics are read in any interleaving).
    /// A state after a tombstone is an account made anew.
    pub fn apply_account(&mut self, account_id: &str, account: Option<Account>) {
        match account {
            // An erased subject stays erased: its state, read before or
            // after the request, is not kept.
            Some(_) if self.gone.contains_key(account_id) => {}
            Some(a) => {
                self.erased.remove(account_id);
                let h = self.accounts.entry(account_id.to_owned()).or_default();
                if h.latest.as_ref().is_none_or(|l| l.version <= a.version) {
                    h.latest = Some(a);
                }
            }
            None => {
                self.accounts.remove(account_id);
                self.erased.insert(account_id.to_owned());
            }
        }
    }

    /// Applies an erasure request of `subject`: it and its history are
    /// forgotten, now and when read again in any order, and it is answered
    /// as gone (HTTP 410) from now on.
    pub fn erase(&mut self, subject: &str, requested_ms: i64) {
        let tenant = self
            .accounts
            .remove(subject)
            .and_then(|h| h.latest.map(|a| a.tenant_id))
            .or_else(|| self.gone.get(subject).and_then(|g| g.tenant.clone()));
        self.erased.insert(subject.to_owned());
        self.gone.insert(
            subject.to_owned(),
            Gone {
                requested_ms,
                tenant,
            },
        );
    }

    /// Whether `subject` was erased on request, and when.
    pub fn gone(&self, subject: &str) -> Option<&Gone> {
        self.gone.get(subject)
    }

    /// Applies a record of `accounts.transitions` committed at
    /// `effective_ms`. Refused moves and versions already held change
    /// nothing; returns whether it added a version.
    pub fn apply_transition(&mut self, t: Transition, effective_ms: i64) -> bool {
        if !t.applied || self.erased.contains(&t.account_id) {
            return false;
        }
        let h = self.accounts.entry(t.account_id.clone()).or_default();
        if h.versions.last().is_some_and(|v| v.version >= t.version) {
            return false;
        }
        // Versions come in order per account (one partition, one writer);
        // a timestamp that went back (a producer clock step) is held level
        // so that the history stays searchable.
        let effective_ms = h
            .versions
            .last()
            .map_or(effective_ms, |v| v.effective_ms.max(effective_ms));
        h.versions.push(Version {
            version: t.version,
            effective_ms,
            from: t.from_state,
            to: t.to_state,
            transition: t,
        });
        true
    }

    /// The latest state of `account_id`, if known.
    pub fn latest(&self, account_id: &str) -> Option<&Account> {
        self.accounts.get(account_id)?.latest.as_ref()
    }

    /// The state of `account_id` at `time_ms`: that of its last version in
    /// effect then, `NORMAL` before its first. `None` for an unknown account.
    pub fn state_at(&self, account_id: &str, time_ms: i64) -> Option<AccountState> {
        let v = self.version_at(account_id, time_ms)?;
        Some(v.map_or(AccountState::Normal, |v| v.to))
    }

    /// The last version of `account_id` in effect at `time_ms` (`None`
    /// inside: none yet, so `NORMAL`). `None`: an unknown account.
    pub fn version_at(&self, account_id: &str, time_ms: i64) -> Option<Option<&Version>> {
        let h = self.accounts.get(account_id)?;
        let in_effect = h.versions.partition_point(|v| v.effective_ms <= time_ms);
        Some(in_effect.checked_sub(1).map(|i| &h.versions[i]))
    }

    /// The versions of `account_id` that took effect in `[from_ms, to_ms)`.
    pub fn versions(&self, account_id: &str, from_ms: i64, to_ms: i64) -> &[Version] {
        let Some(h) = self.accounts.get(account_id) else {
            return &[];
        };
        let start = h.versions.partition_point(|v| v.effective_ms < from_ms);
        let end = h.versions.partition_point(|v| v.effective_ms < to_ms);
        &h.versions[start..end.max(start)]
    }

    /// Accounts known.
    pub fn len(&self) -> usize {
        self.accounts.len()
    }

    /// No account known.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_empty()
    }
}

/// The answer to a withdrawal check, as SCREENING.md gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// `NORMAL` (or an account never screened): HTTP 200.
    Allowed,
    /// `RESTRICTED_WITHDRAWAL` or `UNDER_SURVEILLANCE`: HTTP 423.
    Restricted,
    /// `BANNED`: HTTP 403.
    Banned,
}

impl Withdrawal {
    /// The answer for an account in `state` (`None`: unknown, so allowed).
    pub fn for_state(state: Option<AccountState>) -> Self {
        match state {
            None | Some(AccountState::Normal) => Withdrawal::Allowed,
            Some(AccountState::Banned) => Withdrawal::Banned,
            Some(AccountState::RestrictedWithdrawal | AccountState::UnderSurveillance) => {
                Withdrawal::Restricted
            }
        }
    }

    /// The HTTP status of the answer.
    pub fn status(self) -> u16 {
        match self {
            Withdrawal::Allowed => 200,
            Withdrawal::Restricted => 423,
            Withdrawal::Banned => 403,
        }
    }
}

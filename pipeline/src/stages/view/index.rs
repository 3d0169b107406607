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

use kusanagi_schemas::{Account, AccountKey, AccountState, StoredKey, Transition};

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

/// Every account the view knows. Accounts are (tenant, id)
/// ([`kusanagi_schemas::key`]): the maps are by tenant, then id, so that a
/// lookup borrows both.
#[derive(Debug, Default)]
pub struct AccountIndex {
    accounts: HashMap<String, HashMap<String, History>>,
    len: usize,
    /// Accounts whose latest record is a tombstone: their moves, read in
    /// any order around it, are not kept.
    erased: HashSet<AccountKey>,
    /// Accounts whose latest state was read under their bare id (written
    /// before tenancy), by that id: the bare id's tombstone removes them.
    legacy: HashMap<String, String>,
    /// Subjects erased on request (`erasures`, by account id): when it was
    /// asked for, and the tenants that held the id then.
    gone: HashMap<String, Gone>,
}

/// An erased subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    /// When the erasure was requested, milliseconds since the epoch.
    pub requested_ms: i64,
    /// The tenants whose account of this id was erased, if the view held
    /// any (empty: unknown).
    pub tenants: Vec<String>,
}

impl AccountIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    fn history(&self, tenant: &str, id: &str) -> Option<&History> {
        self.accounts.get(tenant)?.get(id)
    }

    fn history_mut(&mut self, key: &AccountKey) -> &mut History {
        let ids = self.accounts.entry(key.tenant.clone()).or_default();
        if !ids.contains_key(&key.id) {
            self.len += 1;
            ids.insert(key.id.clone(), History::default());
        }
        ids.get_mut(&key.id).expect("just inserted")
    }

    fn remove(&mut self, key: &AccountKey) {
        let Some(ids) = self.accounts.get_mut(&key.tenant) else {
            return;
        };
        if ids.remove(&key.id).is_some() {
            self.len -= 1;
        }
        if ids.is_empty() {
            self.accounts.remove(&key.tenant);
        }
    }

    /// Applies a record of `accounts`: under Kafka key `key`, the latest
    /// state of an account, or `None` (a tombstone) to forget it and its
    /// history, including moves read after the tombstone (the topics are
    /// read in any interleaving). A state after a tombstone is an account
    /// made anew. Returns false for a key that names nothing (not UTF-8).
    pub fn apply_account(&mut self, key: &[u8], account: Option<Account>) -> bool {
        let Some(stored) = AccountKey::parse_kafka_key(key) else {
            return false;
        };
        match (account, stored) {
            // An erased subject stays erased: its state, read before or
            // after the request, is not kept.
            (Some(a), _) if self.gone.contains_key(&a.account_id) => {}
            (Some(a), stored) => {
                let k = AccountKey::new(a.tenant_id.clone(), a.account_id.clone());
                self.erased.remove(&k);
                if matches!(stored, StoredKey::Legacy(_)) {
                    self.legacy.insert(k.id.clone(), k.tenant.clone());
                } else if self.legacy.get(&k.id) == Some(&k.tenant) {
                    self.legacy.remove(&k.id);
                }
                let h = self.history_mut(&k);
                if h.latest.as_ref().is_none_or(|l| l.version <= a.version) {
                    h.latest = Some(a);
                }
            }
            (None, StoredKey::Account(k)) => {
                self.remove(&k);
                self.erased.insert(k);
            }
            // A bare id's tombstone: an erasure before tenancy, or a
            // record from before tenancy superseded by its account's own
            // key (then no account of the id is held under the bare id).
            (None, StoredKey::Legacy(id)) => {
                if let Some(tenant) = self.legacy.remove(&id) {
                    let k = AccountKey::new(tenant, id);
                    self.remove(&k);
                    self.erased.insert(k);
                }
            }
        }
        true
    }

    /// Applies an erasure request of `subject` (an account id, in every
    /// tenant): its accounts and their history are forgotten, now and when
    /// read again in any order, and answered as gone (HTTP 410) from now
    /// on.
    pub fn erase(&mut self, subject: &str, requested_ms: i64) {
        let mut tenants: Vec<String> = self.tenants_of(subject).map(str::to_owned).collect();
        for tenant in &tenants {
            let k = AccountKey::new(tenant.clone(), subject);
            self.remove(&k);
            self.erased.insert(k);
        }
        if tenants.is_empty()
            && let Some(g) = self.gone.get(subject)
        {
            tenants = g.tenants.clone();
        }
        self.gone.insert(
            subject.to_owned(),
            Gone {
                requested_ms,
                tenants,
            },
        );
    }

    /// Whether `subject` was erased on request, and when.
    pub fn gone(&self, subject: &str) -> Option<&Gone> {
        self.gone.get(subject)
    }

    /// The tenants holding an account `id` (its state or its moves).
    pub fn tenants_of<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.accounts
            .iter()
            .filter(move |(_, ids)| ids.contains_key(id))
            .map(|(tenant, _)| tenant.as_str())
    }

    /// Applies a record of `accounts.transitions` committed at
    /// `effective_ms`. Refused moves and versions already held change
    /// nothing; returns whether it added a version.
    pub fn apply_transition(&mut self, t: Transition, effective_ms: i64) -> bool {
        if !t.applied || self.gone.contains_key(&t.account_id) {
            return false;
        }
        let k = AccountKey::new(t.tenant_id.clone(), t.account_id.clone());
        if self.erased.contains(&k) {
            return false;
        }
        let h = self.history_mut(&k);
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

    /// The latest state of the account `id` of `tenant`, if known.
    pub fn latest(&self, tenant: &str, id: &str) -> Option<&Account> {
        self.history(tenant, id)?.latest.as_ref()
    }

    /// The state of the account at `time_ms`: that of its last version in
    /// effect then, `NORMAL` before its first. `None` for an unknown account.
    pub fn state_at(&self, tenant: &str, id: &str, time_ms: i64) -> Option<AccountState> {
        let v = self.version_at(tenant, id, time_ms)?;
        Some(v.map_or(AccountState::Normal, |v| v.to))
    }

    /// The last version of the account in effect at `time_ms` (`None`
    /// inside: none yet, so `NORMAL`). `None`: an unknown account.
    pub fn version_at(&self, tenant: &str, id: &str, time_ms: i64) -> Option<Option<&Version>> {
        let h = self.history(tenant, id)?;
        let in_effect = h.versions.partition_point(|v| v.effective_ms <= time_ms);
        Some(in_effect.checked_sub(1).map(|i| &h.versions[i]))
    }

    /// The versions of the account that took effect in `[from_ms, to_ms)`.
    pub fn versions(&self, tenant: &str, id: &str, from_ms: i64, to_ms: i64) -> &[Version] {
        let Some(h) = self.history(tenant, id) else {
            return &[];
        };
        let start = h.versions.partition_point(|v| v.effective_ms < from_ms);
        let end = h.versions.partition_point(|v| v.effective_ms < to_ms);
        &h.versions[start..end.max(start)]
    }

    /// Accounts known.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No account known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
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

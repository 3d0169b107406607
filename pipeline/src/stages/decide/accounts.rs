//! The accounts of one partition, by (tenant, id), and their changelog in
//! the compacted `accounts` topic.
//!
//! Design. Partitions hold one account id's records of every tenant
//! ([`kusanagi_schemas::key`]), so the map is by id, then tenant: a lookup
//! borrows both, and an erasure of an id (which names no tenant yet) finds
//! every tenant's account of it at once. An account is written to
//! `accounts` under its [`AccountKey::kafka_key`]. One last written under
//! its bare id (before tenants were told apart) is remembered as *legacy*:
//! its next write also tombstones the bare id, so compaction drops the old
//! record and a rebuild never meets two copies. Rebuilding replays the
//! partition's records through [`PartitionAccounts::apply_record`], which
//! reads both kinds of keys.

use std::collections::HashMap;

use kusanagi_schemas::{Account, AccountKey, StoredKey};

/// The accounts of one partition.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PartitionAccounts {
    /// Account id -> tenant -> its state.
    by_id: HashMap<String, HashMap<String, Held>>,
    len: usize,
}

/// One account held, and whether its latest record is under its bare id.
#[derive(Debug, Clone, PartialEq)]
struct Held {
    account: Account,
    legacy: bool,
}

/// What to write to `accounts` for a change: the record under the
/// account's key, and a tombstone for the bare id it was held under, if
/// any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountWrite {
    /// The account's key in `accounts`.
    pub key: Vec<u8>,
    /// A bare id to tombstone (the account's record before tenancy).
    pub legacy_tombstone: Option<String>,
}

impl PartitionAccounts {
    /// Accounts held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The account `id` of `tenant`.
    pub fn get(&self, tenant: &str, id: &str) -> Option<&Account> {
        self.by_id.get(id)?.get(tenant).map(|h| &h.account)
    }

    /// The account `id` of `tenant`, to change.
    pub fn get_mut(&mut self, tenant: &str, id: &str) -> Option<&mut Account> {
        self.by_id
            .get_mut(id)?
            .get_mut(tenant)
            .map(|h| &mut h.account)
    }

    /// The account `id` of `tenant`, made by `new` if not held.
    pub fn get_or_insert_with(
        &mut self,
        tenant: &str,
        id: &str,
        new: impl FnOnce() -> Account,
    ) -> &mut Account {
        let tenants = self.by_id.entry(id.to_owned()).or_default();
        if !tenants.contains_key(tenant) {
            self.len += 1;
            tenants.insert(
                tenant.to_owned(),
                Held {
                    account: new(),
                    legacy: false,
                },
            );
        }
        &mut tenants.get_mut(tenant).expect("just inserted").account
    }

    /// Holds `account` (a new one, kept only once it moved).
    pub fn insert(&mut self, account: Account) {
        let tenants = self.by_id.entry(account.account_id.clone()).or_default();
        let held = Held {
            account,
            legacy: false,
        };
        if tenants
            .insert(held.account.tenant_id.clone(), held)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// What to write for a change of `key`'s account: its key, and the
    /// bare id to tombstone if it was held under it (once: the account is
    /// under its own key from now on).
    pub fn write_of(&mut self, key: &AccountKey) -> AccountWrite {
        let held = self
            .by_id
            .get_mut(&key.id)
            .and_then(|t| t.get_mut(&key.tenant));
        let legacy = held.is_some_and(|h| std::mem::replace(&mut h.legacy, false));
        AccountWrite {
            key: key.kafka_key(),
            legacy_tombstone: legacy.then(|| key.id.clone()),
        }
    }

    /// Drops every tenant's account `id` (an erasure names an id alone);
    /// returns the keys dropped.
    pub fn erase_id(&mut self, id: &str) -> Vec<AccountKey> {
        let Some(tenants) = self.by_id.remove(id) else {
            return Vec::new();
        };
        self.len -= tenants.len();
        let mut keys: Vec<AccountKey> = tenants
            .into_keys()
            .map(|tenant| AccountKey::new(tenant, id))
            .collect();
        keys.sort();
        keys
    }

    /// Applies one record of `accounts`, read back to rebuild: `key` its
    /// Kafka key, `value` the account (`None`: a tombstone). Returns false
    /// for a tombstone whose key is not UTF-8 (nothing it could name).
    pub fn apply_record(&mut self, key: Option<&[u8]>, value: Option<Account>) -> bool {
        let stored = key.and_then(AccountKey::parse_kafka_key);
        match value {
            Some(account) => {
                let legacy = matches!(stored, Some(StoredKey::Legacy(_)));
                let tenants = self.by_id.entry(account.account_id.clone()).or_default();
                let held = Held { account, legacy };
                if tenants
                    .insert(held.account.tenant_id.clone(), held)
                    .is_none()
                {
                    self.len += 1;
                }
                true
            }
            None => match stored {
                Some(StoredKey::Account(k)) => {
                    self.remove(&k.tenant, &k.id);
                    true
                }
                // A bare id's tombstone: an erasure before tenancy (the
                // account of whatever tenant it was), or a legacy record
                // superseded by its account's own key (then nothing held
                // is legacy any more).
                Some(StoredKey::Legacy(id)) => {
                    let legacy: Vec<String> = self.by_id.get(&id).map_or_else(Vec::new, |t| {
                        t.iter()
                            .filter(|(_, h)| h.legacy)
                            .map(|(tenant, _)| tenant.clone())
                            .collect()
                    });
                    for tenant in legacy {
                        self.remove(&tenant, &id);
                    }
                    true
                }
                None => false,
            },
        }
    }

    fn remove(&mut self, tenant: &str, id: &str) {
        let Some(tenants) = self.by_id.get_mut(id) else {
            return;
        };
        if tenants.remove(tenant).is_some() {
            self.len -= 1;
        }
        if tenants.is_empty() {
            self.by_id.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kusanagi_schemas::{AccountState, EventTime};
    use proptest::prelude::*;

    fn account(tenant: &str, id: &str, version: i64) -> Account {
        let mut a = Account::new(id, tenant, EventTime::from_micros(0));
        a.version = version;
        a.state = AccountState::RestrictedWithdrawal;
        a
    }

    #[test]
    fn the_same_id_in_two_tenants_is_two_accounts() {
        let mut p = PartitionAccounts::default();
        p.get_or_insert_with("game-a", "bob", || account("game-a", "bob", 0))
            .version = 3;
        p.insert(account("game-b", "bob", 1));
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("game-a", "bob").unwrap().version, 3);
        assert_eq!(p.get("game-b", "bob").unwrap().version, 1);
        assert!(p.get("game-c", "bob").is_none());
        assert_eq!(
            p.erase_id("bob"),
            [
                AccountKey::new("game-a", "bob"),
                AccountKey::new("game-b", "bob")
            ]
        );
        assert_eq!(p.len(), 0);
    }

    #[test]
    fn an_account_written_before_tenancy_loads_and_moves_to_its_own_key() {
        let mut p = PartitionAccounts::default();
        // Before tenancy: keyed by the bare id, the value names the tenant.
        assert!(p.apply_record(Some(b"bob"), Some(account("game-a", "bob", 4))));
        assert_eq!(p.get("game-a", "bob").unwrap().version, 4);
        let key = AccountKey::new("game-a", "bob");
        // Its next write tombstones the bare id, once.
        let w = p.write_of(&key);
        assert_eq!(w.key, b"game-a\x1fbob");
        assert_eq!(w.legacy_tombstone.as_deref(), Some("bob"));
        assert_eq!(p.write_of(&key).legacy_tombstone, None);

        // A rebuild of what was written: the legacy record, the new one,
        // the bare id's tombstone.
        let mut rebuilt = PartitionAccounts::default();
        rebuilt.apply_record(Some(b"bob"), Some(account("game-a", "bob", 4)));
        rebuilt.apply_record(Some(&w.key), Some(account("game-a", "bob", 5)));
        rebuilt.apply_record(Some(b"bob"), None);
        assert_eq!(rebuilt.get("game-a", "bob").unwrap().version, 5);
        assert_eq!(rebuilt.len(), 1);

        // An erasure before tenancy tombstoned the bare id: gone.
        let mut erased = PartitionAccounts::default();
        erased.apply_record(Some(b"carol"), Some(account("game-a", "carol", 1)));
        erased.apply_record(Some(b"carol"), None);
        assert_eq!(erased.len(), 0);
        assert!(!erased.apply_record(Some(&[0xff]), None), "not UTF-8");
    }

    /// One change decide may make to a partition's accounts.
    #[derive(Debug, Clone)]
    enum Op {
        Move { tenant: usize, id: usize },
        Erase { id: usize },
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                4 => (0..3usize, 0..4usize).prop_map(|(tenant, id)| Op::Move { tenant, id }),
                1 => (0..4usize).prop_map(|id| Op::Erase { id }),
            ],
            0..60,
        )
    }

    const TENANTS: [&str; 3] = ["default", "game-a", "game-b"];
    const IDS: [&str; 4] = ["bob", "carol", "dave", "e\u{1f}ve"];

    proptest! {
        /// Whatever decide does, starting from accounts written before
        /// tenancy, replaying what it wrote to `accounts` (the legacy
        /// records first) rebuilds exactly what it holds.
        #[test]
        fn a_rebuild_from_the_changelog_holds_what_was_held(legacy in prop::collection::vec((0..3usize, 0..3usize), 0..4), ops in ops()) {
            let mut log: Vec<(Vec<u8>, Option<Account>)> = Vec::new();
            let mut held = PartitionAccounts::default();
            // Before tenancy one id was one account, of some tenant.
            let mut seen = std::collections::HashSet::new();
            for (tenant, id) in legacy {
                if seen.insert(id) {
                    let a = account(TENANTS[tenant], IDS[id], 1);
                    log.push((IDS[id].as_bytes().to_vec(), Some(a.clone())));
                    held.apply_record(Some(IDS[id].as_bytes()), Some(a));
                }
            }
            for op in ops {
                match op {
                    Op::Move { tenant, id } => {
                        let (t, i) = (TENANTS[tenant], IDS[id]);
                        let a = held.get_or_insert_with(t, i, || account(t, i, 0));
                        a.version += 1;
                        let a = a.clone();
                        let w = held.write_of(&AccountKey::new(t, i));
                        log.push((w.key, Some(a)));
                        if let Some(bare) = w.legacy_tombstone {
                            log.push((bare.into_bytes(), None));
                        }
                    }
                    Op::Erase { id } => {
                        for k in held.erase_id(IDS[id]) {
                            log.push((k.kafka_key(), None));
                        }
                        log.push((IDS[id].as_bytes().to_vec(), None));
                    }
                }
            }
            let mut rebuilt = PartitionAccounts::default();
            for (key, value) in &log {
                rebuilt.apply_record(Some(key), value.clone());
            }
            for t in TENANTS {
                for i in IDS {
                    prop_assert_eq!(rebuilt.get(t, i), held.get(t, i), "{}/{}", t, i);
                }
            }
            prop_assert_eq!(rebuilt.len(), held.len());
        }
    }
}

//! Accounts are keyed by (tenant, account id): two games may both have a
//! `player123`, and they are two accounts.
//!
//! Design.
//! - **Partitioning stays by account id alone.** `events`, `screenings`,
//!   `l2.verdicts` and the rest are keyed by the bare `target_id`, as before
//!   tenants were told apart, so one id's records of every tenant share a
//!   partition and a deployment's partitions do not move when it upgrades.
//!   Each stage that keeps state per partition tells tenants apart in it.
//! - **What must tell tenants apart uses [`AccountKey`]**: the compacted
//!   `accounts` topic (compaction keeps one record per key) and every map of
//!   accounts in memory. Its Kafka form is `<tenant>` 0x1F `<id>` (the ASCII
//!   unit separator): tenant ids cannot hold control characters (the event
//!   contract refuses them), so the first 0x1F splits the two.
//! - **A record keyed by the bare id** was written before tenancy: it
//!   parses as [`StoredKey::Legacy`], and its value names the tenant. A
//!   bare id that itself holds 0x1F would parse as a tenant and an id; ids
//!   written before tenancy with control characters in them are not
//!   supported.

use std::fmt;

pub use crate::event::DEFAULT_TENANT;

/// Splits a tenant from an account id in [`AccountKey::kafka_key`].
pub const SEPARATOR: u8 = 0x1F;

/// One account: its tenant and its id (a `target_id`) in that tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountKey {
    /// The tenant (`tenant_id`).
    pub tenant: String,
    /// The account's id in the tenant (`target_id`, `account_id`).
    pub id: String,
}

/// What the key of a record of `accounts` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredKey {
    /// A tenant's account.
    Account(AccountKey),
    /// A bare account id, written before tenants were told apart: the
    /// record's value names the tenant; a tombstone names none.
    Legacy(String),
}

impl AccountKey {
    /// The account `id` of `tenant`.
    pub fn new(tenant: impl Into<String>, id: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            id: id.into(),
        }
    }

    /// The key of its records in `accounts`: `<tenant>` 0x1F `<id>`.
    pub fn kafka_key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.tenant.len() + 1 + self.id.len());
        key.extend_from_slice(self.tenant.as_bytes());
        key.push(SEPARATOR);
        key.extend_from_slice(self.id.as_bytes());
        key
    }

    /// What the key of a record of `accounts` names; `None` when it is not
    /// UTF-8.
    pub fn parse_kafka_key(key: &[u8]) -> Option<StoredKey> {
        let key = std::str::from_utf8(key).ok()?;
        Some(match key.split_once(char::from(SEPARATOR)) {
            Some((tenant, id)) => StoredKey::Account(Self::new(tenant, id)),
            None => StoredKey::Legacy(key.to_owned()),
        })
    }
}

impl fmt::Display for AccountKey {
    /// `tenant/id`, for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tenant, self.id)
    }
}

/// Whether `tenant` can name a tenant: no control characters (they would
/// break [`AccountKey::kafka_key`] and log lines).
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty() && !tenant.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bare_id_is_a_legacy_key() {
        assert_eq!(
            AccountKey::parse_kafka_key(b"player123"),
            Some(StoredKey::Legacy("player123".into()))
        );
        assert_eq!(AccountKey::parse_kafka_key(&[0xff, 0x00]), None);
        let k = AccountKey::new("game-a", "player123");
        assert_eq!(k.kafka_key(), b"game-a\x1fplayer123");
        assert_eq!(k.to_string(), "game-a/player123");
    }

    #[test]
    fn tenants_have_no_control_characters() {
        assert!(valid_tenant("game-a"));
        assert!(valid_tenant("ゲーム"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("a\u{1f}b"));
        assert!(!valid_tenant("a\nb"));
    }

    proptest! {
        /// Any account of a valid tenant comes back from its Kafka key,
        /// whatever its id holds, and two accounts never share a key.
        #[test]
        fn kafka_keys_round_trip_and_are_distinct(
            t1 in "[^\\p{Cc}]{1,12}", i1 in "\\PC{0,12}|.{0,6}",
            t2 in "[^\\p{Cc}]{1,12}", i2 in "\\PC{0,12}|.{0,6}",
        ) {
            let (a, b) = (AccountKey::new(&t1, &i1), AccountKey::new(&t2, &i2));
            prop_assert!(valid_tenant(&a.tenant));
            prop_assert_eq!(
                AccountKey::parse_kafka_key(&a.kafka_key()),
                Some(StoredKey::Account(a.clone()))
            );
            prop_assert_eq!(a == b, a.kafka_key() == b.kafka_key());
        }
    }
}

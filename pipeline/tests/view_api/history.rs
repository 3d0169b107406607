//! The scripted history: accounts on legal paths through the state machine,
//! some of them erased, written to `accounts.transitions` and `accounts`.

use std::time::Duration;

use kusanagi_schemas::{Account, AccountState, EventTime, RecordCodec, Transition, Trigger};
use rdkafka::producer::{BaseRecord, Producer};

use crate::common::{producer, send_waiting};

use AccountState::*;

/// When the scripted history starts: three days ago, on the hour (well
/// inside `accounts.transitions`' retention).
pub(crate) fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = chrono::Utc::now().timestamp_millis();
        now - now % 3_600_000 - 3 * 86_400_000
    })
}

/// One account's scripted history.
#[derive(Debug, Clone)]
pub(crate) struct Script {
    pub(crate) id: String,
    pub(crate) tenant: String,
    /// Applied moves: (to, effective ms).
    pub(crate) moves: Vec<(AccountState, i64)>,
    pub(crate) erased: bool,
}

impl Script {
    pub(crate) fn state(&self) -> AccountState {
        self.moves.last().map_or(Normal, |m| m.0)
    }
}

/// Legal paths through the state machine (SCREENING.md).
const PATHS: [&[AccountState]; 5] = [
    &[],
    &[RestrictedWithdrawal],
    &[RestrictedWithdrawal, Normal],
    &[RestrictedWithdrawal, UnderSurveillance],
    &[RestrictedWithdrawal, UnderSurveillance, Banned],
];

pub(crate) fn scripts(n: usize) -> Vec<Script> {
    (0..n)
        .map(|i| {
            let path = PATHS[i % PATHS.len()];
            Script {
                id: format!("acct-{i:04}"),
                tenant: if i % 3 == 0 { "game-b" } else { "game-a" }.into(),
                moves: path
                    .iter()
                    .enumerate()
                    .map(|(k, s)| (*s, t0() + (i as i64) * 60_000 + (k as i64 + 1) * 3_600_000))
                    .collect(),
                erased: i % 50 == 7,
            }
        })
        .collect()
}

fn transition(s: &Script, version: usize, applied: bool) -> Transition {
    let from = if version == 0 {
        Normal
    } else {
        s.moves[version - 1].0
    };
    let to = if applied { s.moves[version].0 } else { Banned };
    Transition {
        account_id: s.id.clone(),
        tenant_id: s.tenant.clone(),
        version: if applied {
            version as i64 + 1
        } else {
            version as i64
        },
        from_state: from,
        to_state: to,
        trigger: Trigger::L1Screening,
        rule: "R1".into(),
        event_time: EventTime::from_micros(t0() * 1_000),
        source_id: format!("{}-{version}", s.id),
        evidence: "scripted".into(),
        applied,
        refusal: (!applied).then(|| "illegal move".into()),
    }
}

/// Writes each account's transitions (with a refused move and a
/// redelivery mixed in), its latest state, and the erasures' tombstones.
pub(crate) fn write_history(bootstrap: &str, scripts: &[Script]) {
    write_history_to(bootstrap, scripts, None);
}

/// As [`write_history`], every record to `partition` when given.
pub(crate) fn write_history_to(bootstrap: &str, scripts: &[Script], partition: Option<i32>) {
    let p = producer(bootstrap);
    let (tc, ac) = (
        RecordCodec::<Transition>::new(),
        RecordCodec::<Account>::new(),
    );
    let send = |topic: &str, key: &str, value: Option<Vec<u8>>, ts: Option<i64>| {
        let mut r: BaseRecord<'_, str, Vec<u8>> = BaseRecord::to(topic).key(key);
        if let Some(v) = value.as_ref() {
            r = r.payload(v);
        }
        if let Some(ts) = ts {
            r = r.timestamp(ts);
        }
        if let Some(partition) = partition {
            r = r.partition(partition);
        }
        send_waiting(&p, r);
    };
    for s in scripts {
        for (v, (_, at)) in s.moves.iter().enumerate() {
            if v == 1 {
                // A refused move between two applied ones changes nothing.
                send(
                    "accounts.transitions",
                    &s.id,
                    Some(tc.encode(&transition(s, v, false))),
                    Some(*at - 1),
                );
            }
            let t = tc.encode(&transition(s, v, true));
            send("accounts.transitions", &s.id, Some(t.clone()), Some(*at));
            if v == 0 {
                // A redelivered transition (the decide stage's retry) neither.
                send("accounts.transitions", &s.id, Some(t), Some(*at + 5));
            }
        }
        let mut a = Account::new(&s.id, &s.tenant, EventTime::from_micros(t0() * 1_000));
        a.state = s.state();
        a.version = s.moves.len() as i64;
        send("accounts", &s.id, Some(ac.encode(&a)), None);
        if s.erased {
            send("accounts", &s.id, None, None);
        }
    }
    p.flush(Duration::from_secs(60))
        .expect("history acknowledged");
}

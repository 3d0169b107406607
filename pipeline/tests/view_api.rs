//! The view stage as operators run it: two `kusanagi stage view` copies on
//! a real broker, one started before the history is written (it follows)
//! and one after (it rebuilds from Kafka). Both must answer every account
//! as the history says: latest state, state at a time, versions, the
//! withdrawal check, tombstones, tenants; keys rotate without a restart.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Broker, BrokerKind, ChildGuard, TopologyFile, free_port, http, kusanagi_with_env, new_key,
    producer, tempdir::TempDir, wait_for_port,
};
use kusanagi_schemas::{Account, AccountState, EventTime, RecordCodec, Transition, Trigger};
use rdkafka::producer::{BaseRecord, Producer};
use serde_json::Value;

use AccountState::*;

/// When the scripted history starts: three days ago, on the hour (well
/// inside `accounts.transitions`' retention).
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = chrono::Utc::now().timestamp_millis();
        now - now % 3_600_000 - 3 * 86_400_000
    })
}

/// One account's scripted history.
#[derive(Debug, Clone)]
struct Script {
    id: String,
    tenant: String,
    /// Applied moves: (to, effective ms).
    moves: Vec<(AccountState, i64)>,
    erased: bool,
}

impl Script {
    fn state(&self) -> AccountState {
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

fn scripts(n: usize) -> Vec<Script> {
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
fn write_history(bootstrap: &str, scripts: &[Script]) {
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
        let mut r = r;
        loop {
            match p.send(r) {
                Ok(()) => break,
                Err((_, back)) => {
                    r = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
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

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json(addr: &str, method: &str, path: &str, key: &str, body: &[u8]) -> (u16, Value) {
    let (status, text) = http(addr, method, path, Some(key), body);
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, v)
}

fn state_name(s: AccountState) -> &'static str {
    match s {
        Normal => "NORMAL",
        RestrictedWithdrawal => "RESTRICTED_WITHDRAWAL",
        UnderSurveillance => "UNDER_SURVEILLANCE",
        Banned => "BANNED",
    }
}

fn wait_ready(addr: &str, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        if http(addr, "GET", "/healthz/ready", None, b"").0 == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < timeout, "{addr} never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every account answered as its script says, by the copy at `addr`.
fn check_all(addr: &str, admin: &str, scripts: &[Script]) {
    for s in scripts {
        let path = format!("/api/v1/accounts/{}", s.id);
        let (status, v) = json(addr, "GET", &path, admin, b"");
        let check = format!(r#"{{"account_id":"{}"}}"#, s.id);
        let (w_status, w) = json(
            addr,
            "POST",
            "/api/v1/withdrawals/check",
            admin,
            check.as_bytes(),
        );
        if s.erased {
            assert_eq!(status, 404, "{}: erased: {v}", s.id);
            assert_eq!(
                (w_status, &w["state"]),
                (200, &Value::from("NORMAL")),
                "{}",
                s.id
            );
            continue;
        }
        assert_eq!(status, 200, "{}: {v}", s.id);
        assert_eq!(v["state"], state_name(s.state()), "{}", s.id);
        assert_eq!(v["version"], s.moves.len() as i64, "{}", s.id);
        assert_eq!(v["tenant_id"], s.tenant.as_str());
        let want = match s.state() {
            Normal => 200,
            RestrictedWithdrawal | UnderSurveillance => 423,
            Banned => 403,
        };
        assert_eq!(w_status, want, "{}: {w}", s.id);
        assert_eq!(w["allowed"], want == 200);

        // The state at a time: before the first move, at each, between.
        let mut probes = vec![(t0(), Normal, 0)];
        for (k, (to, at)) in s.moves.iter().enumerate() {
            probes.push((*at - 1, if k == 0 { Normal } else { s.moves[k - 1].0 }, k));
            probes.push((*at, *to, k + 1));
            probes.push((*at + 1_000, *to, k + 1));
        }
        for (t, want, version) in probes {
            let (status, v) = json(
                addr,
                "GET",
                &format!("{path}/at?time={}", rfc3339(t)),
                admin,
                b"",
            );
            assert_eq!(status, 200, "{v}");
            assert_eq!(
                (v["state"].as_str(), v["version"].as_u64()),
                (Some(state_name(want)), Some(version as u64)),
                "{} at {}",
                s.id,
                rfc3339(t)
            );
        }
        // Versions: all of them, then a window holding only the second.
        let (_, v) = json(addr, "GET", &format!("{path}/versions"), admin, b"");
        let got: Vec<_> = v["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["to"].as_str().unwrap().to_owned(),
                    x["effective_at"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let want: Vec<_> = s
            .moves
            .iter()
            .map(|(to, at)| (state_name(*to).to_owned(), rfc3339(*at)))
            .collect();
        assert_eq!(got, want, "{}", s.id);
        if s.moves.len() >= 2 {
            let (a, b) = (s.moves[1].1, s.moves[1].1 + 1);
            let q = format!("{path}/versions?from={}&to={b}", rfc3339(a));
            let (_, v) = json(addr, "GET", &q, admin, b"");
            assert_eq!(v["versions"].as_array().unwrap().len(), 1, "{}: {v}", s.id);
            assert_eq!(v["versions"][0]["version"], 2);
        }
    }
}

fn metric(addr: &str, key: &str, line_start: &str) -> Option<f64> {
    let (_, text) = http(addr, "GET", "/metrics", Some(key), b"");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn start_view(dir: &Path, name: &str, topology: &Path, addr: &str) -> ChildGuard {
    let g = kusanagi_with_env(
        dir,
        name,
        topology,
        &["stage", "view"],
        &[
            ("KUSANAGI_HTTP_LISTEN", addr),
            ("KUSANAGI_INSTANCE_ID", name),
        ],
    );
    wait_for_port(addr, Duration::from_secs(60));
    g
}

fn view_serves_and_rebuilds(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("view");
    let keys = dir.path().join("keys.toml");
    let admin = new_key(&keys, "ops-admin", &["admin"], None);
    let tenant_b = new_key(&keys, "game-b-backend", &["service"], Some("game-b"));
    let topology = TopologyFile::new()
        .set("kafka.bootstrap", broker.bootstrap.as_str())
        .set("topics.partitions", 3)
        .path("http.auth.keys_file", &keys)
        .set("http.auth.reload_seconds", 1)
        .write(dir.path());

    // Copy A starts on empty topics, then follows the history as it is written.
    let addr_a = format!("127.0.0.1:{}", free_port());
    let _a = start_view(dir.path(), "view-a", &topology, &addr_a);
    wait_ready(&addr_a, Duration::from_secs(60));
    let scripts = scripts(300);
    write_history(&broker.bootstrap, &scripts);
    let last = scripts
        .iter()
        .filter(|s| !s.erased)
        .max_by_key(|s| s.moves.len())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = json(
            &addr_a,
            "GET",
            &format!("/api/v1/accounts/{}", last.id),
            &admin,
            b"",
        );
        if v["version"] == last.moves.len() as i64
            && metric(&addr_a, &admin, "kusanagi_view_accounts ") == Some(294.0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "copy A never caught up: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
    check_all(&addr_a, &admin, &scripts);

    // Copy B starts after: it rebuilds everything from Kafka.
    let addr_b = format!("127.0.0.1:{}", free_port());
    let _b = start_view(dir.path(), "view-b", &topology, &addr_b);
    let took = wait_ready(&addr_b, Duration::from_secs(120));
    eprintln!("copy B rebuilt {} accounts in {took:?}", scripts.len());
    check_all(&addr_b, &admin, &scripts);
    assert_eq!(metric(&addr_b, &admin, "kusanagi_view_ready "), Some(1.0));
    assert_eq!(
        metric(&addr_b, &admin, "kusanagi_view_accounts "),
        Some(294.0)
    );

    // A tenant's key sees its own accounts only; another tenant's account
    // is answered as unknown.
    let (a_acct, b_acct) = (&scripts[1], &scripts[3]);
    assert_eq!(
        (a_acct.tenant.as_str(), b_acct.tenant.as_str()),
        ("game-a", "game-b")
    );
    for addr in [&addr_a, &addr_b] {
        let (s, _) = json(
            addr,
            "GET",
            &format!("/api/v1/accounts/{}", a_acct.id),
            &tenant_b,
            b"",
        );
        assert_eq!(s, 404);
        let (s, v) = json(
            addr,
            "GET",
            &format!("/api/v1/accounts/{}", b_acct.id),
            &tenant_b,
            b"",
        );
        assert_eq!((s, v["state"].as_str()), (200, Some("UNDER_SURVEILLANCE")));
        let check = format!(r#"{{"account_id":"{}"}}"#, a_acct.id);
        let (s, _) = json(
            addr,
            "POST",
            "/api/v1/withdrawals/check",
            &tenant_b,
            check.as_bytes(),
        );
        assert_eq!(
            s, 200,
            "another tenant's restricted account is unknown here"
        );
    }

    // A live change reaches both copies.
    let mut banned = scripts[2].clone();
    banned
        .moves
        .push((UnderSurveillance, t0() + 2 * 86_400_000));
    banned
        .moves
        .push((Banned, t0() + 2 * 86_400_000 + 3_600_000));
    let started = Instant::now();
    write_history(&broker.bootstrap, std::slice::from_ref(&banned));
    let check = format!(r#"{{"account_id":"{}"}}"#, banned.id);
    for addr in [&addr_a, &addr_b] {
        loop {
            let (s, _) = json(
                addr,
                "POST",
                "/api/v1/withdrawals/check",
                &admin,
                check.as_bytes(),
            );
            if s == 403 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{addr} never saw the ban"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "a ban reached both copies {:?} after it was written",
        started.elapsed()
    );
    check_all(&addr_b, &admin, std::slice::from_ref(&banned));

    // Lag is reported per partition of the three topics, and reaches 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, text) = http(&addr_b, "GET", "/metrics", Some(&admin), b"");
        let lags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("kusanagi_consumer_lag{stage=\"view\""))
            .collect();
        if lags.len() == 9 && lags.iter().all(|l| l.ends_with(" 0")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "lag of 3 partitions of 3 topics: {lags:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // An erasure asked for over HTTP: both copies answer 410 for the
    // subject (and its history) within seconds.
    let subject = scripts[4].id.clone();
    let started = Instant::now();
    let body = format!(r#"{{"subject":"{subject}"}}"#);
    let (s, v) = json(&addr_a, "POST", "/api/v1/erasures", &admin, body.as_bytes());
    assert_eq!(s, 202, "{v}");
    for addr in [&addr_a, &addr_b] {
        loop {
            let path = format!("/api/v1/accounts/{subject}");
            if http(addr, "GET", &path, Some(&admin), b"").0 == 410 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{addr} never answered 410"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (s, _) = http(
            addr,
            "GET",
            &format!("/api/v1/accounts/{subject}/versions"),
            Some(&admin),
            b"",
        );
        assert_eq!(s, 410);
    }
    eprintln!(
        "an erasure reached both copies {:?} after it was requested",
        started.elapsed()
    );

    // Keys rotate without a restart: a new key works, the old one is
    // refused once it is removed from the keys file.
    let next = new_key(&keys, "ops-admin-2", &["admin"], None);
    let ok = |key: &str| http(&addr_a, "GET", "/api/v1/accounts/acct-0001", Some(key), b"").0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(&next) != 200 {
        assert!(Instant::now() < deadline, "the new key was never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&keys).unwrap();
    let kept: Vec<&str> = text
        .split("\n[[keys]]")
        .filter(|e| !e.contains("\"ops-admin\""))
        .collect();
    std::fs::write(&keys, kept.join("\n[[keys]]")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while ok(&admin) != 401 {
        assert!(
            Instant::now() < deadline,
            "the removed key is still accepted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ok(&next), 200);
    let counts: BTreeMap<u16, usize> =
        [&admin, &next, "nonsense"]
            .iter()
            .map(|k| ok(k))
            .fold(BTreeMap::new(), |mut m, s| {
                *m.entry(s).or_default() += 1;
                m
            });
    assert_eq!(counts, BTreeMap::from([(200, 1), (401, 2)]));
}

#[test]
fn view_on_noida_db() {
    view_serves_and_rebuilds(BrokerKind::NoidaDb);
}

#[test]
fn view_on_embedded_broker() {
    view_serves_and_rebuilds(BrokerKind::Embedded);
}

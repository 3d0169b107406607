//! The view stage as operators run it: two `kusanagi stage view` copies on
//! a real broker, one started before the history is written (it follows)
//! and one after (it rebuilds from Kafka). Both must answer every account
//! as the history says: latest state, state at a time, versions, the
//! withdrawal check, tombstones, tenants; keys rotate without a restart.

#[path = "view_api/checks.rs"]
mod checks;
mod common;
#[path = "view_api/copies.rs"]
mod copies;
#[path = "view_api/history.rs"]
mod history;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use checks::check_all;
use common::{Broker, BrokerKind, TopologyFile, free_port, http, new_key, tempdir::TempDir};
use copies::{json, metric, start_view, wait_ready};
use history::{Script, scripts, t0, write_history, write_history_to};
use kusanagi_schemas::AccountState::{Banned, UnderSurveillance};

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
        .set("stages.view.metadata_refresh_seconds", 1)
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

    // Partitions added to the topics are found (within
    // `metadata_refresh_seconds`) and read from their beginning.
    add_partitions(&broker.bootstrap, &["accounts", "accounts.transitions"], 4);
    let model = scripts.iter().find(|s| !s.erased && s.moves.len() == 3);
    let added: Vec<Script> = (0..3)
        .map(|i| Script {
            id: format!("acct-added-{i}"),
            ..model.expect("a banned account").clone()
        })
        .collect();
    let started = Instant::now();
    write_history_to(&broker.bootstrap, &added, Some(3));
    for addr in [&addr_a, &addr_b] {
        let path = "/api/v1/accounts/acct-added-2";
        while http(addr, "GET", path, Some(&admin), b"").0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{addr} never read the added partition"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        check_all(addr, &admin, &added);
    }
    eprintln!(
        "accounts on an added partition reached both copies {:?} after they were written",
        started.elapsed()
    );

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

/// Grows `topics` to `total` partitions.
fn add_partitions(bootstrap: &str, topics: &[&str], total: usize) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let grow: Vec<NewPartitions<'_>> = topics
        .iter()
        .map(|t| NewPartitions::new(t, total))
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let results = rt
        .block_on(admin.create_partitions(&grow, &AdminOptions::new()))
        .expect("CreatePartitions answered");
    for r in results {
        r.expect("partitions added");
    }
}

#[test]
fn view_on_noida_db() {
    view_serves_and_rebuilds(BrokerKind::NoidaDb);
}

#[test]
fn view_on_embedded_broker() {
    view_serves_and_rebuilds(BrokerKind::Embedded);
}

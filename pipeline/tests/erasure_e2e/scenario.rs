//! The erasure scenario on one kind of broker: the archive written, the
//! subjects erased over HTTP, the compact stage crashed after each step of
//! its purge, and every check of the suite's list.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use kusanagi_pipeline::erasure::certificate::verify;
use kusanagi_schemas::{AuditKind, AuditRecord, RecordCodec};
use rdkafka::message::Message;
use serde_json::Value;

use crate::cli::{archive_files, erasures_ls, kusanagi_cli, verify_archive, wait_exit};
use crate::common::tempdir::TempDir;
use crate::common::{
    self, Broker, BrokerKind, Reader, S3Bucket, TopologyFile, committed, end_offsets, free_port,
    http, kusanagi_with_env, new_key, wait_for_port,
};
use crate::stored::{certificates, duckdb};

const HOURS: i64 = 240;
const PER_HOUR: usize = 2_100; // about 501,000 valid events
const FILES_PER_HOUR: usize = 2;
const SUBJECTS: usize = 100;
const PARTITIONS: i32 = 3;

pub(crate) fn erasure_end_to_end(kind: BrokerKind) {
    let broker = Broker::start(kind);
    let dir = TempDir::new("erasure");
    let root = dir.path();
    let bucket = S3Bucket::create("kusanagi-erasure");
    let keys = root.join("keys.toml");
    let admin = new_key(&keys, "ops-admin", &["admin"], None);
    let hex = |n: u8| format!("{:02x}", n).repeat(32);
    std::fs::write(root.join("salt"), format!("{}\n", hex(0x5a))).unwrap();
    std::fs::write(root.join("signing.key"), format!("{}\n", hex(0x17))).unwrap();
    let catalog_dir = root.join("catalog");
    let hot = root.join("hot");
    let warm = root.join("warm");
    let cold = bucket.url("cold");
    let topology_in = |dir: &Path, compact_group: &str| {
        let topology = TopologyFile::new()
            .set("kafka.bootstrap", broker.bootstrap.as_str())
            .set("topics.partitions", i64::from(PARTITIONS))
            .path("archive.catalog", &catalog_dir)
            .path("archive.hot", &hot)
            .path("archive.warm", &warm)
            .set("archive.cold", cold.as_str())
            .path("gdpr.salt_file", &root.join("salt"))
            .path("gdpr.signing_key_file", &root.join("signing.key"))
            .path("http.auth.keys_file", &keys)
            .set("stages.archive.rotate_after_seconds", 1)
            .set("stages.compact.group_id", compact_group);
        std::fs::create_dir_all(dir).unwrap();
        bucket.options(topology).write(dir)
    };
    let topology = topology_in(root, "kusanagi-compact");
    let again_topology = topology_in(&root.join("again"), "kusanagi-compact-again");

    // The archive: 500,000 events over the three tiers.
    let archive = kusanagi_pipeline::config::Topology::load(&topology)
        .unwrap()
        .archive;
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let events: Vec<kusanagi_schemas::GameEvent> = rt
        .block_on(kusanagi_pipeline::demo::archive::write_demo_archive(
            &archive,
            HOURS,
            PER_HOUR,
            FILES_PER_HOUR,
        ))
        .unwrap();
    eprintln!(
        "[erasure] archive of {} events written in {:?}",
        events.len(),
        started.elapsed()
    );
    assert!(events.len() >= 500_000);
    verify_archive(root, &topology, "writing the archive");

    // 100 subjects: every 500th distinct account, busy and quiet ones.
    let mut seen = BTreeSet::new();
    for e in &events {
        seen.insert(e.target_id.clone());
        seen.insert(e.actor_id.clone());
    }
    let subjects: Vec<String> = seen
        .iter()
        .step_by(seen.len() / SUBJECTS)
        .take(SUBJECTS)
        .cloned()
        .collect();
    assert_eq!(subjects.len(), SUBJECTS);
    let ids = root.join("ids.txt");
    std::fs::write(&ids, subjects.join("\n")).unwrap();
    let folders = vec![
        hot.display().to_string(),
        warm.display().to_string(),
        cold.clone(),
    ];
    let before = duckdb("events", &ids, &folders);
    assert_eq!(before["rows"].as_u64().unwrap(), events.len() as u64);
    let named_before = before["named"].as_u64().unwrap();
    assert!(named_before > 0);
    eprintln!(
        "[erasure] DuckDB before: {} rows, {named_before} naming the 100 subjects",
        before["rows"]
    );

    // The view (HTTP: erasure requests and the state API), decide, archive.
    let env = |name: &str, addr: &str| {
        vec![
            ("KUSANAGI_INSTANCE_ID".to_owned(), name.to_owned()),
            ("KUSANAGI_HTTP_LISTEN".to_owned(), addr.to_owned()),
        ]
    };
    let start = |name: &str, stage: &str, topology: &Path, extra: &[(&str, &str)]| {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut vars = env(name, &addr);
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let g = kusanagi_with_env(root, name, topology, &["stage", stage], &vars);
        (g, addr)
    };
    let (_view, view_addr) = start("view", "view", &topology, &[]);
    wait_for_port(&view_addr, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&view_addr, "GET", "/healthz/ready", None, b"").0 != 200 {
        assert!(Instant::now() < deadline, "the view never became ready");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_decide, _) = start("decide", "decide", &topology, &[]);
    let (_archive, _) = start("archive", "archive", &topology, &[]);

    // The compact stage, to crash after its first step.
    let steps = ["marked", "staged", "committed", "swapped", "certified"];
    let abort = kusanagi_pipeline::stages::compact::ABORT_AT_ENV;
    let (mut compact, _) = start("compact", "compact", &topology, &[(abort, steps[0])]);

    // 100 requests over HTTP; the state API answers 410 within 5 s.
    let mut requests = BTreeMap::new();
    let mut slowest = Duration::ZERO;
    for subject in &subjects {
        let body = format!(r#"{{"subject":"{subject}"}}"#);
        let asked = Instant::now();
        let (status, text) = http(
            &view_addr,
            "POST",
            "/api/v1/erasures",
            Some(&admin),
            body.as_bytes(),
        );
        assert_eq!(status, 202, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        requests.insert(
            v["request_id"].as_str().unwrap().to_owned(),
            subject.clone(),
        );
        let path = format!("/api/v1/accounts/{subject}");
        while http(&view_addr, "GET", &path, Some(&admin), b"").0 != 410 {
            assert!(
                asked.elapsed() < Duration::from_secs(5),
                "{subject}: no 410 within 5 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        slowest = slowest.max(asked.elapsed());
    }
    eprintln!("[erasure] 410 for all 100 subjects; the slowest {slowest:?} after its request");

    // Crash after every step in turn, verify the archive, start again.
    for (i, step) in steps.iter().enumerate() {
        let status = wait_exit(&mut compact, Duration::from_secs(300));
        assert!(!status.success(), "compact stopped at {step}: {status:?}");
        verify_archive(root, &topology, &format!("a crash after `{step}`"));
        let ls = erasures_ls(root, &topology);
        eprintln!(
            "[erasure] crash after `{step}`: {} erasures recorded, {} purged",
            ls.len(),
            ls.iter().filter(|e| e["status"] == "purged").count()
        );
        let next: Vec<(&str, &str)> = steps
            .get(i + 1)
            .map(|s| vec![(abort, *s)])
            .unwrap_or_default();
        compact = start("compact", "compact", &topology, &next).0;
    }
    // The last run goes to the end.
    let erasures_topic = "erasures";
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let end = end_offsets(&broker.bootstrap, erasures_topic, PARTITIONS);
        let done = committed(
            &broker.bootstrap,
            "kusanagi-compact",
            erasures_topic,
            PARTITIONS,
        );
        if done == end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "compact did not finish: {done:?} of {end:?}"
        );
        assert!(
            compact.child.try_wait().unwrap().is_none(),
            "compact stopped"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    verify_archive(root, &topology, "the purge");

    // DuckDB over every tier: no row names a subject; every other row is there.
    let after = duckdb("events", &ids, &folders);
    assert_eq!(after["named"].as_u64().unwrap(), 0, "{after}");
    assert_eq!(
        after["rows"].as_u64().unwrap(),
        before["rows"].as_u64().unwrap() - named_before,
        "count before - removed = count after"
    );

    // Certificates: one per request, verified, exact per subject.
    let ls = erasures_ls(root, &topology);
    assert_eq!(ls.len(), SUBJECTS);
    assert!(ls.iter().all(|e| e["status"] == "purged"), "{ls:?}");
    // Files opened per erasure: the subject filters keep most files closed.
    let mut opened: Vec<u64> = ls
        .iter()
        .map(|e| e["files_opened"].as_u64().unwrap())
        .collect();
    opened.sort_unstable();
    let listed = ls[0]["files_listed"].as_u64().unwrap();
    let rewritten: Vec<u64> = {
        let mut v: Vec<u64> = ls.iter().map(|e| e["files"].as_u64().unwrap()).collect();
        v.sort_unstable();
        v
    };
    eprintln!(
        "[erasure] files opened per erasure: median {}, max {} of {listed} listed; files holding the subject: median {}",
        opened[opened.len() / 2],
        opened[opened.len() - 1],
        rewritten[rewritten.len() / 2]
    );
    for e in &ls {
        let (o, f) = (
            e["files_opened"].as_u64().unwrap(),
            e["files"].as_u64().unwrap(),
        );
        assert!(o >= f, "{e}: a purge opens every file it rewrites");
        assert!(o * 4 < listed, "{e}: opened {o} of {listed}");
    }
    let certs = certificates(&catalog_dir);
    assert_eq!(certs.len(), SUBJECTS);
    let pubkey =
        String::from_utf8(kusanagi_cli(root, &topology, &["certificate", "pubkey"]).stdout)
            .unwrap();
    let mut files_rewritten = 0;
    let mut certified_rows = 0;
    let erased: BTreeSet<&String> = subjects.iter().collect();
    let shared: BTreeSet<&String> = events
        .iter()
        .filter(|e| erased.contains(&e.actor_id) && erased.contains(&e.target_id))
        .flat_map(|e| [&e.actor_id, &e.target_id])
        .collect();
    for (request_id, bytes) in &certs {
        let cert =
            verify(bytes, Some(pubkey.trim())).unwrap_or_else(|e| panic!("{request_id}: {e}"));
        let subject = &requests[request_id];
        // A row naming two subjects is removed by whichever purge comes
        // first, and certified by the requests of that purge.
        let own = before["per_id"][subject].as_u64().unwrap();
        if shared.contains(subject) {
            assert!(
                cert.body.rows_removed <= own,
                "{request_id}: at most its rows"
            );
        } else {
            assert_eq!(
                cert.body.rows_removed, own,
                "{request_id}: rows of its subject"
            );
        }
        certified_rows += cert.body.rows_removed;
        assert!(!String::from_utf8_lossy(bytes).contains(subject.as_str()));
        files_rewritten += cert.body.files.len();
    }
    assert!(
        certified_rows >= named_before,
        "every removed row certified"
    );
    let total_files = archive_files(root, &topology);
    eprintln!(
        "[erasure] 100 certificates verified: {files_rewritten} file rewrites listed; the archive has {total_files} files"
    );
    // The CLI: a certificate verifies; one changed byte fails.
    let (one_id, one) = certs.iter().next().unwrap();
    let file = root.join("cert.json");
    std::fs::write(&file, one).unwrap();
    let ok = kusanagi_cli(
        root,
        &topology,
        &["certificate", "verify", file.to_str().unwrap()],
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let got = kusanagi_cli(root, &topology, &["certificate", "get", one_id]);
    assert_eq!(&got.stdout, one, "certificate get prints it as stored");
    let mut bad = one.clone();
    let at = bad.len() / 2;
    bad[at] = if bad[at] == b'1' { b'2' } else { b'1' };
    std::fs::write(&file, &bad).unwrap();
    let tampered = kusanagi_cli(
        root,
        &topology,
        &["certificate", "verify", file.to_str().unwrap()],
    );
    assert!(
        !tampered.status.success(),
        "a changed byte must fail verification"
    );

    // Decide's tombstones and the audit trail.
    let mut reader = Reader::new(&broker.bootstrap, &["accounts", "audit"]);
    let codec = RecordCodec::<AuditRecord>::new();
    let counts = |msgs: &[rdkafka::message::OwnedMessage]| {
        let tombstones = msgs
            .iter()
            .filter(|m| m.topic() == "accounts" && m.payload().is_none())
            .count();
        let audit = msgs.iter().filter(|m| m.topic() == "audit").count();
        let certified = msgs
            .iter()
            .filter(|m| m.topic() == "audit")
            .filter_map(|m| codec.decode(m.payload()?).ok())
            .filter(|a| a.kind == AuditKind::CertificateIssued)
            .count();
        (tombstones, audit, certified)
    };
    // Read until quiet, then count (counting after every record would
    // decode the whole trail again each time).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        reader.drain(Duration::from_secs(3));
        let (tombstones, audit_records, certified) = counts(&reader.messages);
        if tombstones >= SUBJECTS && certified >= SUBJECTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{tombstones} tombstones on accounts, {audit_records} audit records of which {certified} certificates (want {SUBJECTS} each)"
        );
    }
    // Each subject's bare id (a record from before tenancy), and the
    // account of each tenant that held it, under its own key.
    let tombstoned: BTreeSet<String> = reader
        .of("accounts")
        .filter(|m| m.payload().is_none())
        .map(|m| String::from_utf8_lossy(m.key().unwrap()).into_owned())
        .collect();
    let (accounts, bare): (BTreeSet<String>, BTreeSet<String>) =
        tombstoned.into_iter().partition(|k| k.contains('\u{1f}'));
    let subject_set: BTreeSet<String> = subjects.iter().cloned().collect();
    assert_eq!(bare, subject_set);
    for key in &accounts {
        let id = key.split_once('\u{1f}').map(|(_, id)| id).unwrap();
        assert!(subject_set.contains(id), "{key:?} is no subject's account");
    }
    let audit: Vec<AuditRecord> = reader
        .of("audit")
        .map(|m| codec.decode(m.payload().unwrap()).unwrap())
        .collect();
    let ids_seen: BTreeSet<&str> = audit.iter().map(|a| a.audit_id.as_str()).collect();
    assert_eq!(ids_seen.len(), audit.len(), "every audit record once");
    for (request_id, subject) in &requests {
        let of = |kind: AuditKind| {
            audit
                .iter()
                .filter(|a| a.request_id.as_deref() == Some(request_id) && a.kind == kind)
                .count()
        };
        assert_eq!(of(AuditKind::ErasureRequested), 1, "{request_id}");
        assert_eq!(
            of(AuditKind::DeleteMarker),
            2,
            "{request_id}: decide and compact"
        );
        assert_eq!(of(AuditKind::CertificateIssued), 1, "{request_id}");
        assert!(
            audit
                .iter()
                .all(|a| !format!("{a:?}").contains(subject.as_str()))
        );
    }
    // The archived audit table holds the same records.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let table = duckdb("audit", &ids, &folders);
        if table["rows"].as_u64().unwrap() == audit.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit table {table} of {} records",
            audit.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Events naming an erased account that arrive now are not archived;
    // the others are.
    let late: Vec<(String, Vec<u8>)> = events
        .iter()
        .filter(|e| !erased.contains(&e.actor_id) && !erased.contains(&e.target_id))
        .take(40)
        .enumerate()
        .map(|(i, e)| {
            let mut e = e.clone();
            e.event_id = format!("late-{i}");
            if i % 2 == 0 {
                e.actor_id = subjects[i % SUBJECTS].clone();
            }
            let key = e.target_id.clone();
            (key, kusanagi_schemas::GameEventCodec::new().encode(&e))
        })
        .collect();
    common::produce_all(&common::producer(&broker.bootstrap), "events", &late);
    let want = after["rows"].as_u64().unwrap() + 20;
    let deadline = Instant::now() + Duration::from_secs(120);
    let after = loop {
        let now = duckdb("events", &ids, &folders);
        if now["rows"].as_u64().unwrap() >= want {
            break now;
        }
        assert!(Instant::now() < deadline, "late events not archived: {now}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(
        after["rows"].as_u64().unwrap(),
        want,
        "only the 20 clean ones"
    );
    assert_eq!(after["named"].as_u64().unwrap(), 0, "{after}");

    // A second run over the same requests changes nothing.
    drop(compact);
    let (_again, _) = start("compact-again", "compact", &again_topology, &[]);
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let end = end_offsets(&broker.bootstrap, erasures_topic, PARTITIONS);
        let done = committed(
            &broker.bootstrap,
            "kusanagi-compact-again",
            erasures_topic,
            PARTITIONS,
        );
        if done == end {
            break;
        }
        assert!(Instant::now() < deadline, "the second run did not finish");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        certificates(&catalog_dir),
        certs,
        "the same certificates, byte for byte"
    );
    let again = duckdb("events", &ids, &folders);
    assert_eq!(again["rows"], after["rows"]);
    verify_archive(root, &topology, "the second run");
}

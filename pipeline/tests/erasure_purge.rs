//! The purge of an erasure over a real archive (folders as tiers, the
//! archive's own writer): every row of the subject leaves every tier,
//! every other row stays, a crash after any step leaves a consistent
//! archive that a second run completes, a third run changes nothing and
//! certifies the same bytes, and the subject filters keep most files
//! closed.
//!
//! The crash is a panic of the purge's thread at the chosen step: the
//! catalog and stores see exactly what a `kill -9` there would leave. The
//! suite `erasure_e2e` kills real processes.

use std::collections::BTreeMap;
use std::path::Path;

use kusanagi_pipeline::catalog::parquet::read_batches;
use kusanagi_pipeline::catalog::{Catalog, Erasure};
use kusanagi_pipeline::config::ArchiveConfig;
use kusanagi_pipeline::erasure::Secrets;
use kusanagi_pipeline::erasure::certificate::{certify, verify};
use kusanagi_pipeline::ops::verify::verify as verify_archive;
use kusanagi_pipeline::stages::compact::purge::{PurgeReport, Step, Target, purge};
use kusanagi_pipeline::stages::tier::mover::Rewrite;

const HOURS: i64 = 48;
const EVENTS_PER_HOUR: usize = 400;

fn config(dir: &Path) -> ArchiveConfig {
    let at = |name: &str| dir.join(name).display().to_string();
    ArchiveConfig {
        catalog: at("catalog"),
        hot: at("hot"),
        warm: at("warm"),
        cold: at("cold"),
        ..ArchiveConfig::default()
    }
}

const REWRITE: Rewrite = Rewrite {
    zstd_level: 3,
    subject_filter_fpp: 0.01,
};

async fn build_archive(config: &ArchiveConfig) -> Vec<kusanagi_schemas::GameEvent> {
    kusanagi_pipeline::demo::archive::write_demo_archive(config, HOURS, EVENTS_PER_HOUR, 2)
        .await
        .unwrap()
}

/// Every event row the catalog lists, read from its tier: (actor, target) per row.
async fn rows(config: &ArchiveConfig) -> Vec<(String, String)> {
    let tiers = config.open_tiers().unwrap();
    let catalog = Catalog::open(config.open_catalog_store().unwrap(), "read")
        .await
        .unwrap();
    let mut out = Vec::new();
    for f in catalog.state().files() {
        let bytes = tiers.store(f.tier).get(&f.path).await.unwrap();
        for b in read_batches(bytes).unwrap() {
            let col = |name: &str| {
                b.column_by_name(name)
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow_array::StringArray>()
                    .unwrap()
                    .clone()
            };
            let (a, t) = (col("actor_id"), col("target_id"));
            for i in 0..b.num_rows() {
                out.push((a.value(i).to_owned(), t.value(i).to_owned()));
            }
        }
    }
    out
}

async fn check_consistent(config: &ArchiveConfig) {
    let tiers = config.open_tiers().unwrap();
    let mut catalog = Catalog::open(config.open_catalog_store().unwrap(), "verify")
        .await
        .unwrap();
    let files: Vec<_> = catalog.state().files().cloned().collect();
    let report = verify_archive(&tiers, &mut catalog, files, &["events"], |_| {})
        .await
        .unwrap();
    assert!(report.ok(), "verify: {:?}", report.problems);
}

fn erasure(subject_hash: String, n: usize) -> Erasure {
    Erasure {
        request_id: format!("er-test-{n}"),
        subject_hash,
        requested_at_ms: 1_000,
        requested_by: "test".into(),
    }
}

/// Runs a purge on its own thread; `crash_at` panics there after that step.
fn run_purge(
    config: &ArchiveConfig,
    e: &Erasure,
    subject: &str,
    crash_at: Option<Step>,
) -> Option<PurgeReport> {
    let target = Target {
        erasure: e.clone(),
        subject: subject.to_owned(),
    };
    run_batch(config, vec![target], crash_at)
}

/// Runs one purge of `targets` on its own thread; `crash_at` panics there
/// after that step.
fn run_batch(
    config: &ArchiveConfig,
    targets: Vec<Target>,
    crash_at: Option<Step>,
) -> Option<PurgeReport> {
    let config = config.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tiers = config.open_tiers().unwrap();
            let mut catalog = Catalog::open(config.open_catalog_store().unwrap(), "compact")
                .await
                .unwrap();
            purge(&mut catalog, &tiers, &targets, REWRITE, |step| {
                if Some(step) == crash_at {
                    panic!("crash after {step:?}");
                }
            })
            .await
            .unwrap()
        })
    })
    .join()
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_subjects_leave_every_tier_across_crashes_and_nothing_else_does() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir);
    let events = build_archive(&config).await;
    let secrets = Secrets::from_parts(b"test-salt-0123456789", [3; 32]);
    // Subjects: the busiest targets and actors of the traffic.
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *count.entry(&e.target_id).or_default() += 1;
        *count.entry(&e.actor_id).or_default() += 1;
    }
    let mut by_count: Vec<(&str, usize)> = count.into_iter().collect();
    by_count.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), *id));
    let subjects: Vec<String> = by_count
        .iter()
        .step_by(7)
        .take(5)
        .map(|(id, _)| (*id).to_owned())
        .collect();
    let before = rows(&config).await;
    assert_eq!(before.len(), events.len());

    let steps = [Step::Marked, Step::Staged, Step::Committed, Step::Swapped];
    let mut removed_total = 0u64;
    for (n, subject) in subjects.iter().enumerate() {
        let holds = |r: &(String, String)| &r.0 == subject || &r.1 == subject;
        let expected = before.iter().filter(|r| holds(r)).count() as u64;
        assert!(expected > 0, "{subject} is in the archive");
        let e = erasure(secrets.subject_hash(subject), n);
        // A crash after one step (a different one per subject), then a rerun.
        let crash = steps[n % steps.len()];
        assert!(run_purge(&config, &e, subject, Some(crash)).is_none());
        check_consistent(&config).await;
        let report = run_purge(&config, &e, subject, None).expect("purge");
        check_consistent(&config).await;
        let now = rows(&config).await;
        assert_eq!(now.iter().filter(|r| holds(r)).count(), 0, "{subject} gone");
        removed_total += expected;
        assert_eq!(
            now.len() as u64,
            before.len() as u64 - removed_total,
            "only {subject}'s rows left (crash after {crash:?})"
        );
        println!(
            "subject {n}: crash after {crash:?}; rerun opened {} of {} files, rewrote {}, removed {} rows",
            report.files_opened, report.files_listed, report.files_rewritten, report.rows_removed
        );
        // The filters keep most files closed.
        assert!(
            report.files_opened * 2 < report.files_listed,
            "opened {} of {} files",
            report.files_opened,
            report.files_listed
        );

        // The certificate lists every row removed, across the crashed run
        // and the rerun, and a third run changes nothing.
        let catalog = Catalog::open(config.open_catalog_store().unwrap(), "cert")
            .await
            .unwrap();
        let state = catalog.state().erasure(&e.request_id).unwrap().clone();
        let cert = certify(&state, vec!["accounts".into()], vec![], &secrets).unwrap();
        assert_eq!(cert.body.rows_removed, expected);
        assert!(
            !cert
                .to_bytes()
                .windows(subject.len())
                .any(|w| w == subject.as_bytes())
        );
        verify(&cert.to_bytes(), Some(&secrets.public_key_hex())).unwrap();
        let again = run_purge(&config, &e, subject, None).expect("third run");
        assert_eq!((again.version, again.rows_removed), (None, 0));
        let catalog = Catalog::open(config.open_catalog_store().unwrap(), "cert")
            .await
            .unwrap();
        let state = catalog.state().erasure(&e.request_id).unwrap().clone();
        let same = certify(&state, vec!["accounts".into()], vec![], &secrets).unwrap();
        assert_eq!(same.to_bytes(), cert.to_bytes(), "the same certificate");
    }
}

#[tokio::test]
async fn a_subject_absent_from_the_archive_is_certified_with_no_files() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir);
    build_archive(&config).await;
    let secrets = Secrets::from_parts(b"test-salt-0123456789", [3; 32]);
    let e = erasure(secrets.subject_hash("nobody-at-all"), 99);
    let report = run_purge(&config, &e, "nobody-at-all", None).unwrap();
    assert_eq!(report.rows_removed, 0);
    assert!(report.version.is_some(), "the purge is recorded even so");
    assert!(report.files_opened < report.files_listed / 10, "{report:?}");
    let catalog = Catalog::open(config.open_catalog_store().unwrap(), "cert")
        .await
        .unwrap();
    let state = catalog.state().erasure(&e.request_id).unwrap();
    let cert = certify(state, vec![], vec![], &secrets).unwrap();
    assert!(cert.body.files.is_empty());
}

#[tokio::test]
async fn one_pass_purges_many_subjects_and_certifies_each() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir);
    let events = build_archive(&config).await;
    let secrets = Secrets::from_parts(b"test-salt-0123456789", [3; 32]);
    let subjects: Vec<String> = events
        .iter()
        .step_by(997)
        .take(12)
        .map(|e| e.target_id.clone())
        .collect();
    let targets: Vec<Target> = subjects
        .iter()
        .enumerate()
        .map(|(n, s)| Target {
            erasure: erasure(secrets.subject_hash(s), 100 + n),
            subject: s.clone(),
        })
        .collect();
    let before = rows(&config).await;
    let named = |r: &(String, String)| subjects.contains(&r.0) || subjects.contains(&r.1);
    let expected = before.iter().filter(|r| named(r)).count() as u64;
    assert!(run_batch(&config, targets.clone(), Some(Step::Staged)).is_none());
    check_consistent(&config).await;
    let report = run_batch(&config, targets.clone(), None).unwrap();
    check_consistent(&config).await;
    let after = rows(&config).await;
    assert_eq!(after.iter().filter(|r| named(r)).count(), 0);
    assert_eq!(after.len() as u64, before.len() as u64 - expected);
    assert_eq!(report.rows_removed, expected);
    println!(
        "12 subjects in one pass: opened {} of {} files, rewrote {}, removed {} rows",
        report.files_opened, report.files_listed, report.files_rewritten, report.rows_removed
    );
    let catalog = Catalog::open(config.open_catalog_store().unwrap(), "cert")
        .await
        .unwrap();
    for (t, subject) in targets.iter().zip(&subjects) {
        let state = catalog.state().erasure(&t.erasure.request_id).unwrap();
        let cert = certify(state, vec![], vec![], &secrets).unwrap();
        let own = before
            .iter()
            .filter(|r| &r.0 == subject || &r.1 == subject)
            .count() as u64;
        assert_eq!(cert.body.rows_removed, own, "{subject}'s certificate");
    }
}

#[tokio::test]
async fn two_purges_of_one_file_at_once_lose_neither_erasure() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = tmp.path().to_path_buf();
    let config = config(&dir);
    let events = build_archive(&config).await;
    let secrets = Secrets::from_parts(b"test-salt-0123456789", [3; 32]);
    // Two subjects with rows of their own in one file (the first of the
    // first hour): each purge rewrites it, and a rewrite made from the
    // original bytes still holds the other subject's rows.
    let names = |e: &kusanagi_schemas::GameEvent, id: &str| e.actor_id == id || e.target_id == id;
    let a = events[0].actor_id.clone();
    let b = events[1..20]
        .iter()
        .map(|e| e.actor_id.clone())
        .find(|b| *b != a && !names(&events[0], b))
        .unwrap();
    let target = |subject: &str, n: usize| Target {
        erasure: erasure(secrets.subject_hash(subject), 200 + n),
        subject: subject.to_owned(),
    };
    let (ta, tb) = (target(&a, 0), target(&b, 1));
    // A's purge stages its rewrite; B's purge (another compact copy)
    // rewrites the same file and commits first; A must not commit a file
    // made from the old bytes, which still hold B's rows.
    let config_b = config.clone();
    let mut raced = false;
    let report = {
        let config = config.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tiers = config.open_tiers().unwrap();
                let mut catalog = Catalog::open(config.open_catalog_store().unwrap(), "compact-a")
                    .await
                    .unwrap();
                purge(&mut catalog, &tiers, &[ta], REWRITE, |step| {
                    if step == Step::Staged && !raced {
                        raced = true;
                        run_batch(&config_b, vec![tb.clone()], None).expect("purge b");
                    }
                })
                .await
                .unwrap()
            })
        })
        .join()
        .unwrap()
    };
    assert!(report.version.is_some());
    check_consistent(&config).await;
    let left = rows(&config).await;
    assert_eq!(
        left.iter()
            .filter(|r| r.0 == a || r.1 == a || r.0 == b || r.1 == b)
            .count(),
        0,
        "both subjects gone"
    );
    let named = events
        .iter()
        .filter(|e| e.actor_id == a || e.target_id == a || e.actor_id == b || e.target_id == b)
        .count();
    assert_eq!(left.len(), events.len() - named);
}

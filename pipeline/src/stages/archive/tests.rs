//! Each transition of a flight, and recovery from each state a crash can
//! leave, on in-memory stores.

use std::collections::BTreeMap;

use bytes::Bytes;
use kusanagi_connectors::storage::TierStore;

use super::file::WrittenFile;
use super::flight::*;
use crate::catalog::model::{test_entry, test_progress};
use crate::catalog::{Catalog, Tier, staged};

const PATH: &str = "events/tenant=t/dt=1970-01-01/hour=00/part-a.parquet";

fn memory() -> TierStore {
    TierStore::open("memory://", &BTreeMap::new()).unwrap()
}

fn written() -> Flight {
    Flight::Written(vec![WrittenFile {
        bytes: Bytes::from_static(b"PAR1"),
        entry: test_entry(Tier::Hot, PATH),
    }])
}

/// The hot tier, the catalog's store, and a catalog on it.
async fn setup() -> (TierStore, TierStore, Catalog) {
    let store = memory();
    let catalog = Catalog::open(store.clone(), "archive@a").await.unwrap();
    (memory(), store, catalog)
}

fn staged_path() -> String {
    staged(PATH, &test_entry(Tier::Hot, PATH).sha256)
}

#[tokio::test]
async fn a_flight_goes_written_staged_committed_in_place() {
    let (hot, _store, mut catalog) = setup().await;
    let staged_flight = written().upload(&hot).await.unwrap();
    assert_eq!(staged_flight.name(), "staged");
    assert!(hot.exists(&staged_path()).await.unwrap());
    assert!(
        !hot.exists(PATH).await.unwrap(),
        "no table glob sees a staged file"
    );

    let committed = staged_flight
        .commit(&mut catalog, &hot, vec![test_progress(None, 10)])
        .await
        .unwrap();
    let Flight::Committed { version, files } = &committed else {
        panic!("{}", committed.name());
    };
    assert_eq!(*version, 1);
    assert_eq!(files.len(), 1);
    assert_eq!(catalog.state().files().count(), 1);
    assert_eq!(catalog.state().next_offset("events", 0), Some(10));
    assert!(!hot.exists(PATH).await.unwrap(), "listed, not yet moved");

    let in_place = committed.promote(&hot).await.map_err(|(_, e)| e).unwrap();
    assert_eq!(in_place.name(), "in place");
    assert!(hot.exists(PATH).await.unwrap());
    assert!(!hot.exists(&staged_path()).await.unwrap());
}

#[tokio::test]
async fn a_conflicting_commit_lists_nothing_and_deletes_the_staged_copies() {
    let (hot, store, mut catalog) = setup().await;
    // Another copy archived the same offsets first.
    let mut other = Catalog::open(store.clone(), "archive@b").await.unwrap();
    other
        .commit("archive", vec![test_progress(None, 10)])
        .await
        .unwrap();
    let staged_flight = written().upload(&hot).await.unwrap();
    let err = staged_flight
        .commit(&mut catalog, &hot, vec![test_progress(None, 10)])
        .await
        .unwrap_err();
    assert!(matches!(err, FlightError::Conflict(_)), "{err}");
    catalog.refresh().await.unwrap();
    assert_eq!(catalog.state().files().count(), 0);
    assert!(!hot.exists(&staged_path()).await.unwrap());
}

#[tokio::test]
async fn a_crash_after_the_commit_is_finished_by_recovery() {
    let (hot, store, mut catalog) = setup().await;
    let committed = written()
        .upload(&hot)
        .await
        .unwrap()
        .commit(&mut catalog, &hot, vec![test_progress(None, 10)])
        .await
        .unwrap();
    drop(committed); // the crash: never moved
    let mut restarted = Catalog::open(store.clone(), "archive@a").await.unwrap();
    let moved = recover(&hot, &mut restarted).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert!(hot.exists(PATH).await.unwrap());
    assert!(!hot.exists(&staged_path()).await.unwrap());
}

#[tokio::test]
async fn a_crash_before_the_commit_leaves_nothing_visible() {
    let (hot, _store, mut catalog) = setup().await;
    let staged_flight = written().upload(&hot).await.unwrap();
    drop(staged_flight); // the crash: never listed
    let moved = recover(&hot, &mut catalog).await.unwrap();
    assert!(moved.is_empty());
    assert!(!hot.exists(PATH).await.unwrap());
    assert_eq!(catalog.state().files().count(), 0);
}

#[tokio::test]
async fn transitions_from_another_state_leave_the_flight_as_it_is() {
    let (hot, _store, mut catalog) = setup().await;
    let f = Flight::InPlace.upload(&hot).await.unwrap();
    let f = f.commit(&mut catalog, &hot, Vec::new()).await.unwrap();
    assert_eq!(f.name(), "in place");
    assert_eq!(catalog.state().version(), 0, "nothing committed");
}

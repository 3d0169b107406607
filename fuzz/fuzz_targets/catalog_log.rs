//! The archive catalog read back from object storage: a checkpoint, then
//! commits of the log, as `Catalog::open` and `refresh` parse and apply
//! them. Any bytes give a state or an error, never a panic; a commit that
//! does not apply changes nothing; a state survives its own checkpoint.
//!
//! Input: the checkpoint's bytes, then each commit's, separated by 0xFF
//! (a byte that JSON text cannot hold).
#![no_main]

use kusanagi_pipeline::catalog::model::Snapshot;
use kusanagi_pipeline::catalog::{CatalogState, Commit};
use libfuzzer_sys::fuzz_target;

fn snapshot_json(state: &CatalogState) -> String {
    serde_json::to_string(&state.to_snapshot()).expect("a snapshot serializes")
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let checkpoint = parts.next().unwrap_or_default();
    let mut state = match serde_json::from_slice::<Snapshot>(checkpoint) {
        Ok(s) => CatalogState::from_snapshot(s),
        Err(_) => CatalogState::default(),
    };
    for part in parts {
        let Ok(commit) = serde_json::from_slice::<Commit>(part) else {
            continue;
        };
        let before = snapshot_json(&state);
        if state.apply(&commit).is_err() {
            assert_eq!(
                snapshot_json(&state),
                before,
                "a refused commit changed the state"
            );
        } else {
            assert_eq!(state.version(), commit.version);
        }
    }
    let once = snapshot_json(&state);
    let again = CatalogState::from_snapshot(state.to_snapshot());
    assert_eq!(
        snapshot_json(&again),
        once,
        "the checkpoint does not hold the state"
    );
});

//! What the archive and the catalog hold, read from outside the pipeline:
//! DuckDB's counts over every tier, and the certificate files.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::common::{self, harness_python};

pub(crate) fn duckdb(table: &str, ids: &Path, folders: &[String]) -> Value {
    let script = common::workspace().join("pipeline/tests/duckdb/erased_counts.py");
    let out = Command::new(harness_python())
        .arg(script)
        .arg(table)
        .arg(ids)
        .args(folders)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "DuckDB script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the DuckDB script")
}

/// The certificates in the catalog folder, by request id.
pub(crate) fn certificates(catalog: &Path) -> BTreeMap<String, Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(catalog.join("certificates")) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .map(|p| {
            let id = p.file_stem().unwrap().to_string_lossy().into_owned();
            (id, std::fs::read(&p).unwrap())
        })
        .collect()
}

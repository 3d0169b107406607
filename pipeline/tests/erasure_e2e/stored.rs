//! What the archive and the catalog hold, read from outside the pipeline:
//! DuckDB's counts over every tier, and the certificate files.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::common;

pub(crate) fn duckdb(table: &str, ids: &Path, folders: &[String]) -> Value {
    let args = [std::ffi::OsStr::new(table), ids.as_os_str()]
        .into_iter()
        .chain(folders.iter().map(std::ffi::OsStr::new));
    common::duckdb_script("erased_counts.py", args)
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

//! What the archive holds, read back: the catalog as the operator commands
//! see it, the Parquet files of a tier's folder, and DuckDB's counts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kusanagi_pipeline::catalog::Catalog;
use kusanagi_pipeline::config::Topology;

use crate::common;

pub(crate) const WAIT: Duration = Duration::from_secs(300);

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The catalog as the operator commands see it.
pub(crate) fn catalog(topology: &Topology) -> Catalog {
    let store = topology
        .archive
        .open_catalog_store()
        .expect("catalog store");
    runtime()
        .block_on(Catalog::open(store, "test"))
        .expect("catalog opens")
}

/// Waits until the catalog lists `at_least` rows.
pub(crate) fn wait_for_rows(catalog: &mut Catalog, at_least: u64) {
    let rt = runtime();
    let end = Instant::now() + WAIT;
    loop {
        rt.block_on(catalog.refresh()).expect("catalog refresh");
        let rows: u64 = catalog.state().files().map(|f| f.rows).sum();
        if rows >= at_least {
            return;
        }
        assert!(
            Instant::now() < end,
            "only {rows} rows archived after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every Parquet file under `root/<table>`, relative to `root`.
pub(crate) fn files_under(root: &Path, table: &str) -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut found = Vec::new();
    walk(&root.join(table), &mut found);
    found
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| {
            p.strip_prefix(root)
                .expect("under root")
                .display()
                .to_string()
        })
        .collect()
}

pub(crate) fn duckdb_counts(table: &str, folders: &[&Path]) -> serde_json::Value {
    let args = std::iter::once(Path::new(table)).chain(folders.iter().copied());
    common::duckdb_script("archive_counts.py", args)
}

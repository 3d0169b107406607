//! Temporary directories, removed when dropped.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temp dir.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `<tmp>/kusanagi-it-<prefix>-<random>`.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("kusanagi-it-{prefix}-"))
            .tempdir()
            .expect("a temporary directory");
        Self(dir.keep())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_log_tails(&self.0);
        }
        if std::env::var_os("KUSANAGI_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A failed test shows the last lines of every process log in its
/// directory (the broker's, each stage copy's), so a CI failure can be
/// read without the machine it ran on.
fn print_log_tails(dir: &Path) {
    const LINES: usize = 25;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let Ok(bytes) = std::fs::read(&log) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("---- last {LINES} lines of {} ----", log.display());
        for line in &lines[lines.len().saturating_sub(LINES)..] {
            eprintln!("{line}");
        }
    }
}

//! CPU time of this process's threads, from `/proc/self/task/*/stat`
//! (Linux), grouped by what the thread does: a stage's own thread
//! (`stage-<name>`), librdkafka's threads (`rdk:*`, and rust-rdkafka's
//! `producer polling thread`), the async runtime's workers, the embedded
//! broker's, the load test's own.
//!
//! Threads that ended between two readings are not in `/proc/self/task`
//! any more; the process's own total (`/proc/self/stat`) still holds their
//! time, so what it grew by beyond the live threads is reported as the
//! group `ended threads` (a stage's short-lived workers, such as the
//! archive's file writers).
//!
//! The figures are the kernel's per-thread user + system time, in clock
//! ticks of 10 ms (`USER_HZ`, which Linux fixes at 100 for `/proc`): a
//! run long enough to spend seconds per group reads them to about 1%.

use std::collections::BTreeMap;

/// `/proc` counts CPU time in ticks of 1/100 s.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by each thread alive now, by thread id, and by
/// the whole process.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    threads: BTreeMap<u32, (String, u64)>,
    /// The process's ticks, ended threads included.
    process: u64,
}

/// The group of what threads that ended between two snapshots spent.
pub const ENDED: &str = "ended threads";

impl Snapshot {
    /// Reads every thread of this process (empty where `/proc` is absent).
    pub fn take() -> Self {
        let mut threads = BTreeMap::new();
        let process = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .map_or(0, |(_, ticks)| ticks);
        let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
            return Self { threads, process };
        };
        for entry in dir.flatten() {
            let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat"))
                && let Some((name, ticks)) = parse_stat(&stat)
            {
                // The main thread bears the program's name, whatever it is.
                let name = if tid == std::process::id() {
                    "loadtest-main".to_owned()
                } else {
                    name
                };
                threads.insert(tid, (name, ticks));
            }
        }
        Self { threads, process }
    }

    /// CPU seconds per group spent between `before` and `self` (a thread
    /// that started meanwhile counts from zero; what threads that ended
    /// meanwhile spent is the group [`ENDED`]).
    pub fn since(&self, before: &Snapshot) -> BTreeMap<String, f64> {
        let mut groups: BTreeMap<String, f64> = BTreeMap::new();
        let mut live = 0;
        for (tid, (name, ticks)) in &self.threads {
            let earlier = before.threads.get(tid).map_or(0, |(_, t)| *t);
            let spent = ticks.saturating_sub(earlier);
            live += spent;
            *groups.entry(group_of(name)).or_default() += spent as f64 / TICKS_PER_SECOND;
        }
        // Threads alive before and gone now took their ticks with them
        // from `before`'s sum too: count only the process's growth.
        let ended = self
            .process
            .saturating_sub(before.process)
            .saturating_sub(live);
        if ended > 0 {
            groups.insert(ENDED.to_owned(), ended as f64 / TICKS_PER_SECOND);
        }
        groups
    }
}

/// (thread name, user + system ticks) of one `stat` line. The name is in
/// parentheses and may hold spaces and parentheses itself, so the fields
/// are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    // After ") ": state(3) ppid(4) ... utime(14) stime(15).
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// The group a thread named `name` belongs to.
fn group_of(name: &str) -> String {
    if let Some(stage) = name.strip_prefix("stage-") {
        return stage.to_owned();
    }
    // rust-rdkafka's delivery-report thread ("producer polling thread",
    // cut to 15 characters) serves a producer as librdkafka's own do.
    if name.starts_with("rdk:") || name.starts_with("producer poll") {
        return "librdkafka".into();
    }
    if name.starts_with("tokio-") {
        return "async runtime".into();
    }
    if name.starts_with("loadtest") {
        return "load test".into();
    }
    name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '_')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_ticks() {
        let line = "4242 (rdk:broker (1)) S 1 1 1 0 -1 4194368 10 0 0 0 250 37 0 0 20 0 1 0 \
                    100 0 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 -1 0 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(("rdk:broker (1)".into(), 287)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn threads_are_grouped_by_what_they_do() {
        assert_eq!(group_of("stage-screen"), "screen");
        assert_eq!(group_of("rdk:main"), "librdkafka");
        assert_eq!(group_of("producer pollin"), "librdkafka");
        assert_eq!(group_of("tokio-runtime-w"), "async runtime");
        assert_eq!(group_of("conn-17"), "conn");
    }

    #[test]
    fn cpu_this_thread_spends_shows_in_a_snapshot() {
        let before = Snapshot::take();
        let started = std::time::Instant::now();
        let mut x = 0u64;
        loop {
            for _ in 0..1_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            if Snapshot::take().since(&before).values().sum::<f64>() > 0.0 {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no CPU time seen in /proc/self/task"
            );
        }
    }

    #[test]
    fn what_an_ended_thread_spent_is_its_own_group() {
        let before = Snapshot::take();
        let started = std::time::Instant::now();
        loop {
            std::thread::spawn(|| {
                let mut x = 0u64;
                for _ in 0..20_000_000 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                }
            })
            .join()
            .unwrap();
            if Snapshot::take()
                .since(&before)
                .get(ENDED)
                .is_some_and(|s| *s > 0.0)
            {
                break;
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(30),
                "no CPU time of ended threads seen in /proc/self/stat"
            );
        }
    }
}

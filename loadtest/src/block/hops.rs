//! Where a trial's time goes. After the trials, each trial account's first
//! record in `events.raw` (Kafka trials), `events`, `screenings` and
//! `accounts.transitions` is read back with its timestamp. The stages leave
//! the timestamp to their producer, which stamps a record when the stage
//! hands it over, before the stage's transaction commits. So the gap
//! between two topics is one stage's share: the previous stage's commit,
//! this stage's fetch, batch wait and work. The last gap, from
//! `accounts.transitions` to the refused check, is decide's commit, the
//! view's read and the check's polling.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use kusanagi_connectors::kafka::KafkaSettings;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::observe::reader_with_bounds;

/// One blocked trial.
#[derive(Debug, Clone)]
pub struct Trial {
    /// Its account (every record of the path is keyed by it).
    pub account: String,
    /// When the trade was sent, ms since the epoch.
    pub sent_ms: i64,
    /// When the check first refused, ms since the epoch.
    pub refused_ms: i64,
}

/// The path's topics, in order, and what each gap is called.
#[derive(Debug, Clone)]
pub struct Path {
    /// `(topic, name of the gap that ends when its record is produced)`;
    /// the first gap starts at the send.
    pub topics: Vec<(String, &'static str)>,
}

/// The gaps of every trial whose records were all found.
#[derive(Debug, Clone, PartialEq)]
pub struct Hops {
    /// Gap names, in order; the last ends at the refused check.
    pub names: Vec<&'static str>,
    /// Each gap's histogram, in microseconds (from ms timestamps).
    pub gaps: Vec<Histogram<u64>>,
    /// Trials with a record missing on some topic (not summarised).
    pub incomplete: u64,
    /// Per stage over the whole run: transactions committed and their mean
    /// time from the batch's start (work, produce, commit), in ms.
    pub transactions: Vec<(String, u64, f64)>,
}

/// Per stage: (transactions, mean ms), from the metrics' text.
pub fn transactions(metrics_text: &str) -> Vec<(String, u64, f64)> {
    let value = |name: &str, stage: &str| {
        let prefix = format!("kusanagi_{name}{{stage=\"{stage}\"}} ");
        metrics_text
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    ["ingest", "screen", "decide", "analyze"]
        .iter()
        .filter_map(|stage| {
            let n = value("transaction_duration_seconds_count", stage)?;
            let sum = value("transaction_duration_seconds_sum", stage)?;
            (n > 0.0).then(|| ((*stage).to_owned(), n as u64, sum / n * 1e3))
        })
        .collect()
}

impl Hops {
    /// Each gap's median and 99th percentile, in ms, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let gaps: Vec<_> = self
            .names
            .iter()
            .zip(&self.gaps)
            .map(|(name, h)| {
                json!({
                    "gap": name,
                    "p50_ms": h.value_at_quantile(0.5) as f64 / 1e3,
                    "p99_ms": h.value_at_quantile(0.99) as f64 / 1e3,
                })
            })
            .collect();
        let transactions: Vec<_> = self
            .transactions
            .iter()
            .map(|(stage, n, mean)| json!({"stage": stage, "committed": n, "mean_ms": mean}))
            .collect();
        json!({ "gaps": gaps, "incomplete": self.incomplete, "transactions": transactions })
    }
}

impl std::fmt::Display for Hops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "  where it went (ms, p50 / p99):")?;
        for (name, h) in self.names.iter().zip(&self.gaps) {
            write!(
                f,
                "\n    {name:<36} {:>6.1} / {:>6.1}",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3
            )?;
        }
        for (stage, n, mean) in &self.transactions {
            write!(
                f,
                "\n    {stage} transactions: {n}, {mean:.1} ms each on average"
            )?;
        }
        if self.incomplete > 0 {
            write!(
                f,
                "\n    ({} trials with a record missing)",
                self.incomplete
            )?;
        }
        Ok(())
    }
}

/// Reads the path's topics back and measures each trial's gaps.
pub fn measure(settings: &KafkaSettings, path: &Path, trials: &[Trial]) -> anyhow::Result<Hops> {
    let index: HashMap<&str, usize> = trials
        .iter()
        .enumerate()
        .map(|(i, t)| (t.account.as_str(), i))
        .collect();
    // stamps[t][i]: the first timestamp of trial i's record on topic t.
    let mut stamps = vec![vec![None::<i64>; trials.len()]; path.topics.len()];
    for (t, (topic, _)) in path.topics.iter().enumerate() {
        read_first_stamps(settings, topic, &index, &mut stamps[t])?;
    }
    let names: Vec<&'static str> = path.topics.iter().map(|(_, n)| *n).collect();
    summarise(names, &stamps, trials)
}

/// The gaps between each trial's send, its records' stamps (`stamps[t][i]`:
/// trial i on the path's topic t) and its refused check.
fn summarise(
    mut names: Vec<&'static str>,
    stamps: &[Vec<Option<i64>>],
    trials: &[Trial],
) -> anyhow::Result<Hops> {
    names.push("-> refused (view, check)");
    let mut gaps: Vec<Histogram<u64>> = names
        .iter()
        .map(|_| Histogram::new(3).context("a histogram"))
        .collect::<anyhow::Result<_>>()?;
    let mut incomplete = 0;
    for (i, trial) in trials.iter().enumerate() {
        let Some(points) = stamps.iter().map(|s| s[i]).collect::<Option<Vec<i64>>>() else {
            incomplete += 1;
            continue;
        };
        let mut at = trial.sent_ms;
        for (gap, next) in gaps
            .iter_mut()
            .zip(points.iter().chain([&trial.refused_ms]))
        {
            gap.record((next - at).max(0) as u64 * 1_000)?;
            at = *next;
        }
    }
    Ok(Hops {
        names,
        gaps,
        incomplete,
        transactions: Vec::new(),
    })
}

/// Notes, for each trial account, the timestamp of its first record in
/// `topic` (read from the beginning to the end it had when the read began).
fn read_first_stamps(
    settings: &KafkaSettings,
    topic: &str,
    index: &HashMap<&str, usize>,
    stamps: &mut [Option<i64>],
) -> anyhow::Result<()> {
    let (consumer, bounds) = reader_with_bounds(settings, "kusanagi-loadtest-hops", topic)?;
    // The partitions not read to their end yet, with that end.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for b in bounds.into_iter().filter(|b| b.high > b.low) {
        tpl.add_partition_offset(topic, b.partition, Offset::Offset(b.low))?;
        ends.insert(b.partition, b.high);
    }
    consumer.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            bail!("reading `{topic}` back took over 120 s");
        }
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            // Transaction markers can end a partition without a record:
            // the reader's position tells.
            if let Ok(at) = consumer.position() {
                ends.retain(|p, end| {
                    at.find_partition(topic, *p)
                        .and_then(|e| e.offset().to_raw())
                        .is_none_or(|o| o < *end)
                });
            }
            continue;
        };
        let m = m.with_context(|| format!("reading `{topic}`"))?;
        if let Some(i) = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| index.get(k))
        {
            stamps[*i] = stamps[*i].or(m.timestamp().to_millis());
        }
        // Records written after the read began come too: past the end, a
        // partition is done (and stays done).
        if ends
            .get(&m.partition())
            .is_some_and(|end| m.offset() + 1 >= *end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_gap_runs_from_the_previous_point_and_an_incomplete_trial_is_counted_apart() {
        let trial = |account: &str, sent_ms, refused_ms| Trial {
            account: account.into(),
            sent_ms,
            refused_ms,
        };
        let trials = [trial("a", 100, 160), trial("b", 200, 290)];
        // Two topics: a's records at 110 and 130; b's second is missing.
        let stamps = vec![vec![Some(110), Some(205)], vec![Some(130), None]];
        let h = summarise(vec!["-> x", "-> y"], &stamps, &trials).unwrap();
        assert_eq!(h.names, ["-> x", "-> y", "-> refused (view, check)"]);
        assert_eq!(h.incomplete, 1);
        let p50: Vec<u64> = h
            .gaps
            .iter()
            .map(|g| g.value_at_quantile(0.5) / 1_000)
            .collect();
        assert_eq!(p50, [10, 20, 30]);
        assert!(h.to_string().contains("-> y"));
    }

    #[test]
    fn transactions_are_read_from_the_metrics_text() {
        let text = "kusanagi_transaction_duration_seconds_sum{stage=\"ingest\"} 1.5\n\
                    kusanagi_transaction_duration_seconds_count{stage=\"ingest\"} 100\n\
                    kusanagi_transaction_duration_seconds_count{stage=\"screen\"} 0\n";
        assert_eq!(transactions(text), [("ingest".to_owned(), 100, 15.0)]);
    }
}

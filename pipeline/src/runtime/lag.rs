//! Consumer lag per partition from librdkafka's statistics (no extra
//! requests to the brokers): a stage's consumer context hands each
//! statistics report to a [`LagReporter`], which sets
//! `kusanagi_consumer_lag{stage,topic,partition}` for the partitions this
//! copy owns and drops the series of partitions it no longer owns.

use std::collections::HashSet;
use std::sync::Mutex;

use rdkafka::ClientConfig;
use rdkafka::statistics::{Partition, Statistics};

use super::Metrics;

/// How often librdkafka reports statistics, in milliseconds.
pub const STATS_INTERVAL_MS: &str = "5000";

/// Turns on the statistics a [`LagReporter`] reads.
pub fn enable_stats(config: &mut ClientConfig) {
    config.set("statistics.interval.ms", STATS_INTERVAL_MS);
}

/// Reports one stage copy's lag.
#[derive(Debug)]
pub struct LagReporter {
    stage: &'static str,
    metrics: Metrics,
    reported: Mutex<HashSet<(String, i32)>>,
}

/// The lag of one partition in a statistics report: its end (the last
/// stable offset under `read_committed`, else the high mark) minus where
/// the copy reads (its position, else its committed offset, else the
/// partition's start). `None` when the report does not say.
pub fn partition_lag(p: &Partition) -> Option<i64> {
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if end < 0 {
        return None;
    }
    let at = [p.app_offset, p.committed_offset, p.lo_offset]
        .into_iter()
        .find(|o| *o >= 0)?;
    Some((end - at).max(0))
}

impl LagReporter {
    /// A reporter for `stage`.
    pub fn new(stage: &'static str, metrics: Metrics) -> Self {
        Self {
            stage,
            metrics,
            reported: Mutex::new(HashSet::new()),
        }
    }

    /// Sets the lag of every partition the report shows this copy owns,
    /// and forgets the partitions it no longer does.
    pub fn report(&self, stats: &Statistics) {
        let mut now = HashSet::new();
        for (topic, t) in &stats.topics {
            for p in t.partitions.values() {
                // -1 is librdkafka's internal "unassigned" partition.
                if p.partition < 0 || !p.desired {
                    continue;
                }
                if let Some(lag) = partition_lag(p) {
                    self.metrics
                        .consumer_lag(self.stage, topic, p.partition, lag);
                    now.insert((topic.clone(), p.partition));
                }
            }
        }
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in reported.difference(&now) {
            self.metrics.forget_lag(self.stage, topic, *partition);
        }
        *reported = now;
    }
}

impl Drop for LagReporter {
    /// A copy whose consumer is gone (a restart after a fatal error, a
    /// stop) no longer reports the partitions it had.
    fn drop(&mut self) {
        let reported = self.reported.get_mut().unwrap_or_else(|e| e.into_inner());
        for (topic, partition) in reported.drain() {
            self.metrics.forget_lag(self.stage, &topic, partition);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(json: &str) -> Statistics {
        serde_json::from_str(json).expect("statistics JSON")
    }

    /// A statistics report holding `parts` of topic `t`: (partition,
    /// desired, app_offset, committed_offset, ls_offset).
    fn report(parts: &[(i32, bool, i64, i64, i64)]) -> Statistics {
        let partitions: Vec<String> = parts
            .iter()
            .map(|(p, desired, app, committed, ls)| {
                format!(
                    r#""{p}": {{"partition": {p}, "broker": 1, "leader": 1, "desired": {desired}, "unknown": false,
                    "msgq_cnt": 0, "msgq_bytes": 0, "xmit_msgq_cnt": 0, "xmit_msgq_bytes": 0, "fetchq_cnt": 0,
                    "fetchq_size": 0, "fetch_state": "active", "query_offset": 0, "next_offset": 0,
                    "app_offset": {app}, "stored_offset": -1001, "committed_offset": {committed},
                    "eof_offset": -1001, "lo_offset": 0, "hi_offset": {ls}, "ls_offset": {ls},
                    "consumer_lag": -1, "consumer_lag_stored": -1, "txmsgs": 0, "txbytes": 0, "rxmsgs": 0,
                    "rxbytes": 0, "msgs": 0, "rx_ver_drops": 0, "msgs_inflight": 0, "next_ack_seq": 0,
                    "next_err_seq": 0, "acked_msgid": 0}}"#
                )
            })
            .collect();
        stats(&format!(
            r#"{{"name": "c", "client_id": "c", "type": "consumer", "ts": 0, "time": 0, "age": 0,
            "replyq": 0, "msg_cnt": 0, "msg_size": 0, "msg_max": 0, "msg_size_max": 0, "simple_cnt": 0,
            "metadata_cache_cnt": 0, "brokers": {{}}, "topics": {{"t": {{"topic": "t", "age": 0,
            "metadata_age": 0, "batchsize": {{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0}},
            "batchcnt": {{"min":0,"max":0,"avg":0,"sum":0,"stddev":0,"p50":0,"p75":0,"p90":0,"p95":0,"p99":0,"p99_99":0,"outofrange":0,"hdrsize":0,"cnt":0}},
            "partitions": {{{}}}}}}}, "tx": 0, "tx_bytes": 0, "rx": 0, "rx_bytes": 0, "txmsgs": 0,
            "txmsg_bytes": 0, "rxmsgs": 0, "rxmsg_bytes": 0}}"#,
            partitions.join(",")
        ))
    }

    #[test]
    fn lag_is_reported_for_owned_partitions_and_dropped_when_they_go() {
        let metrics = Metrics::new();
        let r = LagReporter::new("screen", metrics.clone());
        // p0 read to 40 of 100; p1 never read, committed at 90; p2 not ours.
        r.report(&report(&[
            (0, true, 40, -1001, 100),
            (1, true, -1001, 90, 100),
            (2, false, 0, 0, 100),
            (-1, true, 0, 0, 100),
        ]));
        assert_eq!(metrics.consumer_lag_now("screen", "t", 0), Some(60));
        assert_eq!(metrics.consumer_lag_now("screen", "t", 1), Some(10));
        assert_eq!(metrics.consumer_lag_now("screen", "t", 2), None);
        assert_eq!(metrics.consumer_lag_now("screen", "t", -1), None);
        // After a rebalance p0 moved to another copy.
        r.report(&report(&[(1, true, 100, 90, 100)]));
        assert_eq!(metrics.consumer_lag_now("screen", "t", 0), None);
        assert_eq!(metrics.consumer_lag_now("screen", "t", 1), Some(0));
        // The consumer is gone (a restart): its series go with it.
        drop(r);
        assert_eq!(metrics.consumer_lag_now("screen", "t", 1), None);
    }
}

//! The metrics of the screen, decide and analyze stages, defined once with
//! fixed names (`docs/metrics.md`). Stages count into a [`ScreeningTally`]
//! while they process a batch and hand it over in [`super::Stage::on_commit`],
//! so the counters count committed transactions only.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoveLabel {
    to: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    source: &'static str,
    reason: &'static str,
    tenant: String,
}

/// What one batch of a screening stage did, counted until it commits.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ScreeningTally {
    /// Screenings by outcome (`screened`, `passed`).
    pub screenings: Vec<(&'static str, u64)>,
    /// Rules fired, by rule.
    pub rules: Vec<(&'static str, u64)>,
    /// Duplicate events skipped.
    pub duplicates: u64,
    /// Late events.
    pub late: u64,
    /// Event times (µs) of the screenings, for the latency histogram.
    pub event_times_us: Vec<i64>,
    /// Moves by (to state, `applied` or `refused`).
    pub moves: Vec<(&'static str, &'static str, u64)>,
    /// Verdicts by (source, reason, tenant).
    pub verdicts: Vec<(&'static str, &'static str, String, u64)>,
}

impl ScreeningTally {
    fn bump<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K) {
        match list.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => list.push((key, 1)),
        }
    }

    /// One screening with `outcome`.
    pub fn screening(&mut self, outcome: &'static str) {
        Self::bump(&mut self.screenings, outcome);
    }

    /// One rule fired.
    pub fn rule(&mut self, rule: &'static str) {
        Self::bump(&mut self.rules, rule);
    }

    /// One move to `to`, applied or refused.
    pub fn account_move(&mut self, to: &'static str, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        match self
            .moves
            .iter_mut()
            .find(|(t, o, _)| *t == to && *o == outcome)
        {
            Some((_, _, n)) => *n += 1,
            None => self.moves.push((to, outcome, 1)),
        }
    }

    /// One verdict from `source` (`model`, `cache`, `fallback`) for
    /// `reason`, for an account of `tenant`.
    pub fn verdict(&mut self, source: &'static str, reason: &'static str, tenant: &str) {
        match self
            .verdicts
            .iter_mut()
            .find(|(s, r, t, _)| *s == source && *r == reason && t == tenant)
        {
            Some((_, _, _, n)) => *n += 1,
            None => self.verdicts.push((source, reason, tenant.to_owned(), 1)),
        }
    }
}

/// The screening stages' metrics.
#[derive(Clone, Debug)]
pub struct ScreeningMetrics {
    screenings: Family<OutcomeLabel, Counter>,
    rules: Family<RuleLabel, Counter>,
    duplicates: Counter,
    late: Counter,
    latency: Histogram,
    window_targets: Gauge,
    moves: Family<MoveLabel, Counter>,
    verdicts: Family<VerdictLabel, Counter>,
    l2_attempts: Counter,
    l2_retries: Counter,
    l2_rate_limit_waits: Counter,
}

impl ScreeningMetrics {
    /// Registers every screening metric in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            screenings: Family::default(),
            rules: Family::default(),
            duplicates: Counter::default(),
            late: Counter::default(),
            // 1 ms .. ~65 s
            latency: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            window_targets: Gauge::default(),
            moves: Family::default(),
            verdicts: Family::default(),
            l2_attempts: Counter::default(),
            l2_retries: Counter::default(),
            l2_rate_limit_waits: Counter::default(),
        };
        registry.register(
            "screenings",
            "Screenings committed, by outcome (screened: a rule fired; passed)",
            m.screenings.clone(),
        );
        registry.register(
            "rules_fired",
            "L1 rules fired in committed screenings, by rule",
            m.rules.clone(),
        );
        registry.register(
            "screen_duplicates",
            "Redelivered events (an event_id already in its window) skipped",
            m.duplicates.clone(),
        );
        registry.register(
            "screen_late_events",
            "Events screened after the allowed lateness",
            m.late.clone(),
        );
        registry.register(
            "screen_latency_seconds",
            "From an event's time to the commit of its screening (includes producer and ingest delay)",
            m.latency.clone(),
        );
        registry.register(
            "screen_window_targets",
            "Targets with retained window state in this copy",
            m.window_targets.clone(),
        );
        registry.register(
            "account_moves",
            "Account state-machine moves, by target state and outcome (applied, refused)",
            m.moves.clone(),
        );
        registry.register(
            "l2_verdicts",
            "L2 verdicts committed, by source (model, cache, fallback), fallback reason and tenant",
            m.verdicts.clone(),
        );
        registry.register(
            "l2_attempts",
            "HTTP calls made to the model, retries included",
            m.l2_attempts.clone(),
        );
        registry.register(
            "l2_retries",
            "Model calls retried after a 429, a 5xx or a connection error",
            m.l2_retries.clone(),
        );
        registry.register(
            "l2_rate_limit_waits",
            "Model calls that waited for the rate limiter",
            m.l2_rate_limit_waits.clone(),
        );
        m
    }

    /// Records a committed batch's tally.
    pub fn record(&self, tally: &ScreeningTally, now_us: i64) {
        for (outcome, n) in &tally.screenings {
            self.screenings
                .get_or_create(&OutcomeLabel { outcome })
                .inc_by(*n);
        }
        for (rule, n) in &tally.rules {
            self.rules.get_or_create(&RuleLabel { rule }).inc_by(*n);
        }
        self.duplicates.inc_by(tally.duplicates);
        self.late.inc_by(tally.late);
        for t in &tally.event_times_us {
            self.latency.observe((now_us - t).max(0) as f64 / 1e6);
        }
        for (to, outcome, n) in &tally.moves {
            self.moves
                .get_or_create(&MoveLabel { to, outcome })
                .inc_by(*n);
        }
        for (source, reason, tenant, n) in &tally.verdicts {
            let label = VerdictLabel {
                source,
                reason,
                tenant: tenant.clone(),
            };
            self.verdicts.get_or_create(&label).inc_by(*n);
        }
    }

    /// Records a committed batch's tally now, and empties it.
    pub fn record_committed(&self, tally: &mut ScreeningTally) {
        self.record(
            &std::mem::take(tally),
            chrono::Utc::now().timestamp_micros(),
        );
    }

    /// Targets now retained by the screen stage of this copy.
    pub fn window_targets(&self, n: usize) {
        self.window_targets
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Model calls since the last report: attempts, retries, rate-limit waits.
    pub fn l2_calls(&self, attempts: u64, retries: u64, waits: u64) {
        self.l2_attempts.inc_by(attempts);
        self.l2_retries.inc_by(retries);
        self.l2_rate_limit_waits.inc_by(waits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_committed_tally_is_exported_with_fixed_names() {
        let m = crate::runtime::Metrics::new();
        let mut t = ScreeningTally::default();
        t.screening("screened");
        t.screening("screened");
        t.screening("passed");
        t.rule("R2");
        t.duplicates = 3;
        t.event_times_us = vec![1_000_000];
        t.account_move("BANNED", false);
        t.verdict("fallback", "timeout", "game-a");
        t.verdict("model", "", "game-b");
        m.screening.record(&t, 3_000_000);
        m.screening.l2_calls(5, 2, 1);
        let text = m.encode();
        for line in [
            r#"kusanagi_screenings_total{outcome="screened"} 2"#,
            r#"kusanagi_screenings_total{outcome="passed"} 1"#,
            r#"kusanagi_rules_fired_total{rule="R2"} 1"#,
            "kusanagi_screen_duplicates_total 3",
            r#"kusanagi_account_moves_total{to="BANNED",outcome="refused"} 1"#,
            r#"kusanagi_l2_verdicts_total{source="fallback",reason="timeout",tenant="game-a"} 1"#,
            r#"kusanagi_l2_verdicts_total{source="model",reason="",tenant="game-b"} 1"#,
            "kusanagi_l2_attempts_total 5",
            "kusanagi_l2_retries_total 2",
            "kusanagi_l2_rate_limit_waits_total 1",
            "kusanagi_screen_latency_seconds_sum 2.0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}

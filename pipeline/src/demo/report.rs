//! What a demo run saw, and its summary as the command prints it.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::Pattern;

/// What one demo run saw.
#[derive(Debug, Default)]
pub struct DemoReport {
    /// Records generated, per pattern.
    pub generated: BTreeMap<Pattern, u64>,
    /// Valid events seen committed in `events`.
    pub ingested: u64,
    /// Records seen committed in `events.dlq`, per reason.
    pub dead_letters: BTreeMap<String, u64>,
    /// Seconds from the first record sent to the last one seen.
    pub seconds: f64,
    /// Latency from event time to being readable in `events`, microseconds.
    pub latency_us: Option<Histogram<u64>>,
    /// What the screening stages decided about the run's accounts.
    pub decisions: Decisions,
    /// Latency from event time to its screening being readable, microseconds.
    pub screening_latency_us: Option<Histogram<u64>>,
    /// Whether every generated record was accounted for.
    pub complete: bool,
}

impl DemoReport {
    pub(super) fn total(&self) -> u64 {
        self.generated.values().sum()
    }

    pub(super) fn expected_valid(&self) -> u64 {
        self.total()
            - self
                .generated
                .get(&Pattern::Malformed)
                .copied()
                .unwrap_or(0)
    }
}

impl std::fmt::Display for DemoReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dlq: u64 = self.dead_letters.values().sum();
        writeln!(f, "Kusanagi demo summary")?;
        writeln!(
            f,
            "  generated     {} records in {:.1} s",
            self.total(),
            self.seconds
        )?;
        for (pattern, n) in &self.generated {
            writeln!(f, "                {n:>8}  {}", pattern.label())?;
        }
        writeln!(
            f,
            "  ingested      {} of {} valid events, committed to `events` as Avro",
            self.ingested,
            self.expected_valid()
        )?;
        let reasons: Vec<String> = self
            .dead_letters
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            f,
            "  dead letters  {dlq} in `events.dlq` ({})",
            if reasons.is_empty() {
                "none".into()
            } else {
                reasons.join(", ")
            }
        )?;
        if self.seconds > 0.0 {
            writeln!(
                f,
                "  throughput    {:.0} records/s end to end",
                (self.ingested + dlq) as f64 / self.seconds
            )?;
        }
        if let Some(h) = self.latency_us.as_ref().filter(|h| !h.is_empty()) {
            writeln!(
                f,
                "  latency       event time -> readable in `events`: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3,
                h.max() as f64 / 1e3
            )?;
        }
        let d = &self.decisions;
        let rules: Vec<String> = d.by_rule.iter().map(|(r, n)| format!("{r} {n}")).collect();
        writeln!(
            f,
            "  screened      {} of {} screenings fired a rule ({})",
            d.screened,
            d.screenings,
            if rules.is_empty() {
                "none".into()
            } else {
                rules.join(", ")
            }
        )?;
        if let Some(h) = self.screening_latency_us.as_ref().filter(|h| !h.is_empty()) {
            writeln!(
                f,
                "  L1 latency    event time -> screening readable: p50 {:.1} ms, p99 {:.1} ms",
                h.value_at_quantile(0.5) as f64 / 1e3,
                h.value_at_quantile(0.99) as f64 / 1e3
            )?;
        }
        let fallbacks: Vec<String> = d
            .fallbacks
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        writeln!(
            f,
            "  accounts      {} restricted, {} analysed by L2 ({} requests; {}), {} under surveillance, {} banned, {} recovered, {} moves refused",
            d.restricted,
            d.verdicts,
            d.requests,
            if fallbacks.is_empty() {
                "model verdicts".into()
            } else {
                format!("fallback: {}", fallbacks.join(", "))
            },
            d.surveillance,
            d.banned,
            d.recovered,
            d.refused
        )?;
        write!(
            f,
            "  result        {}",
            if self.complete {
                "every record accounted for, exactly once"
            } else {
                "INCOMPLETE: some records were not seen (see the log)"
            }
        )
    }
}

/// What the screen, decide and analyze stages committed about the run.
#[derive(Debug, Default, Clone)]
pub struct Decisions {
    /// Screenings of the run's events.
    pub screenings: u64,
    /// Of which a rule fired.
    pub screened: u64,
    /// Screened events per rule.
    pub by_rule: BTreeMap<String, u64>,
    /// Accounts moved NORMAL -> RESTRICTED_WITHDRAWAL.
    pub restricted: u64,
    /// L2 requests made.
    pub requests: u64,
    /// L2 verdicts given.
    pub verdicts: u64,
    /// Verdicts by the fallback analyzer, per reason.
    pub fallbacks: BTreeMap<String, u64>,
    /// Moves to UNDER_SURVEILLANCE.
    pub surveillance: u64,
    /// Moves to BANNED.
    pub banned: u64,
    /// Moves back to NORMAL.
    pub recovered: u64,
    /// Moves refused by the state machine.
    pub refused: u64,
}

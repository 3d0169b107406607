//! One run, in order: position the reader at the end of `events`, warm up
//! until the pipeline answers, start the clock and send on the schedule
//! while printing a status line every second (stderr), drain until every
//! event is seen or the drain time is over, then put the figures together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::drive::{Delivered, Driver, Sending};
use crate::ledger::{Counters, Ledger, RunIds};
use crate::observe::{self, Observed, Watch};
use crate::pacing::Schedule;
use crate::report::{LatencySummary, Report};

/// How long to wait for the first warm-up probe before giving up.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to keep reading once every event was seen, for late duplicates.
const QUIET_PERIOD: Duration = Duration::from_millis(500);

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Events per second.
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Least time the warm-up lasts.
    pub warm_up: Duration,
    /// How long to wait, after the last send, for every event to be seen.
    pub drain: Duration,
    /// Seed of the event generator.
    pub seed: u64,
    /// The topic whose records end an event's measured trip.
    pub watch: Watch,
}

/// Runs `plan` against `cluster`. `stop` (Ctrl-C) ends sending and the
/// drain early; the report then shows what was missed.
pub fn run(
    cluster: &Cluster,
    ids: &RunIds,
    plan: &Plan,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Report> {
    let topics = &cluster.topology.topics;
    let ledger = Arc::new(Ledger::new());
    let counters = Arc::new(Counters::default());

    let watched = match plan.watch {
        Watch::Events => &topics.events,
        Watch::Screenings => &topics.screenings,
    };
    let (consumer, partitions) = observe::tail_from_end(&cluster.settings, watched)?;
    let stop_observer = Arc::new(AtomicBool::new(false));
    let observer = observe::spawn(
        plan.watch,
        consumer,
        ids.clone(),
        ledger.clone(),
        counters.clone(),
        stop_observer.clone(),
    );
    // Stops the observer on every way out, errors included.
    let _stop_observer_on_exit = StopOnDrop(stop_observer.clone());
    let mut driver = Driver::new(
        &cluster.settings,
        &topics.raw,
        ids,
        plan.seed,
        ledger.clone(),
        counters.clone(),
    )?;

    let schedule = warm_up(cluster, &mut driver, plan, watched, stop)?;

    let started = Instant::now();
    let mut status = Status::new(started);
    let (driver, sending) = send(
        cluster,
        driver,
        schedule,
        stop,
        &mut status,
        &counters,
        &ledger,
    )?;
    let deadline = Instant::now() + plan.drain;
    let delivered = driver.finish(plan.drain);
    wait_until_seen(
        cluster,
        deadline,
        sending.sent,
        stop,
        &mut status,
        &counters,
        &ledger,
    );
    std::thread::sleep(QUIET_PERIOD);
    stop_observer.store(true, Ordering::Relaxed);
    let observed = observer
        .join()
        .map_err(|_| anyhow::anyhow!("the observer thread panicked"))?;
    warn_of_losses(&delivered, &observed, watched);

    Ok(Report {
        run: ids.run().to_owned(),
        mode: cluster.mode,
        bootstrap: cluster.settings.bootstrap.clone(),
        observed: watched.clone(),
        partitions,
        target_rate: schedule.rate,
        duration_s: plan.duration.as_secs_f64(),
        sent: sending.sent,
        send_seconds: sending.last.duration_since(sending.first).as_secs_f64(),
        max_send_lag_ms: sending.max_lag.as_secs_f64() * 1e3,
        seen: observed.seen,
        duplicated: observed.duplicated,
        unexpected: observed.unexpected,
        delivery_failed: delivered.failed,
        measured_seconds: observed
            .last_seen
            .map_or(0.0, |t| t.duration_since(sending.first).as_secs_f64()),
        latency: LatencySummary::of(&observed.latency_us),
        cpu_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

/// Warms the path up (see [`Driver::warm_up`]); returns the schedule of
/// the measured events.
fn warm_up(
    cluster: &Cluster,
    driver: &mut Driver,
    plan: &Plan,
    watched: &str,
    stop: &AtomicBool,
) -> anyhow::Result<Schedule> {
    eprintln!(
        "loadtest: {} brokers at {}; warming up (at least {} s) until events flow from `{}` to `{}`",
        cluster.mode,
        cluster.settings.bootstrap,
        plan.warm_up.as_secs(),
        cluster.topology.topics.raw,
        watched
    );
    let warm = Instant::now();
    let probes = driver.warm_up(plan.warm_up, WARM_UP_TIMEOUT, stop)?;
    let schedule = Schedule::new(plan.rate, plan.duration);
    eprintln!(
        "loadtest: warm-up done in {:.1} s ({probes} probes); sending {} events at {} events/s",
        warm.elapsed().as_secs_f64(),
        schedule.total,
        schedule.rate
    );
    Ok(schedule)
}

/// Says on stderr what was not delivered or could not be decoded.
fn warn_of_losses(delivered: &Delivered, observed: &Observed, watched: &str) {
    if let Some(e) = &delivered.first_error {
        eprintln!(
            "loadtest: {} records not delivered; first error: {e}",
            delivered.failed
        );
    }
    if observed.undecodable > 0 {
        eprintln!(
            "loadtest: {} records of `{}` could not be decoded",
            observed.undecodable, watched
        );
    }
}

/// Sends on `schedule` from a thread of its own, printing the status
/// line meanwhile; a stage that stops ends the run.
fn send(
    cluster: &Cluster,
    mut driver: Driver,
    schedule: Schedule,
    stop: &Arc<AtomicBool>,
    status: &mut Status,
    counters: &Counters,
    ledger: &Ledger,
) -> anyhow::Result<(Driver, Sending)> {
    let driving = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("loadtest-drive".into())
            .spawn(move || {
                let sent = driver.run(schedule, &stop);
                (driver, sent)
            })?
    };
    while !driving.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        status.maybe_print(counters, ledger);
        if cluster.stage_stopped() {
            eprintln!("loadtest: a stage stopped; ending the run");
            stop.store(true, Ordering::Relaxed);
        }
    }
    let (driver, sending) = driving
        .join()
        .map_err(|_| anyhow::anyhow!("the driver thread panicked"))?;
    Ok((driver, sending?))
}

/// Waits until `sent` events were seen, `deadline` passed, or a stop.
fn wait_until_seen(
    cluster: &Cluster,
    deadline: Instant,
    sent: u64,
    stop: &AtomicBool,
    status: &mut Status,
    counters: &Counters,
    ledger: &Ledger,
) {
    while counters.seen.load(Ordering::Relaxed) < sent
        && Instant::now() < deadline
        && !stop.load(Ordering::Relaxed)
        && !cluster.stage_stopped()
    {
        std::thread::sleep(Duration::from_millis(20));
        status.maybe_print(counters, ledger);
    }
}

/// Sets its flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A status line on stderr once a second: totals, rates over the last
/// second, and the events in flight (sent, not yet seen).
struct Status {
    started: Instant,
    next: Instant,
    last: (Instant, u64, u64),
}

impl Status {
    fn new(started: Instant) -> Self {
        Self {
            started,
            next: started + Duration::from_secs(1),
            last: (started, 0, 0),
        }
    }

    fn maybe_print(&mut self, counters: &Counters, ledger: &Ledger) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let sent = counters.sent.load(Ordering::Relaxed);
        let seen = counters.seen.load(Ordering::Relaxed);
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        eprintln!(
            "[{:>5.1}s] sent {sent:>9} ({:>7.0}/s) | seen {seen:>9} ({:>7.0}/s) | in flight {:>7} | duplicated {}",
            now.duration_since(self.started).as_secs_f64(),
            (sent - self.last.1) as f64 / dt,
            (seen.saturating_sub(self.last.2)) as f64 / dt,
            ledger.in_flight(),
            counters.duplicated.load(Ordering::Relaxed),
        );
        self.last = (now, sent, seen);
    }
}

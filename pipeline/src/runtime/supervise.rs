//! Keeping a stage running: its loop is created again after an error a
//! restart can mend (new clients, state rebuilt), until shutdown; an error
//! no restart mends (a fenced copy, a bad configuration) ends it.

use std::time::Duration;

use super::kafka::{KafkaOutput, KafkaSource};
use super::output::Output;
use super::source::Source;
use super::{Backoff, RuntimeError, Shutdown, Stage, StageLoop};

/// A stage's loop on Kafka, in a consumer group.
pub type KafkaLoop<S> = StageLoop<S, KafkaSource, KafkaOutput>;

/// Runs the loop `make` creates, creating it again after a retriable
/// error, until `shutdown`.
pub fn supervise_loop<S: Stage, Src: Source, Out: Output<Src::Group>>(
    shutdown: &Shutdown,
    mut make: impl FnMut() -> Result<StageLoop<S, Src, Out>, RuntimeError>,
) -> Result<(), RuntimeError> {
    supervise(shutdown, || make().and_then(|mut l| l.run(shutdown)))
}

/// Runs `run_once` (a stage from start to stop) again after a retriable
/// error, until `shutdown`.
pub fn supervise(
    shutdown: &Shutdown,
    mut run_once: impl FnMut() -> Result<(), RuntimeError>,
) -> Result<(), RuntimeError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(10));
    while !shutdown.is_triggered() {
        match run_once() {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retriable() => return Err(e),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::error!(error = %e, restarts = backoff.failures(), "stage failed; restarting its Kafka clients");
                shutdown.sleep(delay);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_retriable_error_restarts_the_stage_and_a_users_error_ends_it() {
        let shutdown = Shutdown::new();
        let runs = Cell::new(0);
        let result = supervise(&shutdown, || {
            runs.set(runs.get() + 1);
            match runs.get() {
                1 => Err(RuntimeError::Storage {
                    stage: "archive",
                    detail: "503".into(),
                }),
                _ => Err(RuntimeError::Setup {
                    stage: "archive",
                    detail: "bad URL".into(),
                }),
            }
        });
        assert!(matches!(result, Err(RuntimeError::Setup { .. })));
        assert_eq!(runs.get(), 2);
        let ok = supervise(&shutdown, || Ok(()));
        assert!(ok.is_ok());
    }
}

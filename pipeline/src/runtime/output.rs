//! The producer side of a stage loop, as a port: a Kafka-to-Kafka stage
//! commits its outputs with the consumed offsets in one transaction
//! ([`Output::transact`]); a sink stage sends its few outputs (dead
//! letters) as they come and waits for them before its sink commits
//! ([`Output::send`], [`Output::flush`]). [`super::kafka::KafkaOutput`] is
//! the real one.

use super::OutRecord;

/// The next offset to commit for one partition, with the metadata the
/// stage keeps there ([`super::Stage::commit_metadata`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset after the last record processed.
    pub offset: i64,
    /// Metadata committed with it.
    pub metadata: Option<String>,
}

/// Why producing or committing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputFailure {
    /// The transaction (or the sends) can be aborted and the batch tried
    /// again from the committed offsets.
    #[error("{operation}: {detail}")]
    Abortable {
        /// What was attempted.
        operation: &'static str,
        /// The client's error.
        detail: String,
    },
    /// Another copy with the same transactional id took over: stop.
    #[error("fenced during {operation}")]
    Fenced {
        /// What was attempted.
        operation: &'static str,
    },
    /// The producer can go on no more; it must be created again.
    #[error("fatal error during {operation}: {detail}")]
    Fatal {
        /// What was attempted.
        operation: &'static str,
        /// The client's error.
        detail: String,
    },
}

/// What the loop asks of its producer. `G` is the consumer's group
/// metadata ([`super::source::Source::Group`]).
pub trait Output<G> {
    /// Produces `out` and commits it with `offsets` in one transaction
    /// carrying `group` (so a copy that lost its partitions is fenced).
    fn transact(
        &mut self,
        group: &G,
        out: &[OutRecord],
        offsets: &[NextOffset],
    ) -> Result<(), OutputFailure>;

    /// Aborts the open transaction, if any.
    fn abort(&mut self) -> Result<(), OutputFailure>;

    /// Queues `out` outside any transaction.
    fn send(&mut self, out: &[OutRecord]) -> Result<(), OutputFailure>;

    /// Waits until everything queued was delivered; an error if anything
    /// sent since the last flush was not.
    fn flush(&mut self) -> Result<(), OutputFailure>;
}

/// The output of a stage that produces nothing (the view): any record it
/// is asked to send is an error, never silently dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOutput;

impl NoOutput {
    fn refuse(operation: &'static str) -> OutputFailure {
        OutputFailure::Fatal {
            operation,
            detail: "this stage has no output to send records to".into(),
        }
    }
}

impl<G> Output<G> for NoOutput {
    fn transact(
        &mut self,
        _group: &G,
        _out: &[OutRecord],
        _offsets: &[NextOffset],
    ) -> Result<(), OutputFailure> {
        Err(Self::refuse("commit_transaction"))
    }

    fn abort(&mut self) -> Result<(), OutputFailure> {
        Ok(())
    }

    fn send(&mut self, out: &[OutRecord]) -> Result<(), OutputFailure> {
        if out.is_empty() {
            Ok(())
        } else {
            Err(Self::refuse("produce"))
        }
    }

    fn flush(&mut self) -> Result<(), OutputFailure> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_output_sends_nothing_and_refuses_a_record() {
        let mut o = NoOutput;
        assert!(Output::<()>::send(&mut o, &[]).is_ok());
        assert!(Output::<()>::flush(&mut o).is_ok());
        let r = OutRecord {
            topic: "t".into(),
            partition: None,
            key: None,
            payload: None,
            headers: Vec::new(),
            timestamp_ms: None,
            trace: super::super::trace::TraceCause::None,
        };
        let err = Output::<()>::send(&mut o, &[r]).unwrap_err();
        assert!(matches!(
            err,
            OutputFailure::Fatal {
                operation: "produce",
                ..
            }
        ));
        assert!(Output::<()>::transact(&mut o, &(), &[], &[]).is_err());
    }
}

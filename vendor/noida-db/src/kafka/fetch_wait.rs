//! [Kusanagi patch] Fetches waiting for records, woken only when one of
//! their partitions may have something for them, as Apache Kafka's
//! `DelayedFetch` is completed: a change to the log checks each waiting
//! fetch's partitions against its offsets, and only those with something
//! to read are woken. Waking every waiting fetch on every produce (as one
//! condition variable did) cost a thread switch and a full fetch per waiter
//! per produce, most of them for partitions the produce had not touched,
//! or records a `read_committed` reader may not see before the commit.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use kafka_protocol::messages::fetch_request::FetchRequest;

use super::engine::EngineState;

/// One fetch waiting in [`super::engine::Engine::handle_fetch`].
pub struct FetchWaiter {
    read_committed: bool,
    /// `(topic, [(partition, fetch offset)])` for every partition it asks
    /// for, by topic: a check looks each topic up once.
    positions: Vec<(String, Vec<(i32, i64)>)>,
    woken: Mutex<bool>,
    wake: Condvar,
}

impl FetchWaiter {
    /// A waiter for `req`.
    pub fn of(req: &FetchRequest) -> Self {
        let positions = req
            .topics
            .iter()
            .map(|t| {
                let partitions = t.partitions.iter().map(|p| (p.partition, p.fetch_offset));
                (t.topic.as_str().to_string(), partitions.collect())
            })
            .collect();
        Self {
            read_committed: req.isolation_level == 1,
            positions,
            woken: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// Whether a fetch now may answer: a partition it asks for has records
    /// past its offset that it may read (below the high watermark, or the
    /// last stable offset for `read_committed`), or is gone or out of range
    /// (an error goes at once). May be true when the records turn out to be
    /// aborted ones; the fetch then waits again.
    pub fn may_be_ready(&self, state: &EngineState) -> bool {
        self.positions.iter().any(|(topic, partitions)| {
            let Some(t) = state.topics.get(topic) else {
                return true;
            };
            partitions.iter().any(|(partition, offset)| {
                let Some(p) = t.partitions.get(partition) else {
                    return true;
                };
                if *offset < p.log_start_offset || *offset > p.high_watermark {
                    return true;
                }
                if *offset >= p.high_watermark {
                    return false;
                }
                let visible_end = if self.read_committed {
                    p.active_txns
                        .values()
                        .copied()
                        .min()
                        .map_or(p.high_watermark, |open| open.min(p.high_watermark))
                } else {
                    p.high_watermark
                };
                *offset < visible_end
            })
        })
    }

    /// Wakes the waiting fetch.
    pub fn wake(&self) {
        *self.woken.lock().unwrap() = true;
        self.wake.notify_one();
    }

    /// Waits until woken or `deadline`; consumes the wake-up.
    pub fn wait_until(&self, deadline: Instant) {
        let mut woken = self.woken.lock().unwrap();
        while !*woken {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            woken = self.wake.wait_timeout(woken, deadline - now).unwrap().0;
        }
        *woken = false;
    }
}

/// The fetches waiting on one engine.
#[derive(Default)]
pub struct FetchWaiters {
    waiting: Mutex<Vec<Arc<FetchWaiter>>>,
}

impl std::fmt::Debug for FetchWaiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchWaiters").field("waiting", &self.len()).finish()
    }
}

impl FetchWaiters {
    /// Adds `waiter`; call with the engine's state locked, after the fetch
    /// found nothing, so that no change in between goes unseen.
    pub fn add(&self, waiter: &Arc<FetchWaiter>) {
        self.waiting.lock().unwrap().push(Arc::clone(waiter));
    }

    /// Removes `waiter`.
    pub fn remove(&self, waiter: &Arc<FetchWaiter>) {
        self.waiting.lock().unwrap().retain(|w| !Arc::ptr_eq(w, waiter));
    }

    /// Wakes the waiting fetches that may now answer; call with the engine's
    /// state locked, after the change.
    pub fn wake_ready(&self, state: &EngineState) {
        for w in self.waiting.lock().unwrap().iter() {
            if w.may_be_ready(state) {
                w.wake();
            }
        }
    }

    /// How many fetches wait.
    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap().len()
    }

    /// Whether no fetch waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! The uninterrupted run the pipeline must equal: the same stage code, in
//! this process, over the same partitions (phase 1), then the fallback
//! analyzer and decide until no request is left (phase 2).

use std::collections::BTreeMap;

use kusanagi_pipeline::runtime::{InRecord, NoHistory, OutRecord, Stage};
use kusanagi_pipeline::stages::analyze::{AnalyzeStage, Analyzer};
use kusanagi_pipeline::stages::decide::{DecideStage, DecideTopics};
use kusanagi_pipeline::stages::screen::{ScreenConfig, ScreenStage};
use kusanagi_schemas::{Account, RecordCodec, Transition, Verdict};
use rdkafka::Message;
use rdkafka::message::OwnedMessage;

fn run_stage(
    stage: &mut dyn Stage,
    topic: &str,
    partition: i32,
    values: &[Vec<u8>],
) -> Vec<OutRecord> {
    let batch: Vec<InRecord<'_>> = values
        .iter()
        .enumerate()
        .map(|(i, v)| InRecord {
            topic,
            partition,
            offset: i as i64,
            key: None,
            payload: Some(v),
            timestamp_ms: None,
            trace: None,
        })
        .collect();
    let mut out = Vec::new();
    stage
        .process(&batch, &mut out)
        .expect("the reference run processes its input");
    out
}

/// What the pipeline must have produced: per partition, the screenings,
/// the transitions and requests in order, and the latest account states.
pub(crate) struct Expected {
    pub(crate) screenings: BTreeMap<i32, Vec<Vec<u8>>>,
    pub(crate) transitions: BTreeMap<i32, Vec<Vec<u8>>>,
    pub(crate) requests: BTreeMap<i32, Vec<Vec<u8>>>,
    pub(crate) accounts: BTreeMap<String, Account>,
    /// The decide stage of each partition, to carry on in phase 2.
    decides: BTreeMap<i32, DecideStage>,
}

/// Phase 2 of the uninterrupted run: per partition, the fallback analyzer
/// answers the pending requests, decide applies the verdicts, until no
/// request is left. Returns every account's transitions (phase 1 and 2)
/// and verdicts in order, and the latest account states.
pub(crate) struct Settled {
    pub(crate) transitions: BTreeMap<String, Vec<Transition>>,
    pub(crate) verdicts: BTreeMap<String, Vec<Verdict>>,
    pub(crate) accounts: BTreeMap<String, Account>,
}

pub(crate) fn settle(mut expected: Expected) -> Settled {
    // The fallback analyzer makes no call, but the stage runs on the
    // process's runtime as in `kusanagi run`.
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let t_codec = RecordCodec::<Transition>::new();
    let v_codec = RecordCodec::<Verdict>::new();
    let a_codec = RecordCodec::<Account>::new();
    let mut settled = Settled {
        transitions: per_account(
            expected.transitions.values().flatten(),
            |v| t_codec.decode(v).unwrap(),
            |t| t.account_id.clone(),
        ),
        verdicts: BTreeMap::new(),
        accounts: expected.accounts.clone(),
    };
    for (p, decide) in expected.decides.iter_mut() {
        let mut analyze = AnalyzeStage::new(
            Analyzer::Fallback,
            "l2.verdicts",
            "events.dlq",
            runtime.handle().clone(),
        );
        let mut pending = expected.requests.get(p).cloned().unwrap_or_default();
        while !pending.is_empty() {
            let verdicts: Vec<Vec<u8>> = run_stage(&mut analyze, "l2.requests", *p, &pending)
                .into_iter()
                .filter_map(|r| r.payload)
                .collect();
            for v in &verdicts {
                let v = v_codec.decode(v).unwrap();
                settled
                    .verdicts
                    .entry(v.target_id.clone())
                    .or_default()
                    .push(v);
            }
            pending = vec![];
            for r in run_stage(decide, "l2.verdicts", *p, &verdicts) {
                match r.topic.as_str() {
                    "accounts.transitions" => {
                        let t = t_codec.decode(r.payload.as_deref().unwrap()).unwrap();
                        settled
                            .transitions
                            .entry(t.account_id.clone())
                            .or_default()
                            .push(t);
                    }
                    "l2.requests" => pending.extend(r.payload),
                    "accounts" => {
                        let a = a_codec.decode(r.payload.as_deref().unwrap()).unwrap();
                        settled.accounts.insert(a.account_id.clone(), a);
                    }
                    other => panic!("unexpected output topic {other}"),
                }
            }
        }
    }
    settled
}

/// Decodes `values` and groups them by account, keeping their order.
pub(crate) fn per_account<'a, T>(
    values: impl Iterator<Item = &'a Vec<u8>>,
    decode: impl Fn(&[u8]) -> T,
    account: impl Fn(&T) -> String,
) -> BTreeMap<String, Vec<T>> {
    let mut out: BTreeMap<String, Vec<T>> = BTreeMap::new();
    for v in values {
        let t = decode(v);
        out.entry(account(&t)).or_default().push(t);
    }
    out
}

pub(crate) fn uninterrupted(events: &BTreeMap<i32, Vec<&OwnedMessage>>) -> Expected {
    let topics = DecideTopics::of(&kusanagi_pipeline::config::TopicsConfig::default());
    let mut expected = Expected {
        screenings: BTreeMap::new(),
        transitions: BTreeMap::new(),
        requests: BTreeMap::new(),
        accounts: BTreeMap::new(),
        decides: BTreeMap::new(),
    };
    let codec = RecordCodec::<Account>::new();
    for (&p, messages) in events {
        let values: Vec<Vec<u8>> = messages
            .iter()
            .map(|m| m.payload().unwrap().to_vec())
            .collect();
        let mut screen = ScreenStage::new(
            ScreenConfig::default(),
            "events",
            "screenings",
            "events.dlq",
            Box::new(NoHistory),
        );
        let screenings: Vec<Vec<u8>> = run_stage(&mut screen, "events", p, &values)
            .into_iter()
            .filter_map(|r| r.payload)
            .collect();
        let mut decide = DecideStage::new(topics.clone(), Box::new(NoHistory));
        let mut transitions = vec![];
        let mut requests = vec![];
        for r in run_stage(&mut decide, "screenings", p, &screenings) {
            match r.topic.as_str() {
                "accounts.transitions" => transitions.extend(r.payload),
                "l2.requests" => requests.extend(r.payload),
                "accounts" => {
                    let a = codec.decode(r.payload.as_deref().unwrap()).unwrap();
                    expected.accounts.insert(a.account_id.clone(), a);
                }
                other => panic!("unexpected output topic {other}"),
            }
        }
        expected.decides.insert(p, decide);
        expected.screenings.insert(p, screenings);
        expected.transitions.insert(p, transitions);
        expected.requests.insert(p, requests);
    }
    expected
}

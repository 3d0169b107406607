//! The Avro decoders of every topic a stage consumes: any bytes give a
//! record or a codec error, never a panic, and a record that decodes
//! encodes again to bytes that decode to the same record. The first byte
//! picks the topic's record type; the rest is the payload.
#![no_main]

use std::sync::LazyLock;

use kusanagi_schemas::{
    Account, AuditRecord, ErasureRequest, GameEventCodec, L2Request, RecordCodec, Screening,
    Transition, Verdict,
};
use libfuzzer_sys::fuzz_target;

// The codecs are built once, as the stages build them.
static EVENTS: LazyLock<GameEventCodec> = LazyLock::new(GameEventCodec::new);
static SCREENINGS: LazyLock<RecordCodec<Screening>> = LazyLock::new(RecordCodec::new);
static REQUESTS: LazyLock<RecordCodec<L2Request>> = LazyLock::new(RecordCodec::new);
static VERDICTS: LazyLock<RecordCodec<Verdict>> = LazyLock::new(RecordCodec::new);
static ACCOUNTS: LazyLock<RecordCodec<Account>> = LazyLock::new(RecordCodec::new);
static TRANSITIONS: LazyLock<RecordCodec<Transition>> = LazyLock::new(RecordCodec::new);
static ERASURES: LazyLock<RecordCodec<ErasureRequest>> = LazyLock::new(RecordCodec::new);
static AUDIT: LazyLock<RecordCodec<AuditRecord>> = LazyLock::new(RecordCodec::new);

fn round_trip<T: kusanagi_schemas::AvroRecord + std::fmt::Debug>(
    codec: &RecordCodec<T>,
    payload: &[u8],
) {
    if let Ok(record) = codec.decode(payload) {
        let again = codec
            .decode(&codec.encode(&record))
            .expect("re-encoded decodes");
        assert_eq!(format!("{again:?}"), format!("{record:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(event) = EVENTS.decode(payload) {
                assert_eq!(
                    EVENTS.decode(&EVENTS.encode(&event)).expect("re-encoded"),
                    event
                );
            }
        }
        1 => round_trip(&SCREENINGS, payload),
        2 => round_trip(&REQUESTS, payload),
        3 => round_trip(&VERDICTS, payload),
        4 => round_trip(&ACCOUNTS, payload),
        5 => round_trip(&TRANSITIONS, payload),
        6 => round_trip(&ERASURES, payload),
        _ => round_trip(&AUDIT, payload),
    }
});

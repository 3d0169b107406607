//! The HTTP intake's body (`POST /api/v1/events`): one event or a batch.
//! Any bytes give events or a refusal, never a panic; a taken batch holds
//! 1 to the limit of events, each of at most the size limit, and each
//! round-trips through Avro unchanged.
#![no_main]

use kusanagi_pipeline::api::events::decode_body;
use kusanagi_schemas::GameEventCodec;
use libfuzzer_sys::fuzz_target;

const MAX_EVENT_BYTES: usize = 4096;
const MAX_BATCH: usize = 16;

fuzz_target!(|data: &[u8]| {
    match decode_body(data, MAX_EVENT_BYTES, MAX_BATCH) {
        Ok(events) => {
            assert!(!events.is_empty() && events.len() <= MAX_BATCH);
            let codec = GameEventCodec::new();
            for event in events {
                let back = codec
                    .decode(&codec.encode(&event))
                    .expect("a valid event decodes");
                assert_eq!(back, event);
            }
        }
        Err(refused) => {
            assert!(refused.status().is_client_error(), "{refused:?}");
        }
    }
});

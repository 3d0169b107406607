//! The JSON intake (`events.raw`, `POST /api/v1/events`): any bytes give an
//! event or a validation error, never a panic; a valid event round-trips
//! through Avro unchanged.
#![no_main]

use kusanagi_schemas::{GameEventCodec, parse_event};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parse_event(data) {
        let codec = GameEventCodec::new();
        let back = codec
            .decode(&codec.encode(&event))
            .expect("a valid event decodes");
        assert_eq!(back, event);
    }
});

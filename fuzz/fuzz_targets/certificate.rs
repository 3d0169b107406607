//! Deletion certificates (`kusanagi certificate verify`): any bytes are a
//! verified certificate or a reason, never a panic; a verified one is
//! exactly its own canonical bytes and verifies against the key it names.
#![no_main]

use kusanagi_pipeline::erasure::certificate::verify;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cert) = verify(data, None) {
        assert_eq!(cert.to_bytes(), data);
        let key = cert.public_key.clone();
        verify(data, Some(&key)).expect("verifies against the key it names");
    }
});

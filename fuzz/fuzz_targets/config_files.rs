//! The operator's files: a topology (`--topology`) and a keys file
//! (`http.auth.keys_file`). Any text is a configuration or an error that
//! names the file, never a panic; a topology that loads and prints as
//! TOML (`check-config`) loads back and prints the same TOML.
//!
//! The first byte picks the file: even a topology, odd a keys file.
#![no_main]

use std::path::Path;

use kusanagi_pipeline::config::Topology;
use kusanagi_pipeline::config::auth::parse_keys_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if which % 2 == 0 {
        let path = Path::new("topology.toml");
        match Topology::from_toml(text, path) {
            Ok(topology) => {
                let _ = topology.validate();
                // `check-config` says why when TOML cannot hold a value.
                if let Ok(printed) = topology.to_toml() {
                    let back = Topology::from_toml(&printed, path).unwrap_or_else(|e| {
                        panic!("the printed topology does not load: {e}\n{printed}")
                    });
                    assert_eq!(back.to_toml().expect("prints again"), printed);
                }
            }
            Err(e) => assert!(e.to_string().contains("topology.toml"), "{e}"),
        }
    } else {
        let path = Path::new("keys.toml");
        if let Err(e) = parse_keys_file(text, path) {
            assert!(e.to_string().contains("keys.toml"), "{e}");
        }
    }
});

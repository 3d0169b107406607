//! `[gdpr]`: the secrets of erasure: the salt that names subjects in
//! audit records and certificates, and the key that signs certificates.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[gdpr]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GdprConfig {
    /// A file holding the salt of subject hashes (at least 16 bytes; its
    /// bytes, trimmed of a final newline). Every process of a deployment
    /// must read the same one. Env: `KUSANAGI_GDPR_SALT_FILE`. A local
    /// embedded run creates it (mode 0600) the first time; against a
    /// cluster it must exist.
    pub salt_file: PathBuf,
    /// A file holding the ed25519 key that signs deletion certificates,
    /// as 64 hex digits (its 32-byte seed). Env:
    /// `KUSANAGI_GDPR_SIGNING_KEY_FILE`. Created like the salt.
    pub signing_key_file: PathBuf,
}

impl Default for GdprConfig {
    fn default() -> Self {
        Self {
            salt_file: PathBuf::from("data/gdpr/salt"),
            signing_key_file: PathBuf::from("data/gdpr/signing.key"),
        }
    }
}

impl GdprConfig {
    /// Moves the default files under `dir` (`KUSANAGI_DATA_DIR`).
    pub(crate) fn relocate_defaults(&mut self, dir: &Path) {
        let defaults = Self::default();
        if self.salt_file == defaults.salt_file {
            self.salt_file = dir.join("gdpr").join("salt");
        }
        if self.signing_key_file == defaults.signing_key_file {
            self.signing_key_file = dir.join("gdpr").join("signing.key");
        }
    }

    /// Problems as (key under `gdpr`, message).
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (key, path) in [
            ("salt_file", &self.salt_file),
            ("signing_key_file", &self.signing_key_file),
        ] {
            if path.as_os_str().is_empty() {
                p.push((key.into(), "expected a file path, found \"\"".into()));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(GdprConfig::default().validate().is_empty());
        let c = GdprConfig {
            salt_file: PathBuf::new(),
            ..GdprConfig::default()
        };
        let keys: Vec<String> = c.validate().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["salt_file"]);
        let mut moved = GdprConfig::default();
        moved.relocate_defaults(Path::new("/var/lib/k"));
        assert_eq!(moved.salt_file, Path::new("/var/lib/k/gdpr/salt"));
    }
}

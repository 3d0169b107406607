//! The two secrets of erasure: the salt of subject hashes and the ed25519
//! key that signs deletion certificates, each kept in a file (mode 0600).
//!
//! A local embedded run creates missing files; a process against a cluster
//! never does (two processes making their own salt would name one subject
//! two ways), so there the files must be provided, as mounted secrets.

use std::io::Write;
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use rand::TryRngCore;

use super::ErasureError;
use crate::config::GdprConfig;

/// Fewest bytes a salt may have.
pub const MIN_SALT_BYTES: usize = 16;

/// The salt and signing key of a deployment.
#[derive(Clone)]
pub struct Secrets {
    salt: Vec<u8>,
    signing: SigningKey,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("public_key", &self.public_key_hex())
            .finish_non_exhaustive()
    }
}

impl Secrets {
    /// Reads the files `config` names; `create`: make missing ones (a local
    /// run only).
    pub fn load(config: &GdprConfig, create: bool) -> Result<Self, ErasureError> {
        let salt = read_or_create(&config.salt_file, create, "gdpr.salt_file", || {
            hex(&random_bytes::<32>())
        })?;
        if salt.len() < MIN_SALT_BYTES {
            return Err(ErasureError::SecretFile {
                path: config.salt_file.clone(),
                key: "gdpr.salt_file",
                problem: format!(
                    "expected a salt of at least {MIN_SALT_BYTES} bytes, found {}",
                    salt.len()
                ),
            });
        }
        let key = read_or_create(
            &config.signing_key_file,
            create,
            "gdpr.signing_key_file",
            || hex(&random_bytes::<32>()),
        )?;
        let seed = std::str::from_utf8(&key)
            .ok()
            .and_then(parse_hex32)
            .ok_or_else(|| ErasureError::SecretFile {
                path: config.signing_key_file.clone(),
                key: "gdpr.signing_key_file",
                problem: "expected an ed25519 seed as 64 hex digits".into(),
            })?;
        Ok(Self {
            salt,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// Secrets from given values (tests, benches).
    pub fn from_parts(salt: &[u8], seed: [u8; 32]) -> Self {
        Self {
            salt: salt.to_vec(),
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The salted hash naming `subject` (see [`kusanagi_schemas::subject_hash`]).
    pub fn subject_hash(&self, subject: &str) -> String {
        kusanagi_schemas::subject_hash(&self.salt, subject)
    }

    /// The key that signs certificates.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The key that verifies them.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The verifying key as 64 hex digits (`kusanagi certificate pubkey`).
    pub fn public_key_hex(&self) -> String {
        hex(self.verifying_key().as_bytes())
    }
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// 64 hex digits as 32 bytes.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's random source failed");
    b
}

/// The file's bytes without a final newline; created with `make()` when
/// missing and `create`.
fn read_or_create(
    path: &Path,
    create: bool,
    key: &'static str,
    make: fn() -> String,
) -> Result<Vec<u8>, ErasureError> {
    let fail = |at: &Path, problem: String| ErasureError::SecretFile {
        path: at.to_owned(),
        key,
        problem,
    };
    match std::fs::read(path) {
        Ok(mut bytes) => {
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| fail(dir, format!("cannot create its folder: {e}")))?;
            }
            let value = make();
            // Written whole under a temporary name, then linked into place:
            // another process of the same local run never reads it half
            // written, and the first one to link wins.
            let tmp = path.with_extension(format!(
                "tmp-{}-{}",
                std::process::id(),
                hex(&random_bytes::<8>())
            ));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            options
                .open(&tmp)
                .and_then(|mut f| f.write_all(format!("{value}\n").as_bytes()))
                .map_err(|e| fail(&tmp, format!("cannot write: {e}")))?;
            let linked = std::fs::hard_link(&tmp, path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    return read_or_create(path, false, key, make);
                }
                Err(e) => return Err(fail(path, format!("cannot create: {e}"))),
            }
            tracing::info!(file = %path.display(), "created {key}");
            Ok(value.into_bytes())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(fail(
            path,
            "not found; against a cluster every process must read the same file (mount it \
             as a secret); `kusanagi run` on the embedded broker creates it"
                .into(),
        )),
        Err(e) => Err(fail(path, format!("cannot read: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_run_creates_its_secrets_once_and_a_cluster_process_never() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("gdpr");
        let config = GdprConfig {
            salt_file: dir.join("salt"),
            signing_key_file: dir.join("signing.key"),
        };
        let missing = Secrets::load(&config, false).unwrap_err().to_string();
        assert!(missing.contains("(gdpr.salt_file): not found"), "{missing}");
        let first = Secrets::load(&config, true).unwrap();
        let again = Secrets::load(&config, false).unwrap();
        assert_eq!(first.public_key_hex(), again.public_key_hex());
        assert_eq!(first.subject_hash("p-1"), again.subject_hash("p-1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&config.salt_file)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&config.signing_key_file, "not hex\n").unwrap();
        let bad = Secrets::load(&config, false).unwrap_err();
        assert!(
            matches!(&bad, ErasureError::SecretFile { key: "gdpr.signing_key_file", problem, .. } if problem.contains("64 hex digits")),
            "{bad}"
        );
        std::fs::write(&config.salt_file, "short\n").unwrap();
        let short = Secrets::load(&config, false).unwrap_err().to_string();
        assert!(
            short.contains("salt (gdpr.salt_file): expected a salt of at least 16 bytes"),
            "{short}"
        );
    }

    #[test]
    fn hex_round_trips() {
        let b = random_bytes::<32>();
        assert_eq!(parse_hex32(&hex(&b)), Some(b));
        assert_eq!(parse_hex32("zz"), None);
    }
}

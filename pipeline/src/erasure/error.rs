//! The erasure module's error.

use std::path::PathBuf;

use kusanagi_connectors::ErrorClass;

/// Why erasure's secrets cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// A secret file is missing, unreadable or malformed.
    #[error("{} ({key}): {problem}", path.display())]
    SecretFile {
        /// The file (or the folder it should be created in).
        path: PathBuf,
        /// Its key in the topology.
        key: &'static str,
        /// What is wrong, and what was expected.
        problem: String,
    },
    /// The archive records erasures, and naming their subjects needs the
    /// deployment's salt, which this process does not have.
    #[error(
        "the archive records {erasures} erasures, and skipping their subjects needs the \
         deployment's salt (gdpr.salt_file)"
    )]
    NoSalt {
        /// How many erasures the archive records.
        erasures: usize,
    },
}

impl ErasureError {
    /// Whose problem it is: always the deployment's configuration.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::User
    }
}

//! `is_deleted`: whether an archive reader must skip a subject, from the
//! erasures the catalog records (by salted hash) and the deployment's salt.

use std::collections::HashSet;

use super::{ErasureError, Secrets};
use crate::catalog::CatalogState;

/// The subjects erased as of a catalog state.
#[derive(Debug, Clone, Default)]
pub struct Erased {
    hashes: HashSet<String>,
    secrets: Option<Secrets>,
}

impl Erased {
    /// The erasures `state` records; `secrets` is needed only if there are
    /// any (to hash the ids a reader meets).
    pub fn of(state: &CatalogState, secrets: Option<Secrets>) -> Result<Self, ErasureError> {
        let hashes: HashSet<String> = state
            .erased_subjects()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !hashes.is_empty() && secrets.is_none() {
            return Err(ErasureError::NoSalt {
                erasures: hashes.len(),
            });
        }
        Ok(Self { hashes, secrets })
    }

    /// Subjects erased.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// None erased.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Whether `subject` (an account id) is erased.
    pub fn is_deleted(&self, subject: &str) -> bool {
        match &self.secrets {
            Some(s) if !self.hashes.is_empty() => self.hashes.contains(&s.subject_hash(subject)),
            _ => false,
        }
    }
}

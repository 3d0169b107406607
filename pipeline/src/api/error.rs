//! What the API answers a request it cannot carry out with.

/// A request the caller must fix: which field, and what was expected.
/// Answered as `{"error": <code>, "message": <this>}` with a 4xx status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}`: expected {expected}")]
pub struct InvalidRequest {
    /// The field (a body member or a query parameter).
    pub field: &'static str,
    /// What was expected, and what was found.
    pub expected: String,
}

impl InvalidRequest {
    /// `field` was not `expected`.
    pub fn new(field: &'static str, expected: impl Into<String>) -> Self {
        Self {
            field,
            expected: expected.into(),
        }
    }
}

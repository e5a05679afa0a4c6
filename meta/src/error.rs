//! Metadata errors, named for the failure.

use canopy_model::ModelError;

/// What can go wrong with schemas and metadata.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    /// The request is invalid; names the field.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// The operation is valid but the current state forbids it.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// A conditional put lost a race; re-read and retry.
    #[error("conflict on {0}: revision changed")]
    Conflict(String),
    #[error("metadata storage: {0}")]
    Storage(String),
}

/// Result with [`MetaError`].
pub type Result<T, E = MetaError> = std::result::Result<T, E>;

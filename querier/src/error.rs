//! Query errors, named for the failure.

use canopy_model::ModelError;
use canopy_storage::StorageError;

/// What can go wrong executing a query.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The caller went away (deadline passed) while a scan ran.
    #[error("the query was cancelled")]
    Cancelled,
}

/// Result with [`QueryError`].
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

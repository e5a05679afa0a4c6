//! Ingester errors, named for the failure.

use canopy_storage::StorageError;

/// What can go wrong while ingesting or flushing.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A queue or memory budget is full; the client should back off and retry.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The WAL failed; writes to this shard stop until a restart recovers it.
    #[error("WAL: {0}")]
    Wal(#[from] std::io::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A request this ingester cannot decode.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// This ingester does not own the shard (any more): the caller should
    /// look up the current owner and retry there.
    #[error("not the owner: {0}")]
    NotOwner(String),
    /// The ingester is shutting down.
    #[error("shutting down")]
    Closed,
}

/// Result with [`IngestError`].
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

//! Compactor errors, named for the failure.

use canopy_storage::StorageError;

/// What can go wrong while compacting or collecting garbage.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The inputs changed under the merge (another compactor or retention
    /// won); the output is abandoned and collected as an orphan.
    #[error("compaction of {0} abandoned: its inputs changed")]
    Superseded(String),
    /// Fault injection stopped the merge before its commit (tests only).
    #[error("compactor stopped before commit (fault injection)")]
    Crashed,
    /// The catalog kept changing; try again on the next round.
    #[error("catalog of {0} kept changing")]
    Contended(String),
}

/// Result with [`CompactError`].
pub type Result<T, E = CompactError> = std::result::Result<T, E>;

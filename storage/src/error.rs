//! Storage errors, named for the failure.

/// What can go wrong reading or writing parts and catalogs.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// Stored bytes failed a magic, version or checksum check.
    #[error("corrupt object {path}: {reason}")]
    Corrupt { path: String, reason: String },
    /// Another writer committed this catalog version first; reload and retry.
    #[error("catalog conflict: version {version} of {group}/{shard} already exists")]
    CatalogConflict { group: String, shard: u32, version: u64 },
    /// The shard moved to a newer owner; this writer may no longer commit.
    #[error("fenced: shard {group}/{shard} is owned at epoch {current}, this writer holds epoch {mine}")]
    Fenced { group: String, shard: u32, current: u64, mine: u64 },
    #[error("invalid object store configuration: {0}")]
    Config(String),
}

impl StorageError {
    /// True for failures that may succeed when retried (network, conflicts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::ObjectStore(_) | StorageError::CatalogConflict { .. })
    }
}

/// Result with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

//! Storage errors, named for the failure.

/// What can go wrong reading or writing parts and catalogs.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store failed; the message carries the whole cause chain, since
    /// object_store's own says "error sending request" and leaves out
    /// whether the connection was refused, reset or timed out.
    #[error("object store: {}", with_causes(.0))]
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

/// `err`'s message followed by each cause's not already part of it.
pub(crate) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Result with [`StorageError`].
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that, like hyper's, says little and keeps its cause apart.
    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Terse(#[source] std::io::Error);

    #[test]
    fn an_object_store_error_names_its_root_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused by 127.0.0.1:9");
        let e = StorageError::from(object_store::Error::Generic { store: "S3", source: Box::new(Terse(io)) });
        let text = e.to_string();
        assert!(text.ends_with("error sending request: connection refused by 127.0.0.1:9"), "{text}");
        // A cause already in the message (the Terse one) is not repeated.
        assert_eq!(text.matches("error sending request").count(), 1, "{text}");
    }
}

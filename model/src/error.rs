//! The model's error type: everything here is a problem with the request.

/// A request that does not fit the schema or the query language.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum ModelError {
    /// A field of the request is missing or wrong; `field` names it.
    #[error("invalid argument: {field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A referenced group or measure does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A query would hold more rows in memory than allowed.
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
}

impl ModelError {
    /// Shorthand for [`ModelError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError::InvalidArgument { field: field.into(), message: message.into() }
    }
}

/// Result with [`ModelError`].
pub type Result<T, E = ModelError> = std::result::Result<T, E>;

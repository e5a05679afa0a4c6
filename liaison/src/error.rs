//! One error type for both front ends: a gRPC-style code and a message that
//! names the offending field. HTTP maps codes to statuses and returns
//! `{"code": "...", "message": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use canopy_ingester::IngestError;
use canopy_meta::MetaError;
use canopy_model::ModelError;
use canopy_querier::QueryError;
use canopy_storage::StorageError;

/// Error categories, as gRPC names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Internal,
    /// No valid credential (HTTP 401).
    Unauthenticated,
    /// A credential whose role does not allow the request (HTTP 403).
    PermissionDenied,
}

/// An error returned to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into() }
    }

    /// INVALID_ARGUMENT naming `field`.
    pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::new(Code::InvalidArgument, format!("{field}: {message}"))
    }

    /// What a client is told: everything but INTERNAL as is; an INTERNAL
    /// error's detail (a WAL or store failure may name local paths and
    /// files) goes to this process's log under an id the client gets.
    pub fn for_client(self) -> ApiError {
        if self.code != Code::Internal {
            return self;
        }
        let id = error_id();
        tracing::error!(error_id = %id, error = %self.message, "internal error answered to a client");
        ApiError::new(Code::Internal, format!("internal error {id}; the server's log has the details"))
    }

    /// The HTTP status for this error's code.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self.code {
            Code::InvalidArgument => StatusCode::BAD_REQUEST,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists => StatusCode::CONFLICT,
            Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
        }
    }

    fn code_name(&self) -> &'static str {
        match self.code {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::NotFound => "NOT_FOUND",
            Code::AlreadyExists => "ALREADY_EXISTS",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            Code::Unavailable => "UNAVAILABLE",
            Code::Internal => "INTERNAL",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::PermissionDenied => "PERMISSION_DENIED",
        }
    }
}

impl From<tonic::Status> for ApiError {
    /// An error a peer role returned over the internal services; transport
    /// failures (the peer is down) arrive as UNAVAILABLE.
    fn from(s: tonic::Status) -> ApiError {
        let code = match s.code() {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => Code::InvalidArgument,
            tonic::Code::NotFound => Code::NotFound,
            tonic::Code::AlreadyExists => Code::AlreadyExists,
            tonic::Code::FailedPrecondition => Code::FailedPrecondition,
            tonic::Code::ResourceExhausted => Code::ResourceExhausted,
            tonic::Code::DeadlineExceeded => Code::DeadlineExceeded,
            tonic::Code::Unauthenticated => Code::Unauthenticated,
            tonic::Code::PermissionDenied => Code::PermissionDenied,
            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Aborted | tonic::Code::Unknown => Code::Unavailable,
            _ => Code::Internal,
        };
        ApiError::new(code, s.message().to_string())
    }
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> tonic::Status {
        let e = e.for_client();
        let code = match e.code {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::AlreadyExists => tonic::Code::AlreadyExists,
            Code::FailedPrecondition => tonic::Code::FailedPrecondition,
            Code::ResourceExhausted => tonic::Code::ResourceExhausted,
            Code::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Internal => tonic::Code::Internal,
            Code::Unauthenticated => tonic::Code::Unauthenticated,
            Code::PermissionDenied => tonic::Code::PermissionDenied,
        };
        tonic::Status::new(code, e.message)
    }
}

/// An error response in the API's shape, `{"code": ..., "message": ...}`
/// (also for the statuses no [`Code`] has: 408, 413).
pub(crate) fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    (status, axum::Json(serde_json::json!({ "code": code, "message": message }))).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.for_client();
        error_response(e.http_status(), e.code_name(), e.message)
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> ApiError {
        match e {
            ModelError::InvalidArgument { field, message } => ApiError::invalid(&field, message),
            ModelError::NotFound(m) => ApiError::new(Code::NotFound, m),
            ModelError::ResourceExhausted(m) => ApiError::new(Code::ResourceExhausted, m),
        }
    }
}

impl From<MetaError> for ApiError {
    fn from(e: MetaError) -> ApiError {
        match e {
            MetaError::NotFound(m) => ApiError::new(Code::NotFound, format!("{m} not found")),
            MetaError::AlreadyExists(m) => ApiError::new(Code::AlreadyExists, format!("{m} already exists")),
            MetaError::Invalid(m) => m.into(),
            MetaError::FailedPrecondition(m) => ApiError::new(Code::FailedPrecondition, m),
            MetaError::Conflict(m) => ApiError::new(Code::Unavailable, format!("concurrent change to {m}; retry")),
            MetaError::Storage(m) => ApiError::new(Code::Internal, m),
        }
    }
}

/// What a client is told instead of a detail kept in the log, to find it there.
fn error_id() -> String {
    format!("{:08x}", canopy_storage::paths::nonce())
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        if let StorageError::ObjectStore(_) = e {
            // The store's errors name its endpoint, bucket and keys: the
            // client learns that it may retry, the log gets the rest.
            let id = error_id();
            tracing::warn!(error_id = %id, error = %e, "object store unavailable");
            return ApiError::new(
                Code::Unavailable,
                format!("object store unavailable (error {id}; the server's log has the details); retry"),
            );
        }
        let code = if e.is_retryable() { Code::Unavailable } else { Code::Internal };
        ApiError::new(code, e.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> ApiError {
        match e {
            IngestError::Overloaded(m) => ApiError::new(Code::ResourceExhausted, m),
            IngestError::Closed => ApiError::new(Code::Unavailable, "shutting down"),
            IngestError::NotOwner(m) => ApiError::new(Code::Unavailable, m),
            IngestError::Invalid(m) => ApiError::new(Code::InvalidArgument, m),
            IngestError::Storage(s) => s.into(),
            IngestError::Wal(e) => ApiError::new(Code::Internal, format!("WAL: {e}")),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match e {
            QueryError::Model(m) => m.into(),
            QueryError::Storage(s) => s.into(),
            QueryError::Cancelled => ApiError::new(Code::DeadlineExceeded, "the query was cancelled before it finished"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_CODE: [Code; 10] = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::AlreadyExists,
        Code::FailedPrecondition,
        Code::ResourceExhausted,
        Code::DeadlineExceeded,
        Code::Unavailable,
        Code::Internal,
        Code::Unauthenticated,
        Code::PermissionDenied,
    ];

    /// Fails to compile when a code is added: add it to [`EVERY_CODE`] too.
    fn _every_code_is_listed(c: Code) {
        match c {
            Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Unavailable
            | Code::Internal
            | Code::Unauthenticated
            | Code::PermissionDenied => {}
        }
    }

    /// The table of codes and HTTP statuses in docs/api.md is what clients
    /// read; every code answers as it says, and it lists every code.
    #[tokio::test]
    async fn every_code_answers_the_http_status_and_body_docs_api_md_documents() {
        let doc = include_str!("../../docs/api.md");
        let documented: std::collections::HashMap<&str, u16> = doc
            .lines()
            .filter_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                let code = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
                Some((code, cells.get(2)?.parse().ok()?))
            })
            .collect();
        assert_eq!(documented.len(), EVERY_CODE.len(), "docs/api.md lists {documented:?}");
        for code in EVERY_CODE {
            let e = ApiError::new(code, "what went wrong");
            let name = e.code_name();
            let resp = e.into_response();
            assert_eq!(Some(&resp.status().as_u16()), documented.get(name), "{name}");
            let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], name);
            // INTERNAL's detail stays in the log (`for_client`).
            let told = if code == Code::Internal { body["message"].as_str().unwrap().to_string() } else { "what went wrong".into() };
            assert_eq!(body, serde_json::json!({"code": name, "message": told}));
            assert!(code != Code::Internal || told.starts_with("internal error "), "{told}");
            // The same code over gRPC, and back: a peer's error keeps its meaning.
            let status = tonic::Status::from(ApiError::new(code, "m"));
            assert_eq!(ApiError::from(status).code, code, "{name} through gRPC");
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let e = ApiError::new(Code::Internal, "WAL: /var/lib/canopy/wal/g/0001/00000000000000000001.wal: Input/output error");
        let told = e.clone().for_client();
        assert_eq!(told.code, Code::Internal);
        assert!(!told.message.contains("/var/lib") && told.message.starts_with("internal error "), "{}", told.message);
        assert!(!tonic::Status::from(e).message().contains("/var/lib"));
        let invalid = ApiError::invalid("body", "bad");
        assert_eq!(invalid.clone().for_client(), invalid, "other codes are told as they are");
    }

    #[test]
    fn an_unreachable_store_is_retryable_without_naming_its_endpoint() {
        let store = object_store::Error::Generic {
            store: "S3",
            source: "Error performing GET http://10.0.3.7:9000/canopy-prod/parts/g/0001/x.arrow: connection refused".into(),
        };
        let told = ApiError::from(StorageError::from(store));
        assert_eq!(told.code, Code::Unavailable);
        assert!(told.message.starts_with("object store unavailable (error ") && !told.message.contains("10.0.3.7"), "{}", told.message);
    }
}

//! The cluster secret: a shared value every internal gRPC call carries
//! (`x-canopy-cluster-secret` metadata) and every internal service checks,
//! so that only Canopy's own nodes can push batches into an ingester's
//! `Ingest` or have a querier read the bucket through `ExecuteShard`.
//! Without one (`--cluster-secret-file` unset) internal calls are not
//! authenticated and the network alone must keep clients away.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata key internal calls carry the secret in.
pub const SECRET_HEADER: &str = "x-canopy-cluster-secret";

/// The secret, if the cluster has one; an [`Interceptor`] for clients
/// (adds it) and, through [`ClusterSecret::checker`], for services.
#[derive(Clone, Default)]
pub struct ClusterSecret(Option<Arc<str>>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never in logs.
        f.write_str(if self.0.is_some() { "ClusterSecret(set)" } else { "ClusterSecret(none)" })
    }
}

/// Checks the secret of each call to an internal service.
#[derive(Clone, Debug)]
pub struct SecretCheck(ClusterSecret);

impl ClusterSecret {
    /// No secret: calls are neither signed nor checked.
    pub fn none() -> ClusterSecret {
        ClusterSecret(None)
    }

    /// A secret (surrounding whitespace, such as a file's final newline, is
    /// not part of it). Refuses an empty one or one that cannot travel as
    /// gRPC metadata.
    pub fn new(secret: &str) -> Result<ClusterSecret, String> {
        let s = secret.trim();
        if s.is_empty() {
            return Err("the cluster secret is empty".into());
        }
        // Visible ASCII travels as metadata unchanged on every client.
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the cluster secret must be visible ASCII (no spaces or control characters)".into());
        }
        Ok(ClusterSecret(Some(s.into())))
    }

    /// Reads the secret from a file.
    pub fn from_file(path: &std::path::Path) -> Result<ClusterSecret, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        ClusterSecret::new(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// True if calls carry and need the secret.
    pub fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// The interceptor internal services check calls with.
    pub fn checker(&self) -> SecretCheck {
        SecretCheck(self.clone())
    }
}

impl Interceptor for ClusterSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(s) = &self.0 {
            let value = MetadataValue::try_from(&**s).map_err(|_| Status::internal("unsendable cluster secret"))?;
            req.metadata_mut().insert(SECRET_HEADER, value);
        }
        Ok(req)
    }
}

impl Interceptor for SecretCheck {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(want) = &self.0.0 else { return Ok(req) };
        let got = req.metadata().get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if constant_time_eq(got, want.as_bytes()) {
            Ok(req)
        } else {
            Err(Status::unauthenticated("internal service: the call lacks this cluster's secret (--cluster-secret-file)"))
        }
    }
}

/// Compares without stopping at the first difference, so the time taken
/// tells nothing of how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_with(client: &mut ClusterSecret, check: &mut SecretCheck) -> Result<(), Status> {
        let signed = client.call(Request::new(()))?;
        check.call(signed).map(drop)
    }

    #[test]
    fn a_call_passes_only_with_the_same_secret() {
        let mut ours = ClusterSecret::new("s3cret\n").unwrap();
        let mut check = ours.checker();
        assert!(call_with(&mut ours, &mut check).is_ok());
        assert_eq!(call_with(&mut ClusterSecret::new("other").unwrap(), &mut check).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert_eq!(call_with(&mut ClusterSecret::none(), &mut check).unwrap_err().code(), tonic::Code::Unauthenticated);
        // A service without a secret checks nothing.
        assert!(call_with(&mut ClusterSecret::none(), &mut ClusterSecret::none().checker()).is_ok());
    }

    #[test]
    fn bad_secrets_are_refused_and_never_printed() {
        assert!(ClusterSecret::new(" \n").is_err());
        for bad in ["two words", "tab\tinside", "é", "line\nbreak"] {
            assert!(ClusterSecret::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format!("{:?}", ClusterSecret::new("s3cret").unwrap()), "ClusterSecret(set)");
    }
}

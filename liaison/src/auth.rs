//! Authentication and authorisation of client requests: bearer tokens from
//! a file of `ROLE SHA256HEX` lines (`--auth-tokens-file`), so the file holds
//! no secret. Each request needs one of three permissions — `read`
//! (queries, remote read, schema reads), `write` (native and agent writes,
//! schemas created on the fly) or `admin` (everything: schema changes, admin
//! endpoints) — and is checked before its body is read.
//!
//! The credential is taken from what agents already send: `Authorization:
//! Bearer T` (Prometheus `authorization`, OTLP exporter headers), `Token T`
//! (Telegraf, Influx v2 clients), `Basic base64(user:T)` (Prometheus
//! `basic_auth`, Influx v1 clients; the password is the token), or Influx v1's
//! `p=T` query parameter; over gRPC the `authorization` metadata.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, Code};

/// What a request needs, and what a token's role grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Queries, remote read, schema reads, `/metrics`.
    Read,
    /// Native and agent writes.
    Write,
    /// Everything (only the `admin` role has it).
    Admin,
}

/// The tokens of a tokens file, by the hex SHA-256 of each.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    roles: HashMap<String, Permission>,
}

/// The hex SHA-256 of a token, as the tokens file names it.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl Tokens {
    /// Reads a tokens file; the error names the file and line.
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses `ROLE SHA256HEX` lines; `#` starts a comment, blank lines are skipped.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut roles = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(role), Some(hash), None) = (words.next(), words.next(), words.next()) else {
                return Err(format!("line {}: expected `ROLE SHA256HEX`", i + 1));
            };
            let role = match role {
                "read" => Permission::Read,
                "write" => Permission::Write,
                "admin" => Permission::Admin,
                other => return Err(format!("line {}: role {other:?} is not one of read, write, admin", i + 1)),
            };
            if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("line {}: the token's SHA-256 must be 64 hex digits (e.g. `printf %s TOKEN | sha256sum`)", i + 1));
            }
            roles.insert(hash.to_ascii_lowercase(), role);
        }
        if roles.is_empty() {
            return Err("no tokens: every request would be refused".into());
        }
        Ok(Tokens { roles })
    }

    /// Lets the request through if its credential's role grants `need`:
    /// UNAUTHENTICATED (401) without a known token, PERMISSION_DENIED (403)
    /// with a token whose role does not grant it.
    pub fn check(&self, credential: Option<&str>, need: Permission) -> Result<(), ApiError> {
        let Some(token) = credential else {
            return Err(ApiError::new(Code::Unauthenticated, "this server requires a token (Authorization: Bearer TOKEN)"));
        };
        match self.roles.get(&token_hash(token)) {
            None => Err(ApiError::new(Code::Unauthenticated, "unknown token")),
            Some(&role) if role == Permission::Admin || role == need => Ok(()),
            Some(role) => Err(ApiError::new(Code::PermissionDenied, format!("this needs the {need:?} role; the token has {role:?}"))),
        }
    }
}

/// The token in an `Authorization` header value: `Bearer T`, `Token T` or
/// `Basic base64(user:T)` (the password; the user name if there is none).
pub fn credential_of(authorization: &str) -> Option<String> {
    let (scheme, rest) = authorization.trim().split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
        return Some(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(rest).ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, password) = text.split_once(':').unwrap_or((&text, ""));
        return Some(if password.is_empty() { user } else { password }.to_string());
    }
    None
}

/// What an HTTP request needs, by method and path; `None` for the few that
/// are open (health checks).
pub fn http_permission(method: &axum::http::Method, path: &str) -> Option<Permission> {
    use Permission::*;
    let reading = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    Some(match path {
        // Liveness only: InfluxDB clients ping without credentials.
        "/api/healthz" | "/ping" | "/health" => return None,
        "/api/v1/measure/data" | "/api/v1/read" | "/metrics" => Read,
        "/api/v1/measure/write" | "/api/v1/write" | "/write" | "/api/v2/write" | "/v1/metrics" | "/query" => Write,
        p if p.starts_with("/api/v1/group/schema") || p.starts_with("/api/v1/measure/schema") => {
            if reading {
                Read
            } else {
                Admin
            }
        }
        _ => Admin,
    })
}

/// What a gRPC call needs, by its path (`/package.Service/Method`); `None`
/// for the health service.
pub fn grpc_permission(path: &str) -> Option<Permission> {
    use Permission::*;
    let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or((path, ""));
    Some(match (service, method) {
        ("grpc.health.v1.Health", _) => return None,
        ("canopy.v1.MeasureService", "Query") => Read,
        ("canopy.v1.MeasureService", "Write") => Write,
        ("opentelemetry.proto.collector.metrics.v1.MetricsService", "Export") => Write,
        ("canopy.v1.GroupRegistryService" | "canopy.v1.MeasureRegistryService", "Get" | "List") => Read,
        _ => Admin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Tokens {
        let text = format!(
            "# who can do what\nread {}\n\nwrite {}  # agents\nadmin {}\n",
            token_hash("r-token"),
            token_hash("w-token").to_uppercase(),
            token_hash("a-token")
        );
        Tokens::parse(&text).unwrap()
    }

    #[test]
    fn the_hash_is_sha256_in_lowercase_hex() {
        assert_eq!(token_hash("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn roles_grant_their_permission_and_admin_grants_all() {
        let t = tokens();
        assert!(t.check(Some("r-token"), Permission::Read).is_ok());
        assert!(t.check(Some("w-token"), Permission::Write).is_ok());
        for need in [Permission::Read, Permission::Write, Permission::Admin] {
            assert!(t.check(Some("a-token"), need).is_ok());
        }
        assert_eq!(t.check(Some("r-token"), Permission::Write).unwrap_err().code, Code::PermissionDenied);
        assert_eq!(t.check(Some("w-token"), Permission::Admin).unwrap_err().code, Code::PermissionDenied);
        assert_eq!(t.check(Some("nope"), Permission::Read).unwrap_err().code, Code::Unauthenticated);
        assert_eq!(t.check(None, Permission::Read).unwrap_err().code, Code::Unauthenticated);
    }

    #[test]
    fn a_bad_tokens_file_names_the_line() {
        assert!(Tokens::parse("read abc").unwrap_err().contains("line 1"));
        assert!(Tokens::parse(&format!("\nowner {}", token_hash("x"))).unwrap_err().contains("line 2: role \"owner\""));
        assert!(Tokens::parse("read").unwrap_err().contains("ROLE SHA256HEX"));
        assert!(Tokens::parse("# nothing\n").unwrap_err().contains("no tokens"));
    }

    #[test]
    fn credentials_come_from_bearer_token_and_basic_headers() {
        assert_eq!(credential_of("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(credential_of("Token abc").as_deref(), Some("abc"));
        let basic = base64::engine::general_purpose::STANDARD.encode("prom:s3cret");
        assert_eq!(credential_of(&format!("Basic {basic}")).as_deref(), Some("s3cret"));
        let user_only = base64::engine::general_purpose::STANDARD.encode("s3cret");
        assert_eq!(credential_of(&format!("basic {user_only}")).as_deref(), Some("s3cret"));
        assert_eq!(credential_of("Digest x"), None);
        assert_eq!(credential_of("Bearer"), None);
    }

    #[test]
    fn every_route_needs_what_it_does() {
        use axum::http::Method;
        assert_eq!(http_permission(&Method::GET, "/api/healthz"), None);
        assert_eq!(http_permission(&Method::POST, "/api/v1/measure/data"), Some(Permission::Read));
        assert_eq!(http_permission(&Method::POST, "/api/v1/write"), Some(Permission::Write));
        assert_eq!(http_permission(&Method::POST, "/v1/metrics"), Some(Permission::Write));
        assert_eq!(http_permission(&Method::GET, "/api/v1/group/schema/lists"), Some(Permission::Read));
        assert_eq!(http_permission(&Method::DELETE, "/api/v1/group/schema/g"), Some(Permission::Admin));
        assert_eq!(http_permission(&Method::POST, "/api/v1/admin/flush"), Some(Permission::Admin));
        assert_eq!(http_permission(&Method::GET, "/anything/else"), Some(Permission::Admin));
        assert_eq!(grpc_permission("/grpc.health.v1.Health/Check"), None);
        assert_eq!(grpc_permission("/canopy.v1.MeasureService/Query"), Some(Permission::Read));
        assert_eq!(grpc_permission("/canopy.v1.MeasureService/Write"), Some(Permission::Write));
        assert_eq!(grpc_permission("/canopy.v1.MeasureRegistryService/Create"), Some(Permission::Admin));
        assert_eq!(grpc_permission("/canopy.v1.AdminService/Flush"), Some(Permission::Admin));
    }
}

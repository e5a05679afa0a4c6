//! Canopy's liaison: the HTTP (axum) and gRPC (tonic) gateway. It validates
//! requests against the schema, routes each point to its shard, fans queries
//! out to every shard of the group and merges the partial results.
//!
//! The data it talks to sits behind [`DataPlane`]; in standalone that is the
//! in-process ingester and querier ([`LocalDataPlane`]).

/// Decoder property tests check allocation sizes (`fuzz_decoder`).
#[cfg(test)]
#[global_allocator]
static ALLOC: canopy_model::testing::LargestAlloc = canopy_model::testing::LargestAlloc;

mod agents;
pub mod auth;
mod data_plane;
mod error;
mod grpc;
mod grpc_auth;
mod grpc_limits;
mod grpc_tls;
mod http;
mod http_serve;
pub mod metrics;
mod server;
mod service;
pub mod tls;

pub use agents::AgentConfig;
pub use data_plane::{DataPlane, LocalDataPlane};
pub use error::{ApiError, Code};
pub use grpc_limits::{GRPC_CALLS_DEFAULT, GRPC_IN_FLIGHT_BYTES_DEFAULT, GrpcLimited, GrpcLimits};
pub use http_serve::{HTTP_READ_TIMEOUT_DEFAULT, serve_http};
pub use server::{Bound, LiaisonConfig, serve_grpc, serve_liaison, start_liaison};
pub use service::{Gateway, QUERY_TIMEOUT_DEFAULT};

//! Canopy's cluster mode: etcd-backed metadata ([`EtcdStore`]), node
//! registration and discovery ([`Registration`], [`ClusterView`]), shard
//! ownership with fenced handovers ([`ShardManager`]), the internal gRPC
//! services of ingesters and queriers, and the liaison's
//! [`ClusterDataPlane`] that routes writes and fans queries out over them
//! and the query function on AWS Lambda ([`dispatch`], [`LambdaInvoker`]).
//!
//! etcd layout (all under `/canopy/`):
//! - `nodes/{host:grpc_port}` — [`NodeInfo`] JSON, attached to the node's lease.
//! - `shards/{group}/{shard:04}` — [`ShardOwner`] JSON: owner, epoch, released.
//! - `groups/{group}`, `measures/{group}/{measure}` — protobuf schemas.

mod catalog_cache;
mod data_plane;
pub mod dispatch;
mod etcd_store;
mod fragment;
mod ingester_service;
mod lambda_client;
mod node;
mod ownership;
pub mod placement;
mod querier_service;
mod secret;
mod shard_manager;
mod view;
mod watched;

pub use canopy_liaison::metrics;
pub use catalog_cache::CatalogCache;
pub use data_plane::{ClusterDataPlane, INTERNAL_MESSAGE_BYTES_MAX, RoutingConfig};
pub use etcd_store::EtcdStore;
pub use fragment::{compile_fragment, fragment_of};
pub use ingester_service::IngesterRpc;
pub use lambda_client::{Answer, Invocation, LAMBDA_PAYLOAD_MAX, LambdaConfig, LambdaCounters, LambdaInvoker};
pub use node::{NODES_PREFIX, NodeInfo, Registration, Role, parse_labels};
pub use ownership::{SHARDS_PREFIX, ShardOwner, current_owners, eligible_ingesters, parse_shard_key, shard_key};
pub use placement::assign;
pub use querier_service::{QuerierRpc, execute_fragment};
pub use secret::{ClusterSecret, SECRET_HEADER, SecretCheck};
pub use shard_manager::{Pacing, ShardManager};
pub use view::{ClusterView, EtcdAccess, EtcdAuth, EtcdTls, OwnerRecord, connect};
pub use watched::{Entry, WatchedPrefix};

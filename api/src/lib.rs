//! Canopy's wire API: the protobuf messages and gRPC services shared by every
//! role, with protobuf-JSON (serde) impls so the HTTP gateway speaks the same
//! messages as gRPC.

#![allow(unreachable_pub, missing_docs, clippy::all)]

/// `canopy.v1`: schema registry, measure write/query, admin.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/canopy.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/canopy.v1.serde.rs"));
}

/// `canopy.cluster.v1`: internal services between cluster roles.
pub mod cluster {
    /// Version 1 of the internal services.
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/canopy.cluster.v1.rs"));
    }
}

/// Prometheus remote write 1.0 and remote read messages.
pub mod prometheus {
    include!(concat!(env!("OUT_DIR"), "/prometheus.rs"));
}

pub use pbjson_types::Timestamp;

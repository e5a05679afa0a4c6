//! Test harness: starts the real `canopy` binary (and, for the S3 backend, a
//! real s3s-fs S3 server, in-process) on free loopback ports, and talks to it over HTTP and
//! gRPC. Every server started here is stopped when its handle drops.

#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod certs;
pub mod client;
pub mod cluster;
pub mod lambda;
pub mod oracle;
pub mod process;
pub mod s3;
pub mod topology;
pub mod wait;
pub mod workload;

pub use certs::*;
pub use client::*;
pub use cluster::*;
pub use lambda::*;
pub use oracle::*;
pub use process::*;
pub use topology::*;
pub use wait::*;
pub use workload::*;

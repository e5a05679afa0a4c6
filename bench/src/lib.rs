//! The parts of Canopy's benchmark suite that other tools and the tests
//! share: the TSBS devops cpu-only vocabulary and data generator, the S3
//! server (s3s-fs in-process, with atomic conditional writes) and a proxy
//! that gives it an object store's request latency, and the query function
//! run locally under the Lambda emulator.

pub mod latency_proxy;
pub mod local_lambda;
pub mod s3;
pub mod tsbs;

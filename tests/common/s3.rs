//! The tests' S3 server is the benchmark's: s3s-fs in-process with atomic
//! conditional writes (see `canopy_bench::s3`).

pub use canopy_bench::s3::*;

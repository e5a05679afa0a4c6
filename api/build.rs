//! Compiles the protobuf API with protox (no `protoc` needed) and generates
//! the protobuf-JSON serde impls used by the HTTP gateway.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/canopy/v1/common.proto",
        "proto/canopy/v1/model.proto",
        "proto/canopy/v1/schema.proto",
        "proto/canopy/v1/measure.proto",
        "proto/canopy/cluster/v1/cluster.proto",
        "proto/prometheus/remote.proto",
    ];
    println!("cargo:rerun-if-changed=build.rs");
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_bytes = prost::Message::encode_to_vec(&fds);
    std::fs::write(out.join("canopy_descriptor.bin"), &descriptor_bytes)?;
    tonic_prost_build::configure().compile_well_known_types(true).extern_path(".google.protobuf", "::pbjson_types").compile_fds(fds)?;
    pbjson_build::Builder::new().register_descriptors(&descriptor_bytes)?.build(&[".canopy.v1"])?;
    Ok(())
}

//! Generates the `trackstream.v1` types and gRPC stubs at build time.
//!
//! A vendored `protoc` is used so that building never requires a protobuf compiler
//! installed by hand; set `PROTOC` to use another one.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("trackstream_v1_descriptor.bin"))
        .compile_with_config(
            config,
            &["proto/trackstream/v1/trackstream.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

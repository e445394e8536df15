//! Compiles `proto/veil/v1/veil.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let proto_file = "../../proto/veil/v1/veil.proto";
    println!("cargo:rerun-if-changed={proto_file}");
    let descriptors = protox::compile([proto_file], [proto_root])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

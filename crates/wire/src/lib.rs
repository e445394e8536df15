//! The one crate that knows the protobuf wire format: generated `veil.v1` code
//! plus the chunking of model vectors into size-limited messages.
//!
//! Domain types live elsewhere (`veil-federation`, `veil-behaviour-features`,
//! `veil-models`) and carry no prost derives; conversions between them and
//! these messages sit next to the service code in `coordinator` and
//! `client-node`.

/// Generated messages and services of the `veil.v1` package.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    tonic::include_proto!("veil.v1");
}

pub mod chunking;

/// Largest gRPC message either side accepts or sends, set explicitly on every
/// server and client. Model vectors are chunked well below it.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Number of f32 values per chunk: 4 MiB of payload per message.
pub const VALUES_PER_CHUNK: usize = 1024 * 1024;

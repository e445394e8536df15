//! How the caller's job descriptor becomes bytes and back.
//!
//! The engine treats the descriptor as opaque, and the coordinator's descriptor
//! (`veil_job::JobSpec`) is not serde but has a protobuf wire form, so the
//! store leaves its encoding to the caller.

/// Why a stored descriptor could not be decoded, in the codec's own words.
pub type DescriptorDecodeError = Box<dyn std::error::Error + Send + Sync>;

/// Encodes and decodes the job descriptor `D` for storage.
///
/// `decode(encode(d))` must equal `d`; the encoding must stay readable by
/// later versions of the program, since stored jobs outlive it (a protobuf
/// message with only added fields qualifies).
pub trait DescriptorCodec<D> {
    /// The descriptor's stored form.
    fn encode(&self, descriptor: &D) -> Vec<u8>;
    /// The descriptor back from its stored form, or why the bytes are not one.
    fn decode(&self, bytes: &[u8]) -> Result<D, DescriptorDecodeError>;
}

//! Sans-IO secure aggregation for Veil: the client and server state machines
//! of Bonawitz et al. 2017 (malicious-server variant, with the consistency
//! check) over the sparse neighbour graph of SecAgg+ (Bell et al. 2020), plus
//! the primitives they need: Shamir sharing, mask expansion, fixed-point
//! encoding and a binary message encoding.
//!
//! This crate does **not** do networking, timing or scheduling: the
//! coordinator (`coordinator`) decides when each phase ends and carries the
//! messages' bytes in protobuf `bytes` fields, and the client node
//! (`client-node`) decides when to drive its session. It does not train,
//! clip or add differential-privacy noise either (`veil-models`,
//! `veil-privacy-accounting`); it sums whatever encoded vectors it is given.
//! See `docs/secure-aggregation.md` for the threat model and parameters.

pub mod client;
pub mod crypto;
pub mod encoding;
pub mod graph;
pub mod messages;
pub mod params;
pub mod prg;
pub mod server;
pub mod shamir;
mod wire;

pub use client::{ClientConfig, ClientError, ClientSession, Continuation, Refusal};
pub use crypto::CryptoError;
pub use encoding::{EncodingError, decode_sum, encode, modulus_bits_for_sum, value_bits_for_sum};
pub use graph::{
    GraphError, GraphRequirements, Guarantee, NeighbourGraph, NeighbourParameters,
    check_neighbour_parameters, choose_neighbour_parameters,
};
pub use messages::{
    AddressedCiphertext, ConsistencySignature, EncryptedShares, ForwardedShares, KeyAdvertisement,
    KeyDirectory, MaskedInput, RevealedShare, SurvivorList, UnmaskRequest, UnmaskResponse,
};
pub use params::{
    IdentityDirectory, IdentityVerifyingKey, NodeId, PROTOCOL_VERSION, ParamsError, PartnerPolicy,
    ProtocolParams, RoundBinding,
};
pub use server::{
    ContinuationSum, FailureReason, Phase, RejectedMessage, RoundFailed, SecretKind, ServerConfig,
    ServerSession,
};
pub use wire::DecodeError;

//! The v1 certificate protobuf (`cert/cert.proto` of Nebula 1.6.1), written out with prost's
//! derive so no build script or protoc is needed. prost encodes proto3 the way Go's protobuf does
//! for these messages: fields in ascending number, repeated uint32 packed, zero values omitted.
//! That canonical form is what signatures and fingerprints are computed over.
//!
//! ```text
//! RawNebulaCertificate          RawNebulaCertificateDetails
//!   1 Details  message            1 Name       string
//!   2 Signature bytes             2 Ips        repeated uint32, packed (addr, mask) pairs
//!                                 3 Subnets    repeated uint32, packed (addr, mask) pairs
//!                                 4 Groups     repeated string
//!                                 5 NotBefore  int64 (unix seconds)
//!                                 6 NotAfter   int64 (unix seconds)
//!                                 7 PublicKey  bytes (left out in the handshake form)
//!                                 8 IsCA       bool
//!                                 9 Issuer     bytes (SHA-256 of the CA certificate)
//! ```
//! Raw types only; validation into typed certificates lives in `certificate.rs`.

/// Outer certificate message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawNebulaCertificate {
    #[prost(message, optional, tag = "1")]
    pub details: Option<RawNebulaCertificateDetails>,
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// Signed part of a certificate.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawNebulaCertificateDetails {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(uint32, repeated, tag = "2")]
    pub ips: Vec<u32>,
    #[prost(uint32, repeated, tag = "3")]
    pub subnets: Vec<u32>,
    #[prost(string, repeated, tag = "4")]
    pub groups: Vec<String>,
    #[prost(int64, tag = "5")]
    pub not_before: i64,
    #[prost(int64, tag = "6")]
    pub not_after: i64,
    #[prost(bytes = "vec", tag = "7")]
    pub public_key: Vec<u8>,
    #[prost(bool, tag = "8")]
    pub is_ca: bool,
    #[prost(bytes = "vec", tag = "9")]
    pub issuer: Vec<u8>,
}

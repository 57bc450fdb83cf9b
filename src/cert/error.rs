//! `CertError`: every way parsing, verifying or signing a certificate can fail. Messages follow
//! nebula-cert 1.6.1's wording where it has one, so `meshd cert` prints what users already know.

use crate::net::Ipv4Net;

/// A certificate, key or CA pool problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    // PEM armour
    #[error("input did not contain a valid PEM encoded block")]
    NoPemBlock,
    #[error("bytes did not contain a proper nebula {expected} banner (found {found:?})")]
    WrongBanner {
        expected: &'static str,
        found: String,
    },
    #[error("key was not {expected} bytes (found {found}), is invalid {kind}")]
    KeyLength {
        kind: &'static str,
        expected: usize,
        found: usize,
    },
    #[error(
        "ed25519 private key is inconsistent: its last 32 bytes are not the public key of its seed"
    )]
    Ed25519KeyInconsistent,

    // protobuf body
    #[error("nil byte array")]
    Empty,
    #[error("certificate protobuf is malformed: {0}")]
    Protobuf(String),
    #[error("encoded Details was nil")]
    MissingDetails,
    #[error("encoded IPs should be in pairs, an odd number was found")]
    OddIps,
    #[error("encoded Subnets should be in pairs, an odd number was found")]
    OddSubnets,
    #[error("public key is {0} bytes, expected 32")]
    PublicKeyLength(usize),
    #[error("signature is {0} bytes, expected 64")]
    SignatureLength(usize),
    #[error("issuer is {0} bytes, expected 32 (a SHA-256 fingerprint) or empty")]
    IssuerLength(usize),
    #[error("network mask {mask:#010x} of {addr} is not a contiguous prefix")]
    NonContiguousMask { addr: std::net::Ipv4Addr, mask: u32 },
    #[error("invalid fingerprint {0:?}: expected 64 hex digits")]
    BadFingerprint(String),

    // verification (1.6.1 order: cert/cert.go Verify)
    #[error("certificate has been blocked")]
    Blocked,
    #[error("certificate was signed by a blocked CA")]
    CaBlocked,
    #[error("no issuer in certificate")]
    NoIssuer,
    #[error("could not find ca for the certificate")]
    UnknownCa,
    #[error("root certificate is expired")]
    RootExpired,
    #[error("certificate is expired")]
    Expired,
    #[error("certificate signature did not match")]
    BadSignature,
    #[error("certificate expires after signing certificate")]
    ExpiresAfterSigner,
    #[error("certificate is valid before the signing certificate")]
    ValidBeforeSigner,
    #[error("certificate contained a group not present on the signing ca: {0}")]
    GroupNotAllowed(String),
    #[error(
        "certificate contained an ip assignment outside the limitations of the signing ca: {0}"
    )]
    IpNotAllowed(Ipv4Net),
    #[error(
        "certificate contained a subnet assignment outside the limitations of the signing ca: {0}"
    )]
    SubnetNotAllowed(Ipv4Net),

    // CA pool loading (cert/ca.go)
    #[error("{name}: certificate is not a CA")]
    NotCa { name: String },
    #[error("{name}: certificate is not self-signed")]
    NotSelfSigned { name: String },
    #[error("{name}: certificate is expired")]
    CaExpired { name: String },
    #[error("no valid CA certificates present")]
    NoValidCa,

    // keys
    #[error("public key in cert and private key supplied don't match")]
    KeyMismatch,
}

//! Typed v1 certificates: `NebulaCertificate` (parsed and validated, cannot be malformed),
//! `CertDetails` (the signed fields), `Fingerprint`. Converts to and from the raw protobuf, the
//! PEM form and the handshake form (no public key). Mirrors `cert/cert.go` of Nebula 1.6.1.
//! No clocks: validity checks take `now` as unix seconds.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use prost::Message;
use sha2::{Digest, Sha256};

use super::error::CertError;
use super::keys::{CaSigningKey, X25519PrivateKey};
use super::pem;
use super::proto::{RawNebulaCertificate, RawNebulaCertificateDetails};
use crate::net::Ipv4Net;

/// SHA-256 of a certificate's canonical encoding; shown and compared as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Fingerprint(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// SHA-256 of `data`.
    pub fn of(data: &[u8]) -> Self {
        Fingerprint(Sha256::digest(data).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = CertError;

    /// Accepts 64 hex digits (either case; Nebula itself only ever writes lowercase).
    fn from_str(s: &str) -> Result<Self, CertError> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| CertError::BadFingerprint(s.to_string()))?;
        Ok(Fingerprint(out))
    }
}

/// The signed content of a certificate. Any value is encodable; signing turns it into a
/// `NebulaCertificate`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertDetails {
    pub name: String,
    /// The first entry is the node's VPN IP and network; for a CA, the allowed ranges.
    pub ips: Vec<Ipv4Net>,
    /// Unsafe routes this host may serve; for a CA, the allowed ranges.
    pub subnets: Vec<Ipv4Net>,
    pub groups: Vec<String>,
    /// Unix seconds, inclusive.
    pub not_before: i64,
    /// Unix seconds, inclusive.
    pub not_after: i64,
    /// X25519 key for hosts, Ed25519 key for CAs.
    pub public_key: [u8; 32],
    pub is_ca: bool,
    /// Fingerprint of the signing CA; `None` for a (self-signed) CA.
    pub issuer: Option<Fingerprint>,
}

impl CertDetails {
    /// Canonical protobuf of the details: the bytes the CA signs.
    pub fn encode(&self) -> Vec<u8> {
        self.to_raw().encode_to_vec()
    }

    /// Signs with `key`. The caller decides issuer and constraints (see `sign_host`).
    pub fn sign(self, key: &CaSigningKey) -> NebulaCertificate {
        let signature = key.sign(&self.encode());
        NebulaCertificate::from_parts(self, signature)
    }

    /// True outside `[not_before, not_after]` (cert.go Expired).
    pub fn is_expired(&self, now: i64) -> bool {
        self.not_before > now || self.not_after < now
    }

    fn to_raw(&self) -> RawNebulaCertificateDetails {
        RawNebulaCertificateDetails {
            name: self.name.clone(),
            ips: pairs(&self.ips),
            subnets: pairs(&self.subnets),
            groups: self.groups.clone(),
            not_before: self.not_before,
            not_after: self.not_after,
            public_key: self.public_key.to_vec(),
            is_ca: self.is_ca,
            issuer: self.issuer.map(|f| f.0.to_vec()).unwrap_or_default(),
        }
    }

    fn from_raw(raw: RawNebulaCertificateDetails) -> Result<Self, CertError> {
        if !raw.ips.len().is_multiple_of(2) {
            return Err(CertError::OddIps);
        }
        if !raw.subnets.len().is_multiple_of(2) {
            return Err(CertError::OddSubnets);
        }
        let public_key = raw
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| CertError::PublicKeyLength(raw.public_key.len()))?;
        let issuer = match raw.issuer.len() {
            0 => None,
            32 => Some(Fingerprint(
                raw.issuer
                    .as_slice()
                    .try_into()
                    .map_err(|_| CertError::IssuerLength(raw.issuer.len()))?,
            )),
            n => return Err(CertError::IssuerLength(n)),
        };
        Ok(CertDetails {
            name: raw.name,
            ips: unpairs(&raw.ips)?,
            subnets: unpairs(&raw.subnets)?,
            groups: raw.groups,
            not_before: raw.not_before,
            not_after: raw.not_after,
            public_key,
            is_ca: raw.is_ca,
            issuer,
        })
    }
}

/// A parsed certificate: well-formed fields, a 64-byte signature and its fingerprint. Whether the
/// signature is *valid* is a separate question (`CaPool::verify`, `check_signature`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NebulaCertificate {
    details: CertDetails,
    signature: [u8; 64],
    fingerprint: Fingerprint,
}

impl NebulaCertificate {
    /// Assembles a certificate from details and a signature (not checked here).
    pub fn from_parts(details: CertDetails, signature: [u8; 64]) -> Self {
        let raw = RawNebulaCertificate {
            details: Some(details.to_raw()),
            signature: signature.to_vec(),
        };
        let fingerprint = Fingerprint::of(&raw.encode_to_vec());
        NebulaCertificate {
            details,
            signature,
            fingerprint,
        }
    }

    /// Parses the protobuf body of a `NEBULA CERTIFICATE` block.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        if bytes.is_empty() {
            return Err(CertError::Empty);
        }
        let raw =
            RawNebulaCertificate::decode(bytes).map_err(|e| CertError::Protobuf(e.to_string()))?;
        Self::from_raw(raw)
    }

    /// Parses the first PEM block, which must be a certificate; returns what follows it.
    pub fn from_pem(data: &[u8]) -> Result<(Self, &[u8]), CertError> {
        let (block, rest) = pem::decode(data).ok_or(CertError::NoPemBlock)?;
        if block.label != pem::CERT_BANNER {
            return Err(CertError::WrongBanner {
                expected: "certificate",
                found: block.label,
            });
        }
        Ok((Self::from_bytes(&block.body)?, rest))
    }

    /// Parses every certificate of a PEM bundle (as `nebula-cert print` does): stops at the end
    /// or at trailing whitespace, fails on anything else.
    pub fn bundle_from_pem(mut data: &[u8]) -> Result<Vec<Self>, CertError> {
        let mut certs = Vec::new();
        loop {
            let (cert, rest) = Self::from_pem(data)?;
            certs.push(cert);
            if pem::is_blank(rest) {
                return Ok(certs);
            }
            data = rest;
        }
    }

    /// Parses a certificate received in a handshake (public key left out) and puts the peer's
    /// Noise static key in its place, as Nebula's RecombineCertAndValidate does. A key present
    /// in the bytes is overwritten.
    pub fn from_handshake_bytes(
        bytes: &[u8],
        static_public_key: [u8; 32],
    ) -> Result<Self, CertError> {
        if bytes.is_empty() {
            return Err(CertError::Empty);
        }
        let mut raw =
            RawNebulaCertificate::decode(bytes).map_err(|e| CertError::Protobuf(e.to_string()))?;
        let details = raw.details.as_mut().ok_or(CertError::MissingDetails)?;
        details.public_key = static_public_key.to_vec();
        Self::from_raw(raw)
    }

    /// Canonical protobuf of the whole certificate.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_raw().encode_to_vec()
    }

    /// The handshake form: canonical protobuf with the public key (field 7) left out.
    pub fn marshal_without_public_key(&self) -> Vec<u8> {
        let mut raw = self.to_raw();
        if let Some(d) = raw.details.as_mut() {
            d.public_key.clear();
        }
        raw.encode_to_vec()
    }

    /// `NEBULA CERTIFICATE` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode(pem::CERT_BANNER, &self.to_bytes())
    }

    pub fn details(&self) -> &CertDetails {
        &self.details
    }

    pub fn name(&self) -> &str {
        &self.details.name
    }

    pub fn ips(&self) -> &[Ipv4Net] {
        &self.details.ips
    }

    /// The node's VPN IP: the address of the first `ips` entry (hosts without one are unusable).
    pub fn vpn_ip(&self) -> Option<Ipv4Addr> {
        self.details.ips.first().map(|n| n.addr())
    }

    pub fn subnets(&self) -> &[Ipv4Net] {
        &self.details.subnets
    }

    pub fn groups(&self) -> &[String] {
        &self.details.groups
    }

    pub fn not_before(&self) -> i64 {
        self.details.not_before
    }

    pub fn not_after(&self) -> i64 {
        self.details.not_after
    }

    pub fn public_key(&self) -> &[u8; 32] {
        &self.details.public_key
    }

    pub fn is_ca(&self) -> bool {
        self.details.is_ca
    }

    pub fn issuer(&self) -> Option<Fingerprint> {
        self.details.issuer
    }

    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// SHA-256 of the canonical encoding (what `nebula-cert print` shows, what blocklists hold).
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// True outside `[not_before, not_after]` at `now` (unix seconds).
    pub fn is_expired(&self, now: i64) -> bool {
        self.details.is_expired(now)
    }

    /// Ed25519 check of the signature over the canonical details with `public_key`.
    pub fn check_signature(&self, public_key: &[u8; 32]) -> bool {
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(public_key) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(&self.signature);
        // Plain (cofactorless, canonical-s) verification, the same acceptance as Go's ed25519.
        ed25519_dalek::Verifier::verify(&key, &self.details.encode(), &sig).is_ok()
    }

    /// Host certificate: the X25519 private key must produce the certificate's public key.
    pub fn verify_private_key(&self, key: &X25519PrivateKey) -> Result<(), CertError> {
        if key.public_key() != self.details.public_key {
            return Err(CertError::KeyMismatch);
        }
        Ok(())
    }

    /// CA certificate: the Ed25519 signing key must belong to the certificate's public key.
    pub fn verify_ca_key(&self, key: &CaSigningKey) -> Result<(), CertError> {
        if key.public_key() != self.details.public_key {
            return Err(CertError::KeyMismatch);
        }
        Ok(())
    }

    fn to_raw(&self) -> RawNebulaCertificate {
        RawNebulaCertificate {
            details: Some(self.details.to_raw()),
            signature: self.signature.to_vec(),
        }
    }

    fn from_raw(raw: RawNebulaCertificate) -> Result<Self, CertError> {
        let details = CertDetails::from_raw(raw.details.ok_or(CertError::MissingDetails)?)?;
        let signature = raw
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| CertError::SignatureLength(raw.signature.len()))?;
        Ok(Self::from_parts(details, signature))
    }
}

fn pairs(nets: &[Ipv4Net]) -> Vec<u32> {
    nets.iter()
        .flat_map(|n| {
            let (addr, mask) = n.to_wire();
            [addr, mask]
        })
        .collect()
}

fn unpairs(raw: &[u32]) -> Result<Vec<Ipv4Net>, CertError> {
    raw.chunks_exact(2)
        .map(|p| Ipv4Net::from_wire(p[0], p[1]))
        .collect()
}

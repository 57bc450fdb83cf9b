//! Glue between the node and `cert`: verifying a peer's handshake certificate against the CA
//! pool, and building our [`Identity`] from certificate and key PEM.
//!
//! Must not parse certificates itself; everything goes through `crate::cert`.

use std::net::Ipv4Addr;

use crate::cert::{CaPool, CertError, Fingerprint, NebulaCertificate, X25519PrivateKey};
use crate::crypto::StaticSecret;

use super::types::{PeerCert, VpnIp};
use super::{CertVerifier, Identity};

/// Verifies handshake certificates against a CA pool (`RecombineCertAndValidate`).
pub struct CaPoolVerifier {
    pub pool: CaPool,
}

impl CertVerifier for CaPoolVerifier {
    fn verify(
        &self,
        cert_handshake_bytes: &[u8],
        static_key: &[u8; 32],
        unix_ns: u64,
    ) -> Result<PeerCert, String> {
        let cert = NebulaCertificate::from_handshake_bytes(cert_handshake_bytes, *static_key)
            .map_err(|e| e.to_string())?;
        let now = i64::try_from(unix_ns / 1_000_000_000).unwrap_or(i64::MAX);
        self.pool.verify(&cert, now).map_err(|e| e.to_string())?;
        let ca_name = self
            .pool
            .ca_for(&cert)
            .map(|c| c.name().to_string())
            .unwrap_or_default();
        peer_cert(&cert, ca_name).map_err(|e| e.to_string())
    }

    fn still_valid(&self, peer: &PeerCert, unix_now: i64) -> bool {
        still_valid(&self.pool, peer, unix_now)
    }
}

/// Re-checks an established peer against `pool` at `unix_now` (seconds) with the rules a fresh
/// handshake would apply to what we kept of its certificate: its CA is still trusted, not
/// expired and not blocklisted, its own fingerprint is not blocklisted, and it has not expired.
/// The signature was checked at handshake time and cannot change.
pub fn still_valid(pool: &CaPool, peer: &PeerCert, unix_now: i64) -> bool {
    let (Ok(issuer), Ok(fingerprint)) = (
        peer.issuer.parse::<Fingerprint>(),
        peer.fingerprint.parse::<Fingerprint>(),
    ) else {
        return false;
    };
    let ca_ok = pool
        .cas()
        .any(|ca| ca.fingerprint() == issuer && !ca.is_expired(unix_now));
    ca_ok
        && !pool.is_blocklisted_fingerprint(&issuer)
        && !pool.is_blocklisted_fingerprint(&fingerprint)
        && peer.not_after >= unix_now
}

/// The node's view of a verified certificate.
pub fn peer_cert(cert: &NebulaCertificate, issuer_name: String) -> Result<PeerCert, CertError> {
    let vpn_ip = cert.vpn_ip().ok_or(CertError::MissingDetails)?;
    Ok(PeerCert {
        vpn_ip: VpnIp::from(vpn_ip),
        ips: cert.ips().iter().map(|n| n.addr()).collect(),
        subnets: cert.subnets().to_vec(),
        name: cert.name().to_string(),
        groups: cert.groups().to_vec(),
        fingerprint: cert.fingerprint().to_string(),
        issuer: cert.issuer().map(|f| f.to_string()).unwrap_or_default(),
        issuer_name,
        not_after: cert.not_after(),
        cert: Some(std::sync::Arc::new(cert.clone())),
    })
}

/// Builds our identity from `pki.cert` and `pki.key` PEM; the key must match the certificate.
pub fn identity_from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Identity, CertError> {
    let (cert, _) = NebulaCertificate::from_pem(cert_pem)?;
    let (key, _) = X25519PrivateKey::from_pem(key_pem)?;
    cert.verify_private_key(&key)?;
    identity_from_cert(&cert, &key)
}

/// Builds our identity from a parsed certificate and its private key.
pub fn identity_from_cert(
    cert: &NebulaCertificate,
    key: &X25519PrivateKey,
) -> Result<Identity, CertError> {
    let first = cert
        .ips()
        .first()
        .copied()
        .ok_or(CertError::MissingDetails)?;
    let addr: Ipv4Addr = first.addr();
    Ok(Identity {
        vpn_ip: VpnIp::from(addr),
        vpn_net: first,
        static_secret: StaticSecret(*key.as_bytes()),
        cert_handshake_bytes: cert.marshal_without_public_key(),
    })
}

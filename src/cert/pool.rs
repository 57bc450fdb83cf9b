//! The CA pool (`pki.ca`) and host-certificate verification with Nebula 1.6.1's exact order and
//! rules (`cert/ca.go`, `Verify` and `CheckRootConstrains` in `cert/cert.go`), plus signing a
//! host certificate under the same constraints `nebula-cert sign` enforces.
//! Pure: `now` is unix seconds supplied by the caller.

use std::collections::{BTreeMap, BTreeSet};

use super::certificate::{CertDetails, Fingerprint, NebulaCertificate};
use super::error::CertError;
use super::keys::CaSigningKey;

/// Trusted CAs by fingerprint, and fingerprints never to accept: a leaf's, or a CA's (then
/// nothing it signed is accepted).
#[derive(Debug, Clone, Default)]
pub struct CaPool {
    cas: BTreeMap<Fingerprint, NebulaCertificate>,
    blocklist: BTreeSet<Fingerprint>,
}

/// Whether a CA just added is usable at the time it was added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStatus {
    Valid,
    /// Added anyway (1.6.1 keeps expired CAs and warns); certificates under it fail to verify.
    Expired,
}

/// Result of loading a whole `pki.ca` bundle.
#[derive(Debug, Clone)]
pub struct LoadedCaPool {
    pub pool: CaPool,
    /// CAs that are expired at load time, in file order (nebula logs a warning for each).
    pub expired: Vec<NebulaCertificate>,
}

impl CaPool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a PEM bundle of CA certificates like nebula's `loadCAFromConfig`: every block must
    /// be a self-signed CA; expired ones are kept and reported; all expired is an error.
    pub fn from_pem(mut data: &[u8], now: i64) -> Result<LoadedCaPool, CertError> {
        let mut pool = CaPool::new();
        let mut expired = Vec::new();
        loop {
            let (cert, rest) = NebulaCertificate::from_pem(data)?;
            if pool.add_ca(cert.clone(), now)? == CaStatus::Expired {
                expired.push(cert);
            }
            if super::pem::is_blank(rest) {
                break;
            }
            data = rest;
        }
        if pool.cas.values().all(|ca| ca.is_expired(now)) {
            return Err(CertError::NoValidCa);
        }
        Ok(LoadedCaPool { pool, expired })
    }

    /// Adds one CA after checking it is a CA and carries a valid self-signature
    /// (ca.go AddCACertificate). An expired CA is added and reported as such.
    pub fn add_ca(&mut self, ca: NebulaCertificate, now: i64) -> Result<CaStatus, CertError> {
        if !ca.is_ca() {
            return Err(CertError::NotCa {
                name: ca.name().to_string(),
            });
        }
        if !ca.check_signature(ca.public_key()) {
            return Err(CertError::NotSelfSigned {
                name: ca.name().to_string(),
            });
        }
        let status = if ca.is_expired(now) {
            CaStatus::Expired
        } else {
            CaStatus::Valid
        };
        self.cas.insert(ca.fingerprint(), ca);
        Ok(status)
    }

    pub fn blocklist_fingerprint(&mut self, fingerprint: Fingerprint) {
        self.blocklist.insert(fingerprint);
    }

    pub fn reset_blocklist(&mut self) {
        self.blocklist.clear();
    }

    pub fn is_blocklisted(&self, cert: &NebulaCertificate) -> bool {
        self.is_blocklisted_fingerprint(&cert.fingerprint())
    }

    pub fn is_blocklisted_fingerprint(&self, fingerprint: &Fingerprint) -> bool {
        self.blocklist.contains(fingerprint)
    }

    /// The CA named by `cert`'s issuer (no signature check).
    pub fn ca_for(&self, cert: &NebulaCertificate) -> Result<&NebulaCertificate, CertError> {
        let issuer = cert.issuer().ok_or(CertError::NoIssuer)?;
        self.cas.get(&issuer).ok_or(CertError::UnknownCa)
    }

    /// The trusted CAs, ordered by fingerprint.
    pub fn cas(&self) -> impl Iterator<Item = &NebulaCertificate> {
        self.cas.values()
    }

    pub fn len(&self) -> usize {
        self.cas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cas.is_empty()
    }

    /// Verifies a peer certificate at `now`; first failure wins, in 1.6.1's order: blocklist,
    /// issuer known, CA unexpired, cert unexpired, signature, CA constraints. Beyond 1.6.1
    /// (nebula#1824): a blocklisted CA fingerprint revokes every certificate the CA signed.
    pub fn verify(&self, cert: &NebulaCertificate, now: i64) -> Result<(), CertError> {
        if self.is_blocklisted(cert) {
            return Err(CertError::Blocked);
        }
        let ca = self.ca_for(cert)?;
        if self.is_blocklisted(ca) {
            return Err(CertError::CaBlocked);
        }
        if ca.is_expired(now) {
            return Err(CertError::RootExpired);
        }
        if cert.is_expired(now) {
            return Err(CertError::Expired);
        }
        if !cert.check_signature(ca.public_key()) {
            return Err(CertError::BadSignature);
        }
        check_root_constraints(cert.details(), ca)
    }
}

impl NebulaCertificate {
    /// The limits a signing CA places on this certificate (cert.go CheckRootConstrains).
    pub fn check_root_constraints(&self, signer: &NebulaCertificate) -> Result<(), CertError> {
        check_root_constraints(self.details(), signer)
    }
}

/// Checks `details` against the limits of `signer`: validity window inside the CA's, groups a
/// subset of the CA's (if it lists any), every IP and subnet covered by a CA range with an
/// equal or longer prefix (if it lists any).
pub fn check_root_constraints(
    details: &CertDetails,
    signer: &NebulaCertificate,
) -> Result<(), CertError> {
    let ca = signer.details();
    if details.not_after > ca.not_after {
        return Err(CertError::ExpiresAfterSigner);
    }
    if details.not_before < ca.not_before {
        return Err(CertError::ValidBeforeSigner);
    }
    if !ca.groups.is_empty() {
        if let Some(g) = details.groups.iter().find(|g| !ca.groups.contains(g)) {
            return Err(CertError::GroupNotAllowed(g.clone()));
        }
    }
    if !ca.ips.is_empty() {
        if let Some(ip) = details
            .ips
            .iter()
            .find(|ip| !ca.ips.iter().any(|r| r.covers(**ip)))
        {
            return Err(CertError::IpNotAllowed(*ip));
        }
    }
    if !ca.subnets.is_empty() {
        if let Some(s) = details
            .subnets
            .iter()
            .find(|s| !ca.subnets.iter().any(|r| r.covers(**s)))
        {
            return Err(CertError::SubnetNotAllowed(*s));
        }
    }
    Ok(())
}

/// Why `sign_host` refused; each variant maps to one `nebula-cert sign` message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("refusing to sign, root certificate does not match private key")]
    KeyMismatch,
    #[error("ca certificate is expired")]
    CaExpired,
    #[error("refusing to sign, root certificate constraints violated: {0}")]
    Constraints(CertError),
}

/// Signs a host (or subordinate) certificate as `nebula-cert sign` does: the CA key must match
/// the CA certificate, the CA must be valid at `now`, the issuer is set to the CA fingerprint
/// and the details must respect the CA's constraints.
pub fn sign_host(
    mut details: CertDetails,
    ca: &NebulaCertificate,
    ca_key: &CaSigningKey,
    now: i64,
) -> Result<NebulaCertificate, SignError> {
    ca.verify_ca_key(ca_key)
        .map_err(|_| SignError::KeyMismatch)?;
    if ca.is_expired(now) {
        return Err(SignError::CaExpired);
    }
    details.issuer = Some(ca.fingerprint());
    check_root_constraints(&details, ca).map_err(SignError::Constraints)?;
    Ok(details.sign(ca_key))
}

//! Certificates (Nebula v1): protobuf types, PEM, keys, CA pool, verify and sign, print forms.
//! Pure code: no file I/O, no clocks (`now` is unix seconds passed in), no OS randomness
//! (key generation takes caller-supplied random bytes). `cli::cert` is the I/O shell around it.

mod certificate;
mod error;
mod ipwire;
mod keys;
pub mod pem;
mod pool;
mod print;
pub mod proto;

pub use crate::net::{CidrError, Ipv4Net};
pub use certificate::{CertDetails, Fingerprint, NebulaCertificate};
pub use error::CertError;
pub use keys::{
    ed25519_public_key_from_pem, ed25519_public_key_to_pem, x25519_public_key_from_pem,
    x25519_public_key_to_pem, CaSigningKey, X25519PrivateKey,
};
pub use pool::{check_root_constraints, sign_host, CaPool, CaStatus, LoadedCaPool, SignError};
pub use print::{TimeZone, Utc, ZoneOffset};

#[cfg(test)]
mod tests;

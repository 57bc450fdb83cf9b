//! Key material and its PEM forms: host X25519 keys (32 raw bytes, stored unclamped) and the CA's
//! Ed25519 key (64 bytes = seed ‖ public key, Go's layout). No randomness here: callers bring
//! the random bytes. Mirrors the key helpers of `cert/cert.go` (1.6.1).
//!
//! Private keys are wiped on drop, and so are the PEM bodies and encodings made from them.

use std::fmt;

use ed25519_dalek::Signer;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::error::CertError;
use super::pem;

/// A host's X25519 private key; wiped on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct X25519PrivateKey([u8; 32]);

impl X25519PrivateKey {
    /// Wraps 32 random bytes (clamping happens when the key is used, as in Go).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        X25519PrivateKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// X25519(key, basepoint): the public key a certificate must carry.
    pub fn public_key(&self) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        x25519_dalek::PublicKey::from(&secret).to_bytes()
    }

    /// Parses the first PEM block, which must be `NEBULA X25519 PRIVATE KEY`.
    pub fn from_pem(data: &[u8]) -> Result<(Self, &[u8]), CertError> {
        let (body, rest) = decode_key(data, pem::X25519_PRIVATE_KEY_BANNER, "X25519 private key")?;
        Ok((X25519PrivateKey(body), rest))
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        pem::encode_secret(pem::X25519_PRIVATE_KEY_BANNER, &self.0)
    }
}

impl fmt::Debug for X25519PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("X25519PrivateKey(<redacted>)")
    }
}

/// A CA's Ed25519 signing key; wiped on drop (ed25519-dalek's `zeroize` feature).
#[derive(Clone)]
pub struct CaSigningKey(ed25519_dalek::SigningKey);

// `SigningKey` zeroizes its secret on drop, and it is the only field.
impl ZeroizeOnDrop for CaSigningKey {}

impl CaSigningKey {
    /// Derives the key from a 32-byte seed.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        CaSigningKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses Go's 64-byte layout (seed ‖ public key). Go would trust the stored public half;
    /// we refuse a key whose halves disagree, since it would make signatures nobody can verify.
    pub fn from_keypair_bytes(bytes: &[u8]) -> Result<Self, CertError> {
        let pair: &[u8; 64] = bytes.try_into().map_err(|_| CertError::KeyLength {
            kind: "ed25519 private key",
            expected: 64,
            found: bytes.len(),
        })?;
        ed25519_dalek::SigningKey::from_keypair_bytes(pair)
            .map(CaSigningKey)
            .map_err(|_| CertError::Ed25519KeyInconsistent)
    }

    /// Go's 64-byte layout: seed ‖ public key.
    pub fn to_keypair_bytes(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.0.to_keypair_bytes())
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// Pure Ed25519 signature of `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }

    /// Parses the first PEM block, which must be `NEBULA ED25519 PRIVATE KEY`.
    pub fn from_pem(data: &[u8]) -> Result<(Self, &[u8]), CertError> {
        let (block, rest) = pem::decode(data).ok_or(CertError::NoPemBlock)?;
        let body = Zeroizing::new(block.body);
        if block.label != pem::ED25519_PRIVATE_KEY_BANNER {
            return Err(CertError::WrongBanner {
                expected: "Ed25519 private key",
                found: block.label,
            });
        }
        Ok((Self::from_keypair_bytes(&body)?, rest))
    }

    pub fn to_pem(&self) -> Zeroizing<String> {
        pem::encode_secret(
            pem::ED25519_PRIVATE_KEY_BANNER,
            &self.to_keypair_bytes()[..],
        )
    }
}

impl fmt::Debug for CaSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaSigningKey(public {})", hex::encode(self.public_key()))
    }
}

/// Fails the build if a private key type stops being wiped on drop.
const fn wiped_on_drop<T: ZeroizeOnDrop>() {}
const _: () = {
    wiped_on_drop::<X25519PrivateKey>();
    wiped_on_drop::<CaSigningKey>();
    wiped_on_drop::<ed25519_dalek::SigningKey>();
};

/// Parses a `NEBULA X25519 PUBLIC KEY` block (as written by `keygen -out-pub`).
pub fn x25519_public_key_from_pem(data: &[u8]) -> Result<([u8; 32], &[u8]), CertError> {
    decode_key(data, pem::X25519_PUBLIC_KEY_BANNER, "X25519 public key")
}

pub fn x25519_public_key_to_pem(key: &[u8; 32]) -> String {
    pem::encode(pem::X25519_PUBLIC_KEY_BANNER, key)
}

/// Parses a `NEBULA ED25519 PUBLIC KEY` block.
pub fn ed25519_public_key_from_pem(data: &[u8]) -> Result<([u8; 32], &[u8]), CertError> {
    decode_key(data, pem::ED25519_PUBLIC_KEY_BANNER, "ed25519 public key")
}

pub fn ed25519_public_key_to_pem(key: &[u8; 32]) -> String {
    pem::encode(pem::ED25519_PUBLIC_KEY_BANNER, key)
}

fn decode_key<'a>(
    data: &'a [u8],
    banner: &str,
    kind: &'static str,
) -> Result<([u8; 32], &'a [u8]), CertError> {
    let (block, rest) = pem::decode(data).ok_or(CertError::NoPemBlock)?;
    // Private and public keys share this path; wiping a public key costs nothing.
    let body = Zeroizing::new(block.body);
    if block.label != banner {
        return Err(CertError::WrongBanner {
            expected: kind,
            found: block.label,
        });
    }
    let key = body
        .as_slice()
        .try_into()
        .map_err(|_| CertError::KeyLength {
            kind,
            expected: 32,
            found: body.len(),
        })?;
    Ok((key, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_key_round_trip_and_consistency() {
        let key = CaSigningKey::from_seed([7; 32]);
        let pem = key.to_pem();
        let (back, rest) = CaSigningKey::from_pem(pem.as_bytes()).unwrap();
        assert!(rest.is_empty());
        assert_eq!(back.public_key(), key.public_key());
        let mut bytes = key.to_keypair_bytes();
        bytes[40] ^= 1;
        assert_eq!(
            CaSigningKey::from_keypair_bytes(&bytes[..]).unwrap_err(),
            CertError::Ed25519KeyInconsistent
        );
        assert!(matches!(
            CaSigningKey::from_keypair_bytes(&bytes[..63]),
            Err(CertError::KeyLength {
                expected: 64,
                found: 63,
                ..
            })
        ));
    }

    #[test]
    fn secret_pem_is_byte_identical_to_the_plain_encoder() {
        let x = X25519PrivateKey::from_bytes([0xA5; 32]);
        assert_eq!(
            *x.to_pem(),
            pem::encode(pem::X25519_PRIVATE_KEY_BANNER, x.as_bytes())
        );
        let ca = CaSigningKey::from_seed([3; 32]);
        assert_eq!(
            *ca.to_pem(),
            pem::encode(pem::ED25519_PRIVATE_KEY_BANNER, &ca.to_keypair_bytes()[..])
        );
        for len in 0..70 {
            let body: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(*pem::encode_secret("K", &body), pem::encode("K", &body));
        }
    }

    /// What drop runs for the host key: its bytes are cleared (CaSigningKey delegates to
    /// ed25519-dalek, checked at compile time above).
    #[test]
    fn host_key_zeroize_clears_the_bytes() {
        let mut key = X25519PrivateKey::from_bytes([9; 32]);
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0; 32]);
    }

    #[test]
    fn x25519_keys_and_banners() {
        let key = X25519PrivateKey::from_bytes([9; 32]);
        let (back, _) = X25519PrivateKey::from_pem(key.to_pem().as_bytes()).unwrap();
        assert_eq!(back, key);
        let pub_pem = x25519_public_key_to_pem(&key.public_key());
        assert_eq!(
            x25519_public_key_from_pem(pub_pem.as_bytes()).unwrap().0,
            key.public_key()
        );
        assert!(matches!(
            X25519PrivateKey::from_pem(pub_pem.as_bytes()),
            Err(CertError::WrongBanner { .. })
        ));
        let short = pem::encode(pem::X25519_PRIVATE_KEY_BANNER, &[1; 31]);
        assert!(matches!(
            X25519PrivateKey::from_pem(short.as_bytes()),
            Err(CertError::KeyLength { found: 31, .. })
        ));
        let ed = ed25519_public_key_to_pem(&[3; 32]);
        assert_eq!(
            ed25519_public_key_from_pem(ed.as_bytes()).unwrap().0,
            [3; 32]
        );
    }
}

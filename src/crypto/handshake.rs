//! Noise IX handshake state for one tunnel attempt, wrapping snow with Nebula's parameters.
//!
//! The RNG snow uses for the ephemeral key is seeded by the caller so a node is deterministic.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher as SnowCipher, Dh, Hash, Random};
use thiserror::Error;

use super::session::{AeadKey, Session};
use super::Cipher;

/// A node's X25519 static private key (the one paired with its certificate).
#[derive(Clone)]
pub struct StaticSecret(pub [u8; 32]);

impl std::fmt::Debug for StaticSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StaticSecret(..)")
    }
}

impl StaticSecret {
    /// The X25519 public key of this secret.
    pub fn public_key(&self) -> [u8; 32] {
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(self.0)).to_bytes()
    }
}

/// Handshake failures; all of them mean "drop this packet".
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("noise: {0}")]
    Noise(String),
    #[error("handshake not finished")]
    NotFinished,
    #[error("peer static key missing")]
    NoRemoteStatic,
}

impl From<snow::Error> for HandshakeError {
    fn from(e: snow::Error) -> Self {
        HandshakeError::Noise(e.to_string())
    }
}

/// One side of a Noise IX exchange.
pub struct NoiseHandshake {
    state: snow::HandshakeState,
    cipher: Cipher,
}

impl std::fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseHandshake")
            .field("cipher", &self.cipher)
            .finish()
    }
}

impl NoiseHandshake {
    /// Starts a handshake as initiator (`-> e, s`).
    pub fn initiator(
        cipher: Cipher,
        key: &StaticSecret,
        rng_seed: [u8; 32],
    ) -> Result<Self, HandshakeError> {
        Self::build(cipher, key, rng_seed, true)
    }

    /// Starts a handshake as responder.
    pub fn responder(
        cipher: Cipher,
        key: &StaticSecret,
        rng_seed: [u8; 32],
    ) -> Result<Self, HandshakeError> {
        Self::build(cipher, key, rng_seed, false)
    }

    fn build(
        cipher: Cipher,
        key: &StaticSecret,
        rng_seed: [u8; 32],
        initiator: bool,
    ) -> Result<Self, HandshakeError> {
        let params: NoiseParams = cipher.noise_name().parse()?;
        let builder = snow::Builder::with_resolver(params, Box::new(SeededResolver(rng_seed)))
            .local_private_key(&key.0)?;
        let state = if initiator {
            builder.build_initiator()?
        } else {
            builder.build_responder()?
        };
        Ok(NoiseHandshake { state, cipher })
    }

    /// Writes the next handshake message carrying `payload` (in clear for stage 1, encrypted for
    /// stage 2) and appends it to `out`.
    pub fn write_message(
        &mut self,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), HandshakeError> {
        let start = out.len();
        out.resize(start + payload.len() + 128, 0);
        let n = self.state.write_message(payload, &mut out[start..])?;
        out.truncate(start + n);
        Ok(())
    }

    /// Reads a peer handshake message and returns its payload.
    pub fn read_message(&mut self, msg: &[u8]) -> Result<Vec<u8>, HandshakeError> {
        let mut payload = vec![0u8; msg.len()];
        let n = self.state.read_message(msg, &mut payload)?;
        payload.truncate(n);
        Ok(payload)
    }

    /// The peer's static public key, once its `s` token has been read.
    pub fn remote_static(&self) -> Option<[u8; 32]> {
        self.state
            .get_remote_static()
            .and_then(|k| k.try_into().ok())
    }

    /// True once both IX messages have been processed.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// Splits into the tunnel session: the first key protects initiator→responder traffic.
    pub fn into_session(mut self) -> Result<Session, HandshakeError> {
        if !self.state.is_handshake_finished() {
            return Err(HandshakeError::NotFinished);
        }
        let (k1, k2) = self.state.dangerously_get_raw_split();
        let (send, recv) = if self.state.is_initiator() {
            (k1, k2)
        } else {
            (k2, k1)
        };
        Ok(Session::new(
            AeadKey::new(self.cipher, &send),
            AeadKey::new(self.cipher, &recv),
        ))
    }
}

/// Snow's default primitives, but with a caller-seeded RNG for ephemeral keys.
struct SeededResolver([u8; 32]);

struct SeededRandom(StdRng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(StdRng::from_seed(self.0))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn SnowCipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cipher: Cipher) -> (Session, Session, [u8; 32], [u8; 32]) {
        let (a, b) = (StaticSecret([1u8; 32]), StaticSecret([2u8; 32]));
        let mut i = NoiseHandshake::initiator(cipher, &a, [3u8; 32]).unwrap();
        let mut r = NoiseHandshake::responder(cipher, &b, [4u8; 32]).unwrap();
        let mut m1 = Vec::new();
        i.write_message(b"hello", &mut m1).unwrap();
        // stage 1 = e (32) + s (32, clear) + clear payload
        assert_eq!(m1.len(), 64 + 5);
        assert_eq!(&m1[64..], b"hello");
        assert_eq!(r.read_message(&m1).unwrap(), b"hello");
        let mut m2 = Vec::new();
        r.write_message(b"world", &mut m2).unwrap();
        assert_eq!(m2.len(), 32 + 48 + 5 + 16);
        assert_eq!(i.read_message(&m2).unwrap(), b"world");
        let (ri, ir) = (r.remote_static().unwrap(), i.remote_static().unwrap());
        (i.into_session().unwrap(), r.into_session().unwrap(), ri, ir)
    }

    #[test]
    fn ix_both_ciphers_and_key_direction() {
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let (si, sr, r_sees, i_sees) = pair(cipher);
            assert_eq!(r_sees, StaticSecret([1u8; 32]).public_key());
            assert_eq!(i_sees, StaticSecret([2u8; 32]).public_key());
            let mut buf = [0u8; 16 + 4 + 16];
            buf[16..20].copy_from_slice(b"ping");
            let n = si.seal_in_place(3, &mut buf, 4).unwrap();
            assert_eq!(sr.open_in_place(3, &mut buf[..n]).unwrap(), 4);
            assert_eq!(&buf[16..20], b"ping");
        }
    }

    #[test]
    fn mismatched_ciphers_fail_at_stage_two() {
        let (a, b) = (StaticSecret([1u8; 32]), StaticSecret([2u8; 32]));
        let mut i = NoiseHandshake::initiator(Cipher::AesGcm, &a, [3u8; 32]).unwrap();
        let mut r = NoiseHandshake::responder(Cipher::ChaChaPoly, &b, [4u8; 32]).unwrap();
        let mut m1 = Vec::new();
        i.write_message(b"x", &mut m1).unwrap();
        r.read_message(&m1).unwrap();
        let mut m2 = Vec::new();
        r.write_message(b"y", &mut m2).unwrap();
        assert!(i.read_message(&m2).is_err());
    }

    #[test]
    fn unfinished_cannot_split() {
        let i = NoiseHandshake::initiator(Cipher::AesGcm, &StaticSecret([1; 32]), [0; 32]).unwrap();
        assert_eq!(i.into_session().unwrap_err(), HandshakeError::NotFinished);
    }
}

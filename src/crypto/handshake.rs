//! Noise IX handshake state for one tunnel attempt, wrapping snow with Nebula's parameters.
//!
//! The RNG snow uses for the ephemeral key is seeded by the caller ([`NoiseSeed`]) so a node is
//! deterministic given its [`super::NodeRng`].
//!
//! Key hygiene: snow 0.10 wipes nothing itself (its default resolver keeps private keys and
//! cipher keys in plain arrays). So the resolver here supplies snow's DH (static and ephemeral
//! X25519 keys) and handshake ciphers with types that are zeroized on drop, and the split session
//! keys are wiped once the AEAD keys are built. What stays out of reach inside snow's
//! `HandshakeState` (the chaining key and handshake hash) is freed unwiped when the handshake ends.

use snow::params::{CipherChoice, DHChoice, HashChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher as SnowCipher, Dh, Hash, Random};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::rng::{NoiseSeed, SeedStream};
use super::session::{AeadKey, Session};
use super::Cipher;

/// A node's X25519 static private key (the one paired with its certificate); wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
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
        rng_seed: NoiseSeed,
    ) -> Result<Self, HandshakeError> {
        Self::build(cipher, key, rng_seed, true)
    }

    /// Starts a handshake as responder.
    pub fn responder(
        cipher: Cipher,
        key: &StaticSecret,
        rng_seed: NoiseSeed,
    ) -> Result<Self, HandshakeError> {
        Self::build(cipher, key, rng_seed, false)
    }

    fn build(
        cipher: Cipher,
        key: &StaticSecret,
        rng_seed: NoiseSeed,
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
        let (k1, k2) = (Zeroizing::new(k1), Zeroizing::new(k2));
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

/// Snow's SHA-256, with a caller-seeded RNG for the ephemeral key and DH and ciphers that wipe
/// their keys on drop.
struct SeededResolver(NoiseSeed);

struct SeededRandom(SeedStream);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(self.0.stream())))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519Dh::default())),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn SnowCipher>> {
        let cipher = match choice {
            CipherChoice::AESGCM => Cipher::AesGcm,
            CipherChoice::ChaChaPoly => Cipher::ChaChaPoly,
        };
        Some(Box::new(HandshakeCipher {
            cipher,
            key: Zeroizing::new([0; 32]),
        }))
    }
}

/// X25519 for snow (a static or an ephemeral key), the private half wiped on drop. Same
/// arithmetic as snow's own: clamped scalar, no rejection of low-order points.
#[derive(Default, Zeroize, ZeroizeOnDrop)]
struct X25519Dh {
    private: [u8; 32],
    #[zeroize(skip)]
    public: [u8; 32],
}

impl X25519Dh {
    fn set_private(&mut self, private: [u8; 32]) {
        self.private = private;
        let secret = x25519_dalek::StaticSecret::from(self.private);
        self.public = x25519_dalek::PublicKey::from(&secret).to_bytes();
    }
}

impl Dh for X25519Dh {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }
    fn set(&mut self, privkey: &[u8]) {
        let mut k = Zeroizing::new([0u8; 32]);
        let n = privkey.len().min(32);
        k[..n].copy_from_slice(&privkey[..n]);
        self.set_private(*k);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut k[..])?;
        self.set_private(*k);
        Ok(())
    }
    fn pubkey(&self) -> &[u8] {
        &self.public
    }
    fn privkey(&self) -> &[u8] {
        &self.private
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let peer: [u8; 32] = pubkey
            .get(..32)
            .and_then(|p| p.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        let secret = x25519_dalek::StaticSecret::from(self.private);
        let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        out.get_mut(..32)
            .ok_or(snow::Error::Dh)?
            .copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

/// The handshake's AEAD (k of the Noise CipherState): nonce laid out as in Noise, which is also
/// Nebula's data-path layout ([`Cipher::nonce`]). The key is wiped on drop; the cipher object
/// built per message wipes itself (the crates' `zeroize` features).
struct HandshakeCipher {
    cipher: Cipher,
    key: Zeroizing<[u8; 32]>,
}

impl SnowCipher for HandshakeCipher {
    fn name(&self) -> &'static str {
        match self.cipher {
            Cipher::AesGcm => "AESGCM",
            Cipher::ChaChaPoly => "ChaChaPoly",
        }
    }
    fn set(&mut self, key: &[u8; 32]) {
        self.key.copy_from_slice(key);
    }
    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let key = AeadKey::new(self.cipher, &self.key);
        let (body, tag_room) = out.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        // snow sizes `out` for the tag and treats a failure here as a bug, as its own ciphers do.
        let tag = key
            .seal_detached(nonce, authtext, body)
            .expect("handshake buffer has room for the tag");
        tag_room[..super::TAG_LEN].copy_from_slice(&tag);
        plaintext.len() + super::TAG_LEN
    }
    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let n = ciphertext
            .len()
            .checked_sub(super::TAG_LEN)
            .ok_or(snow::Error::Decrypt)?;
        let tag: [u8; super::TAG_LEN] = ciphertext[n..]
            .try_into()
            .map_err(|_| snow::Error::Decrypt)?;
        let body = out.get_mut(..n).ok_or(snow::Error::Decrypt)?;
        body.copy_from_slice(&ciphertext[..n]);
        AeadKey::new(self.cipher, &self.key)
            .open_detached(nonce, authtext, body, &tag)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cipher: Cipher) -> (Session, Session, [u8; 32], [u8; 32]) {
        let (a, b) = (StaticSecret([1u8; 32]), StaticSecret([2u8; 32]));
        let mut i =
            NoiseHandshake::initiator(cipher, &a, NoiseSeed::from_bytes([3u8; 32])).unwrap();
        let mut r =
            NoiseHandshake::responder(cipher, &b, NoiseSeed::from_bytes([4u8; 32])).unwrap();
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
        let mut i = NoiseHandshake::initiator(Cipher::AesGcm, &a, NoiseSeed::from_bytes([3u8; 32]))
            .unwrap();
        let mut r =
            NoiseHandshake::responder(Cipher::ChaChaPoly, &b, NoiseSeed::from_bytes([4u8; 32]))
                .unwrap();
        let mut m1 = Vec::new();
        i.write_message(b"x", &mut m1).unwrap();
        r.read_message(&m1).unwrap();
        let mut m2 = Vec::new();
        r.write_message(b"y", &mut m2).unwrap();
        assert!(i.read_message(&m2).is_err());
    }

    /// snow's own DH and ciphers, with the same seeded RNG: the reference our wiping ones must
    /// match byte for byte.
    struct Reference(NoiseSeed);

    impl CryptoResolver for Reference {
        fn resolve_rng(&self) -> Option<Box<dyn Random>> {
            Some(Box::new(SeededRandom(self.0.stream())))
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

    /// Both IX messages and the split keys, built with `resolver` for both sides.
    fn transcript(
        cipher: Cipher,
        resolver: impl Fn(NoiseSeed) -> Box<dyn CryptoResolver + Send>,
    ) -> (Vec<u8>, Vec<u8>, [u8; 32], [u8; 32]) {
        let params: NoiseParams = cipher.noise_name().parse().unwrap();
        let build = |key: [u8; 32], seed: u8, initiator: bool| {
            let b = snow::Builder::with_resolver(
                params.clone(),
                resolver(NoiseSeed::from_bytes([seed; 32])),
            )
            .local_private_key(&key)
            .unwrap();
            if initiator {
                b.build_initiator().unwrap()
            } else {
                b.build_responder().unwrap()
            }
        };
        let (mut i, mut r) = (build([1; 32], 3, true), build([2; 32], 4, false));
        let (mut m1, mut m2, mut buf) = (vec![0u8; 200], vec![0u8; 300], [0u8; 300]);
        let n1 = i.write_message(b"stage one", &mut m1).unwrap();
        m1.truncate(n1);
        r.read_message(&m1, &mut buf).unwrap();
        let n2 = r.write_message(b"stage two payload", &mut m2).unwrap();
        m2.truncate(n2);
        assert_eq!(i.read_message(&m2, &mut buf).unwrap(), 17);
        let (k1, k2) = i.dangerously_get_raw_split();
        assert_eq!(r.dangerously_get_raw_split(), (k1, k2));
        (m1, m2, k1, k2)
    }

    #[test]
    fn wiping_primitives_match_snows_own_on_the_wire() {
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let ours = transcript(cipher, |s| Box::new(SeededResolver(s)));
            let reference = transcript(cipher, |s| Box::new(Reference(s)));
            assert_eq!(ours, reference, "{cipher:?}");
        }
    }

    #[test]
    fn tampered_handshake_ciphertext_is_refused_without_panicking() {
        let (a, b) = (StaticSecret([1u8; 32]), StaticSecret([2u8; 32]));
        let seed = |n| NoiseSeed::from_bytes([n; 32]);
        let mut i = NoiseHandshake::initiator(Cipher::ChaChaPoly, &a, seed(3)).unwrap();
        let mut r = NoiseHandshake::responder(Cipher::ChaChaPoly, &b, seed(4)).unwrap();
        let mut m1 = Vec::new();
        i.write_message(b"x", &mut m1).unwrap();
        r.read_message(&m1).unwrap();
        let mut m2 = Vec::new();
        r.write_message(b"y", &mut m2).unwrap();
        let last = m2.len() - 1;
        m2[last] ^= 1;
        assert!(i.read_message(&m2).is_err());
        // Shorter than a tag after the ephemeral key.
        assert!(i.read_message(&m2[..40]).is_err());
    }

    /// What drop runs for the static key and the DH state: the private bytes are cleared.
    #[test]
    fn static_and_dh_keys_zeroize_clears_the_bytes() {
        let mut s = StaticSecret([7; 32]);
        s.zeroize();
        assert_eq!(s.0, [0; 32]);
        let mut dh = X25519Dh::default();
        dh.set(&[7; 32]);
        assert_eq!(dh.pubkey(), StaticSecret([7; 32]).public_key());
        dh.zeroize();
        assert_eq!(dh.privkey(), [0; 32]);
    }

    #[test]
    fn unfinished_cannot_split() {
        let i = NoiseHandshake::initiator(
            Cipher::AesGcm,
            &StaticSecret([1; 32]),
            NoiseSeed::from_bytes([0; 32]),
        )
        .unwrap();
        assert_eq!(i.into_session().unwrap_err(), HandshakeError::NotFinished);
    }
}

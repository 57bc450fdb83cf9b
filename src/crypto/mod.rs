//! Cryptography of a Nebula tunnel: the Noise IX handshake (via snow), the per-tunnel session
//! AEAD with the packet header as associated data and the header counter as nonce, the
//! 1024-entry replay window, and the CSPRNG ([`NodeRng`]) a node draws keys and indexes from.
//!
//! Pure: randomness comes in as seeds, no clocks, no sockets. Must not know about hostmaps,
//! certificates or packet dispatch (that is `node`). Every private key, seed and session key type
//! here is wiped on drop.

mod handshake;
mod replay;
mod rng;
mod session;

pub use handshake::{HandshakeError, NoiseHandshake, StaticSecret};
pub use replay::{ReplayWindow, REPLAY_WINDOW};
pub use rng::{NodeRng, NoiseSeed, RngOrigin};
pub use session::{AeadKey, CryptoError, Session, TAG_LEN};

/// Fails the build if a private key, seed or RNG type here (or a library type holding ours)
/// stops being wiped on drop.
const fn wiped_on_drop<T: zeroize::ZeroizeOnDrop>() {}
const _: () = {
    wiped_on_drop::<StaticSecret>();
    wiped_on_drop::<NoiseSeed>();
    wiped_on_drop::<NodeRng>();
    wiped_on_drop::<chacha20::ChaCha20>();
    // x25519-dalek wipes with `#[zeroize(drop)]`, which adds a `Drop` but not the marker trait.
    zeroize_with_drop::<x25519_dalek::StaticSecret>();
    zeroize_with_drop::<x25519_dalek::SharedSecret>();
};
const fn zeroize_with_drop<T: zeroize::Zeroize>() {
    assert!(
        std::mem::needs_drop::<T>(),
        "key type has no zeroizing Drop"
    );
}

/// The mesh-wide `cipher` setting. It must be identical on every node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// `aes`: AES-256-GCM, nonce counter big-endian.
    #[default]
    AesGcm,
    /// `chachapoly`: ChaCha20-Poly1305, nonce counter little-endian.
    ChaChaPoly,
}

impl Cipher {
    /// Parses the config value (`aes` or `chachapoly`).
    pub fn from_config(s: &str) -> Option<Cipher> {
        match s {
            "aes" => Some(Cipher::AesGcm),
            "chachapoly" => Some(Cipher::ChaChaPoly),
            _ => None,
        }
    }

    /// The Noise protocol name Nebula 1.6.1 uses for this cipher (no PSK, empty prologue).
    pub fn noise_name(self) -> &'static str {
        match self {
            Cipher::AesGcm => "Noise_IX_25519_AESGCM_SHA256",
            Cipher::ChaChaPoly => "Noise_IX_25519_ChaChaPoly_SHA256",
        }
    }

    /// The 12-byte nonce for a header counter: 4 zero bytes then the counter, big-endian for
    /// AES-GCM and little-endian for ChaCha (`noise.go`, same layout as Noise itself).
    pub fn nonce(self, counter: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        match self {
            Cipher::AesGcm => n[4..].copy_from_slice(&counter.to_be_bytes()),
            Cipher::ChaChaPoly => n[4..].copy_from_slice(&counter.to_le_bytes()),
        }
        n
    }
}

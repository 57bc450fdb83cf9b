//! Post-handshake AEAD for one tunnel (`noise.go` in Nebula 1.6.1): the 16-byte header is the
//! associated data and its counter is the nonce; Noise's own nonce counter is not used.
//!
//! Works in place on caller buffers (`header ‖ payload ‖ tag room`); allocates nothing per packet.
//!
//! Backend: AWS-LC through `aws-lc-rs`, the fastest of the backends measured by `benches/aead` on
//! the target machines (table in the README). Its key state lives in an AWS-LC context on the C
//! heap that `OPENSSL_free` overwrites with zeros (`OPENSSL_cleanse`) when the key is dropped.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use thiserror::Error;

use super::Cipher;
use crate::wire::HEADER_LEN;

/// AEAD tag length for both ciphers.
pub const TAG_LEN: usize = 16;

/// Seal/open failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("buffer too small")]
    BufferTooSmall,
    #[error("authentication failed")]
    Auth,
}

/// One direction's key. Zeroed on drop (by AWS-LC, see the module header).
pub struct AeadKey {
    cipher: Cipher,
    key: LessSafeKey,
}

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.cipher {
            Cipher::AesGcm => "AeadKey::Aes(..)",
            Cipher::ChaChaPoly => "AeadKey::ChaCha(..)",
        })
    }
}

impl AeadKey {
    /// Builds a key from 32 raw bytes (a Noise split output).
    pub fn new(cipher: Cipher, key: &[u8; 32]) -> Self {
        let alg = match cipher {
            Cipher::AesGcm => &AES_256_GCM,
            Cipher::ChaChaPoly => &CHACHA20_POLY1305,
        };
        // Both algorithms take exactly 32-byte keys, so this cannot fail.
        let unbound = UnboundKey::new(alg, key).expect("32-byte AEAD key");
        AeadKey {
            cipher,
            key: LessSafeKey::new(unbound),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_detached(
        &self,
        counter: u64,
        ad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce = Nonce::assume_unique_for_key(self.cipher.nonce(counter));
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(ad), buf)
            .map_err(|_| CryptoError::BufferTooSmall)?;
        tag.as_ref()
            .try_into()
            .map_err(|_| CryptoError::BufferTooSmall)
    }

    /// Verifies `tag` and decrypts `buf` in place; on failure `buf` is left unspecified.
    pub fn open_detached(
        &self,
        counter: u64,
        ad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let nonce = Nonce::assume_unique_for_key(self.cipher.nonce(counter));
        self.key
            .open_in_place_separate_tag(nonce, Aad::from(ad), tag, buf)
            .map(|_| ())
            .map_err(|_| CryptoError::Auth)
    }
}

/// The two keys of an established tunnel.
#[derive(Debug)]
pub struct Session {
    send: AeadKey,
    recv: AeadKey,
}

impl Session {
    pub fn new(send: AeadKey, recv: AeadKey) -> Self {
        Session { send, recv }
    }

    /// `buf` holds the 16-byte header (already written, carrying `counter`) followed by
    /// `payload_len` plaintext bytes and at least 16 spare bytes. Encrypts in place, appends the
    /// tag and returns the datagram length.
    pub fn seal_in_place(
        &self,
        counter: u64,
        buf: &mut [u8],
        payload_len: usize,
    ) -> Result<usize, CryptoError> {
        let total = HEADER_LEN + payload_len + TAG_LEN;
        if buf.len() < total {
            return Err(CryptoError::BufferTooSmall);
        }
        let (head, rest) = buf.split_at_mut(HEADER_LEN);
        let (payload, tail) = rest.split_at_mut(payload_len);
        let tag = self.send.seal_detached(counter, head, payload)?;
        tail[..TAG_LEN].copy_from_slice(&tag);
        Ok(total)
    }

    /// `packet` is a whole datagram (header ‖ ciphertext ‖ tag). Authenticates and decrypts in
    /// place; the plaintext is then `packet[16..16 + n]` with `n` returned.
    pub fn open_in_place(&self, counter: u64, packet: &mut [u8]) -> Result<usize, CryptoError> {
        if packet.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Auth);
        }
        let n = packet.len() - HEADER_LEN - TAG_LEN;
        let (head, rest) = packet.split_at_mut(HEADER_LEN);
        let (ct, tag) = rest.split_at_mut(n);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| CryptoError::Auth)?;
        self.recv.open_detached(counter, head, ct, &tag)?;
        Ok(n)
    }

    /// Relay framing (type 1 / subtype 1, §7.3): `buf` holds the outer header, `inner_len` bytes
    /// of the end-to-end packet, and 16 spare bytes. Nothing is encrypted: the tag authenticates
    /// header ‖ inner and is appended. Returns the datagram length.
    pub fn seal_relay(
        &self,
        counter: u64,
        buf: &mut [u8],
        inner_len: usize,
    ) -> Result<usize, CryptoError> {
        let signed = HEADER_LEN + inner_len;
        if buf.len() < signed + TAG_LEN {
            return Err(CryptoError::BufferTooSmall);
        }
        let tag = self.send.seal_detached(counter, &buf[..signed], &mut [])?;
        buf[signed..signed + TAG_LEN].copy_from_slice(&tag);
        Ok(signed + TAG_LEN)
    }

    /// Verifies a relay datagram; the inner packet is then `packet[16..16 + n]`.
    pub fn open_relay(&self, counter: u64, packet: &[u8]) -> Result<usize, CryptoError> {
        let signed = packet
            .len()
            .checked_sub(TAG_LEN)
            .filter(|n| *n >= HEADER_LEN)
            .ok_or(CryptoError::Auth)?;
        let tag: [u8; TAG_LEN] = packet[signed..].try_into().map_err(|_| CryptoError::Auth)?;
        self.recv
            .open_detached(counter, &packet[..signed], &mut [], &tag)?;
        Ok(signed - HEADER_LEN)
    }

    /// Key for outbound packets (relay framing signs with it directly).
    pub fn send_key(&self) -> &AeadKey {
        &self.send
    }

    /// Key for inbound packets.
    pub fn recv_key(&self) -> &AeadKey {
        &self.recv
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit};
    use aes_gcm::Aes256Gcm;
    use chacha20poly1305::ChaCha20Poly1305;

    fn session(cipher: Cipher) -> (Session, Session) {
        let (a, b) = ([7u8; 32], [9u8; 32]);
        (
            Session::new(AeadKey::new(cipher, &a), AeadKey::new(cipher, &b)),
            Session::new(AeadKey::new(cipher, &b), AeadKey::new(cipher, &a)),
        )
    }

    fn packet(counter: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x11, 0, 0, 0, 0, 0, 0, 5];
        v.extend_from_slice(&counter.to_be_bytes());
        v.extend_from_slice(payload);
        v.extend_from_slice(&[0u8; TAG_LEN]);
        v
    }

    #[test]
    fn nonce_endianness_matches_independent_aead() {
        // Cross-check against the plain AEAD APIs with hand-built nonces.
        let key = [7u8; 32];
        let counter = 0x0102_0304_0506_0708u64;
        for (cipher, nonce) in [
            (Cipher::AesGcm, [0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]),
            (Cipher::ChaChaPoly, [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]),
        ] {
            assert_eq!(cipher.nonce(counter), nonce);
            let (s, _) = session(cipher);
            let mut buf = packet(counter, b"payload");
            let n = s.seal_in_place(counter, &mut buf, 7).unwrap();
            let aad = buf[..16].to_vec();
            let msg = aes_gcm::aead::Payload {
                msg: b"payload",
                aad: &aad,
            };
            let want = match cipher {
                Cipher::AesGcm => Aes256Gcm::new((&key).into()).encrypt((&nonce).into(), msg),
                Cipher::ChaChaPoly => {
                    ChaCha20Poly1305::new((&key).into()).encrypt((&nonce).into(), msg)
                }
            }
            .unwrap();
            assert_eq!(&buf[16..n], want.as_slice(), "{cipher:?}");
        }
    }

    #[test]
    fn round_trip_and_tampering() {
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let (a, b) = session(cipher);
            let mut buf = packet(3, b"abcdef");
            let n = a.seal_in_place(3, &mut buf, 6).unwrap();
            assert_eq!(n, 16 + 6 + 16);
            let sealed = buf.clone();
            assert_eq!(b.open_in_place(3, &mut buf).unwrap(), 6);
            assert_eq!(&buf[16..22], b"abcdef");
            // wrong direction key, wrong counter, each flipped byte (header = AD, body, tag)
            assert_eq!(
                a.open_in_place(3, &mut sealed.clone()),
                Err(CryptoError::Auth)
            );
            assert_eq!(
                b.open_in_place(4, &mut sealed.clone()),
                Err(CryptoError::Auth)
            );
            for i in 0..sealed.len() {
                let mut t = sealed.clone();
                t[i] ^= 0x40;
                assert_eq!(
                    b.open_in_place(3, &mut t),
                    Err(CryptoError::Auth),
                    "byte {i}"
                );
            }
            assert_eq!(
                b.open_in_place(3, &mut sealed[..31].to_vec()),
                Err(CryptoError::Auth)
            );
            let mut small = [0u8; 20];
            assert_eq!(
                a.seal_in_place(3, &mut small, 4),
                Err(CryptoError::BufferTooSmall)
            );
        }
    }

    #[test]
    fn relay_framing_authenticates_header_and_inner_packet() {
        for cipher in [Cipher::AesGcm, Cipher::ChaChaPoly] {
            let (a, b) = session(cipher);
            let inner = b"\x11\x00\x00\x00inner end-to-end packet";
            let mut buf = packet(7, inner);
            buf[1] = 1; // subtype relay
            let n = a.seal_relay(7, &mut buf, inner.len()).unwrap();
            assert_eq!(n, 16 + inner.len() + 16);
            assert_eq!(
                &buf[16..16 + inner.len()],
                inner,
                "inner bytes travel in clear"
            );
            assert_eq!(b.open_relay(7, &buf[..n]).unwrap(), inner.len());
            for i in 0..n {
                let mut t = buf.clone();
                t[i] ^= 1;
                assert_eq!(b.open_relay(7, &t[..n]), Err(CryptoError::Auth), "byte {i}");
            }
            assert_eq!(b.open_relay(7, &buf[..20]), Err(CryptoError::Auth));
            assert_eq!(b.open_relay(8, &buf[..n]), Err(CryptoError::Auth));
        }
    }

    #[test]
    fn empty_payload_is_32_bytes() {
        let (a, b) = session(Cipher::AesGcm);
        let mut buf = packet(9, b"");
        assert_eq!(a.seal_in_place(9, &mut buf, 0).unwrap(), 32);
        assert_eq!(b.open_in_place(9, &mut buf).unwrap(), 0);
    }
}

//! The core's one CSPRNG. Every ephemeral key (through a [`NoiseSeed`]), local index and relay
//! index a node draws comes from its [`NodeRng`]; local indexes travel in clear in stage 1, so
//! the generator must be unpredictable from them, which a 64-bit seed is not.
//!
//! Fast-key-erasure ChaCha20: each refill runs ChaCha20 under the current 256-bit key, the first
//! 32 bytes of output become the next key and the rest is handed out, each byte wiped as it
//! leaves. A memory image therefore reveals neither the seed nor earlier outputs, and every buffer
//! is zeroized on drop.
//!
//! Two constructors that cannot be confused: the daemon's, from 32 bytes of OS randomness, is
//! crate-private and called only by `daemon::entropy` (this module stays sans-IO: the bytes come
//! in); [`NodeRng::seeded_for_simulation`] is for simulations, fuzzing and benches. There is no
//! `From<u64>`. Must not know about nodes, handshakes or the OS.

use std::fmt;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes one refill produces (four ChaCha20 blocks); the first 32 are the next key.
const REFILL: usize = 256;
const KEY_LEN: usize = 32;

/// Fast-key-erasure ChaCha20 under a 256-bit key.
#[derive(Zeroize, ZeroizeOnDrop)]
struct ErasureRng {
    key: [u8; KEY_LEN],
    out: [u8; REFILL - KEY_LEN],
    /// Bytes of `out` already handed out (and wiped).
    pos: usize,
}

impl ErasureRng {
    fn new(seed: &[u8; KEY_LEN]) -> Self {
        ErasureRng {
            key: *seed,
            out: [0; REFILL - KEY_LEN],
            pos: REFILL - KEY_LEN,
        }
    }

    fn refill(&mut self) {
        let mut block = Zeroizing::new([0u8; REFILL]);
        // A fresh key every refill, so nonce 0 and the block counter never repeat or run out.
        let mut stream = ChaCha20::new((&self.key).into(), (&[0u8; 12]).into());
        stream.apply_keystream(&mut block[..]);
        self.key.copy_from_slice(&block[..KEY_LEN]);
        self.out.copy_from_slice(&block[KEY_LEN..]);
        self.pos = 0;
    }

    fn fill(&mut self, dest: &mut [u8]) {
        let mut done = 0;
        while done < dest.len() {
            if self.pos == self.out.len() {
                self.refill();
            }
            let n = (dest.len() - done).min(self.out.len() - self.pos);
            let src = &mut self.out[self.pos..self.pos + n];
            dest[done..done + n].copy_from_slice(src);
            src.zeroize();
            self.pos += n;
            done += n;
        }
    }
}

/// Where a [`NodeRng`] was seeded from (shown by `Debug`; never the seed itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngOrigin {
    /// 32 bytes from the operating system's CSPRNG: the daemon.
    Os,
    /// A small, chosen seed: simulations, fuzzing, benches. Never the daemon.
    Simulation,
}

/// A node's source of randomness: ephemeral keys (via [`NodeRng::noise_seed`]), local and relay
/// indexes. See the module header for the two constructors.
#[derive(ZeroizeOnDrop)]
pub struct NodeRng {
    rng: ErasureRng,
    #[zeroize(skip)]
    origin: RngOrigin,
}

impl NodeRng {
    /// The daemon's generator, keyed by 32 bytes of OS randomness (`daemon::entropy::node_rng`
    /// is the only caller; crate-private so no test or tool outside the crate can pick a seed).
    pub(crate) fn from_os_seed(seed: Zeroizing<[u8; KEY_LEN]>) -> Self {
        NodeRng {
            rng: ErasureRng::new(&seed),
            origin: RngOrigin::Os,
        }
    }

    /// A reproducible generator for simulated networks, fuzzing and benches: the same `seed`
    /// gives the same keys and indexes. Only 64 bits of choice, so never for real traffic.
    pub fn seeded_for_simulation(seed: u64) -> Self {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key[..8].copy_from_slice(&seed.to_le_bytes());
        // Domain-separates simulation keys from any OS-drawn key that might start the same way.
        key[8..].copy_from_slice(b"meshd simulation only!!!");
        NodeRng {
            rng: ErasureRng::new(&key),
            origin: RngOrigin::Simulation,
        }
    }

    pub fn origin(&self) -> RngOrigin {
        self.origin
    }

    /// A fresh seed for one Noise handshake's own RNG (its ephemeral key).
    pub fn noise_seed(&mut self) -> NoiseSeed {
        let mut seed = NoiseSeed([0; KEY_LEN]);
        self.rng.fill(&mut seed.0);
        seed
    }
}

impl fmt::Debug for NodeRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeRng({:?})", self.origin)
    }
}

impl RngCore for NodeRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.rng.fill(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.rng.fill(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.rng.fill(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.rng.fill(dest);
        Ok(())
    }
}

impl CryptoRng for NodeRng {}

/// The 256-bit seed of one Noise handshake's RNG; whoever holds it can recompute the ephemeral
/// private key, so it is wiped on drop. Kept by a pending handshake to rebuild an identical
/// stage 1.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct NoiseSeed([u8; KEY_LEN]);

impl NoiseSeed {
    /// A seed chosen by hand (unit tests of the handshake).
    #[cfg(test)]
    pub(crate) fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        NoiseSeed(bytes)
    }

    /// The RNG snow draws the ephemeral key from.
    pub(super) fn stream(&self) -> SeedStream {
        SeedStream(ErasureRng::new(&self.0))
    }
}

impl fmt::Debug for NoiseSeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NoiseSeed(..)")
    }
}

/// The keystream of a [`NoiseSeed`], handed to snow as its RNG.
#[derive(ZeroizeOnDrop)]
pub(super) struct SeedStream(ErasureRng);

impl SeedStream {
    pub(super) fn fill(&mut self, dest: &mut [u8]) {
        self.0.fill(dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulation_seeds_are_reproducible_and_distinct() {
        let draw = |seed| {
            let mut r = NodeRng::seeded_for_simulation(seed);
            let mut b = [0u8; 600];
            r.fill_bytes(&mut b);
            (b, r.next_u32(), r.noise_seed().0)
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1).0, draw(2).0);
        let (bytes, _, _) = draw(1);
        // Crosses two refills; no block repeats (a stuck key or counter would show here).
        let blocks: Vec<&[u8]> = bytes.chunks(32).collect();
        for (i, a) in blocks.iter().enumerate() {
            assert!(blocks[i + 1..].iter().all(|b| b != a), "block {i} repeats");
        }
    }

    /// All 256 bits of the OS seed key the output (a u64 seed, as before, left 192 unused).
    #[test]
    fn every_seed_byte_changes_the_output() {
        let first = |seed: [u8; KEY_LEN]| {
            let mut r = NodeRng::from_os_seed(Zeroizing::new(seed));
            (r.next_u32(), r.noise_seed().0)
        };
        let base = first([0x5C; KEY_LEN]);
        for i in 0..KEY_LEN {
            let mut seed = [0x5C; KEY_LEN];
            seed[i] ^= 1;
            assert_ne!(first(seed), base, "seed byte {i} is ignored");
        }
    }

    #[test]
    fn output_does_not_depend_on_how_it_is_split() {
        let mut a = NodeRng::seeded_for_simulation(9);
        let mut b = NodeRng::seeded_for_simulation(9);
        let mut whole = [0u8; 500];
        a.fill_bytes(&mut whole);
        let mut parts = [0u8; 500];
        for chunk in parts.chunks_mut(7) {
            b.fill_bytes(chunk);
        }
        assert_eq!(whole, parts);
    }

    #[test]
    fn handed_out_bytes_and_old_keys_are_wiped() {
        let mut r = ErasureRng::new(&[5; KEY_LEN]);
        let mut first = [0u8; 40];
        r.fill(&mut first);
        assert!(r.out[..40].iter().all(|b| *b == 0), "handed-out bytes kept");
        assert_ne!(
            r.key, [5; KEY_LEN],
            "seed still in memory after the first refill"
        );
        r.zeroize();
        assert_eq!((r.key, r.pos), ([0; KEY_LEN], 0));
        assert!(r.out.iter().all(|b| *b == 0));
    }

    #[test]
    fn origin_is_visible_and_the_seed_is_not() {
        let os = NodeRng::from_os_seed(Zeroizing::new([7; KEY_LEN]));
        assert_eq!(os.origin(), RngOrigin::Os);
        assert_eq!(format!("{os:?}"), "NodeRng(Os)");
        let sim = NodeRng::seeded_for_simulation(3);
        assert_eq!(sim.origin(), RngOrigin::Simulation);
        assert_eq!(
            format!("{:?}", NoiseSeed::from_bytes([1; 32])),
            "NoiseSeed(..)"
        );
    }
}

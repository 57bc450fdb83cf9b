//! The daemon's one source of randomness. The node's [`NodeRng`] (every ephemeral key, Noise
//! seed, local and relay index) is keyed here with 32 bytes from the operating system's CSPRNG
//! (`getrandom(2)`), so nothing a peer sees narrows the search below 256 bits.
//!
//! Owns only this draw; everything after it is deterministic in the sans-IO core.

use anyhow::Context;
use rand::rngs::OsRng;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::node::NodeRng;

/// A fresh, OS-seeded generator for one node.
pub fn node_rng() -> anyhow::Result<NodeRng> {
    let mut seed = Zeroizing::new([0u8; 32]);
    OsRng
        .try_fill_bytes(&mut seed[..])
        .context("reading 32 bytes of OS randomness for the node's key generator")?;
    Ok(NodeRng::from_os_seed(seed))
}

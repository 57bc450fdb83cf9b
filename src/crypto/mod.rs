//! Crypto: Noise IX handshakes via snow, session seal/open with explicit counters, replay window. Pure code.

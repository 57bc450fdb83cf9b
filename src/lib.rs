//! meshd: a Nebula-compatible overlay mesh daemon.
//!
//! The pure, sans-IO core (`net`, `cert`, `config`, `wire`, `crypto`, `firewall`, `node`) holds every
//! protocol decision and never touches sockets, TUN devices, files, clocks or tokio. `daemon` is
//! the thin async shell that feeds it; `cli` parses command lines. See ARCHITECTURE.md.

pub mod cert;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod daemon;
pub mod firewall;
pub mod net;
pub mod node;
pub mod wire;

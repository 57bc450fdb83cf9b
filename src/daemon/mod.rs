//! The async I/O shell: tokio loop, UDP, TUN, routes, signals, reload, systemd notify.
//!
//! Each submodule owns one OS resource and nothing else; none of them makes a protocol decision.
//! The event loop (written against the sans-IO `node`) plugs these pieces together. Linux only.

pub mod batch;
pub mod burst_buffer;
pub mod dns;
pub mod entropy;
pub mod local_addrs;
pub mod logging;
pub mod notify;
pub mod reload;
pub mod routes;
pub mod run;
pub mod setup;
pub mod signals;
pub mod tun;
pub mod udp;

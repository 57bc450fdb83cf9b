//! The async I/O shell: tokio loop, UDP, TUN, routes, signals, reload, systemd notify.
//!
//! Each submodule owns one OS resource and nothing else; none of them makes a protocol decision.
//! The event loop (written against the sans-IO `node`) plugs these pieces together. Linux only.

pub mod batch;
pub mod burst_buffer;
pub mod control;
pub mod dns;
pub mod entropy;
#[cfg(test)]
mod key_coverage;
pub mod local_addrs;
pub mod logging;
pub mod logtime;
pub mod metrics;
pub mod notify;
pub mod offload;
pub mod reload;
pub mod routes;
pub mod run;
pub mod setup;
pub mod signals;
pub mod system_routes;
pub mod tun;
pub mod udp;

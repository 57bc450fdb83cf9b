//! The local management interface: `meshd status` and Nebula's SSH-named commands over a Unix
//! socket (default `/run/meshd/<tun.dev>.sock`) speaking line-delimited JSON. The only local
//! management interface; there is no TCP listener.
//!
//! `protocol` parses requests and names replies, `server` owns the socket and hands parsed
//! commands to the event loop over a bounded channel, `answer` builds the replies from a node
//! snapshot. The node stays with the loop, which answers between batches, so a client never
//! blocks packet processing. This file holds what the loop keeps ([`ControlState`]).

mod answer;
mod protocol;
mod server;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc;
use tracing::warn;

use crate::node::Node;

pub use answer::{answer, expiring, human_secs, DaemonFacts, PkiView};
pub use protocol::{parse_command, parse_request, Command, Reply, Request, COMMANDS};
pub use server::{ask_loop, channel, default_socket, start, ControlServer, MAX_REQUEST};

/// The daemon's management side as the event loop holds it: the request channel, the socket,
/// the certificates shown, reload outcomes and the expiry-warning schedule.
pub struct ControlState {
    rx: mpsc::Receiver<Request>,
    /// Kept so the channel never closes while the loop waits on it.
    _tx: mpsc::Sender<Request>,
    server: Option<ControlServer>,
    pub metrics_addr: Option<SocketAddr>,
    pub pki: PkiView,
    pub started: Instant,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    next_expiry_check: Instant,
}

/// Expiry warnings repeat this often.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

impl ControlState {
    /// Binds the control socket and the metrics listener (both before READY, so a bad path or
    /// address fails start-up) and logs the first certificate-expiry check.
    pub fn start(plan: super::setup::ControlPlan, now: Instant) -> anyhow::Result<ControlState> {
        let (tx, rx) = channel();
        let server = match start(&plan.socket, tx.clone()) {
            Ok(s) => Some(s),
            Err(e) if !plan.socket_required => {
                warn!("no control socket ({e:#}); set control.socket to a writable path");
                None
            }
            Err(e) => return Err(e),
        };
        let metrics_addr = match plan.metrics {
            Some(m) => Some(super::metrics::start(m, tx.clone())?),
            None => None,
        };
        let mut state = ControlState {
            rx,
            _tx: tx,
            server,
            metrics_addr,
            pki: plan.pki,
            started: now,
            reloads_ok: 0,
            reloads_failed: 0,
            next_expiry_check: now,
        };
        state.check_expiry(now, unix_now());
        Ok(state)
    }

    pub fn socket_path(&self) -> Option<&Path> {
        self.server.as_ref().map(ControlServer::path)
    }

    /// The next request for the loop (cancel-safe).
    pub async fn recv(&mut self) -> Option<Request> {
        self.rx.recv().await
    }

    /// Warns about certificates expiring soon, at start and then daily.
    pub fn check_expiry(&mut self, now: Instant, unix_now: i64) {
        if now < self.next_expiry_check {
            return;
        }
        self.next_expiry_check = now + EXPIRY_CHECK_EVERY;
        for w in expiring(&self.pki, unix_now) {
            warn!("certificate expiry: {w}");
        }
    }

    /// Records a reload outcome and, on success, the certificates now in use.
    pub fn reloaded(&mut self, pki: Option<PkiView>) {
        match pki {
            Some(p) => {
                self.pki = p;
                self.reloads_ok += 1;
                // A new certificate is checked at once, not a day later.
                self.next_expiry_check = Instant::now();
            }
            None => self.reloads_failed += 1,
        }
    }

    /// The reply to a `reload` command, from the line the loop logged.
    pub fn reload_reply(line: Option<&str>) -> Reply {
        match line {
            Some(l) if l.starts_with("reload failed") => Reply::Error(l.to_string()),
            Some(l) => Reply::Json(json!({"reloaded": l})),
            None => Reply::Error("no reload ran".into()),
        }
    }

    /// The metrics snapshot (built by the loop between batches).
    pub fn snapshot(&self, node: &mut Node) -> super::metrics::Snapshot {
        let firewall = super::metrics::firewall_counts(node);
        let counters = node.node_counters();
        let mut certs = vec![(
            "host",
            self.pki.cert.name().to_string(),
            self.pki.cert.not_after(),
        )];
        certs.extend(
            self.pki
                .cas
                .iter()
                .map(|c| ("ca", c.name().to_string(), c.not_after())),
        );
        super::metrics::Snapshot {
            hosts: node.hostmap().host_count(),
            pending: node.hostmap().pending_count(),
            drops: crate::node::DropReason::ALL
                .iter()
                .map(|r| (format!("{r:?}"), node.drops().get(*r)))
                .collect(),
            tunnels: node
                .tunnel_counters()
                .map(|(ip, c)| super::metrics::TunnelSample {
                    vpn_ip: ip.to_string(),
                    name: node
                        .peer_cert(ip)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    counters: *c,
                })
                .collect(),
            counters,
            firewall,
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            certs,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

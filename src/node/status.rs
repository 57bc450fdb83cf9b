//! What an operator can see and do (`meshd status`, the control socket's commands, Prometheus):
//! plain-data snapshots of the hostmap, pending handshakes, lighthouses, relays and counters,
//! the per-tunnel and per-message counters the data path bumps (plain integers: one thread owns
//! the node), and thin commands on top of existing internals (create/close a tunnel, change a
//! tunnel's remote, query the lighthouses).
//!
//! Read-only apart from those commands and the counters. Owns no protocol decision; must not
//! send anything the node would not send on its own (a created tunnel is an ordinary handshake,
//! a closed one an ordinary closeTunnel).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::MessageType;

use super::relay_table::{RelayRole, RelayState};
use super::types::{DropReason, VpnIp};
use super::Node;

/// Traffic of one tunnel since it was established (a re-handshake starts a new tunnel).
#[derive(Clone, Copy, Debug)]
pub struct TunnelCounters {
    pub established: Instant,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub last_rx: Option<Instant>,
}

impl TunnelCounters {
    pub fn new(now: Instant) -> Self {
        TunnelCounters {
            established: now,
            rx_bytes: 0,
            rx_packets: 0,
            tx_bytes: 0,
            tx_packets: 0,
            last_rx: None,
        }
    }

    /// An authenticated packet with `len` plaintext bytes.
    #[inline]
    pub(super) fn rx(&mut self, len: usize, at: Instant) {
        self.rx_packets += 1;
        self.rx_bytes += len as u64;
        self.last_rx = Some(at);
    }

    /// A sealed packet with `len` plaintext bytes.
    #[inline]
    pub(super) fn tx(&mut self, len: usize) {
        self.tx_packets += 1;
        self.tx_bytes += len as u64;
    }
}

/// Message kinds Nebula 1.6.1 counts with `stats.message_metrics` (`message_metrics.go`); data
/// messages are not among them, everything else unknown is `other`.
pub const MESSAGE_KINDS: [&str; 7] = [
    "handshake_ixpsk0",
    "recv_error",
    "lighthouse",
    "test_request",
    "test_response",
    "close_tunnel",
    "other",
];

/// `NebulaMeta` types 1.6.1 counts with `stats.lighthouse_metrics`, then `other`.
pub const LIGHTHOUSE_KINDS: [&str; 5] = [
    "HostQuery",
    "HostQueryReply",
    "HostUpdateNotification",
    "HostPunchNotification",
    "other",
];

/// Received and sent control messages by kind, plus hole punches sent.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageCounters {
    pub rx: [u64; MESSAGE_KINDS.len()],
    pub tx: [u64; MESSAGE_KINDS.len()],
    pub lighthouse_rx: [u64; LIGHTHOUSE_KINDS.len()],
    pub lighthouse_tx: [u64; LIGHTHOUSE_KINDS.len()],
    /// 1-byte punch packets (`messages.tx.holepunch`).
    pub tx_holepunch: u64,
    /// Handshakes we started (`handshake_manager.initiated`).
    pub handshakes_initiated: u64,
    /// Handshakes that ran out of retries (`handshake_manager.timed_out`).
    pub handshakes_timed_out: u64,
    /// Packets held for a handshake and sent once it completed, or dropped with a handshake
    /// that timed out (`hostinfo.cached_packets.{sent,dropped}`; a full queue's drops are the
    /// `HandshakeQueueFull` drop reason and are added to `dropped` in [`NodeCounters`]).
    pub cached_sent: u64,
    pub cached_dropped: u64,
}

/// Index into [`MESSAGE_KINDS`] of a header's type and subtype; `None` for data messages.
fn message_kind(t: MessageType, subtype: u8) -> Option<usize> {
    match (t, subtype) {
        (MessageType::Message, _) => None,
        (MessageType::Handshake, 0) => Some(0),
        (MessageType::RecvError, 0) => Some(1),
        (MessageType::LightHouse, 0) => Some(2),
        (MessageType::Test, 0) => Some(3),
        (MessageType::Test, 1) => Some(4),
        (MessageType::CloseTunnel, 0) => Some(5),
        _ => Some(6),
    }
}

/// Index into [`LIGHTHOUSE_KINDS`] of an encoded `NebulaMeta`, read from its first field (the
/// type varint) without decoding the message.
fn lighthouse_kind(payload: &[u8]) -> usize {
    match payload {
        [0x08, 1, ..] => 0,
        [0x08, 2, ..] => 1,
        [0x08, 3, ..] => 2,
        [0x08, 5, ..] => 3,
        _ => 4,
    }
}

impl MessageCounters {
    #[inline]
    pub(super) fn count_rx(&mut self, t: MessageType, subtype: u8) {
        if let Some(k) = message_kind(t, subtype) {
            self.rx[k] += 1;
        }
    }

    /// A queued datagram: its header says what it is; shorter ones are hole punches.
    #[inline]
    pub(super) fn count_tx_datagram(&mut self, bytes: &[u8]) {
        let (Some(b0), Some(b1)) = (bytes.first(), bytes.get(1)) else {
            self.tx_holepunch += 1;
            return;
        };
        if bytes.len() < crate::wire::HEADER_LEN {
            self.tx_holepunch += 1;
            return;
        }
        let kind = MessageType::from_u8(b0 & 0x0f).map_or(Some(6), |t| message_kind(t, *b1));
        if let Some(k) = kind {
            self.tx[k] += 1;
        }
    }

    pub(super) fn count_lighthouse_rx(&mut self, payload: &[u8]) {
        self.lighthouse_rx[lighthouse_kind(payload)] += 1;
    }

    pub(super) fn count_lighthouse_tx(&mut self, payload: &[u8]) {
        self.lighthouse_tx[lighthouse_kind(payload)] += 1;
    }
}

/// One established tunnel as `status` and `list-hostmap` show it.
#[derive(Clone, Debug, Serialize)]
pub struct TunnelStatus {
    pub vpn_ip: String,
    pub name: String,
    pub groups: Vec<String>,
    /// Current underlay address; `None` when the tunnel runs through `relay`.
    pub remote: Option<String>,
    pub relay: Option<String>,
    /// Every candidate address known for the peer (static, learned from lighthouses).
    pub remotes: Vec<String>,
    pub local_index: u32,
    pub remote_index: u32,
    pub initiator: bool,
    pub cipher: String,
    /// Seconds since the handshake completed.
    pub handshake_age_secs: f64,
    /// Seconds since the last authenticated packet; `None` if none yet.
    pub last_rx_secs: Option<f64>,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    /// Counter of the last packet we sent and the highest one accepted from the peer.
    pub tx_counter: u64,
    pub rx_counter: u64,
    pub cert_fingerprint: String,
    pub cert_issuer: String,
    pub cert_not_after: i64,
}

/// A handshake we started that has not completed.
#[derive(Clone, Debug, Serialize)]
pub struct PendingStatus {
    pub vpn_ip: String,
    pub local_index: u32,
    pub attempts: u32,
    pub age_secs: f64,
    pub queued_packets: usize,
    pub remotes: Vec<String>,
}

/// A configured lighthouse and whether it answered recently.
#[derive(Clone, Debug, Serialize)]
pub struct LighthouseStatus {
    pub vpn_ip: String,
    pub tunnel: bool,
    pub last_rx_secs: Option<f64>,
    /// A packet from it arrived within two lighthouse intervals.
    pub answered_recently: bool,
}

/// One relay leg: `terminal` legs are ours (a tunnel to `peer` through `hop`), `forwarding` legs
/// are served for others (`peer` reached for someone over our tunnel to `hop`).
#[derive(Clone, Debug, Serialize)]
pub struct RelayStatus {
    pub hop: String,
    pub peer: String,
    pub role: &'static str,
    pub state: &'static str,
    pub local_index: u32,
    pub remote_index: Option<u32>,
}

/// Counts the node keeps (drops by reason are [`NodeStatus::drops`]).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeCounters {
    pub handshakes_initiated: u64,
    pub handshakes_timed_out: u64,
    pub cached_packets_sent: u64,
    pub cached_packets_dropped: u64,
    /// Packets skipped by peers' counters on live tunnels (`network.packets.lost`).
    pub packets_lost: u64,
    /// Replayed or duplicate packets (`network.packets.duplicate`).
    pub packets_duplicate: u64,
    pub main_indexes: usize,
    pub pending_indexes: usize,
    pub relay_legs: usize,
    #[serde(skip)]
    pub messages: MessageCounters,
}

/// A snapshot of the node: plain data, safe to hand to another task.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub vpn_ip: String,
    pub vpn_net: String,
    pub listen_port: u16,
    pub am_lighthouse: bool,
    pub am_relay: bool,
    pub advertised_addrs: Vec<String>,
    pub lighthouses: Vec<LighthouseStatus>,
    pub tunnels: Vec<TunnelStatus>,
    pub pending: Vec<PendingStatus>,
    pub relays: Vec<RelayStatus>,
    /// Non-zero node drop counters by reason (`DropReason` names).
    pub drops: Vec<(String, u64)>,
    pub counters: NodeCounters,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

fn addrs(list: &[SocketAddr]) -> Vec<String> {
    list.iter().map(SocketAddr::to_string).collect()
}

impl Node {
    /// Everything `meshd status` shows about the node, as of `now`.
    pub fn status(&self, now: Instant) -> NodeStatus {
        let tunnels = self
            .hostmap
            .hosts()
            .map(|h| self.tunnel_status(now, h.vpn_ip))
            .collect::<Option<Vec<_>>>()
            .unwrap_or_default();
        NodeStatus {
            vpn_ip: self.identity.vpn_ip.to_string(),
            vpn_net: self.identity.vpn_net.to_string(),
            listen_port: self.config.listen_port,
            am_lighthouse: self.config.am_lighthouse,
            am_relay: self.config.am_relay,
            advertised_addrs: addrs(&self.advertised_addrs()),
            lighthouses: self.lighthouse_status(now),
            tunnels,
            pending: self.pending_status(now),
            relays: self.relay_status(),
            drops: self
                .drops
                .nonzero()
                .into_iter()
                .map(|(r, n)| (format!("{r:?}"), n))
                .collect(),
            counters: self.node_counters(),
        }
    }

    /// One tunnel (`print-tunnel`).
    pub fn tunnel_status(&self, now: Instant, vpn_ip: VpnIp) -> Option<TunnelStatus> {
        let h = self.hostmap.host(vpn_ip)?;
        let c = &h.counters;
        Some(TunnelStatus {
            vpn_ip: vpn_ip.to_string(),
            name: h.peer.name.clone(),
            groups: h.peer.groups.clone(),
            remote: h.remote.map(|r| r.to_string()),
            relay: h
                .relay
                .filter(|_| h.remote.is_none())
                .map(|r| r.to_string()),
            remotes: self
                .remotes
                .get(&vpn_ip)
                .map_or_else(Vec::new, |r| addrs(&r.addrs())),
            local_index: h.local_index.0,
            remote_index: h.remote_index.0,
            initiator: h.initiator,
            cipher: match self.config.cipher {
                crate::crypto::Cipher::AesGcm => "aes",
                crate::crypto::Cipher::ChaChaPoly => "chachapoly",
            }
            .to_string(),
            handshake_age_secs: secs(now.saturating_duration_since(c.established)),
            last_rx_secs: c.last_rx.map(|t| secs(now.saturating_duration_since(t))),
            rx_bytes: c.rx_bytes,
            rx_packets: c.rx_packets,
            tx_bytes: c.tx_bytes,
            tx_packets: c.tx_packets,
            tx_counter: h.counter,
            rx_counter: h.window.current(),
            cert_fingerprint: h.peer.fingerprint.clone(),
            cert_issuer: h.peer.issuer.clone(),
            cert_not_after: h.peer.not_after,
        })
    }

    /// The verified certificate of an established peer (`print-cert <vpn-ip>`).
    pub fn peer_cert(&self, vpn_ip: VpnIp) -> Option<&super::PeerCert> {
        self.hostmap.host(vpn_ip).map(|h| &h.peer)
    }

    fn pending_status(&self, now: Instant) -> Vec<PendingStatus> {
        self.hostmap
            .pending_iter()
            .map(|p| PendingStatus {
                vpn_ip: p.vpn_ip.to_string(),
                local_index: p.local_index.0,
                attempts: p.attempts,
                age_secs: secs(now.saturating_duration_since(p.started)),
                queued_packets: p.queue.len(),
                remotes: self
                    .remotes
                    .get(&p.vpn_ip)
                    .map_or_else(Vec::new, |r| addrs(&r.addrs())),
            })
            .collect()
    }

    fn lighthouse_status(&self, now: Instant) -> Vec<LighthouseStatus> {
        let recent = self.config.lighthouse_interval * 2;
        self.config
            .lighthouses
            .iter()
            .map(|ip| {
                let host = self.hostmap.host(*ip);
                let last = host.and_then(|h| h.counters.last_rx);
                let age = last.map(|t| now.saturating_duration_since(t));
                LighthouseStatus {
                    vpn_ip: ip.to_string(),
                    tunnel: host.is_some(),
                    last_rx_secs: age.map(secs),
                    answered_recently: age.is_some_and(|a| a <= recent),
                }
            })
            .collect()
    }

    fn relay_status(&self) -> Vec<RelayStatus> {
        let mut v: Vec<RelayStatus> = self
            .relays
            .legs()
            .map(|l| RelayStatus {
                hop: l.hop.to_string(),
                peer: l.peer.to_string(),
                role: match l.role {
                    RelayRole::Terminal => "terminal",
                    RelayRole::Forwarding => "forwarding",
                },
                state: match l.state {
                    RelayState::Requested => "requested",
                    RelayState::Established => "established",
                },
                local_index: l.local_index.0,
                remote_index: l.remote_index.map(|r| r.0),
            })
            .collect();
        v.sort_by(|a, b| (&a.hop, &a.peer).cmp(&(&b.hop, &b.peer)));
        v
    }

    /// The counters Prometheus exports, without the per-tunnel lists.
    pub fn node_counters(&self) -> NodeCounters {
        let lost = self
            .hostmap
            .hosts()
            .map(|h| {
                // Counters 1 and 2 are the handshake; every accepted one above is counted.
                h.window
                    .current()
                    .saturating_sub(2)
                    .saturating_sub(h.counters.rx_packets)
            })
            .sum();
        let duplicate =
            self.drops.get(DropReason::Replay) + self.drops.get(DropReason::ReplayAfterDecrypt);
        NodeCounters {
            handshakes_initiated: self.msgs.handshakes_initiated,
            handshakes_timed_out: self.msgs.handshakes_timed_out,
            cached_packets_sent: self.msgs.cached_sent,
            cached_packets_dropped: self.msgs.cached_dropped
                + self.drops.get(DropReason::HandshakeQueueFull),
            packets_lost: lost,
            packets_duplicate: duplicate,
            main_indexes: self.hostmap.host_count(),
            pending_indexes: self.hostmap.pending_count(),
            relay_legs: self.relays.len(),
            messages: self.msgs,
        }
    }

    /// Per-tunnel traffic for metrics: (VPN IP, counters), in VPN IP order.
    pub fn tunnel_counters(&self) -> impl Iterator<Item = (VpnIp, &TunnelCounters)> {
        self.hostmap.hosts().map(|h| (h.vpn_ip, &h.counters))
    }

    /// `create-tunnel`: starts a handshake; refused when a tunnel or attempt exists.
    pub fn create_tunnel(&mut self, now: Instant, vpn_ip: VpnIp) -> Result<(), String> {
        if vpn_ip == self.identity.vpn_ip {
            return Err("that is this node's own VPN IP".into());
        }
        if self.hostmap.host(vpn_ip).is_some() {
            return Err(format!("a tunnel to {vpn_ip} already exists"));
        }
        if self.hostmap.pending(vpn_ip).is_some() {
            return Err(format!("a handshake with {vpn_ip} is already under way"));
        }
        if !self.identity.vpn_net.contains(vpn_ip.addr()) {
            return Err(format!("{vpn_ip} is outside the VPN network"));
        }
        self.start_handshake(now, vpn_ip)
            .map_err(|r| format!("cannot start a handshake: {r:?}"))
    }

    /// `close-tunnel`: closeTunnel to the peer and the tunnel deleted; false without one.
    pub fn close_tunnel_cmd(&mut self, now: Instant, vpn_ip: VpnIp) -> bool {
        if self.hostmap.host(vpn_ip).is_none() {
            return false;
        }
        self.close_tunnel(now, vpn_ip);
        true
    }

    /// `change-remote`: points the tunnel at another underlay address (as a roam would).
    pub fn change_remote(&mut self, vpn_ip: VpnIp, to: SocketAddr) -> Result<(), String> {
        let h = self
            .hostmap
            .host_mut(vpn_ip)
            .ok_or_else(|| format!("no tunnel to {vpn_ip}"))?;
        h.remote = Some(to);
        Ok(())
    }

    /// `query-lighthouse`: asks the lighthouses about `vpn_ip` and returns what is known now
    /// (the answer, when it comes, updates the same list).
    pub fn query_lighthouse(&mut self, now: Instant, vpn_ip: VpnIp) -> (Vec<String>, Vec<String>) {
        self.query_lighthouses(now, vpn_ip);
        match self.remotes.get(&vpn_ip) {
            Some(r) => (
                addrs(&r.addrs()),
                r.relays().iter().map(VpnIp::to_string).collect(),
            ),
            None => (Vec::new(), Vec::new()),
        }
    }

    /// `list-lighthouse-addrmap`: on a lighthouse, what it serves for each connected host
    /// (learned address first, then reported ones); elsewhere every peer's candidate addresses
    /// and relays (static and learned from lighthouses).
    pub fn addrmap(&self) -> Vec<(String, Vec<String>, Vec<String>)> {
        let relays = |r: &[VpnIp]| r.iter().map(VpnIp::to_string).collect();
        if self.config.am_lighthouse {
            return self
                .hostmap
                .hosts()
                .filter_map(|h| {
                    let (a, r) = self.lighthouse_entry(h.vpn_ip)?;
                    Some((h.vpn_ip.to_string(), addrs(&a), relays(&r)))
                })
                .collect();
        }
        self.remotes
            .iter()
            .map(|(ip, r)| (ip.to_string(), addrs(&r.addrs()), relays(&r.relays())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_kinds_follow_nebula_names() {
        let mut m = MessageCounters::default();
        m.count_rx(MessageType::Test, 1);
        m.count_rx(MessageType::Message, 0);
        m.count_rx(MessageType::Control, 0);
        assert_eq!(m.rx[4], 1, "test_response");
        assert_eq!(m.rx[6], 1, "control counts as other");
        assert_eq!(m.rx.iter().sum::<u64>(), 2, "data messages are not counted");
        m.count_tx_datagram(&[0x01]);
        assert_eq!(m.tx_holepunch, 1);
        let mut hs = [0u8; 16];
        hs[0] = 0x10; // version 1, type handshake
        m.count_tx_datagram(&hs);
        assert_eq!(m.tx[0], 1);
        m.count_lighthouse_rx(&[0x08, 0x01, 0x12]);
        m.count_lighthouse_tx(&[0x08, 0x05]);
        m.count_lighthouse_tx(&[0x12]);
        assert_eq!(m.lighthouse_rx[0], 1, "HostQuery");
        assert_eq!(m.lighthouse_tx[3], 1, "HostPunchNotification");
        assert_eq!(m.lighthouse_tx[4], 1, "other");
    }
}

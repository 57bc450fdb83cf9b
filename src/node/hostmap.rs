//! The hostmap (`hostmap.go`): established tunnels by VPN IP, by our local index and by the
//! peer's (remote) index, plus the pending-handshake map (`handshake_manager.go`).
//!
//! Pure bookkeeping, bounded by the caller-provided capacities. Ordered maps keyed by VPN IP keep
//! timer processing deterministic. Must not send packets or do crypto.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use crate::crypto::{NoiseHandshake, ReplayWindow, Session};
use crate::wire::RemoteIndex;

use super::types::{LocalIndex, PeerCert, VpnIp};

/// Connection-manager bookkeeping of one tunnel (`connection_manager.go`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Liveness {
    /// Authenticated inbound traffic since the last check.
    pub saw_in: bool,
    /// Outbound traffic was seen and a check is armed or running (1.6.1's "out" map).
    pub out_tracked: bool,
    /// A check after outbound traffic is armed for this time.
    pub check_at: Option<Instant>,
    /// A TestRequest went out; delete the tunnel at this time unless traffic arrives.
    pub delete_at: Option<Instant>,
}

/// One established tunnel.
#[derive(Debug)]
pub struct HostInfo {
    pub vpn_ip: VpnIp,
    pub local_index: LocalIndex,
    pub remote_index: RemoteIndex,
    /// Current underlay address; None when only reachable through a relay.
    pub remote: Option<SocketAddr>,
    /// The relay (its VPN IP) the handshake completed through, used while `remote` is None.
    pub relay: Option<VpnIp>,
    pub session: Session,
    pub window: ReplayWindow,
    /// Last counter used for sending; the first data packet uses 3.
    pub counter: u64,
    pub peer: PeerCert,
    /// The peer's handshake Time (ns since the epoch) that created this tunnel.
    pub handshake_time: u64,
    /// Responder only: the Noise part of the stage 1 we answered, and our stage-2 datagram,
    /// to answer a retransmitted stage 1 identically.
    pub stage1: Vec<u8>,
    pub stage2: Vec<u8>,
    /// Time of the last roam and the address we roamed away from.
    pub last_roam: Option<(Instant, Option<SocketAddr>)>,
    pub recv_errors: u8,
    pub liveness: Liveness,
    pub initiator: bool,
    /// Outbound TUN packets to this host, for path promotion and lighthouse re-queries.
    pub promote_counter: u32,
    /// Traffic since the handshake, for `status` and metrics.
    pub counters: super::status::TunnelCounters,
}

/// A handshake we initiated and that has not completed.
pub struct PendingHandshake {
    pub vpn_ip: VpnIp,
    pub local_index: LocalIndex,
    pub noise: NoiseHandshake,
    /// Seed and payload of the stage-1 message, to rebuild `noise` after a spoofed stage 2.
    pub noise_seed: [u8; 32],
    pub stage1_payload: Vec<u8>,
    /// The complete stage-1 datagram, re-sent byte for byte on every attempt.
    pub stage1: Vec<u8>,
    pub attempts: u32,
    pub next_attempt: Instant,
    pub started: Instant,
    /// Packets waiting for the tunnel (bounded by the handshake queue length).
    pub queue: VecDeque<Vec<u8>>,
    /// Addresses that answered as the wrong host; not tried again for this attempt.
    pub blocked: Vec<SocketAddr>,
}

/// Established and pending tunnels with their index tables.
#[derive(Default)]
pub struct HostMap {
    hosts: BTreeMap<VpnIp, HostInfo>,
    by_index: HashMap<LocalIndex, VpnIp>,
    by_remote_index: HashMap<RemoteIndex, VpnIp>,
    pending: BTreeMap<VpnIp, PendingHandshake>,
    pending_by_index: HashMap<LocalIndex, VpnIp>,
    /// Responder tunnels by the ephemeral key of the stage 1 they answered (duplicate check).
    by_stage1: HashMap<[u8; 32], VpnIp>,
}

impl HostMap {
    pub fn host(&self, ip: VpnIp) -> Option<&HostInfo> {
        self.hosts.get(&ip)
    }

    pub fn host_mut(&mut self, ip: VpnIp) -> Option<&mut HostInfo> {
        self.hosts.get_mut(&ip)
    }

    pub fn host_by_index(&self, idx: LocalIndex) -> Option<VpnIp> {
        self.by_index.get(&idx).copied()
    }

    pub fn host_by_remote_index(&self, idx: RemoteIndex) -> Option<VpnIp> {
        self.by_remote_index.get(&idx).copied()
    }

    pub fn hosts(&self) -> impl Iterator<Item = &HostInfo> {
        self.hosts.values()
    }

    pub fn host_ips(&self) -> Vec<VpnIp> {
        self.hosts.keys().copied().collect()
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// Inserts a tunnel, replacing (and returning) any tunnel for the same VPN IP.
    pub fn insert_host(&mut self, h: HostInfo) -> Option<HostInfo> {
        let old = self.remove_host(h.vpn_ip);
        self.by_index.insert(h.local_index, h.vpn_ip);
        // A newer tunnel may shadow another host's remote index; last writer wins like 1.6.1.
        self.by_remote_index.insert(h.remote_index, h.vpn_ip);
        if let Some(e) = stage1_key(&h.stage1) {
            self.by_stage1.insert(e, h.vpn_ip);
        }
        self.hosts.insert(h.vpn_ip, h);
        old
    }

    pub fn remove_host(&mut self, ip: VpnIp) -> Option<HostInfo> {
        let h = self.hosts.remove(&ip)?;
        self.by_index.remove(&h.local_index);
        if self.by_remote_index.get(&h.remote_index) == Some(&ip) {
            self.by_remote_index.remove(&h.remote_index);
        }
        if let Some(e) = stage1_key(&h.stage1) {
            self.by_stage1.remove(&e);
        }
        Some(h)
    }

    /// The responder tunnel that answered exactly this stage-1 Noise message, if any.
    pub fn host_by_stage1(&self, noise_part: &[u8]) -> Option<&HostInfo> {
        let ip = self.by_stage1.get(&stage1_key(noise_part)?)?;
        self.hosts.get(ip).filter(|h| h.stage1 == noise_part)
    }

    pub fn pending(&self, ip: VpnIp) -> Option<&PendingHandshake> {
        self.pending.get(&ip)
    }

    pub fn pending_mut(&mut self, ip: VpnIp) -> Option<&mut PendingHandshake> {
        self.pending.get_mut(&ip)
    }

    pub fn pending_by_index(&self, idx: LocalIndex) -> Option<VpnIp> {
        self.pending_by_index.get(&idx).copied()
    }

    pub fn pending_ips(&self) -> Vec<VpnIp> {
        self.pending.keys().copied().collect()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    pub fn pending_iter(&self) -> impl Iterator<Item = &PendingHandshake> {
        self.pending.values()
    }

    pub fn insert_pending(&mut self, p: PendingHandshake) {
        self.remove_pending(p.vpn_ip);
        self.pending_by_index.insert(p.local_index, p.vpn_ip);
        self.pending.insert(p.vpn_ip, p);
    }

    pub fn remove_pending(&mut self, ip: VpnIp) -> Option<PendingHandshake> {
        let p = self.pending.remove(&ip)?;
        self.pending_by_index.remove(&p.local_index);
        Some(p)
    }

    /// True if `idx` names no pending or established tunnel.
    pub fn index_free(&self, idx: LocalIndex) -> bool {
        idx.0 != 0 && !self.by_index.contains_key(&idx) && !self.pending_by_index.contains_key(&idx)
    }
}

/// The initiator's ephemeral key: the first 32 bytes of a stage-1 Noise message.
fn stage1_key(noise_part: &[u8]) -> Option<[u8; 32]> {
    noise_part.get(..32)?.try_into().ok()
}

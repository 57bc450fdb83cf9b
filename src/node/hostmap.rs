//! The hostmap (`hostmap.go`): established tunnels by VPN IP, by our local index and by the
//! peer's (remote) index, plus the pending-handshake map (`handshake_manager.go`) and the
//! candidate tunnels: at most one per VPN IP that already has a tunnel, answered as responder
//! but not yet proven by an authenticated packet (a stage 1 is unauthenticated, so it must not
//! replace a live tunnel by itself). meshd's own addition; 1.6.1 replaces at once.
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
    /// Traffic either way since the last inactivity sweep (`tunnels.drop_inactive`).
    pub used: bool,
    /// When a sweep last saw the tunnel used (or first saw it).
    pub last_used: Option<Instant>,
    /// No lighthouse re-query for this peer before then (`timers.requery_wait_duration`).
    pub next_lh_query: Option<Instant>,
}

impl Liveness {
    /// A fresh connection-manager cycle; the inactivity and re-query marks carry over.
    pub fn reset(&mut self) {
        *self = Liveness {
            used: self.used,
            last_used: self.last_used,
            next_lh_query: self.next_lh_query,
            ..Liveness::default()
        };
    }
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
    /// Responder only: what we keep of the stage 1 we answered.
    pub answered: Option<Answered>,
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

impl HostInfo {
    /// An authenticated packet arrived at `now`: the peer has our stage 2. The cached answer
    /// is kept `grace` longer, for a retransmitted stage 1 that was already on its way, then
    /// goes (issue 19: it was most of a lighthouse's memory per host). Returns the drop time
    /// when this packet set it (the caller arms a timer for it).
    pub fn proven(&mut self, now: Instant, grace: std::time::Duration) -> Option<Instant> {
        let c = self.answered.as_mut()?.cache.as_mut()?;
        if c.drop_at.is_some() {
            return None;
        }
        c.drop_at = Some(now + grace);
        c.drop_at
    }

    /// When the cached answer is due to go, if it is still there.
    pub fn answer_drop_at(&self) -> Option<Instant> {
        self.answered.as_ref()?.cache.as_ref()?.drop_at
    }

    /// Drops the cached answer if its time has come.
    pub fn drop_answer_if_due(&mut self, now: Instant) {
        if self.answer_drop_at().is_some_and(|t| t <= now) {
            if let Some(a) = &mut self.answered {
                a.cache = None;
            }
        }
    }
}

/// What a responder keeps of the stage 1 it answered.
#[derive(Debug)]
pub struct Answered {
    /// e ‖ s of the stage 1, for as long as the tunnel lives: an altered copy (same keys, other
    /// bytes) is a replay.
    keys: [u8; STAGE1_KEYS],
    /// Until the tunnel is proven: the whole stage 1 and our stage-2 datagram, to answer a
    /// retransmitted stage 1 identically.
    cache: Option<Box<AnswerCache>>,
}

#[derive(Debug)]
struct AnswerCache {
    stage1: Box<[u8]>,
    stage2: Box<[u8]>,
    /// Set by the first authenticated packet (see [`HostInfo::proven`]).
    drop_at: Option<Instant>,
}

impl Answered {
    /// None when `stage1` is too short to hold the two keys (it never is after Noise read it).
    pub fn new(stage1: &[u8], stage2: Vec<u8>) -> Option<Answered> {
        let keys = stage1.get(..STAGE1_KEYS)?.try_into().ok()?;
        let cache = AnswerCache {
            stage1: stage1.into(),
            stage2: stage2.into_boxed_slice(),
            drop_at: None,
        };
        Some(Answered {
            keys,
            cache: Some(Box::new(cache)),
        })
    }

    /// The cached stage 2 if `noise_part` is exactly the stage 1 we answered (not yet proven).
    pub fn cached_answer(&self, noise_part: &[u8]) -> Option<&[u8]> {
        let c = self.cache.as_ref()?;
        (*c.stage1 == *noise_part).then_some(&*c.stage2)
    }

    /// Same sender (static key) and ephemeral key as the stage 1 we answered.
    fn same_keys(&self, noise_part: &[u8]) -> bool {
        noise_part.get(..STAGE1_KEYS) == Some(&self.keys[..])
    }

    fn ephemeral(&self) -> [u8; 32] {
        let mut e = [0u8; 32];
        e.copy_from_slice(&self.keys[..32]);
        e
    }

    /// Whether the answer is still cached (the tunnel not yet proven).
    pub fn is_cached(&self) -> bool {
        self.cache.is_some()
    }
}

/// A handshake we initiated and that has not completed.
pub struct PendingHandshake {
    pub vpn_ip: VpnIp,
    pub local_index: LocalIndex,
    pub noise: NoiseHandshake,
    /// Seed and payload of the stage-1 message, to rebuild `noise` after a spoofed stage 2.
    pub noise_seed: crate::crypto::NoiseSeed,
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

/// A responder session for a VPN IP that already has a tunnel, waiting for its first
/// authenticated packet (then it replaces the tunnel) or for `expires`.
#[derive(Debug)]
pub struct Candidate {
    pub host: HostInfo,
    pub expires: Instant,
}

/// Established and pending tunnels with their index tables.
#[derive(Default)]
pub struct HostMap {
    hosts: BTreeMap<VpnIp, HostInfo>,
    by_index: HashMap<LocalIndex, VpnIp>,
    by_remote_index: HashMap<RemoteIndex, VpnIp>,
    pending: BTreeMap<VpnIp, PendingHandshake>,
    pending_by_index: HashMap<LocalIndex, VpnIp>,
    /// Responder tunnels and candidates by the ephemeral key of the stage 1 they answered
    /// (duplicate and replay checks).
    by_stage1: HashMap<[u8; 32], VpnIp>,
    /// Bounded by `hosts`: only a VPN IP with a tunnel has one.
    candidates: BTreeMap<VpnIp, Candidate>,
    candidate_by_index: HashMap<LocalIndex, VpnIp>,
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
        if let Some(a) = &h.answered {
            self.by_stage1.insert(a.ephemeral(), h.vpn_ip);
        }
        self.hosts.insert(h.vpn_ip, h);
        old
    }

    /// Removes the tunnel. A candidate for `ip` stays (the caller decides whether it takes the
    /// tunnel's place, see [`HostMap::promote_candidate`]) only if it came over the same path:
    /// a peer that restarted in place. One from elsewhere may be a replay; it goes.
    pub fn remove_host(&mut self, ip: VpnIp) -> Option<HostInfo> {
        let h = self.hosts.remove(&ip)?;
        let elsewhere = self
            .candidates
            .get(&ip)
            .is_some_and(|c| !same_path(&c.host, &h));
        if elsewhere {
            self.remove_candidate(ip);
        }
        self.by_index.remove(&h.local_index);
        if self.by_remote_index.get(&h.remote_index) == Some(&ip) {
            self.by_remote_index.remove(&h.remote_index);
        }
        if let Some(a) = &h.answered {
            self.unlink_stage1(a.ephemeral(), ip);
        }
        Some(h)
    }

    /// The responder tunnel or candidate that answered exactly this stage-1 Noise message and
    /// is not yet proven, with our cached stage 2.
    pub fn host_by_stage1<'a>(&'a self, noise_part: &[u8]) -> Option<(&'a HostInfo, &'a [u8])> {
        let ip = self.stage1_seen(noise_part)?;
        let answer = |h: &'a HostInfo| -> Option<&'a [u8]> {
            h.answered.as_ref()?.cached_answer(noise_part)
        };
        let live = self.hosts.get(&ip).and_then(|h| Some((h, answer(h)?)));
        let candidate = self.candidates.get(&ip).map(|c| &c.host);
        live.or_else(|| candidate.and_then(|h| Some((h, answer(h)?))))
    }

    /// The VPN IP whose tunnel or candidate answered a stage 1 from the same sender (static
    /// key) with this ephemeral key; the payload may differ: a replay with altered fields.
    pub fn stage1_seen(&self, noise_part: &[u8]) -> Option<VpnIp> {
        let ip = *self.by_stage1.get(&stage1_key(noise_part)?)?;
        let same = |h: &HostInfo| h.answered.as_ref().is_some_and(|a| a.same_keys(noise_part));
        let live = self.hosts.get(&ip).is_some_and(same);
        let candidate = self.candidates.get(&ip).is_some_and(|c| same(&c.host));
        (live || candidate).then_some(ip)
    }

    pub fn candidate(&self, ip: VpnIp) -> Option<&Candidate> {
        self.candidates.get(&ip)
    }

    pub fn candidate_mut(&mut self, ip: VpnIp) -> Option<&mut Candidate> {
        self.candidates.get_mut(&ip)
    }

    pub fn candidate_by_index(&self, idx: LocalIndex) -> Option<VpnIp> {
        self.candidate_by_index.get(&idx).copied()
    }

    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.candidates.values()
    }

    pub fn candidate_count(&self) -> usize {
        self.candidates.len()
    }

    /// Sets the candidate of a VPN IP that has a tunnel, replacing an older one. Without a
    /// tunnel there is nothing to stand beside: refused (false), the caller installs a tunnel.
    pub fn insert_candidate(&mut self, c: Candidate) -> bool {
        let ip = c.host.vpn_ip;
        if !self.hosts.contains_key(&ip) {
            return false;
        }
        self.remove_candidate(ip);
        self.candidate_by_index.insert(c.host.local_index, ip);
        if let Some(a) = &c.host.answered {
            self.by_stage1.insert(a.ephemeral(), ip);
        }
        self.candidates.insert(ip, c);
        true
    }

    pub fn remove_candidate(&mut self, ip: VpnIp) -> Option<Candidate> {
        let c = self.candidates.remove(&ip)?;
        self.candidate_by_index.remove(&c.host.local_index);
        let e = c.host.answered.as_ref().map(Answered::ephemeral);
        let live_shares = self
            .hosts
            .get(&ip)
            .is_some_and(|h| h.answered.as_ref().map(Answered::ephemeral) == e);
        if let (Some(e), false) = (e, live_shares) {
            self.unlink_stage1(e, ip);
        }
        Some(c)
    }

    /// Forgets `e` unless another host's stage 1 (a sender reusing an ephemeral key) took it.
    fn unlink_stage1(&mut self, e: [u8; 32], ip: VpnIp) {
        if self.by_stage1.get(&e) == Some(&ip) {
            self.by_stage1.remove(&e);
        }
    }

    /// Makes the candidate of `ip` its tunnel. Returns the tunnel it replaced (if any), or
    /// None when there was no candidate.
    pub fn promote_candidate(&mut self, ip: VpnIp) -> Option<Option<HostInfo>> {
        let c = self.remove_candidate(ip)?;
        Some(self.insert_host(c.host))
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

    /// True if `idx` names no pending, candidate or established tunnel.
    pub fn index_free(&self, idx: LocalIndex) -> bool {
        idx.0 != 0
            && !self.by_index.contains_key(&idx)
            && !self.pending_by_index.contains_key(&idx)
            && !self.candidate_by_index.contains_key(&idx)
    }
}

/// Same underlay address, or (both relayed) the same relay.
fn same_path(a: &HostInfo, b: &HostInfo) -> bool {
    a.remote == b.remote && (a.remote.is_some() || a.relay == b.relay)
}

/// A stage-1 Noise message starts with the initiator's ephemeral and static keys, in clear.
const STAGE1_KEYS: usize = 64;

/// The initiator's ephemeral key: the first 32 bytes of a stage-1 Noise message.
fn stage1_key(noise_part: &[u8]) -> Option<[u8; 32]> {
    noise_part.get(..32)?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{AeadKey, Cipher};
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn host(ip: u8, idx: u32, stage1: &[u8], remote: &str) -> HostInfo {
        let key = |b: u8| AeadKey::new(Cipher::AesGcm, &[b; 32]);
        let vpn_ip = VpnIp::from(Ipv4Addr::new(10, 0, 0, ip));
        HostInfo {
            vpn_ip,
            local_index: LocalIndex(idx),
            remote_index: RemoteIndex(idx + 1000),
            remote: Some(remote.parse().unwrap()),
            relay: None,
            session: Session::new(key(1), key(2)),
            window: ReplayWindow::new(),
            counter: 2,
            peer: PeerCert {
                vpn_ip,
                ips: vec![Ipv4Addr::new(10, 0, 0, ip)],
                subnets: Vec::new(),
                name: format!("h{ip}"),
                groups: Vec::new(),
                fingerprint: String::new(),
                issuer: String::new(),
                issuer_name: String::new(),
                not_after: i64::MAX,
                cert: None,
            },
            handshake_time: 1,
            answered: Answered::new(stage1, vec![idx as u8]),
            last_roam: None,
            recv_errors: 0,
            liveness: Liveness::default(),
            initiator: false,
            promote_counter: 0,
            counters: crate::node::status::TunnelCounters::new(Instant::now()),
        }
    }

    /// e || s || payload, as a stage-1 Noise part.
    fn stage1(e: u8, s: u8, payload: u8) -> Vec<u8> {
        let mut v = vec![e; 32];
        v.extend_from_slice(&[s; 32]);
        v.push(payload);
        v
    }

    fn candidate(h: HostInfo) -> Candidate {
        Candidate {
            host: h,
            expires: Instant::now(),
        }
    }

    #[test]
    fn candidates_stand_only_beside_a_tunnel_and_are_found_by_index_and_stage1() {
        let mut m = HostMap::default();
        let ip = VpnIp::from(Ipv4Addr::new(10, 0, 0, 2));
        assert!(!m.insert_candidate(candidate(host(2, 7, &stage1(1, 9, 0), "192.0.2.2:4242"))));
        assert_eq!(m.candidate_count(), 0, "no tunnel, no candidate");
        m.insert_host(host(2, 5, &stage1(2, 9, 0), "192.0.2.2:4242"));
        assert!(m.insert_candidate(candidate(host(2, 7, &stage1(1, 9, 0), "192.0.2.2:4242"))));
        assert!(!m.index_free(LocalIndex(7)));
        assert_eq!(m.candidate_by_index(LocalIndex(7)), Some(ip));
        assert_eq!(m.host_by_index(LocalIndex(7)), None, "not a tunnel yet");
        let dup = m
            .host_by_stage1(&stage1(1, 9, 0))
            .map(|(h, _)| h.local_index);
        assert_eq!(
            dup,
            Some(LocalIndex(7)),
            "duplicate of the candidate's stage 1"
        );
        assert_eq!(m.stage1_seen(&stage1(1, 9, 5)), Some(ip), "altered copy");
        assert_eq!(
            m.stage1_seen(&stage1(1, 8, 0)),
            None,
            "another sender's static key"
        );
        // A newer candidate replaces the older one and its indexes.
        assert!(m.insert_candidate(candidate(host(2, 8, &stage1(3, 9, 0), "192.0.2.2:4242"))));
        assert_eq!(m.candidate_count(), 1);
        assert!(m.index_free(LocalIndex(7)));
        assert_eq!(m.stage1_seen(&stage1(1, 9, 0)), None);
        // Promotion: the candidate is the tunnel, the old one is returned and unindexed.
        let old = m.promote_candidate(ip).expect("had a candidate");
        assert_eq!(old.map(|h| h.local_index), Some(LocalIndex(5)));
        assert_eq!(m.host_by_index(LocalIndex(8)), Some(ip));
        assert!(m.index_free(LocalIndex(5)) && m.candidate_count() == 0);
        assert_eq!(m.stage1_seen(&stage1(2, 9, 0)), None);
        assert_eq!(m.stage1_seen(&stage1(3, 9, 0)), Some(ip));
    }

    #[test]
    fn a_candidate_outlives_its_tunnel_only_over_the_same_path() {
        let mut m = HostMap::default();
        let ip = VpnIp::from(Ipv4Addr::new(10, 0, 0, 2));
        m.insert_host(host(2, 5, &stage1(2, 9, 0), "192.0.2.2:4242"));
        m.insert_candidate(candidate(host(2, 7, &stage1(1, 9, 0), "192.0.2.2:4242")));
        m.remove_host(ip);
        assert!(m.candidate(ip).is_some(), "same address: a restarted peer");
        m.remove_candidate(ip);
        m.insert_host(host(2, 5, &stage1(2, 9, 0), "192.0.2.2:4242"));
        m.insert_candidate(candidate(host(2, 7, &stage1(1, 9, 0), "198.51.100.6:4242")));
        m.remove_host(ip);
        assert!(
            m.candidate(ip).is_none(),
            "from elsewhere: gone with the tunnel"
        );
        assert!(m.index_free(LocalIndex(7)));
        assert_eq!(m.stage1_seen(&stage1(1, 9, 0)), None);
    }

    #[test]
    fn the_cached_answer_goes_after_the_proof_but_replays_stay_known() {
        let mut m = HostMap::default();
        let ip = VpnIp::from(Ipv4Addr::new(10, 0, 0, 2));
        let t0 = Instant::now();
        let grace = Duration::from_millis(500);
        m.insert_host(host(2, 5, &stage1(2, 9, 0), "192.0.2.2:4242"));
        let h = m.host_mut(ip).unwrap();
        h.drop_answer_if_due(t0 + Duration::from_secs(60));
        assert!(h.answered.as_ref().unwrap().is_cached(), "unproven: kept");
        assert_eq!(h.proven(t0, grace), Some(t0 + grace));
        assert_eq!(
            h.proven(t0 + grace, grace),
            None,
            "the first proof sets the time"
        );
        h.drop_answer_if_due(t0 + Duration::from_millis(499));
        let cached = m
            .host_by_stage1(&stage1(2, 9, 0))
            .map(|(_, s2)| s2.to_vec());
        assert_eq!(cached, Some(vec![5]), "a late retransmit is still answered");
        m.host_mut(ip).unwrap().drop_answer_if_due(t0 + grace);
        assert!(
            m.host_by_stage1(&stage1(2, 9, 0)).is_none(),
            "cache dropped"
        );
        assert_eq!(m.host(ip).unwrap().answer_drop_at(), None);
        assert_eq!(
            m.stage1_seen(&stage1(2, 9, 0)),
            Some(ip),
            "a resend is still known"
        );
        assert_eq!(
            m.stage1_seen(&stage1(2, 9, 7)),
            Some(ip),
            "and an altered copy"
        );
        m.remove_host(ip);
        assert_eq!(m.stage1_seen(&stage1(2, 9, 0)), None);
    }
}

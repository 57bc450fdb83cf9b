//! NAT hole punching (`punchy.go`, `hostmap.go` Punchy, lighthouse.go punch handling in 1.6.1).
//!
//! * Keepalive (`punchy.punch`): at start and every 10 s, a 1-byte 0x01 datagram to every known
//!   address of every host in the hostmap, keeping NAT mappings open.
//! * On a HostPunchNotification: after `punchy.delay`, a 1-byte 0x00 to each address of the
//!   querier, opening our NAT towards it; with `punchy.respond`, after `respond_delay` a
//!   TestRequest (or a handshake if there is no tunnel) back to the querier.
//!
//! Receivers ignore these bytes (shorter than a header). Datagrams leave through
//! `poll_transmit`. The schedules are bounded; owns no sockets or clocks.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::types::VpnIp;
use super::{Node, NodeConfig};

/// 1.6.1's fixed keepalive period.
pub const PUNCH_INTERVAL: Duration = Duration::from_secs(10);
/// Scheduled punches/responses kept at most (a lighthouse cannot make us queue more).
const MAX_SCHEDULED: usize = 1024;

/// Punch keepalive schedule and delayed punches/responses. Delays are constant, so each queue is
/// in time order.
pub(super) struct PunchState {
    next_keepalive: Option<Instant>,
    punches: VecDeque<(Instant, SocketAddr)>,
    responds: VecDeque<(Instant, VpnIp)>,
}

impl PunchState {
    pub(super) fn new(config: &NodeConfig, now: Instant) -> Self {
        PunchState {
            next_keepalive: config.punch.then_some(now),
            punches: VecDeque::new(),
            responds: VecDeque::new(),
        }
    }

    /// Turns the keepalive on (first one due now) or off (reload of `punchy.punch`).
    pub(super) fn set_keepalive(&mut self, on: bool, now: Instant) {
        match (on, self.next_keepalive.is_some()) {
            (true, false) => self.next_keepalive = Some(now),
            (false, _) => self.next_keepalive = None,
            (true, true) => {}
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        [
            self.next_keepalive,
            self.punches.front().map(|p| p.0),
            self.responds.front().map(|r| r.0),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl Node {
    /// Punches at each address after `punchy.delay`.
    pub(super) fn schedule_punches(&mut self, now: Instant, addrs: &[SocketAddr]) {
        let at = now + self.config.punch_delay;
        for a in addrs {
            if self.lh.punch.punches.len() >= MAX_SCHEDULED {
                self.drops.count(super::DropReason::OutputQueueFull);
                return;
            }
            self.lh.punch.punches.push_back((at, *a));
        }
    }

    /// Answers the querier after `respond_delay`.
    pub(super) fn schedule_respond(&mut self, now: Instant, vpn_ip: VpnIp) {
        let q = &mut self.lh.punch.responds;
        if q.len() < MAX_SCHEDULED && !q.iter().any(|(_, ip)| *ip == vpn_ip) {
            q.push_back((now + self.config.punch_respond_delay, vpn_ip));
        }
    }

    /// Fires due punches, responses and the keepalive.
    pub(super) fn punch_timers(&mut self, now: Instant) {
        while let Some(&(at, to)) = self.lh.punch.punches.front() {
            if at > now {
                break;
            }
            self.lh.punch.punches.pop_front();
            self.push_transmit(to, vec![0]);
        }
        while let Some(&(at, ip)) = self.lh.punch.responds.front() {
            if at > now {
                break;
            }
            self.lh.punch.responds.pop_front();
            self.punch_respond(now, ip);
        }
        if self.lh.punch.next_keepalive.is_some_and(|t| t <= now) {
            self.lh.punch.next_keepalive = Some(now + PUNCH_INTERVAL);
            self.punch_keepalive();
        }
    }

    fn punch_respond(&mut self, now: Instant, vpn_ip: VpnIp) {
        if vpn_ip == self.identity.vpn_ip {
            return;
        }
        if self.hostmap.host(vpn_ip).is_some() {
            self.send_test_request(now, vpn_ip);
        } else {
            self.connect(now, vpn_ip);
        }
    }

    /// 0x01 to every known address (tunnel remote and candidate list) of every host, or only
    /// to each tunnel's remote without `punchy.target_all_remotes`.
    fn punch_keepalive(&mut self) {
        let mut targets: Vec<SocketAddr> = Vec::new();
        let all = self.config.punch_target_all_remotes;
        for h in self.hostmap.hosts() {
            targets.extend(h.remote);
            if let Some(r) = self.remotes.get(&h.vpn_ip).filter(|_| all) {
                targets.extend(r.addrs());
            }
        }
        targets.sort();
        targets.dedup();
        for to in targets {
            self.push_transmit(to, vec![1]);
        }
    }
}

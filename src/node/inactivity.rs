//! `tunnels.drop_inactive` / `tunnels.inactivity_timeout` (Nebula 1.10+): a tunnel that carried
//! no traffic either way for the timeout is closed (with closeTunnel). A periodic sweep turns
//! each tunnel's "used since the last sweep" mark into a last-used time, as Nebula's connection
//! manager does on its ticks. Owns only the sweep; the marks are set by the data path.

use std::time::{Duration, Instant};

use super::types::VpnIp;
use super::Node;

/// Sweep period: a tenth of the timeout, between 1 s and 60 s (the close happens at most one
/// period late).
fn period(timeout: Duration) -> Duration {
    (timeout / 10).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

impl Node {
    /// Arms (or disarms) the sweep for the current config; called at start and after a reload.
    pub(super) fn arm_inactivity(&mut self, now: Instant) {
        self.inactivity_at = match (self.config.drop_inactive, self.inactivity_at) {
            (false, _) => None,
            (true, Some(at)) => Some(at),
            (true, None) => Some(now + period(self.config.inactivity_timeout)),
        };
    }

    /// Runs the sweep when due: closes tunnels idle for the timeout.
    pub(super) fn inactivity_timer(&mut self, now: Instant) {
        if self.inactivity_at.is_none_or(|at| at > now) {
            return;
        }
        self.inactivity_at = None;
        let timeout = self.config.inactivity_timeout;
        let mut idle: Vec<VpnIp> = Vec::new();
        for ip in self.hostmap.host_ips() {
            let Some(h) = self.hostmap.host_mut(ip) else {
                continue;
            };
            let l = &mut h.liveness;
            if l.used || l.last_used.is_none() {
                l.used = false;
                l.last_used = Some(now);
            } else if l
                .last_used
                .is_some_and(|t| now.saturating_duration_since(t) >= timeout)
            {
                idle.push(ip);
            }
        }
        for ip in idle {
            self.close_tunnel(now, ip);
        }
        self.arm_inactivity(now);
    }
}

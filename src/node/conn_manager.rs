//! Connection manager (`connection_manager.go` in 1.6.1): after outbound traffic, check within
//! connection_alive_interval whether anything came back; if not, send a TestRequest and delete
//! the tunnel after pending_deletion_interval unless traffic arrives. Tunnels that never send are
//! never checked. Deletion is local (no closeTunnel); new traffic then starts a fresh handshake.
//! With `pki.disconnect_invalid`, each check first re-verifies the peer's certificate at the
//! current wall-clock time and closes the tunnel with closeTunnel if it no longer verifies.

use std::time::Instant;

use super::types::VpnIp;
use super::{CloseReason, Event, Node};

impl Node {
    /// Runs the connection-manager check of `ip` if one is due.
    pub(super) fn liveness_timer(&mut self, now: Instant, ip: VpnIp) {
        let pending_deletion = self.config.pending_deletion_interval;
        let Some(h) = self.hostmap.host_mut(ip) else {
            return;
        };
        let due = h.liveness.check_at.is_some_and(|t| t <= now)
            || h.liveness.delete_at.is_some_and(|t| t <= now);
        if due && self.close_if_invalid(now, ip) {
            return;
        }
        let Some(h) = self.hostmap.host_mut(ip) else {
            return;
        };
        if h.liveness.check_at.is_some_and(|t| t <= now) {
            h.liveness.check_at = None;
            if h.liveness.saw_in {
                h.liveness.reset();
            } else {
                h.liveness.delete_at = Some(now + pending_deletion);
                self.arm_timer(now + pending_deletion, ip);
                self.send_test_request(now, ip);
            }
            return;
        }
        if h.liveness.delete_at.is_some_and(|t| t <= now) {
            if h.liveness.saw_in {
                h.liveness.reset();
            } else {
                self.hostmap.remove_host(ip);
                self.push_event(Event::TunnelClosed {
                    vpn_ip: ip,
                    reason: CloseReason::Silent,
                });
            }
        }
    }

    /// `pki.disconnect_invalid`: closes the tunnel to `ip` (telling the peer) if its certificate
    /// no longer verifies now. Returns whether it did.
    fn close_if_invalid(&mut self, now: Instant, ip: VpnIp) -> bool {
        if !self.config.disconnect_invalid {
            return false;
        }
        let unix_now = i64::try_from(self.wall_ns(now) / 1_000_000_000).unwrap_or(i64::MAX);
        let valid = match self.hostmap.host(ip) {
            Some(h) => self.verifier.still_valid(&h.peer, unix_now),
            None => return false,
        };
        if valid {
            return false;
        }
        self.close_tunnel(now, ip);
        true
    }
}

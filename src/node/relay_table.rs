//! The relay table: relay legs by our index and by (hop, peer), bounded per hop tunnel and in
//! total, and the handshakes a relay started on behalf of each requester (bounded per
//! requester). Pure bookkeeping for `relay`; no packets, crypto or clocks.

use std::collections::{BTreeMap, HashMap};

use crate::wire::RemoteIndex;

use super::types::{DropReason, VpnIp};

/// Legs one hop tunnel may carry (1.6.1 has no bound). One per far host reached through that
/// hop, so this caps how many peers one host can reach through one relay.
pub const MAX_LEGS_PER_HOP: usize = 1024;

/// Handshakes a relay keeps under way for one requester: a relay asked for hosts it has no
/// tunnel to starts handshakes to them (1.6.1 does so without limit), and one peer must not
/// be able to fill the pending table or make the relay probe the whole network.
pub const MAX_HANDSHAKES_PER_REQUESTER: usize = 8;

/// Our index for a relay leg (the outer remote index the next hop puts on packets for us).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayIndex(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayState {
    Requested,
    Established,
}

/// Terminal: we are an end of the relayed tunnel. Forwarding: we are the relay in the middle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayRole {
    Terminal,
    Forwarding,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLeg {
    pub local_index: RelayIndex,
    /// The hop's index for this leg, once known.
    pub remote_index: Option<RemoteIndex>,
    /// The tunnel the leg rides on.
    pub hop: VpnIp,
    /// The host at the far end.
    pub peer: VpnIp,
    pub state: RelayState,
    pub role: RelayRole,
}

/// All relay legs, by our index and by (hop, peer).
#[derive(Default, Debug)]
pub struct RelayTable {
    legs: HashMap<RelayIndex, RelayLeg>,
    by_route: BTreeMap<(VpnIp, VpnIp), RelayIndex>,
    per_hop: HashMap<VpnIp, usize>,
    /// Requester → hosts we started a handshake to because it asked us to relay there.
    /// Requesters have tunnels (bounded by the hostmap) and leave with them.
    started_for: BTreeMap<VpnIp, Vec<VpnIp>>,
}

impl RelayTable {
    pub fn leg(&self, idx: RelayIndex) -> Option<&RelayLeg> {
        self.legs.get(&idx)
    }

    pub fn find(&self, hop: VpnIp, peer: VpnIp) -> Option<&RelayLeg> {
        self.by_route
            .get(&(hop, peer))
            .and_then(|i| self.legs.get(i))
    }

    /// Does any leg ride on the tunnel to `hop`?
    pub fn carries(&self, hop: VpnIp) -> bool {
        self.per_hop.contains_key(&hop)
    }

    pub fn len(&self) -> usize {
        self.legs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.legs.is_empty()
    }

    pub fn legs(&self) -> impl Iterator<Item = &RelayLeg> {
        self.legs.values()
    }

    pub(super) fn free(&self, idx: RelayIndex) -> bool {
        idx.0 != 0 && !self.legs.contains_key(&idx)
    }

    /// Adds a leg, replacing any leg on the same (hop, peer).
    pub(super) fn insert(&mut self, leg: RelayLeg, max_total: usize) -> Result<(), DropReason> {
        self.remove_route(leg.hop, leg.peer);
        let on_hop = self.per_hop.get(&leg.hop).copied().unwrap_or(0);
        if on_hop >= MAX_LEGS_PER_HOP || self.legs.len() >= max_total {
            return Err(DropReason::RelayTableFull);
        }
        *self.per_hop.entry(leg.hop).or_default() += 1;
        self.by_route.insert((leg.hop, leg.peer), leg.local_index);
        self.legs.insert(leg.local_index, leg);
        Ok(())
    }

    pub(super) fn update(
        &mut self,
        idx: RelayIndex,
        f: impl FnOnce(&mut RelayLeg),
    ) -> Option<RelayLeg> {
        let leg = self.legs.get_mut(&idx)?;
        f(leg);
        Some(*leg)
    }

    pub(super) fn remove_route(&mut self, hop: VpnIp, peer: VpnIp) -> Option<RelayLeg> {
        let idx = self.by_route.remove(&(hop, peer))?;
        let leg = self.legs.remove(&idx)?;
        if let Some(n) = self.per_hop.get_mut(&hop) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_hop.remove(&hop);
            }
        }
        Some(leg)
    }

    /// May `requester` have one more handshake started on its behalf? Handshakes that are no
    /// longer `pending` (done or given up) stop counting.
    pub(super) fn admit_handshake_for(
        &mut self,
        requester: VpnIp,
        pending: impl Fn(VpnIp) -> bool,
    ) -> bool {
        let Some(started) = self.started_for.get_mut(&requester) else {
            return true;
        };
        started.retain(|t| pending(*t));
        if started.is_empty() {
            self.started_for.remove(&requester);
            return true;
        }
        started.len() < MAX_HANDSHAKES_PER_REQUESTER
    }

    /// Records a handshake to `target` started for `requester` (after `admit_handshake_for`).
    pub(super) fn record_handshake_for(&mut self, requester: VpnIp, target: VpnIp) {
        let started = self.started_for.entry(requester).or_default();
        if !started.contains(&target) && started.len() < MAX_HANDSHAKES_PER_REQUESTER {
            started.push(target);
        }
    }

    /// Handshakes started for `requester` and still counted against it.
    pub fn handshakes_for(&self, requester: VpnIp) -> usize {
        self.started_for.get(&requester).map_or(0, Vec::len)
    }

    /// The requester's tunnel went: it no longer holds handshakes of ours.
    pub(super) fn forget_requester(&mut self, requester: VpnIp) {
        self.started_for.remove(&requester);
    }

    /// Removes our own legs toward `peer` that never got established (its handshake gave up).
    pub(super) fn remove_requested_to(&mut self, peer: VpnIp) {
        let routes: Vec<(VpnIp, VpnIp)> = self
            .legs
            .values()
            .filter(|l| {
                l.peer == peer && l.role == RelayRole::Terminal && l.state == RelayState::Requested
            })
            .map(|l| (l.hop, l.peer))
            .collect();
        for (h, p) in routes {
            self.remove_route(h, p);
        }
    }

    /// Removes every leg riding on `hop`, and every leg we forward toward it. Our own
    /// (terminal) legs reaching it stay: they are paths, not tunnels, and a new handshake
    /// with that host reuses them.
    pub(super) fn remove_host(&mut self, hop: VpnIp) -> Vec<RelayLeg> {
        let routes: Vec<(VpnIp, VpnIp)> = self
            .by_route
            .iter()
            .filter(|((h, p), i)| {
                let forwarding = self
                    .legs
                    .get(i)
                    .is_some_and(|l| l.role == RelayRole::Forwarding);
                *h == hop || (*p == hop && forwarding)
            })
            .map(|(k, _)| *k)
            .collect();
        routes
            .into_iter()
            .filter_map(|(h, p)| self.remove_route(h, p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(i: u32, hop: u32, peer: u32) -> RelayLeg {
        RelayLeg {
            local_index: RelayIndex(i),
            remote_index: None,
            hop: VpnIp(hop),
            peer: VpnIp(peer),
            state: RelayState::Requested,
            role: RelayRole::Terminal,
        }
    }

    #[test]
    fn route_replacement_and_per_hop_bound() {
        let mut t = RelayTable::default();
        t.insert(leg(1, 10, 20), 1000).unwrap();
        t.insert(leg(2, 10, 20), 1000).unwrap();
        assert_eq!(t.len(), 1);
        assert!(t.leg(RelayIndex(1)).is_none());
        assert_eq!(
            t.find(VpnIp(10), VpnIp(20)).unwrap().local_index,
            RelayIndex(2)
        );
        for p in 0..MAX_LEGS_PER_HOP as u32 {
            t.insert(leg(100_000 + p, 11, 1000 + p), 1 << 20).unwrap();
        }
        assert_eq!(
            t.insert(leg(5000, 11, 99_999), 1 << 20),
            Err(DropReason::RelayTableFull),
            "per hop"
        );
        let total = t.len();
        assert_eq!(
            t.insert(leg(6000, 12, 1), total),
            Err(DropReason::RelayTableFull),
            "in total"
        );
        assert!(t.carries(VpnIp(11)) && !t.carries(VpnIp(12)));
    }

    #[test]
    fn handshakes_for_a_requester_are_bounded_and_expire() {
        let mut t = RelayTable::default();
        let a = VpnIp(1);
        for target in 0..MAX_HANDSHAKES_PER_REQUESTER as u32 {
            assert!(t.admit_handshake_for(a, |_| true));
            t.record_handshake_for(a, VpnIp(100 + target));
        }
        assert!(!t.admit_handshake_for(a, |_| true), "bound reached");
        assert!(t.admit_handshake_for(VpnIp(2), |_| true), "per requester");
        // One handshake finished: room for one more.
        assert!(t.admit_handshake_for(a, |ip| ip != VpnIp(100)));
        assert_eq!(t.handshakes_for(a), MAX_HANDSHAKES_PER_REQUESTER - 1);
        t.forget_requester(a);
        assert_eq!(t.handshakes_for(a), 0);
    }

    #[test]
    fn requested_legs_go_when_the_handshake_gives_up() {
        let mut t = RelayTable::default();
        t.insert(leg(1, 10, 20), 100).unwrap();
        t.insert(leg(2, 11, 20), 100).unwrap();
        t.update(RelayIndex(2), |l| l.state = RelayState::Established);
        t.remove_requested_to(VpnIp(20));
        assert!(t.leg(RelayIndex(1)).is_none());
        assert!(t.leg(RelayIndex(2)).is_some(), "established legs stay");
    }

    #[test]
    fn removing_a_host_drops_legs_on_and_to_it() {
        let mut t = RelayTable::default();
        t.insert(leg(1, 10, 20), 100).unwrap();
        t.insert(leg(2, 20, 10), 100).unwrap();
        t.insert(leg(3, 30, 40), 100).unwrap();
        t.insert(
            RelayLeg {
                role: RelayRole::Forwarding,
                ..leg(4, 50, 20)
            },
            100,
        )
        .unwrap();
        t.insert(leg(5, 60, 20), 100).unwrap();
        let gone = t.remove_host(VpnIp(20));
        assert_eq!(
            gone.len(),
            2,
            "the leg on 20 and the leg forwarded toward 20"
        );
        assert_eq!(t.len(), 3);
        assert!(
            t.find(VpnIp(60), VpnIp(20)).is_some(),
            "terminal path to 20 kept"
        );
        assert!(t.find(VpnIp(30), VpnIp(40)).is_some());
        assert!(t.free(RelayIndex(2)) && !t.free(RelayIndex(3)) && !t.free(RelayIndex(0)));
    }
}

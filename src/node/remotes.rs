//! Where a peer can be reached (`remote_list.go` in 1.6.1): static addresses from
//! `static_host_map`, addresses reported by each lighthouse (owner), and relays that can reach
//! the peer. Bounded like Nebula: at most 10 IPv4 and 10 IPv6 addresses and 10 relays per owner,
//! and a bounded number of owners.
//!
//! Pure data; the lighthouse client fills `learned`, the handshake manager reads
//! [`RemoteList::addrs`]. Callers filter what goes in (remote allow lists, unusable
//! addresses): everything stored here is a handshake and punch target.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::types::VpnIp;

const MAX_PER_FAMILY: usize = 10;
const MAX_RELAYS: usize = 10;
const MAX_OWNERS: usize = 16;

/// Candidate underlay addresses and relays of one peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteList {
    static_addrs: Vec<SocketAddr>,
    learned: BTreeMap<VpnIp, Vec<SocketAddr>>,
    relays: BTreeMap<VpnIp, Vec<VpnIp>>,
}

impl RemoteList {
    /// A list holding `static_host_map` entries (exempt from replacement).
    pub fn with_static(addrs: &[SocketAddr]) -> Self {
        RemoteList {
            static_addrs: cap(addrs.to_vec()),
            ..Self::default()
        }
    }

    /// Replaces the `static_host_map` entries (reload); learned addresses are kept.
    pub fn set_static(&mut self, addrs: &[SocketAddr]) {
        self.static_addrs = cap(addrs.to_vec());
    }

    /// Replaces what `owner` (a lighthouse) reported; false if too many owners already.
    pub fn set_learned(&mut self, owner: VpnIp, addrs: &[SocketAddr], relays: &[VpnIp]) -> bool {
        if !self.learned.contains_key(&owner) && self.learned.len() >= MAX_OWNERS {
            return false;
        }
        self.learned.insert(owner, cap(addrs.to_vec()));
        self.relays
            .insert(owner, relays.iter().copied().take(MAX_RELAYS).collect());
        true
    }

    /// Keeps only the learned addresses `keep` accepts (after a reload of the allow lists).
    pub fn retain_learned(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        for addrs in self.learned.values_mut() {
            addrs.retain(|a| keep(a));
        }
    }

    /// Forgets what `owner` reported (its tunnel died).
    pub fn forget_owner(&mut self, owner: VpnIp) {
        self.learned.remove(&owner);
        self.relays.remove(&owner);
    }

    /// All addresses, deduplicated, in handshake order: IPv6 before IPv4, then public before
    /// private, then by address and port (preferred_ranges will slot in first here).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self
            .static_addrs
            .iter()
            .chain(self.learned.values().flatten())
            .copied()
            .collect();
        v.sort_by_key(|a| (a.is_ipv4(), is_private(a), *a));
        v.dedup();
        v
    }

    /// Relays that can reach the peer, deduplicated.
    pub fn relays(&self) -> Vec<VpnIp> {
        let mut v: Vec<VpnIp> = self.relays.values().flatten().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    pub fn is_empty(&self) -> bool {
        self.static_addrs.is_empty() && self.learned.values().all(Vec::is_empty)
    }
}

/// Keeps the first 10 addresses of each family.
fn cap(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let (mut v4, mut v6) = (0, 0);
    addrs
        .into_iter()
        .filter(|a| {
            let n = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            *n <= MAX_PER_FAMILY
        })
        .collect()
}

fn is_private(a: &SocketAddr) -> bool {
    match a {
        SocketAddr::V4(v4) => v4.ip().is_private(),
        SocketAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn order_dedup_and_owners() {
        let mut r = RemoteList::with_static(&[sa("10.1.1.1:4242"), sa("198.51.100.1:4242")]);
        assert!(r.set_learned(
            VpnIp(1),
            &[sa("[2001:db8::1]:4242"), sa("10.1.1.1:4242")],
            &[VpnIp(9)]
        ));
        assert_eq!(
            r.addrs(),
            vec![
                sa("[2001:db8::1]:4242"),
                sa("198.51.100.1:4242"),
                sa("10.1.1.1:4242")
            ]
        );
        assert_eq!(r.relays(), vec![VpnIp(9)]);
        // A new answer from the same lighthouse replaces the old one.
        assert!(r.set_learned(VpnIp(1), &[], &[]));
        assert_eq!(r.addrs().len(), 2);
        assert!(r.relays().is_empty());
        r.forget_owner(VpnIp(1));
        assert!(!r.is_empty());
    }

    #[test]
    fn bounded() {
        let many: Vec<SocketAddr> = (0..50).map(|i| sa(&format!("192.0.2.{i}:1"))).collect();
        let mut r = RemoteList::default();
        assert!(r.set_learned(VpnIp(1), &many, &[VpnIp(2); 40]));
        assert_eq!(r.addrs().len(), 10);
        for owner in 2..=MAX_OWNERS as u32 {
            assert!(r.set_learned(VpnIp(owner), &many, &[]));
        }
        assert!(
            !r.set_learned(VpnIp(999), &many, &[]),
            "owner table is bounded"
        );
    }
}

//! The adapter that plugs `firewall::Firewall` into the node's [`PacketFilter`] hook: it lends the
//! firewall a borrowed `firewall::Peer` built from the node's verified [`PeerCert`], maps the
//! verdict, and builds reject replies when the configured action is `reject`.
//!
//! Owns the `Firewall` value (rules + conntrack). Must not parse rules, touch certificates or do
//! I/O; conntrack expiry runs when the driver calls [`PacketFilter::expire`] with its clock.

use std::time::Instant;

use crate::firewall::{self, reject, Action, Firewall, FirewallConfig, LocalIdentity, Verdict};

use super::{Direction, FilterVerdict, PacketFilter, PeerCert};

/// `firewall::Firewall` as the node's packet filter.
#[derive(Debug)]
pub struct FirewallFilter {
    fw: Firewall,
    /// Counters as last reported, so an idle firewall does not repeat itself in the log.
    reported: firewall::DropCounters,
}

impl FirewallFilter {
    pub fn new(config: FirewallConfig, local: LocalIdentity) -> Self {
        FirewallFilter {
            fw: Firewall::new(config, local),
            reported: firewall::DropCounters::default(),
        }
    }

    pub fn firewall(&self) -> &Firewall {
        &self.fw
    }

    /// For reload: new rules keep conntrack (entries are re-checked lazily).
    pub fn firewall_mut(&mut self) -> &mut Firewall {
        &mut self.fw
    }
}

impl PacketFilter for FirewallFilter {
    fn check(
        &mut self,
        now: Instant,
        dir: Direction,
        packet: &[u8],
        peer: &PeerCert,
    ) -> FilterVerdict {
        let direction = match dir {
            Direction::Inbound => firewall::Direction::Inbound,
            Direction::Outbound => firewall::Direction::Outbound,
        };
        let fw_peer = firewall::Peer {
            vpn_ip: peer.vpn_ip.addr(),
            name: &peer.name,
            groups: &peer.groups,
            issuer: &peer.issuer,
            ca_name: (!peer.issuer_name.is_empty()).then_some(peer.issuer_name.as_str()),
            ips: &peer.ips,
            subnets: &peer.subnets,
        };
        match self.fw.check_packet(packet, direction, &fw_peer, now) {
            Verdict::Allow => FilterVerdict::Allow,
            Verdict::Drop(firewall::DropReason::Malformed) => FilterVerdict::Drop,
            Verdict::Drop(_) => self.refuse(direction, packet),
        }
    }

    fn expire(&mut self, now: Instant) {
        self.fw.expire(now);
    }

    fn drop_report(&mut self) -> Option<String> {
        let now = *self.fw.drops();
        if now == self.reported {
            return None;
        }
        self.reported = now;
        let ct = self.fw.conntrack();
        Some(format!(
            "{} (conntrack {} of {} flows)",
            now.summary(),
            ct.len(),
            ct.capacity()
        ))
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

impl FirewallFilter {
    /// A refused packet is dropped, or answered (RST / ICMP prohibited) under `reject`.
    fn refuse(&self, direction: firewall::Direction, packet: &[u8]) -> FilterVerdict {
        if self.fw.action(direction) != Action::Reject {
            return FilterVerdict::Drop;
        }
        let mut out = [0u8; reject::MAX_REJECT_LEN];
        match reject::build_reject(packet, &mut out) {
            Some(n) => FilterVerdict::Reject(out[..n].to_vec()),
            None => FilterVerdict::Drop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rules::parse_rules;
    use crate::node::VpnIp;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn peer(name: &str, groups: &[&str]) -> PeerCert {
        PeerCert {
            vpn_ip: VpnIp::from(Ipv4Addr::new(10, 0, 0, 2)),
            ips: vec![Ipv4Addr::new(10, 0, 0, 2)],
            subnets: vec![],
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            fingerprint: "ff".into(),
            issuer: "aa".into(),
            issuer_name: "ca".into(),
            not_after: i64::MAX,
            cert: None,
        }
    }

    /// A TCP SYN src:sport -> dst:dport (20-byte IP header + 20-byte TCP header).
    fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[32] = 0x50;
        p[33] = 0x02;
        p
    }

    fn filter(inbound_yaml: &str, action: Action) -> FirewallFilter {
        let rules = |d: firewall::Direction, y: &str| {
            let v: serde_yaml::Value = serde_yaml::from_str(y).unwrap();
            parse_rules(d, &v, "firewall").unwrap().0
        };
        let cfg = FirewallConfig {
            inbound: rules(firewall::Direction::Inbound, inbound_yaml),
            outbound: rules(
                firewall::Direction::Outbound,
                "[{port: any, proto: any, host: any}]",
            ),
            inbound_action: action,
            ..FirewallConfig::default()
        };
        let local = LocalIdentity::new(vec![Ipv4Addr::new(10, 0, 0, 1)], vec![]);
        FirewallFilter::new(cfg, local)
    }

    #[test]
    fn rules_groups_and_conntrack_through_the_hook() {
        let mut f = filter("[{port: 22, proto: tcp, group: admin}]", Action::Drop);
        let now = Instant::now();
        let ssh_in = tcp([10, 0, 0, 2], [10, 0, 0, 1], 40000, 22);
        let admin = peer("a", &["admin"]);
        let plain = peer("b", &[]);
        assert_eq!(
            f.check(now, Direction::Inbound, &ssh_in, &plain),
            FilterVerdict::Drop
        );
        assert_eq!(
            f.check(now, Direction::Inbound, &ssh_in, &admin),
            FilterVerdict::Allow
        );
        // Outbound reply of the tracked flow is allowed; an unrelated inbound port is not.
        let reply = tcp([10, 0, 0, 1], [10, 0, 0, 2], 22, 40000);
        assert_eq!(
            f.check(now, Direction::Outbound, &reply, &admin),
            FilterVerdict::Allow
        );
        let web = tcp([10, 0, 0, 2], [10, 0, 0, 1], 40001, 80);
        assert_eq!(
            f.check(now, Direction::Inbound, &web, &admin),
            FilterVerdict::Drop
        );
        // A source address the peer's cert does not hold is refused.
        let spoof = tcp([10, 0, 0, 3], [10, 0, 0, 1], 40000, 22);
        assert_eq!(
            f.check(now, Direction::Inbound, &spoof, &admin),
            FilterVerdict::Drop
        );
        assert_eq!(f.firewall().conntrack().len(), 1);
        f.expire(now + Duration::from_secs(24 * 3600));
        assert_eq!(f.firewall().conntrack().len(), 0, "expiry sweeps conntrack");
        assert_eq!(
            f.check(now, Direction::Inbound, &[0x45, 0], &admin),
            FilterVerdict::Drop
        );
        let report = f.drop_report().expect("drops were counted");
        assert!(
            report.starts_with("inbound.malformed=1 inbound.remote_ip=1 inbound.no_rule=2 "),
            "{report}"
        );
        assert_eq!(f.drop_report(), None, "nothing new to report");
    }

    #[test]
    fn reject_action_builds_a_reset() {
        let mut f = filter("[]", Action::Reject);
        let syn = tcp([10, 0, 0, 2], [10, 0, 0, 1], 40000, 80);
        match f.check(Instant::now(), Direction::Inbound, &syn, &peer("a", &[])) {
            FilterVerdict::Reject(rst) => {
                assert_eq!(rst[9], 6, "a TCP reply");
                assert_eq!(&rst[12..16], &[10, 0, 0, 1]);
                assert_eq!(&rst[16..20], &[10, 0, 0, 2]);
                assert_ne!(rst[33] & 0x04, 0, "RST flag");
            }
            v => panic!("expected a reject, got {v:?}"),
        }
    }
}

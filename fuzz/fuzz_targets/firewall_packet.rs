//! Fuzzes the firewall's packet path: arbitrary bytes go through flow-key parsing, the full
//! check (rules, conntrack, reload) in both directions, and reject-reply building. Nothing may
//! panic, and conntrack must stay within its bound.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::firewall::reject::{build_reject, MAX_REJECT_LEN};
use meshd::firewall::{
    CidrSpec, Direction, Firewall, FirewallConfig, FlowPacket, Ipv4Net, LocalIdentity, Peer,
    PortSpec, Proto, Rule,
};

fn rule(direction: Direction, proto: Proto, port: PortSpec) -> Rule {
    Rule {
        direction,
        proto,
        port,
        host: None,
        groups: Vec::new(),
        cidr: None,
        local_cidr: None,
        ca_name: None,
        ca_sha: None,
    }
}

fn config(capacity: usize) -> FirewallConfig {
    let net = |a, b, c, d, p| Ipv4Net::new(Ipv4Addr::new(a, b, c, d), p).expect("valid prefix");
    let ssh = Rule {
        groups: vec!["ops".to_string()],
        ..rule(Direction::Inbound, Proto::Tcp, PortSpec::Range { start: 22, end: 22 })
    };
    let frags = Rule {
        host: Some("any".to_string()),
        ..rule(Direction::Inbound, Proto::Any, PortSpec::Fragment)
    };
    let udp = Rule {
        cidr: Some(CidrSpec::V4(net(10, 0, 0, 0, 8))),
        local_cidr: Some(CidrSpec::V4(net(10, 0, 0, 0, 24))),
        ca_sha: Some("ab".to_string()),
        ..rule(Direction::Inbound, Proto::Udp, PortSpec::Range { start: 1000, end: 2000 })
    };
    FirewallConfig {
        inbound: vec![ssh, frags, udp],
        outbound: vec![rule(Direction::Outbound, Proto::Any, PortSpec::Any)],
        conntrack_capacity: capacity,
        ..FirewallConfig::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let local = LocalIdentity::new(
        vec![Ipv4Addr::new(10, 0, 0, 1)],
        vec![Ipv4Net::new(Ipv4Addr::new(192, 168, 0, 0), 16).expect("valid prefix")],
    );
    let mut fw = Firewall::new(config(8), local);
    let groups = vec!["ops".to_string()];
    let ips = [Ipv4Addr::new(10, 0, 0, 2)];
    let subnets = [Ipv4Net::new(Ipv4Addr::new(0, 0, 0, 0), 1).expect("valid prefix")];
    let peer = Peer {
        vpn_ip: ips[0],
        name: "peer",
        groups: &groups,
        issuer: "ab",
        ca_name: Some("ca"),
        ips: &ips,
        subnets: &subnets,
    };
    let t0 = Instant::now();
    let mut out = [0u8; MAX_REJECT_LEN];
    // Treat the input as a stream of packets: 1 control byte, 1 length byte, then the packet.
    let mut rest = data;
    let mut step = 0u64;
    while let [ctl, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (pkt, next) = tail.split_at(n);
        rest = next;
        step += u64::from(*ctl >> 3);
        let dir = if ctl & 1 == 0 { Direction::Inbound } else { Direction::Outbound };
        if ctl & 6 == 6 {
            fw.replace_rules(config(8));
        }
        let now = t0 + Duration::from_secs(step * 7);
        let _ = fw.check_packet(pkt, dir, &peer, now);
        if let Ok(flow) = FlowPacket::parse(pkt, dir) {
            assert_eq!(flow.fragment, u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff != 0);
        }
        if let Some(len) = build_reject(pkt, &mut out) {
            assert!(len <= MAX_REJECT_LEN);
        }
        assert!(fw.conntrack().len() <= 8);
    }
});

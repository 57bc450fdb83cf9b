//! Firewall decisions end to end on packet bytes: address checks, rule matching details (ports,
//! fragments, ICMP, CA conditions, local_cidr), conntrack replies, expiry in virtual time, the
//! conntrack bound, reload re-checks and drop counters.

use meshd::firewall::{
    parse_rules, Action, ConntrackTimeouts, Direction, DropReason, Firewall, FirewallConfig,
    FlowPacket, Ipv4Net, LocalIdentity, PacketError, Peer, Rule, Verdict,
};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const ME: [u8; 4] = [10, 1, 0, 1];
const PEER: [u8; 4] = [10, 1, 0, 2];

fn rules(dir: Direction, yaml: &str) -> Vec<Rule> {
    let v: serde_yaml::Value = serde_yaml::from_str(yaml).expect("yaml");
    parse_rules(dir, &v, dir.config_key())
        .expect("rules parse")
        .0
}

fn config(inbound: &str, outbound: &str) -> FirewallConfig {
    FirewallConfig {
        inbound: rules(Direction::Inbound, inbound),
        outbound: rules(Direction::Outbound, outbound),
        ..FirewallConfig::default()
    }
}

fn local() -> LocalIdentity {
    LocalIdentity::new(
        vec![Ipv4Addr::from(ME)],
        vec![Ipv4Net::new(Ipv4Addr::new(192, 168, 50, 0), 24).expect("net")],
    )
}

struct PeerData {
    name: String,
    groups: Vec<String>,
    issuer: String,
    ca_name: Option<String>,
    ips: Vec<Ipv4Addr>,
    subnets: Vec<Ipv4Net>,
}

impl PeerData {
    fn new(name: &str, groups: &[&str]) -> PeerData {
        PeerData {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            issuer: "aa11".into(),
            ca_name: Some("ca-one".into()),
            ips: vec![Ipv4Addr::from(PEER)],
            subnets: vec![Ipv4Net::new(Ipv4Addr::new(172, 16, 0, 0), 16).expect("net")],
        }
    }

    fn peer(&self) -> Peer<'_> {
        Peer {
            vpn_ip: self.ips[0],
            name: &self.name,
            groups: &self.groups,
            issuer: &self.issuer,
            ca_name: self.ca_name.as_deref(),
            ips: &self.ips,
            subnets: &self.subnets,
        }
    }
}

/// An IPv4 packet; `frag_off` in 8-byte units.
fn ip(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag_off: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6..8].copy_from_slice(&frag_off.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    if proto == 1 {
        p[20] = 8; // echo request
        p[21] = 0;
    }
    p
}

fn tcp_in(dport: u16) -> Vec<u8> {
    ip(6, PEER, ME, 40000, dport, 0)
}

#[test]
fn default_deny_and_no_rule_counter() {
    let mut fw = Firewall::new(config("[]", "[]"), local());
    let pd = PeerData::new("peer", &[]);
    let now = Instant::now();
    let v = fw.check_packet(&tcp_in(22), Direction::Inbound, &pd.peer(), now);
    assert_eq!(v, Verdict::Drop(DropReason::NoRule));
    assert_eq!(fw.drops().get(Direction::Inbound, DropReason::NoRule), 1);
    assert_eq!(fw.drops().get(Direction::Outbound, DropReason::NoRule), 0);
}

#[test]
fn address_checks_come_first() {
    let mut fw = Firewall::new(
        config("[{port: any, proto: any, host: any}]", "[]"),
        local(),
    );
    let pd = PeerData::new("peer", &[]);
    let now = Instant::now();
    let p = pd.peer();
    // From the peer's vpn ip, and from inside its cert subnet: allowed.
    assert_eq!(
        fw.check_packet(&tcp_in(22), Direction::Inbound, &p, now),
        Verdict::Allow
    );
    let from_subnet = ip(6, [172, 16, 9, 9], ME, 1, 22, 0);
    assert_eq!(
        fw.check_packet(&from_subnet, Direction::Inbound, &p, now),
        Verdict::Allow
    );
    // Spoofed source: refused.
    let spoofed = ip(6, [10, 1, 0, 99], ME, 1, 22, 0);
    assert_eq!(
        fw.check_packet(&spoofed, Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::RemoteIp)
    );
    // Not for us: refused; our own unsafe subnet: allowed.
    let not_mine = ip(6, PEER, [10, 1, 0, 77], 1, 22, 0);
    assert_eq!(
        fw.check_packet(&not_mine, Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::LocalIp)
    );
    let to_subnet = ip(6, PEER, [192, 168, 50, 7], 1, 22, 0);
    assert_eq!(
        fw.check_packet(&to_subnet, Direction::Inbound, &p, now),
        Verdict::Allow
    );
    // Garbage.
    assert_eq!(
        fw.check_packet(&[0x45, 0], Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::Malformed)
    );
    let d = fw.drops();
    assert_eq!(d.get(Direction::Inbound, DropReason::RemoteIp), 1);
    assert_eq!(d.get(Direction::Inbound, DropReason::LocalIp), 1);
    assert_eq!(d.get(Direction::Inbound, DropReason::Malformed), 1);
    assert_eq!(d.total(), 3);
}

#[test]
fn another_peer_cannot_ride_a_tracked_flow() {
    let mut fw = Firewall::new(
        config("[]", "[{port: any, proto: any, host: any}]"),
        local(),
    );
    let a = PeerData::new("a", &[]);
    let mut b = PeerData::new("b", &[]);
    b.ips = vec![Ipv4Addr::new(10, 1, 0, 3)];
    b.subnets.clear();
    let now = Instant::now();
    let out = ip(17, ME, PEER, 5000, 53, 0);
    assert_eq!(
        fw.check_packet(&out, Direction::Outbound, &a.peer(), now),
        Verdict::Allow
    );
    let reply = ip(17, PEER, ME, 53, 5000, 0);
    assert_eq!(
        fw.check_packet(&reply, Direction::Inbound, &b.peer(), now),
        Verdict::Drop(DropReason::RemoteIp)
    );
    assert_eq!(
        fw.check_packet(&reply, Direction::Inbound, &a.peer(), now),
        Verdict::Allow
    );
}

#[test]
fn replies_pass_through_conntrack_and_new_flows_do_not() {
    let mut fw = Firewall::new(
        config("[]", "[{port: 443, proto: tcp, host: any}]"),
        local(),
    );
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let now = Instant::now();
    let syn = ip(6, ME, PEER, 40001, 443, 0);
    assert_eq!(
        fw.check_packet(&syn, Direction::Outbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(fw.conntrack().len(), 1);
    let synack = ip(6, PEER, ME, 443, 40001, 0);
    assert_eq!(
        fw.check_packet(&synack, Direction::Inbound, &p, now),
        Verdict::Allow
    );
    // Same peer opening its own connection to us: no inbound rule.
    let fresh = ip(6, PEER, ME, 443, 40002, 0);
    assert_eq!(
        fw.check_packet(&fresh, Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::NoRule)
    );
    // The flow key is shared: the reply and the request are one entry.
    let key = FlowPacket::parse(&synack, Direction::Inbound).expect("parses");
    assert_eq!(
        key,
        FlowPacket::parse(&syn, Direction::Outbound).expect("parses")
    );
    assert_eq!(fw.conntrack().len(), 1);
}

#[test]
fn entries_expire_and_hits_refresh_them() {
    let mut cfg = config("[]", "[{port: any, proto: any, host: any}]");
    cfg.timeouts = ConntrackTimeouts {
        tcp: Duration::from_secs(30),
        udp: Duration::from_secs(10),
        default: Duration::from_secs(20),
    };
    let mut fw = Firewall::new(cfg, local());
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let out = ip(17, ME, PEER, 5000, 53, 0);
    let back = ip(17, PEER, ME, 53, 5000, 0);
    assert_eq!(
        fw.check_packet(&out, Direction::Outbound, &p, at(0)),
        Verdict::Allow
    );
    // Refreshed at 8s, so alive at 17s, dead at 28s.
    assert_eq!(
        fw.check_packet(&back, Direction::Inbound, &p, at(8)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&back, Direction::Inbound, &p, at(17)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&back, Direction::Inbound, &p, at(28)),
        Verdict::Drop(DropReason::NoRule)
    );
    // TCP and ICMP use their own timeouts.
    let tcp = ip(6, ME, PEER, 1, 2, 0);
    let tcp_back = ip(6, PEER, ME, 2, 1, 0);
    let icmp = ip(1, ME, PEER, 0, 0, 0);
    let icmp_back = ip(1, PEER, ME, 0, 0, 0);
    assert_eq!(
        fw.check_packet(&tcp, Direction::Outbound, &p, at(100)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&icmp, Direction::Outbound, &p, at(100)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&icmp_back, Direction::Inbound, &p, at(119)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&tcp_back, Direction::Inbound, &p, at(129)),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&icmp_back, Direction::Inbound, &p, at(140)),
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(
        fw.check_packet(&tcp_back, Direction::Inbound, &p, at(160)),
        Verdict::Drop(DropReason::NoRule)
    );
    // Idle sweeping empties the table.
    fw.expire(at(1000));
    assert_eq!(fw.conntrack().len(), 0);
    assert!(fw.conntrack().stats().expired >= 3);
}

#[test]
fn conntrack_is_bounded() {
    let mut cfg = config("[]", "[{port: any, proto: any, host: any}]");
    cfg.conntrack_capacity = 3;
    cfg.timeouts.udp = Duration::from_secs(10);
    let mut fw = Firewall::new(cfg, local());
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let t0 = Instant::now();
    for port in 1..=3 {
        let pkt = ip(17, ME, PEER, port, 53, 0);
        assert_eq!(
            fw.check_packet(&pkt, Direction::Outbound, &p, t0),
            Verdict::Allow
        );
    }
    let fourth = ip(17, ME, PEER, 4, 53, 0);
    assert_eq!(
        fw.check_packet(&fourth, Direction::Outbound, &p, t0),
        Verdict::Drop(DropReason::ConntrackFull)
    );
    assert_eq!(
        fw.drops()
            .get(Direction::Outbound, DropReason::ConntrackFull),
        1
    );
    assert_eq!(fw.conntrack().stats().full, 1);
    // Tracked flows keep working at the cap.
    let back = ip(17, PEER, ME, 53, 2, 0);
    assert_eq!(
        fw.check_packet(&back, Direction::Inbound, &p, t0),
        Verdict::Allow
    );
    // Once entries expire, a new flow evicts them and gets in.
    let later = t0 + Duration::from_secs(11);
    assert_eq!(
        fw.check_packet(&fourth, Direction::Outbound, &p, later),
        Verdict::Allow
    );
    assert!(fw.conntrack().len() <= 3);
}

#[test]
fn reload_rechecks_old_entries() {
    let out_rules = "[{port: 80, proto: tcp, host: any}, {port: 53, proto: udp, host: any}]";
    let mut fw = Firewall::new(config("[]", out_rules), local());
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let now = Instant::now();
    let web = ip(6, ME, PEER, 1000, 80, 0);
    let dns = ip(17, ME, PEER, 1001, 53, 0);
    assert_eq!(
        fw.check_packet(&web, Direction::Outbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&dns, Direction::Outbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(fw.rules_version(), 0);

    // New rules keep DNS, drop web.
    fw.replace_rules(config("[]", "[{port: 53, proto: udp, host: any}]"));
    assert_eq!(fw.rules_version(), 1);
    assert_eq!(fw.conntrack().len(), 2);
    let web_back = ip(6, PEER, ME, 80, 1000, 0);
    let dns_back = ip(17, PEER, ME, 53, 1001, 0);
    assert_eq!(
        fw.check_packet(&web_back, Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(
        fw.check_packet(&dns_back, Direction::Inbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(fw.conntrack().stats().recheck_removed, 1);
    assert_eq!(fw.conntrack().len(), 1);
    let dns_key = FlowPacket::parse(&dns, Direction::Outbound).expect("parses");
    assert_eq!(
        fw.conntrack().get(&dns_key).map(|e| e.rules_version),
        Some(1)
    );
}

#[test]
fn rule_version_wraparound_resets_conntrack() {
    let cfg = config("[]", "[{port: any, proto: any, host: any}]");
    let mut fw = Firewall::new(cfg.clone(), local());
    let pd = PeerData::new("peer", &[]);
    let now = Instant::now();
    let pkt = ip(17, ME, PEER, 1, 2, 0);
    assert_eq!(
        fw.check_packet(&pkt, Direction::Outbound, &pd.peer(), now),
        Verdict::Allow
    );
    for _ in 0..u16::MAX {
        fw.replace_rules(cfg.clone());
    }
    assert_eq!(fw.rules_version(), u16::MAX);
    assert_eq!(fw.conntrack().len(), 1);
    fw.replace_rules(cfg);
    assert_eq!(fw.rules_version(), 0);
    assert_eq!(fw.conntrack().len(), 0);
}

#[test]
fn ports_fragments_and_icmp() {
    let inbound = "[{port: 1000-2000, proto: tcp, host: any}, {port: fragment, proto: udp, host: any}, {port: 8, proto: icmp, host: any}]";
    let mut fw = Firewall::new(config(inbound, "[]"), local());
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let now = Instant::now();
    let mut verdict = |pkt: &[u8]| fw.check_packet(pkt, Direction::Inbound, &p, now);
    assert_eq!(verdict(&tcp_in(1000)), Verdict::Allow);
    assert_eq!(verdict(&tcp_in(2000)), Verdict::Allow);
    assert_eq!(verdict(&tcp_in(2001)), Verdict::Drop(DropReason::NoRule));
    assert_eq!(verdict(&tcp_in(999)), Verdict::Drop(DropReason::NoRule));
    // The rule port is the destination: the source port does not count.
    assert_eq!(
        verdict(&ip(6, PEER, ME, 1500, 80, 0)),
        Verdict::Drop(DropReason::NoRule)
    );
    // A TCP range does not cover TCP fragments; the udp fragment rule covers udp fragments only.
    assert_eq!(
        verdict(&ip(6, PEER, ME, 1500, 1500, 100)),
        Verdict::Drop(DropReason::NoRule)
    );
    assert_eq!(verdict(&ip(17, PEER, ME, 9, 9, 100)), Verdict::Allow);
    // icmp with a port never matches (ICMP has port 0).
    assert_eq!(
        verdict(&ip(1, PEER, ME, 0, 0, 0)),
        Verdict::Drop(DropReason::NoRule)
    );

    let mut fw = Firewall::new(
        config("[{port: any, proto: any, host: any}]", "[]"),
        local(),
    );
    let mut verdict = |pkt: &[u8]| fw.check_packet(pkt, Direction::Inbound, &p, now);
    // port any covers fragments, ICMP and other protocols.
    assert_eq!(verdict(&ip(6, PEER, ME, 1, 1, 100)), Verdict::Allow);
    assert_eq!(verdict(&ip(1, PEER, ME, 0, 0, 0)), Verdict::Allow);
    assert_eq!(verdict(&ip(47, PEER, ME, 0, 0, 0)), Verdict::Allow);
}

#[test]
fn peer_selectors_and_ca_conditions() {
    let inbound = "[
        {port: 1, proto: tcp, host: web},
        {port: 2, proto: tcp, groups: [ops, admin]},
        {port: 3, proto: tcp, cidr: 172.16.5.0/24},
        {port: 4, proto: tcp, host: any, ca_sha: aa11},
        {port: 5, proto: tcp, host: any, ca_name: ca-one},
        {port: 6, proto: tcp, host: any, ca_name: other, ca_sha: aa11},
        {port: 7, proto: tcp, host: any, local_cidr: 192.168.50.0/24}
    ]";
    let mut fw = Firewall::new(config(inbound, "[]"), local());
    let now = Instant::now();
    let web = PeerData::new("web", &["ops"]);
    let ops = PeerData::new("db", &["ops", "admin"]);
    let mut foreign = PeerData::new("x", &[]);
    foreign.issuer = "bb22".into();
    foreign.ca_name = None;
    // Conntrack keys ignore the peer, so every probe uses a fresh source port.
    let mut sport = 10_000u16;
    let mut v = |pd: &PeerData, pkt: &[u8]| {
        let mut pkt = pkt.to_vec();
        sport += 1;
        pkt[20..22].copy_from_slice(&sport.to_be_bytes());
        fw.check_packet(&pkt, Direction::Inbound, &pd.peer(), now)
    };
    let allow = Verdict::Allow;
    let deny = Verdict::Drop(DropReason::NoRule);
    assert_eq!(v(&web, &ip(6, PEER, ME, 9, 1, 0)), allow);
    assert_eq!(v(&ops, &ip(6, PEER, ME, 9, 1, 0)), deny);
    assert_eq!(
        v(&web, &ip(6, PEER, ME, 9, 2, 0)),
        deny,
        "needs both groups"
    );
    assert_eq!(v(&ops, &ip(6, PEER, ME, 9, 2, 0)), allow);
    assert_eq!(v(&web, &ip(6, [172, 16, 5, 1], ME, 9, 3, 0)), allow);
    assert_eq!(v(&web, &ip(6, PEER, ME, 9, 3, 0)), deny);
    assert_eq!(v(&web, &ip(6, PEER, ME, 9, 4, 0)), allow);
    assert_eq!(v(&foreign, &ip(6, PEER, ME, 9, 4, 0)), deny);
    assert_eq!(v(&web, &ip(6, PEER, ME, 9, 5, 0)), allow);
    assert_eq!(v(&foreign, &ip(6, PEER, ME, 9, 5, 0)), deny);
    assert_eq!(
        v(&web, &ip(6, PEER, ME, 9, 6, 0)),
        allow,
        "ca_sha OR ca_name"
    );
    assert_eq!(
        v(&web, &ip(6, PEER, ME, 9, 7, 0)),
        deny,
        "local_cidr excludes our vpn ip"
    );
    assert_eq!(v(&web, &ip(6, PEER, [192, 168, 50, 3], 9, 7, 0)), allow);
}

#[test]
fn actions_are_reported() {
    let mut cfg = config("[]", "[]");
    cfg.inbound_action = Action::Reject;
    let fw = Firewall::new(cfg, local());
    assert_eq!(fw.action(Direction::Inbound), Action::Reject);
    assert_eq!(fw.action(Direction::Outbound), Action::Drop);
}

#[test]
fn packet_parser_survives_garbage() {
    for len in 0..60 {
        let mut p = tcp_in(80);
        p.truncate(len.min(p.len()));
        let r = FlowPacket::parse(&p, Direction::Inbound);
        match len {
            0..=19 => assert_eq!(r, Err(PacketError::TooShort)),
            20..=23 => assert_eq!(r, Err(PacketError::Truncated)),
            _ => assert!(r.is_ok()),
        }
    }
    // Deterministic pseudo-random garbage must never panic.
    let mut x: u32 = 0x1234_5678;
    for _ in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let len = (x % 80) as usize;
        let buf: Vec<u8> = (0..len)
            .map(|i| (x.rotate_left(i as u32) & 0xff) as u8)
            .collect();
        let _ = FlowPacket::parse(&buf, Direction::Outbound);
    }
}

#[test]
fn fragments_get_their_own_conntrack_entry() {
    let mut fw = Firewall::new(
        config("[]", "[{port: any, proto: udp, host: any}]"),
        local(),
    );
    let pd = PeerData::new("peer", &[]);
    let p = pd.peer();
    let now = Instant::now();
    let out = ip(17, ME, PEER, 5000, 53, 0);
    assert_eq!(
        fw.check_packet(&out, Direction::Outbound, &p, now),
        Verdict::Allow
    );
    // A non-first fragment of the reply has no ports and does not match the udp flow's entry.
    let reply_frag = ip(17, PEER, ME, 0, 0, 185);
    assert_eq!(
        fw.check_packet(&reply_frag, Direction::Inbound, &p, now),
        Verdict::Drop(DropReason::NoRule)
    );
    // Once a fragment went out (allowed by port any), fragments between the two hosts match it.
    let out_frag = ip(17, ME, PEER, 0, 0, 185);
    assert_eq!(
        fw.check_packet(&out_frag, Direction::Outbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(
        fw.check_packet(&reply_frag, Direction::Inbound, &p, now),
        Verdict::Allow
    );
    assert_eq!(fw.conntrack().len(), 2);
}

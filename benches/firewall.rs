//! Firewall hot path: packet parsing, rule matching (hit and miss), conntrack hit and miss, and
//! building a reject reply. Run with `cargo bench --bench firewall`.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use meshd::firewall::reject::{build_reject, MAX_REJECT_LEN};
use meshd::firewall::{
    parse_rules, Direction, Firewall, FirewallConfig, FlowPacket, LocalIdentity, Peer, Verdict,
};

const INBOUND: &str = "
- {port: any, proto: icmp, host: any}
- {port: 22, proto: tcp, groups: [ops, admin]}
- {port: 80, proto: tcp, group: web}
- {port: 443, proto: tcp, group: web}
- {port: 5000-6000, proto: udp, cidr: 10.9.0.0/16}
- {port: 9100, proto: tcp, host: prometheus}
- {port: 8080-8090, proto: tcp, ca_name: myca, group: dev}
- {port: 3306, proto: tcp, host: app1}
- {port: 3306, proto: tcp, host: app2}
- {port: 53, proto: udp, host: any}
";

fn firewall() -> Firewall {
    let v: serde_yaml::Value = serde_yaml::from_str(INBOUND).expect("bench yaml");
    let inbound = parse_rules(Direction::Inbound, &v, "firewall.inbound")
        .expect("rules")
        .0;
    let out: serde_yaml::Value =
        serde_yaml::from_str("[{port: any, proto: any, host: any}]").expect("bench yaml");
    let outbound = parse_rules(Direction::Outbound, &out, "firewall.outbound")
        .expect("rules")
        .0;
    let config = FirewallConfig {
        inbound,
        outbound,
        ..FirewallConfig::default()
    };
    Firewall::new(
        config,
        LocalIdentity::new(vec![Ipv4Addr::new(10, 1, 0, 1)], Vec::new()),
    )
}

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 60];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&60u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p
}

fn bench(c: &mut Criterion) {
    let groups = vec!["web".to_string(), "dev".to_string()];
    let ips = [Ipv4Addr::new(10, 1, 0, 2)];
    let peer = Peer {
        vpn_ip: ips[0],
        name: "host2",
        groups: &groups,
        issuer: "4b1d",
        ca_name: Some("myca"),
        ips: &ips,
        subnets: &[],
    };
    let me = [10, 1, 0, 1];
    let them = [10, 1, 0, 2];
    let t0 = Instant::now();

    let https = tcp(them, me, 40000, 443);
    c.bench_function("parse_flow", |b| {
        b.iter(|| FlowPacket::parse(black_box(&https), Direction::Inbound))
    });

    let fw = firewall();
    let allowed = FlowPacket::parse(&tcp(them, me, 40000, 8085), Direction::Inbound).expect("ok");
    let denied = FlowPacket::parse(&tcp(them, me, 40000, 3306), Direction::Inbound).expect("ok");
    c.bench_function("rules_match_hit", |b| {
        b.iter(|| fw.rules_allow(black_box(&allowed), Direction::Inbound, &peer))
    });
    c.bench_function("rules_match_miss", |b| {
        b.iter(|| fw.rules_allow(black_box(&denied), Direction::Inbound, &peer))
    });

    // A table with 10k tracked flows; the checked one is among them.
    let mut fw = firewall();
    for port in 0..10_000u16 {
        let p = tcp(me, them, 10_000 + port, 443);
        assert_eq!(
            fw.check_packet(&p, Direction::Outbound, &peer, t0),
            Verdict::Allow
        );
    }
    let reply = FlowPacket::parse(&tcp(them, me, 443, 10_500), Direction::Inbound).expect("ok");
    let mut now = t0;
    c.bench_function("check_conntrack_hit", |b| {
        b.iter(|| {
            now += Duration::from_nanos(1);
            fw.check(black_box(&reply), Direction::Inbound, &peer, now)
        })
    });
    c.bench_function("check_conntrack_miss_no_rule", |b| {
        b.iter(|| fw.check(black_box(&denied), Direction::Inbound, &peer, now))
    });
    c.bench_function("check_packet_bytes_hit", |b| {
        let bytes = tcp(them, me, 443, 10_500);
        b.iter(|| fw.check_packet(black_box(&bytes), Direction::Inbound, &peer, now))
    });

    let syn = tcp(them, me, 40000, 25);
    let mut out = [0u8; MAX_REJECT_LEN];
    c.bench_function("build_reject_tcp", |b| {
        b.iter(|| build_reject(black_box(&syn), &mut out))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

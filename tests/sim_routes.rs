//! Routing in the node, simulated: a packet for a network outside the VPN goes to the `via` peer
//! of the most specific unsafe route; a packet whose inner source is outside the sender's
//! certificate is refused; DF packets over the route MTU are answered with ICMP fragmentation
//! needed (type 3 code 4, next-hop MTU) on TUN instead of being sent.

mod node_sim;

use std::net::Ipv4Addr;
use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::node::{ipv4, DropReason, Ipv4Net, TunOutcome, UnsafeRoute, VpnIp};
use node_sim::Sim;

const S: Duration = Duration::from_secs(1);

fn net(s: &str) -> Ipv4Net {
    Ipv4Net::parse_cidr(s).unwrap()
}

fn with_df(mut p: Vec<u8>) -> Vec<u8> {
    p[6] = 0x40;
    p[10..12].copy_from_slice(&[0, 0]);
    let c = ipv4::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn sim() -> Sim {
    let mut sim = Sim::new(51, Cipher::AesGcm);
    sim.add_node_with(1, |c| {
        c.unsafe_routes = vec![
            UnsafeRoute {
                route: net("192.168.0.0/16"),
                via: VpnIp::from(Ipv4Addr::new(10, 0, 0, 3)),
                mtu: None,
            },
            UnsafeRoute {
                route: net("192.168.50.0/24"),
                via: VpnIp::from(Ipv4Addr::new(10, 0, 0, 2)),
                mtu: Some(1200),
            },
        ];
    });
    sim.add_node(2);
    sim.add_node(3);
    sim
}

#[test]
fn unsafe_route_picks_the_most_specific_via_peer() {
    let mut sim = sim();
    let src = sim.nodes[0].vpn_ip;
    let p = ipv4::echo_request(src, Ipv4Addr::new(192, 168, 50, 7), 1, 1, b"lan");
    sim.tun_in(0, &p);
    sim.run_for(S);
    assert!(
        sim.host(0, 1).is_some(),
        "tunnel to 10.0.0.2 (the /24's via)"
    );
    assert!(sim.host(0, 2).is_none(), "not to the /16's via");
    assert_eq!(
        sim.nodes[1].tun_packets, 1,
        "delivered to the via peer's TUN"
    );
    let p = ipv4::echo_request(src, Ipv4Addr::new(192, 168, 9, 9), 1, 2, b"lan");
    sim.tun_in(0, &p);
    sim.run_for(S);
    assert_eq!(sim.nodes[2].tun_packets, 1, "the /16 goes to 10.0.0.3");
    let p = ipv4::echo_request(src, Ipv4Addr::new(172, 16, 0, 1), 1, 3, b"x");
    assert_eq!(sim.tun_in(0, &p), TunOutcome::Dropped(DropReason::NoRoute));
}

#[test]
fn inner_source_outside_the_peer_certificate_is_refused() {
    let mut sim = sim();
    assert!(sim.ping_ok(1, 0, 1, S));
    // Node 2's certificate carries no subnets, so it cannot speak for 192.168.50.7.
    let dst = sim.nodes[0].vpn_ip;
    let spoofed = ipv4::echo_request(Ipv4Addr::new(192, 168, 50, 7), dst, 1, 2, b"x");
    let before = sim.nodes[0].tun_packets;
    sim.tun_in(1, &spoofed);
    sim.run_for(S);
    assert_eq!(sim.nodes[0].tun_packets, before);
    assert_eq!(
        sim.nodes[0]
            .node
            .drops()
            .get(DropReason::InnerSourceNotAllowed),
        1
    );
}

#[test]
fn df_packets_over_the_route_mtu_get_frag_needed() {
    let mut sim = sim();
    let src = sim.nodes[0].vpn_ip;
    let lan = Ipv4Addr::new(192, 168, 50, 7);
    // 1300-byte DF packet on the 1200-MTU unsafe route.
    let big = with_df(ipv4::echo_request(src, lan, 1, 1, &[7; 1272]));
    assert_eq!(sim.tun_in(0, &big), TunOutcome::Dropped(DropReason::TooBig));
    let reply = sim.nodes[0].local_tun.last().expect("ICMP on TUN").clone();
    assert_eq!(ipv4::checksum(&reply[..20]), 0);
    assert_eq!(ipv4::checksum(&reply[20..]), 0);
    assert_eq!((reply[20], reply[21]), (3, 4));
    assert_eq!(u16::from_be_bytes([reply[26], reply[27]]), 1200);
    assert_eq!(&reply[16..20], &src.octets(), "back to the sender");
    assert!(sim.host(0, 1).is_none(), "nothing was sent");
    // The same size without DF is sent; within the MTU with DF too.
    let no_df = ipv4::echo_request(src, lan, 1, 2, &[7; 1272]);
    assert_ne!(
        sim.tun_in(0, &no_df),
        TunOutcome::Dropped(DropReason::TooBig)
    );
    let fits = with_df(ipv4::echo_request(src, lan, 1, 3, &[7; 1100]));
    assert_ne!(
        sim.tun_in(0, &fits),
        TunOutcome::Dropped(DropReason::TooBig)
    );
    // Inside the VPN network the limit is tun.mtu (1300 by default).
    let peer = sim.nodes[1].vpn_ip;
    let vpn_big = with_df(ipv4::echo_request(src, peer, 1, 4, &[7; 1301 - 28]));
    assert_eq!(
        sim.tun_in(0, &vpn_big),
        TunOutcome::Dropped(DropReason::TooBig)
    );
    let vpn_ok = with_df(ipv4::echo_request(src, peer, 1, 5, &[7; 1300 - 28]));
    assert_ne!(
        sim.tun_in(0, &vpn_ok),
        TunOutcome::Dropped(DropReason::TooBig)
    );
}

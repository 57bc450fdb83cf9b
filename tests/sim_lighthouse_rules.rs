//! Lighthouse rules, one at a time, in the simulated network: HostQueryReply filtering
//! (remote_allow_list, remote_allow_ranges, own VPN network, 10 per family), answers and punch
//! notifications only from configured lighthouses, updates only about the sender itself, no
//! answers for unknown or static-only hosts, entries dropped with their tunnel, what a client
//! advertises, punch/respond timing, the 10 s keepalive and the DNS records.

mod node_sim;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use meshd::config::{AllowList, IpNet};
use meshd::crypto::Cipher;
use meshd::node::{DropReason, Ipv4Net, NodeConfig, VpnIp};
use meshd::wire::{MessageType, MetaType, NebulaMeta};
use node_sim::{kind, Sim, Tap};

const S: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn vpn(n: u8) -> VpnIp {
    VpnIp::from(Ipv4Addr::new(10, 0, 0, n))
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    let (a, p) = s.split_once('/').unwrap();
    IpNet::new(a.parse().unwrap(), p.parse().unwrap()).unwrap()
}

fn allow(rules: &[(&str, bool)]) -> AllowList {
    AllowList {
        rules: rules.iter().map(|(n, b)| (net(n), *b)).collect(),
    }
}

/// Node 0 = lighthouse 10.0.0.1; nodes 1.. = 10.0.0.2.. with `tweak`, all on the public
/// underlay, each knowing the lighthouse and each other statically.
fn network(seed: u64, clients: usize, tweak: impl Fn(&mut NodeConfig)) -> Sim {
    let mut sim = Sim::new(seed, Cipher::AesGcm);
    sim.full_mesh = false;
    let map: BTreeMap<VpnIp, Vec<SocketAddr>> = (1..=clients as u8 + 1)
        .map(|n| (vpn(n), vec![SocketAddr::from(([192, 0, 2, n], 4242))]))
        .collect();
    let m = map.clone();
    sim.add_node_with(1, move |c| {
        c.am_lighthouse = true;
        c.serve_dns = true;
        c.static_host_map = m;
        c.static_host_map
            .insert(vpn(9), vec![sa("192.0.2.99:4242")]);
    });
    for k in 0..clients {
        let m = map.clone();
        sim.add_node_with(2 + k as u8, |c| {
            c.lighthouses = vec![vpn(1)];
            c.static_host_map = m;
            tweak(c);
        });
    }
    sim.run_for(S);
    sim
}

fn meta(t: MetaType, vpn_ip: VpnIp, addrs: &[SocketAddr], relays: &[VpnIp]) -> NebulaMeta {
    NebulaMeta {
        r#type: t as i32,
        details: Some(meshd::node::lighthouse_details(vpn_ip, addrs, relays)),
    }
}

/// Node `i` sends `m` to `to` over their tunnel; the network runs for `dur`.
fn send(sim: &mut Sim, i: usize, to: VpnIp, m: &NebulaMeta, dur: Duration) {
    let now = sim.now;
    sim.nodes[i].node.send_lighthouse_message(now, to, m);
    sim.flush(i);
    sim.run_for(dur);
}

/// Records every datagram leaving any node: (time, from, to, bytes).
type Log = Rc<RefCell<Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>>>;

fn record(sim: &mut Sim) -> Log {
    let log: Log = Rc::default();
    let l = log.clone();
    sim.tap = Some(Box::new(move |d| {
        l.borrow_mut().push((d.at, d.from, d.to, d.bytes.clone()));
        Tap::Pass
    }));
    log
}

#[test]
fn query_reply_is_filtered_and_capped() {
    let mut sim = network(1, 1, |c| {
        c.remote_allow_list = Some(allow(&[("198.51.100.0/24", false), ("0.0.0.0/0", true)]));
        c.remote_allow_ranges = vec![(
            Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 8), 29).unwrap(),
            allow(&[("203.0.113.0/24", false), ("0.0.0.0/0", true)]),
        )];
    });
    let mut addrs = vec![sa("198.51.100.5:4242"), sa("10.0.0.50:4242")];
    addrs.extend((1..=12).map(|i| sa(&format!("203.0.113.{i}:4000"))));
    addrs.extend((1..=12).map(|i| sa(&format!("[2001:db8::{i}]:4000"))));
    let reply = meta(MetaType::HostQueryReply, vpn(20), &addrs, &[vpn(7)]);
    send(&mut sim, 0, vpn(2), &reply, 100 * MS);
    let r = sim.nodes[1].node.remotes(vpn(20)).expect("answer stored");
    let got = r.addrs();
    let v4: Vec<_> = got.iter().filter(|a| a.is_ipv4()).collect();
    assert_eq!(v4.len(), 10, "{got:?}");
    assert!(v4
        .iter()
        .all(|a| a.ip().to_string().starts_with("203.0.113.")));
    assert!(!v4.contains(&&sa("203.0.113.11:4000")), "first ten kept");
    assert_eq!(got.iter().filter(|a| a.is_ipv6()).count(), 10);
    assert_eq!(r.relays(), vec![vpn(7)]);
    // 10.0.0.9 lies in 10.0.0.8/29, whose extra list refuses 203.0.113.0/24.
    let reply = meta(MetaType::HostQueryReply, vpn(9), &addrs, &[]);
    send(&mut sim, 0, vpn(2), &reply, 100 * MS);
    let got = sim.nodes[1].node.remotes(vpn(9)).unwrap().addrs();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|a| a.is_ipv6()), "{got:?}");
}

#[test]
fn answers_and_punches_only_from_lighthouses() {
    let mut sim = network(2, 2, |c| c.punch_respond = true);
    let log = record(&mut sim);
    // 10.0.0.3 is an ordinary peer of 10.0.0.2, not its lighthouse.
    assert!(sim.ping_ok(1, 2, 1, S));
    let reply = meta(
        MetaType::HostQueryReply,
        vpn(20),
        &[sa("198.51.100.1:1")],
        &[],
    );
    send(&mut sim, 2, vpn(2), &reply, 100 * MS);
    assert!(sim.nodes[1].node.remotes(vpn(20)).is_none());
    let punch = meta(
        MetaType::HostPunchNotification,
        vpn(20),
        &[sa("198.51.100.1:1")],
        &[],
    );
    send(&mut sim, 2, vpn(2), &punch, 7 * S);
    let drops = sim.nodes[1].node.drops();
    assert_eq!(drops.get(DropReason::LightHouseNotLighthouse), 2);
    assert!(log
        .borrow()
        .iter()
        .all(|(_, _, to, _)| *to != sa("198.51.100.1:1")));
    assert!(
        sim.nodes[1].node.hostmap().pending(vpn(20)).is_none(),
        "no respond"
    );
}

#[test]
fn updates_only_about_the_sender() {
    let mut sim = network(3, 2, |_| {});
    let lie = meta(
        MetaType::HostUpdateNotification,
        vpn(3),
        &[sa("198.51.100.77:1")],
        &[],
    );
    send(&mut sim, 1, vpn(1), &lie, 100 * MS);
    let lh = &sim.nodes[0].node;
    assert_eq!(lh.drops().get(DropReason::LightHouseUpdateSpoofed), 1);
    let (addrs, _) = lh.lighthouse_entry(vpn(3)).unwrap();
    assert!(!addrs.contains(&sa("198.51.100.77:1")));
    let truth = meta(
        MetaType::HostUpdateNotification,
        vpn(2),
        &[sa("198.51.100.77:1"), sa("10.0.0.77:1")],
        &[vpn(3)],
    );
    send(&mut sim, 1, vpn(1), &truth, 100 * MS);
    let (addrs, relays) = sim.nodes[0].node.lighthouse_entry(vpn(2)).unwrap();
    assert_eq!(
        addrs,
        vec![sa("192.0.2.2:4242"), sa("198.51.100.77:1")],
        "learned first"
    );
    assert_eq!(relays, vec![vpn(3)]);
}

#[test]
fn query_answers_and_punch_notification() {
    let mut sim = network(4, 2, |_| {});
    let log = record(&mut sim);
    // 10.0.0.2 asks for 10.0.0.3: reply to it, punch notification to 10.0.0.3 about it.
    let q = meta(MetaType::HostQuery, vpn(3), &[], &[]);
    send(&mut sim, 1, vpn(1), &q, 100 * MS);
    let r = sim.nodes[1].node.remotes(vpn(3)).unwrap();
    assert!(r.addrs().contains(&sa("192.0.2.3:4242")));
    // Node 2 (10.0.0.3) punches 10.0.0.2's addresses one second later.
    sim.run_for(S);
    let punches: Vec<_> = log
        .borrow()
        .iter()
        .filter(|(_, from, _, b)| *from == sim.nodes[2].addr && b.as_slice() == [0])
        .map(|(_, _, to, _)| *to)
        .collect();
    assert!(punches.contains(&sa("192.0.2.2:4242")), "{punches:?}");
    // Unknown hosts and static-only entries of the lighthouse get no answer.
    let lh_before = sim.nodes[0]
        .node
        .drops()
        .get(DropReason::LightHouseUnknownHost);
    for target in [vpn(77), vpn(9)] {
        let q = meta(MetaType::HostQuery, target, &[], &[]);
        send(&mut sim, 1, vpn(1), &q, 100 * MS);
        assert!(sim.nodes[1].node.remotes(target).is_none());
    }
    let lh_after = sim.nodes[0]
        .node
        .drops()
        .get(DropReason::LightHouseUnknownHost);
    assert_eq!(lh_after - lh_before, 2);
    // Non-lighthouses do not answer queries.
    send(&mut sim, 1, vpn(3), &q, 100 * MS);
    assert_eq!(
        sim.nodes[2]
            .node
            .drops()
            .get(DropReason::LightHouseNotServing),
        1
    );
}

#[test]
fn entry_goes_with_the_tunnel() {
    let mut sim = network(5, 2, |_| {});
    assert!(sim.nodes[0].node.lighthouse_entry(vpn(2)).is_some());
    let now = sim.now;
    sim.nodes[1].node.close_tunnel(now, vpn(1));
    sim.flush(1);
    sim.run_for(100 * MS);
    assert!(sim.nodes[0].node.lighthouse_entry(vpn(2)).is_none());
    let q = meta(MetaType::HostQuery, vpn(2), &[], &[]);
    send(&mut sim, 2, vpn(1), &q, 100 * MS);
    let unknown = sim.nodes[0]
        .node
        .drops()
        .get(DropReason::LightHouseUnknownHost);
    assert_eq!(unknown, 1, "no answer about a host whose tunnel is gone");
}

#[test]
fn advertised_addresses() {
    let mut sim = network(6, 1, |c| {
        c.advertise_addrs = vec![
            sa("198.51.100.9:0"),
            sa("10.0.0.200:1"),
            sa("[2001:db8::9]:7"),
        ];
        c.local_allow_list = Some(allow(&[("172.16.0.0/12", false), ("0.0.0.0/0", true)]));
        c.advertise_relays = vec![vpn(5)];
        c.listen_port = 5555;
    });
    let locals: Vec<IpAddr> = [
        "127.0.0.1",
        "172.16.2.1",
        "fe80::1",
        "192.0.2.2",
        "10.0.0.2",
        "::",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let now = sim.now;
    sim.nodes[1].node.set_local_addrs(now, &locals);
    sim.flush(1);
    let want = vec![
        sa("198.51.100.9:5555"),
        sa("[2001:db8::9]:7"),
        sa("192.0.2.2:5555"),
    ];
    assert_eq!(sim.nodes[1].node.advertised_addrs(), want);
    // The change is announced at once.
    sim.run_for(100 * MS);
    let (addrs, relays) = sim.nodes[0].node.lighthouse_entry(vpn(2)).unwrap();
    // On the wire (and so in the entry) IPv4 comes before IPv6.
    let wire = [want[0], want[2], want[1]];
    assert_eq!(addrs[1..], wire[..]);
    assert_eq!(relays, vec![vpn(5)]);
}

#[test]
fn punch_and_respond_timing() {
    let mut sim = network(7, 1, |c| c.punch_respond = true);
    let log = record(&mut sim);
    let t0 = sim.now;
    let punch = meta(
        MetaType::HostPunchNotification,
        vpn(20),
        &[sa("198.51.100.1:1"), sa("198.51.100.2:2")],
        &[],
    );
    send(&mut sim, 0, vpn(2), &punch, 4900 * MS);
    assert!(sim.nodes[1].node.hostmap().pending(vpn(20)).is_none());
    sim.run_for(200 * MS);
    let zeros: Vec<_> = log
        .borrow()
        .iter()
        .filter(|(_, _, _, b)| b.as_slice() == [0])
        .map(|(at, _, to, _)| (*at - t0, *to))
        .collect();
    assert_eq!(zeros.len(), 2, "{zeros:?}");
    assert!(
        zeros.iter().all(|(d, _)| *d >= S && *d < S + 50 * MS),
        "{zeros:?}"
    );
    // Respond after 5 s: a handshake towards the querier, which starts with a HostQuery.
    assert!(sim.nodes[1].node.hostmap().pending(vpn(20)).is_some());
    let queries = log
        .borrow()
        .iter()
        .filter(|(at, from, _, b)| {
            *at - t0 >= 5 * S
                && *from == sim.nodes[1].addr
                && kind(b).map(|k| k.0) == Some(MessageType::LightHouse)
        })
        .count();
    assert!(queries >= 1);
}

/// `punchy.target_all_remotes`: on (meshd's default, 1.6.1's only behaviour) keepalive punches
/// reach every known address of a host with a tunnel; off, only the tunnel's current remote.
#[test]
fn target_all_remotes_picks_the_keepalive_targets() {
    let extra = sa("192.0.2.200:4242");
    let punched = |all: bool| {
        let mut sim = network(8, 2, |c| {
            c.punch = true;
            c.punch_target_all_remotes = all;
            c.static_host_map
                .get_mut(&vpn(3))
                .expect("node 3 is in the map")
                .push(extra);
        });
        assert!(
            sim.ping_ok(1, 2, 1, 5 * S),
            "no tunnel 10.0.0.2 -> 10.0.0.3"
        );
        let log = record(&mut sim);
        sim.run_for(21 * S);
        let from = sim.nodes[1].addr;
        let to_real = sim.nodes[2].addr;
        let ones = |to: SocketAddr| {
            log.borrow()
                .iter()
                .filter(|(_, f, t, b)| *f == from && *t == to && b.as_slice() == [1])
                .count()
        };
        (ones(to_real), ones(extra))
    };
    let (real, other) = punched(true);
    assert!(real >= 2 && other >= 2, "all remotes: {real} / {other}");
    let (real, other) = punched(false);
    assert!(real >= 2, "the current remote is still punched: {real}");
    assert_eq!(other, 0, "an address the tunnel does not use was punched");
}

#[test]
fn keepalive_punches_every_ten_seconds() {
    let mut sim = network(8, 1, |c| c.punch = true);
    let log = record(&mut sim);
    sim.run_for(25 * S);
    let ones: Vec<_> = log
        .borrow()
        .iter()
        .filter(|(_, from, _, b)| *from == sim.nodes[1].addr && b.as_slice() == [1])
        .map(|(_, _, to, _)| *to)
        .collect();
    assert_eq!(
        ones,
        vec![sim.nodes[0].addr; 2],
        "t=10s and t=20s to the lighthouse"
    );
}

#[test]
fn lighthouse_dns_records() {
    let sim = network(9, 2, |_| {});
    let lh = &sim.nodes[0].node;
    assert_eq!(lh.dns_lookup("node2."), Some(Ipv4Addr::new(10, 0, 0, 2)));
    assert_eq!(lh.dns_lookup("node3."), Some(Ipv4Addr::new(10, 0, 0, 3)));
    let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 5];
    q.extend_from_slice(b"node3");
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let a = lh.dns_answer(&q).unwrap();
    assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 3]);
    assert!(
        sim.nodes[1].node.dns_lookup("node3.").is_none(),
        "clients keep no records"
    );
}

/// Lighthouse DNS TXT as 1.6.1 answers it: for a VPN IP with a tunnel, the certificate as
/// quoted strings; only to queriers inside the VPN network or 127.0.0.1, and a refused TXT ends
/// the answer (an A answered before it is kept).
#[test]
fn lighthouse_dns_txt_answers_certificates() {
    let sim = network(9, 2, |_| {});
    let lh = &sim.nodes[0].node;
    let question = |name: &str, qtype: u8| {
        let mut q = Vec::new();
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, qtype, 0, 1]);
        q
    };
    let query = |qs: &[Vec<u8>]| {
        let mut q = vec![0x12, 0x34, 1, 0, 0, qs.len() as u8, 0, 0, 0, 0, 0, 0];
        qs.iter().for_each(|x| q.extend_from_slice(x));
        q
    };
    let txt = query(&[question("10.0.0.3", 16)]);
    let inside: IpAddr = "10.0.0.2".parse().unwrap();
    let a = lh.dns_answer_from(&txt, inside).unwrap();
    assert_eq!(&a[6..8], &[0, 1], "one TXT answer");
    let cert = sim.nodes[2].cert().clone();
    let strings = [
        "Name: node3".to_string(),
        "Ips: [10.0.0.3/24]".to_string(),
        "Subnets []".to_string(),
        format!("Groups [{}]", cert.groups().join(" ")),
    ];
    let mut want = Vec::new();
    for s in &strings {
        want.push(s.len() as u8);
        want.extend_from_slice(s.as_bytes());
    }
    let body = &a[12 + txt.len() - 12..];
    assert!(
        body.windows(want.len()).any(|w| w == want.as_slice()),
        "{:?}",
        String::from_utf8_lossy(body)
    );
    let text = String::from_utf8_lossy(body);
    for part in [
        "NotBefore ".to_string(),
        " +0000 UTC".to_string(),
        format!("PublicKey {}", hex::encode(cert.public_key())),
        "IsCA false".to_string(),
        format!("Issuer {}", cert.issuer().unwrap()),
    ] {
        assert!(text.contains(&part), "{part} missing: {text}");
    }
    for from in ["127.0.0.1", "::ffff:10.0.0.9"] {
        let a = lh.dns_answer_from(&txt, from.parse().unwrap()).unwrap();
        assert_eq!(&a[6..8], &[0, 1], "{from} may ask");
    }
    // From outside the VPN: nothing for the TXT, and nothing after it; an A before it stays.
    let outside: IpAddr = "192.0.2.50".parse().unwrap();
    let mixed = query(&[
        question("node2", 1),
        question("10.0.0.3", 16),
        question("node3", 1),
    ]);
    let a = lh.dns_answer_from(&mixed, outside).unwrap();
    assert_eq!(&a[6..8], &[0, 1], "only the A before the refused TXT");
    assert_eq!(&a[a.len() - 4..], &[10, 0, 0, 2]);
    let a = lh.dns_answer_from(&mixed, inside).unwrap();
    assert_eq!(&a[6..8], &[0, 3]);
    // No tunnel to that VPN IP, or not an IP: no answer.
    for name in ["10.0.0.9", "node3"] {
        let a = lh
            .dns_answer_from(&query(&[question(name, 16)]), inside)
            .unwrap();
        assert_eq!(&a[6..8], &[0, 0], "{name}");
    }
}

#[test]
fn remote_allow_list_refuses_handshake_sources() {
    // Every client refuses 192.0.2.2, the underlay address of 10.0.0.2.
    let deny = allow(&[("192.0.2.2/32", false), ("0.0.0.0/0", true)]);
    let mut sim = network(10, 2, |c| c.remote_allow_list = Some(deny.clone()));
    // 10.0.0.2 -> 10.0.0.3: the responder refuses the stage 1.
    assert!(!sim.ping_ok(1, 2, 1, 7 * S));
    assert!(sim.host(1, 2).is_none() && sim.host(2, 1).is_none());
    let refused = sim.nodes[2].node.drops().get(DropReason::RemoteNotAllowed);
    assert!(refused >= 1);
    // 10.0.0.3 -> 10.0.0.2: the refused static address is no handshake target at all
    // (1.6.1's addStaticRemote), so nothing is ever sent there.
    let log = record(&mut sim);
    assert!(!sim.ping_ok(2, 1, 2, 7 * S));
    assert!(sim.host(2, 1).is_none());
    let refused_addr = sa("192.0.2.2:4242");
    let from3 = sim.nodes[2].addr;
    assert!(
        !log.borrow()
            .iter()
            .any(|(_, f, t, _)| *f == from3 && *t == refused_addr),
        "node 3 sent to an address its remote_allow_list refuses"
    );
    // The lighthouse (192.0.2.1) is still fine.
    assert!(sim.host(2, 0).is_some());
}

#[test]
fn preferred_ranges_are_tried_first() {
    let mut sim = network(11, 1, |c| {
        c.preferred_ranges = vec![net("198.51.100.0/24")];
    });
    let log = record(&mut sim);
    let addrs = [
        sa("203.0.113.5:1"),
        sa("[2001:db8::5]:1"),
        sa("198.51.100.5:1"),
    ];
    let reply = meta(MetaType::HostQueryReply, vpn(20), &addrs, &[]);
    send(&mut sim, 0, vpn(2), &reply, 10 * MS);
    sim.ping(1, 0, 1); // unrelated traffic keeps the order check honest
    let p = meshd::node::ipv4::echo_request(
        Ipv4Addr::new(10, 0, 0, 2),
        Ipv4Addr::new(10, 0, 0, 20),
        1,
        1,
        b"x",
    );
    sim.tun_in(1, &p);
    let order: Vec<SocketAddr> = log
        .borrow()
        .iter()
        .filter(|(_, from, _, b)| {
            *from == sim.nodes[1].addr && kind(b) == Some((MessageType::Handshake, 1))
        })
        .map(|(_, _, to, _)| *to)
        .take(3)
        .collect();
    assert_eq!(order, vec![addrs[2], addrs[1], addrs[0]]);
}

#[test]
fn path_promotion_probes_preferred_addresses_and_requeries() {
    let mut sim = network(12, 2, |c| c.preferred_ranges = vec![net("172.16.0.0/12")]);
    assert!(sim.ping_ok(1, 2, 1, S));
    // The lighthouse tells 10.0.0.2 about a preferred (LAN) address of 10.0.0.3.
    let lan = sa("172.16.3.3:4242");
    let reply = meta(MetaType::HostQueryReply, vpn(3), &[lan], &[]);
    send(&mut sim, 0, vpn(2), &reply, 10 * MS);
    let log = record(&mut sim);
    let from = sim.nodes[1].addr;
    let sent = |log: &Log, t: MessageType, to: Option<SocketAddr>| {
        log.borrow()
            .iter()
            .filter(|(_, f, dst, b)| {
                *f == from && kind(b).map(|k| k.0) == Some(t) && to.is_none_or(|x| x == *dst)
            })
            .count()
    };
    for seq in 0..5000u16 {
        let p = meshd::node::ipv4::echo_request(
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
            9,
            seq,
            b"p",
        );
        sim.tun_in(1, &p);
        if seq % 100 == 0 {
            sim.run_for(MS);
        }
        if seq == 998 {
            assert_eq!(
                sent(&log, MessageType::Test, Some(lan)),
                0,
                "not before the 1000th"
            );
        }
    }
    sim.run_for(10 * MS);
    assert_eq!(
        sent(&log, MessageType::Test, Some(lan)),
        5,
        "a probe every 1000 packets"
    );
    let lh = sim.nodes[0].addr;
    assert_eq!(
        sent(&log, MessageType::LightHouse, Some(lh)),
        1,
        "re-query at 5000"
    );
}

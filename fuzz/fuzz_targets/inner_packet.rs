//! Fuzz the decrypted inner path of an established tunnel. Node a (10.0.0.1, group `ops`) has a
//! tunnel to node b (10.0.0.2: lighthouse with DNS, relay, firewall installed); the target seals
//! fuzzer bytes with a's session key under a fuzzer-chosen header, so b authenticates and
//! decrypts them and runs what follows: source check, firewall (drop or reject), TUN or the
//! ICMP echo answer with `tun.disabled`, test, closeTunnel, lighthouse and relay control
//! messages; recv_errors (unauthenticated by design) go in as bare headers.
//!
//! Input: one flags byte (bit 0 `tun.disabled`, bit 1 inbound reject, bit 2
//! `send_recv_error: never`), then records `[t, st, dctr, len, payload[len]]`:
//! - message type `t & 7` (7 means Message), subtype `st`;
//! - counter: ours plus `dctr`, or minus `dctr & 0x7f` when `dctr & 0x80` (replays, old counters);
//! - `t & 0x08`: the header names b's index + 1 (unknown index); `t & 0x10`: flip a tag byte;
//!   `t & 0x20`: sent from a new address (roaming); `t & 0x40`: the same datagram again;
//!   `t & 0x80`: advance time by `st` × 100 ms and run timers afterwards.
//! - recv_error: header only, naming b's index of a (`st & 1`), a's index, or the payload's first
//!   four bytes.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use meshd::firewall::{
    Action, Direction, FirewallConfig, Ipv4Net, LocalIdentity, PortSpec, Proto, Rule,
};
use meshd::node::filter::FirewallFilter;
use meshd::node::{ipv4, DatagramOutcome, Node, NodeConfig, SendRecvError, VpnIp};
use meshd::wire::{Header, MessageType, RemoteIndex, Subtype};
use node_common::{addr, vpn, NodeOpts, A_ADDR};

fn rule(direction: Direction, proto: Proto, port: PortSpec) -> Rule {
    Rule {
        direction,
        proto,
        port,
        host: Some("any".to_string()),
        groups: Vec::new(),
        cidr: None,
        local_cidr: None,
        ca_name: None,
        ca_sha: None,
    }
}

/// b's firewall: ICMP from anyone, ssh for group ops, dns from n1, http from the VPN /24.
fn firewall(reject: bool) -> FirewallFilter {
    let net = Ipv4Net::new(Ipv4Addr::new(10, 0, 0, 0), 24).expect("valid prefix");
    let tcp = |p| PortSpec::Range { start: p, end: p };
    let inbound = vec![
        rule(Direction::Inbound, Proto::Icmp, PortSpec::Any),
        Rule {
            host: None,
            groups: vec!["ops".to_string()],
            ..rule(Direction::Inbound, Proto::Tcp, tcp(22))
        },
        Rule {
            host: Some("n1".to_string()),
            ..rule(Direction::Inbound, Proto::Udp, tcp(53))
        },
        Rule {
            host: None,
            cidr: Some(meshd::firewall::CidrSpec::V4(net)),
            ..rule(Direction::Inbound, Proto::Tcp, tcp(80))
        },
    ];
    let config = FirewallConfig {
        inbound,
        outbound: vec![rule(Direction::Outbound, Proto::Any, PortSpec::Any)],
        inbound_action: if reject { Action::Reject } else { Action::Drop },
        conntrack_capacity: 16,
        ..FirewallConfig::default()
    };
    let local = LocalIdentity::new(vec![Ipv4Addr::new(10, 0, 0, 2)], Vec::new());
    FirewallFilter::new(config, local)
}

/// Both sides hold the tunnel; otherwise a re-handshakes (a moment later, so its Time is newer).
fn ensure_tunnel(now: &mut Instant, a: &mut Node, b: &mut Node) {
    if a.hostmap().host(vpn(2)).is_some() && b.hostmap().host(vpn(1)).is_some() {
        return;
    }
    *now += Duration::from_millis(1);
    a.close_tunnel(*now, vpn(2));
    while a.poll_transmit().is_some() {}
    a.connect(*now, vpn(2));
    node_common::exchange(*now, a, b);
}

/// The datagram for one record, sealed with a's session where the type is authenticated.
fn datagram(a: &Node, b: &Node, t: u8, st: u8, ctr: u64, payload: &[u8]) -> Option<Vec<u8>> {
    let host = a.hostmap().host(vpn(2))?;
    let mtype = MessageType::from_u8(t & 7).unwrap_or(MessageType::Message);
    if mtype == MessageType::RecvError {
        let index = match (st & 1, payload) {
            (_, [w0, w1, w2, w3, ..]) if st & 2 != 0 => u32::from_be_bytes([*w0, *w1, *w2, *w3]),
            (0, _) => b.hostmap().host(vpn(1))?.remote_index.0,
            _ => host.local_index.0,
        };
        let h = Header::new(mtype, Subtype(st), RemoteIndex(index), ctr);
        return Some(h.encode().to_vec());
    }
    let index = host.remote_index.0.wrapping_add(u32::from(t >> 3 & 1));
    let mut buf = vec![0u8; payload.len() + 2 * meshd::node::OVERHEAD];
    Header::new(mtype, Subtype(st), RemoteIndex(index), ctr).write_to(&mut buf);
    buf[16..16 + payload.len()].copy_from_slice(payload);
    let relay = mtype == MessageType::Message && Subtype(st) == Subtype::MESSAGE_RELAY;
    let len = if relay {
        host.session.seal_relay(ctr, &mut buf, payload.len()).ok()?
    } else {
        host.session
            .seal_in_place(ctr, &mut buf, payload.len())
            .ok()?
    };
    buf.truncate(len);
    if t & 0x10 != 0 {
        if let Some(last) = buf.last_mut() {
            *last ^= 1;
        }
    }
    Some(buf)
}

/// Delivers one datagram to b and checks what it hands to TUN.
fn deliver(now: Instant, b: &mut Node, from: SocketAddr, tun_disabled: bool, mut d: Vec<u8>) {
    if let DatagramOutcome::ToTun(range) = b.handle_datagram(now, from, &mut d) {
        assert!(!tun_disabled, "nothing reaches TUN with tun.disabled");
        assert!(range.end <= d.len());
        let info = ipv4::parse(&d[range]).expect("only IPv4 reaches TUN");
        assert_eq!(
            VpnIp::from(info.src),
            vpn(1),
            "inner source is the peer's cert IP"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let tun_disabled = flags & 1 != 0;
    let start = Instant::now();
    let base = NodeConfig {
        tun_disabled,
        send_recv_error: if flags & 4 != 0 {
            SendRecvError::Never
        } else {
            SendRecvError::Always
        },
        am_lighthouse: true,
        serve_dns: true,
        am_relay: true,
        ..NodeConfig::default()
    };
    let opts = NodeOpts {
        groups: vec!["ops".to_string()],
        ..NodeOpts::default()
    };
    let (mut a, mut b) = node_common::established_opts(start, &opts, base);
    b.set_filter(Box::new(firewall(flags & 2 != 0)));
    let mut now = start;
    let mut ctr: u64 = 1 << 20;
    while let [t, st, dctr, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(n);
        rest = next;
        ensure_tunnel(&mut now, &mut a, &mut b);
        ctr = if dctr & 0x80 != 0 {
            ctr.saturating_sub(u64::from(dctr & 0x7f))
        } else {
            ctr + u64::from(*dctr)
        };
        let from = match t & 0x20 {
            0 => addr(A_ADDR),
            _ => addr(([203, 0, 113, 9], 4000 + u16::from(*st))),
        };
        if let Some(d) = datagram(&a, &b, *t, *st, ctr, payload) {
            if t & 0x40 != 0 {
                deliver(now, &mut b, from, tun_disabled, d.clone());
            }
            deliver(now, &mut b, from, tun_disabled, d);
        }
        if t & 0x80 != 0 {
            now += Duration::from_millis(u64::from(*st) * 100);
            a.handle_timeout(now);
            b.handle_timeout(now);
        }
        // b's answers go to a (whose own answers come back); events are just drained.
        node_common::exchange(now, &mut a, &mut b);
        while a.poll_event().is_some() || b.poll_event().is_some() {}
        while b.poll_tun().is_some() {}
        assert!(b.hostmap().host_count() <= 1);
    }
});

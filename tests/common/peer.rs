//! A meshd node driven by an interop test over its own nonblocking socket on 127.0.0.1, with a
//! shim: datagrams to `blocked` addresses are dropped (cutting a direct path) and relay-framed
//! datagrams are counted. It only ever addresses loopback (asserted on every send).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use meshd::node::{ipv4, DatagramOutcome, Event, Node, NodeConfig, TunOutcome};
use meshd::wire::{Header, MessageType, Subtype};

pub struct Peer {
    pub node: Node,
    pub sock: UdpSocket,
    pub events: Vec<Event>,
    /// Packets the node delivered to its (absent) tun device.
    pub tun: Vec<Vec<u8>>,
    pub blocked: Vec<SocketAddr>,
    /// Relay-framed datagrams received / sent.
    pub relay_in: usize,
    pub relay_out: usize,
}

impl Peer {
    /// The node of `super::nebula::node` for `name`, listening on a fresh loopback socket.
    pub fn new(dir: &Path, name: &str, config: NodeConfig, seed: u64) -> Peer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_nonblocking(true).unwrap();
        let config = NodeConfig {
            listen_port: sock.local_addr().unwrap().port(),
            ..config
        };
        Peer {
            node: super::nebula::node(dir, name, config, seed),
            sock,
            events: vec![],
            tun: vec![],
            blocked: vec![],
            relay_in: 0,
            relay_out: 0,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&mut self, to: SocketAddr, bytes: &[u8]) {
        assert!(
            to.ip().is_loopback(),
            "only loopback is addressed, not {to}"
        );
        if self.blocked.contains(&to) {
            return;
        }
        if is_relay(bytes) {
            self.relay_out += 1;
        }
        let _ = self.sock.send_to(bytes, to);
    }

    /// Sends the node's queued datagrams and collects its events.
    pub fn flush(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            self.send(t.to, &t.bytes);
        }
        while let Some(e) = self.node.poll_event() {
            self.events.push(e);
        }
    }

    /// Feeds every datagram waiting on the socket to the node, then its timers, then flushes.
    pub fn step(&mut self) {
        let mut buf = vec![0u8; 9001];
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            if is_relay(&buf[..n]) {
                self.relay_in += 1;
            }
            let r = self
                .node
                .handle_datagram(Instant::now(), from, &mut buf[..n]);
            if let DatagramOutcome::ToTun(r) = r {
                self.tun.push(buf[r].to_vec());
            }
        }
        self.node.handle_timeout(Instant::now());
        self.flush();
    }

    /// Hands `packet` to the node as if read from its tun device and sends what comes out.
    pub fn send_tun(&mut self, packet: &[u8]) -> TunOutcome {
        let mut out = vec![0u8; packet.len() + 128];
        let r = self
            .node
            .handle_tun_packet(Instant::now(), packet, &mut out);
        if let TunOutcome::Send { to, len } = r {
            let bytes = out[..len].to_vec();
            self.send(to, &bytes);
        }
        self.flush();
        r
    }

    /// An echo reply from `from` with sequence `seq` reached the tun side.
    pub fn got_reply(&self, from: Ipv4Addr, seq: u16) -> bool {
        self.tun.iter().any(|p| {
            ipv4::parse(p).is_ok_and(|i| {
                i.src == from && p.get(20) == Some(&0) && p[26..28] == seq.to_be_bytes()
            })
        })
    }
}

pub fn is_relay(b: &[u8]) -> bool {
    Header::parse(b).is_ok_and(|h| {
        h.message_type == MessageType::Message && h.subtype == Subtype::MESSAGE_RELAY
    })
}

/// Steps every peer until `done` or `secs` pass.
pub fn until(
    peers: &mut [&mut Peer],
    secs: u64,
    mut done: impl FnMut(&[&mut Peer]) -> bool,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if done(peers) {
            return true;
        }
        for p in peers.iter_mut() {
            p.step();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done(peers)
}

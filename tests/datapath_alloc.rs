//! Steady state on both data paths allocates nothing per packet: TUN→UDP (split a TSO
//! superpacket, firewall, seal into a send slot) and UDP→TUN (open in place, firewall, queue in
//! the TUN coalescer and coalesce), counted with a counting global allocator over thousands of
//! packets between two simulated nodes with an established tunnel and a firewall on each. The
//! only allocations allowed are the node's path-promotion probe on every 1000th packet.

mod node_sim;

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meshd::crypto::Cipher;
use meshd::daemon::offload::{split, Coalescer, VIRTIO_NET_HDR_LEN};
use meshd::daemon::udp::SLOT_SIZE;
use meshd::firewall::{parse_rules, Direction, FirewallConfig, LocalIdentity};
use meshd::node::filter::FirewallFilter;
use meshd::node::{DatagramOutcome, TunOutcome};
use node_sim::Sim;

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarding the caller's arguments to the system allocator unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allow_all() -> FirewallConfig {
    let v: serde_yaml::Value =
        serde_yaml::from_str("[{port: any, proto: any, host: any}]").expect("yaml");
    FirewallConfig {
        inbound: parse_rules(Direction::Inbound, &v, "firewall.inbound")
            .expect("rules")
            .0,
        outbound: parse_rules(Direction::Outbound, &v, "firewall.outbound")
            .expect("rules")
            .0,
        ..FirewallConfig::default()
    }
}

/// A TSO superpacket (virtio-net header first) of `len` payload bytes from `src` to `dst`.
fn superpacket(src: Ipv4Addr, dst: Ipv4Addr, seq: u32, len: usize, mss: u16) -> Vec<u8> {
    let mut v = vec![0u8; VIRTIO_NET_HDR_LEN];
    v[0] = 1; // NEEDS_CSUM
    v[1] = 1; // TCPV4
    v[2..4].copy_from_slice(&40u16.to_le_bytes());
    v[4..6].copy_from_slice(&mss.to_le_bytes());
    v[6..8].copy_from_slice(&20u16.to_le_bytes());
    v[8..10].copy_from_slice(&16u16.to_le_bytes());
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((40 + len).min(65535) as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&500u16.to_be_bytes());
    p.extend((0..len).map(|i| i as u8));
    v.extend_from_slice(&p);
    v
}

#[test]
fn tun_to_udp_and_udp_to_tun_do_not_allocate() {
    let mut sim = Sim::new(41, Cipher::AesGcm);
    sim.add_node(1);
    sim.add_node(2);
    for (i, n) in sim.nodes.iter_mut().enumerate() {
        let ip = Ipv4Addr::new(10, 0, 0, i as u8 + 1);
        n.node.set_filter(Box::new(FirewallFilter::new(
            allow_all(),
            LocalIdentity::new(vec![ip], Vec::new()),
        )));
    }
    assert!(sim.ping_ok(0, 1, 1, Duration::from_secs(2)), "tunnel up");
    let (src, dst) = (sim.nodes[0].vpn_ip, sim.nodes[1].vpn_ip);
    let from = sim.nodes[0].addr;
    let now = sim.now;

    // Every buffer the daemon would own, allocated once.
    const MSS: u16 = 1260;
    const LEN: usize = 60_000;
    let mut read = superpacket(src, dst, 1, LEN, MSS);
    let mut packets: Vec<Vec<u8>> = (0..128).map(|_| vec![0u8; 1300]).collect();
    let mut sizes = vec![0usize; 128];
    let mut slots: Vec<Vec<u8>> = (0..128).map(|_| vec![0u8; SLOT_SIZE]).collect();
    let mut lens = vec![0usize; 128];
    let mut tun_out = Coalescer::new(64);

    let mut round = |seq: u32, read: &mut Vec<u8>| -> (usize, usize) {
        read[VIRTIO_NET_HDR_LEN + 24..VIRTIO_NET_HDR_LEN + 28].copy_from_slice(&seq.to_be_bytes());
        let n = split(read, &mut packets, &mut sizes).expect("split");
        // TUN → UDP on node 0: each packet sealed straight into its own send slot.
        for i in 0..n {
            match sim.nodes[0]
                .node
                .handle_tun_packet(now, &packets[i][..sizes[i]], &mut slots[i])
            {
                TunOutcome::Send { len, .. } => lens[i] = len,
                other => panic!("packet {i} not sealed: {other:?}"),
            }
        }
        // UDP → TUN on node 1: opened in place, queued, coalesced.
        let mut delivered = 0;
        for i in 0..n {
            let buf = &mut slots[i][..lens[i]];
            if let DatagramOutcome::ToTun(r) = sim.nodes[1].node.handle_datagram(now, from, buf) {
                if tun_out.is_full() {
                    tun_out.coalesce(true);
                    tun_out.clear();
                }
                assert!(tun_out.push(&buf[r]));
                delivered += 1;
            }
        }
        let writes = tun_out.coalesce(true).len();
        tun_out.clear();
        (delivered, writes)
    };

    // Warm-up: conntrack entries for the flow, first use of every buffer.
    let (d, _) = round(1, &mut read);
    assert_eq!(d, LEN.div_ceil(usize::from(MSS)));

    let before = ALLOCS.load(Ordering::SeqCst);
    assert!(before > 0, "the counting allocator sees allocations");
    let mut delivered = 0;
    let mut writes = 0;
    for r in 0..100u32 {
        let (d, w) = round(1 + (r + 1) * LEN as u32, &mut read);
        delivered += d;
        writes += w;
    }
    let allocs = ALLOCS.load(Ordering::SeqCst) - before;
    assert!(delivered >= 4000, "{delivered} packets went through");
    assert!(
        writes < delivered / 10,
        "coalescing merged segments: {writes} writes"
    );
    // The one allowance: path promotion (Nebula's TryPromoteBest) on every 1000th outbound
    // packet lists the peer's addresses to probe them, which allocates; nothing else may.
    let promotions = delivered / 1000 + 1;
    assert!(
        allocs <= 2 * promotions,
        "{allocs} allocations for {delivered} packets (at most {} for path promotion)",
        2 * promotions
    );
}

//! The per-packet path must not allocate: parse + check on conntrack hits, rule misses, address
//! drops and reject building are counted with a counting global allocator (this test binary only).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use meshd::firewall::reject::{build_reject, MAX_REJECT_LEN};
use meshd::firewall::{
    parse_rules, Direction, DropReason, Firewall, FirewallConfig, LocalIdentity, Peer, Verdict,
};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: forwarding the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr was allocated by System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[9] = 6;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x02;
    p
}

#[test]
fn packet_path_does_not_allocate() {
    let rules = "[{port: 22, proto: tcp, groups: [ops]}, {port: 80, proto: tcp, host: web}, {port: 1-100, proto: any, cidr: 10.0.0.0/8}]";
    let v: serde_yaml::Value = serde_yaml::from_str(rules).expect("yaml");
    let inbound = parse_rules(Direction::Inbound, &v, "firewall.inbound")
        .expect("rules")
        .0;
    let config = FirewallConfig {
        inbound,
        ..FirewallConfig::default()
    };
    let me = [10, 1, 0, 1];
    let them = [10, 1, 0, 2];
    let mut fw = Firewall::new(
        config,
        LocalIdentity::new(vec![Ipv4Addr::from(me)], Vec::new()),
    );
    let groups = vec!["ops".to_string()];
    let ips = [Ipv4Addr::from(them)];
    let peer = Peer {
        vpn_ip: ips[0],
        name: "web",
        groups: &groups,
        issuer: "ab",
        ca_name: None,
        ips: &ips,
        subnets: &[],
    };
    let t0 = Instant::now();
    let ssh = tcp(them, me, 40000, 22);
    let denied = tcp(them, me, 40000, 443);
    let spoofed = tcp([10, 9, 9, 9], me, 40000, 22);
    let mut out = [0u8; MAX_REJECT_LEN];
    // Warm up: the first allowed packet creates the conntrack entry (that may allocate).
    assert_eq!(
        fw.check_packet(&ssh, Direction::Inbound, &peer, t0),
        Verdict::Allow
    );

    let before = ALLOCS.load(Ordering::SeqCst);
    assert!(before > 0, "the counting allocator sees allocations");
    for i in 0..1000u64 {
        let now = t0 + Duration::from_millis(i);
        assert_eq!(
            fw.check_packet(&ssh, Direction::Inbound, &peer, now),
            Verdict::Allow
        );
        assert_eq!(
            fw.check_packet(&denied, Direction::Inbound, &peer, now),
            Verdict::Drop(DropReason::NoRule)
        );
        assert_eq!(
            fw.check_packet(&spoofed, Direction::Inbound, &peer, now),
            Verdict::Drop(DropReason::RemoteIp)
        );
        assert!(build_reject(&denied, &mut out).is_some());
    }
    let after = ALLOCS.load(Ordering::SeqCst);
    assert_eq!(after - before, 0, "allocations on the packet path");
}

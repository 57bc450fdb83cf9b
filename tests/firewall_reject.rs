//! Reject replies: parsed back and checked field by field, with checksums verified by an
//! independent one's-complement sum (a correct checksum makes the sum 0xffff).

use meshd::firewall::reject::{build_reject, MAX_REJECT_LEN};
use meshd::firewall::{Direction, FlowPacket};

const SRC: [u8; 4] = [10, 1, 0, 2];
const DST: [u8; 4] = [10, 1, 0, 1];

/// Sum of 16-bit words, folded (no final complement).
fn fold_sum(chunks: &[&[u8]]) -> u16 {
    let mut bytes = Vec::new();
    for c in chunks {
        bytes.extend_from_slice(c);
    }
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    let mut sum: u64 = bytes
        .chunks(2)
        .map(|w| u64::from(w[0]) << 8 | u64::from(w[1]))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn assert_ip_ok(reply: &[u8], proto: u8) {
    assert_eq!(reply[0], 0x45);
    assert_eq!(
        u16::from_be_bytes([reply[2], reply[3]]) as usize,
        reply.len()
    );
    assert_eq!(reply[9], proto);
    assert_eq!(
        &reply[12..16],
        &DST,
        "reply comes from the original destination"
    );
    assert_eq!(&reply[16..20], &SRC, "reply goes to the original source");
    assert_eq!(fold_sum(&[&reply[..20]]), 0xffff, "IPv4 header checksum");
}

/// TCP segment: seq, ack, flags, payload length.
fn tcp(seq: u32, ack: u32, flags: u8, payload: usize) -> Vec<u8> {
    let total = 20 + 20 + payload;
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&22u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = flags;
    p
}

fn other(proto: u8, first_byte: u8, len: usize) -> Vec<u8> {
    let mut p = vec![0xabu8; len];
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[6] = 0;
    p[7] = 0;
    p[9] = proto;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    p[20] = first_byte;
    p
}

fn reject(p: &[u8]) -> Option<Vec<u8>> {
    let mut out = [0u8; MAX_REJECT_LEN];
    build_reject(p, &mut out).map(|n| out[..n].to_vec())
}

fn check_tcp_rst(reply: &[u8]) -> (u32, u32, u8) {
    assert_eq!(reply.len(), 40);
    assert_ip_ok(reply, 6);
    let t = &reply[20..];
    assert_eq!(u16::from_be_bytes([t[0], t[1]]), 22, "ports swapped");
    assert_eq!(u16::from_be_bytes([t[2], t[3]]), 40000);
    assert_eq!(t[12] >> 4, 5);
    let pseudo = [&reply[12..20], &[0, 6, 0, 20][..]].concat();
    assert_eq!(fold_sum(&[&pseudo, t]), 0xffff, "TCP checksum");
    // The reply is itself a well-formed flow for the original sender.
    let flow = FlowPacket::parse(reply, Direction::Inbound).expect("reply parses");
    assert_eq!((flow.local_port, flow.remote_port), (40000, 22));
    let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
    let ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
    (seq, ack, t[13])
}

#[test]
fn syn_gets_rst_ack_acknowledging_the_syn() {
    let reply = reject(&tcp(1000, 0, 0x02, 0)).expect("reply");
    assert_eq!(check_tcp_rst(&reply), (0, 1001, 0x14));
}

#[test]
fn segment_with_ack_gets_rst_with_their_ack_as_seq() {
    let reply = reject(&tcp(7, 0xdead_beef, 0x18, 100)).expect("reply");
    assert_eq!(check_tcp_rst(&reply), (0xdead_beef, 0, 0x04));
}

#[test]
fn data_and_fin_without_ack_are_fully_acknowledged() {
    let reply = reject(&tcp(u32::MAX - 4, 0, 0x01, 10)).expect("reply");
    // seq + FIN + 10 bytes, wrapping.
    assert_eq!(check_tcp_rst(&reply), (0, 6, 0x14));
    // Trailing padding beyond the IP total length is not counted as payload.
    let mut padded = tcp(100, 0, 0x02, 0);
    padded.extend_from_slice(&[0; 6]);
    assert_eq!(
        check_tcp_rst(&reject(&padded).expect("reply")),
        (0, 101, 0x14)
    );
}

#[test]
fn no_reply_to_rst_fragments_or_truncated_tcp() {
    assert_eq!(reject(&tcp(1, 1, 0x04, 0)), None);
    let mut frag = tcp(1, 0, 0x02, 0);
    frag[7] = 3;
    assert_eq!(reject(&frag), None);
    assert_eq!(reject(&tcp(1, 0, 0x02, 0)[..39]), None);
    assert_eq!(reject(&[0x45; 10]), None);
    assert_eq!(reject(&[]), None);
}

#[test]
fn udp_and_icmp_echo_get_admin_prohibited() {
    for (proto, first) in [(17u8, 0x9cu8), (1, 8), (47, 0)] {
        let p = other(proto, first, 100);
        let reply = reject(&p).expect("reply");
        assert_eq!(reply.len(), 20 + 8 + 28, "quotes IP header + 8 bytes");
        assert_ip_ok(&reply, 1);
        let icmp = &reply[20..];
        assert_eq!((icmp[0], icmp[1]), (3, 13));
        assert_eq!(&icmp[4..8], &[0, 0, 0, 0]);
        assert_eq!(&icmp[8..], &p[..28]);
        assert_eq!(fold_sum(&[icmp]), 0xffff, "ICMP checksum");
    }
    // A short packet is quoted whole (odd length exercises the checksum's last byte).
    let p = other(17, 0, 23);
    let reply = reject(&p).expect("reply");
    assert_eq!(reply.len(), 20 + 8 + 23);
    assert_eq!(fold_sum(&[&reply[20..]]), 0xffff);
}

#[test]
fn no_reply_to_icmp_errors_multicast_or_small_buffers() {
    for t in [3u8, 4, 5, 11, 12] {
        assert_eq!(reject(&other(1, t, 60)), None, "icmp type {t}");
    }
    let mut mc = other(17, 0, 40);
    mc[16..20].copy_from_slice(&[224, 0, 0, 1]);
    assert_eq!(reject(&mc), None);
    let mut from_nowhere = other(17, 0, 40);
    from_nowhere[12..16].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(reject(&from_nowhere), None);
    let mut from_mc = other(17, 0, 40);
    from_mc[12..16].copy_from_slice(&[239, 1, 1, 1]);
    assert_eq!(reject(&from_mc), None);
    let mut small = [0u8; 30];
    assert_eq!(build_reject(&other(17, 0, 40), &mut small), None);
    let mut frag = other(17, 0, 40);
    frag[6] = 0x00;
    frag[7] = 0x10;
    assert_eq!(reject(&frag), None);
}

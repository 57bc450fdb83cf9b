//! Reject replies for `firewall.inbound_action` / `outbound_action: reject` (nebula master
//! `iputil/packet.go`, with Linux `nf_reject_ipv4.c` sequence numbers): a TCP RST for TCP, an
//! ICMP destination-unreachable "communication administratively prohibited" (type 3 code 13)
//! for everything else. Pure: builds bytes into the caller's buffer. Owns nothing else; whether
//! to reject, and where the reply goes (back through the tunnel or to the tun), is the caller's.
//!
//! Never answers: non-first fragments, ICMP error messages, TCP RSTs, packets to a multicast or
//! broadcast address or from an unanswerable source (0.0.0.0, multicast), or packets too short
//! to quote.
//!
//! Reply IPv4 header (20 bytes, no options), then the transport part:
//! ```text
//! TCP RST (20 bytes)                      ICMP unreachable (8 + quoted bytes)
//! +-----------+-----------+               +------+------+----------+
//! | src port  | dst port  | swapped       | 3    | 13   | checksum |
//! +-----------+-----------+               +------+------+----------+
//! |   seq = their ack or 0 |              |     unused (0)          |
//! |   ack = their seq + len|              +-------------------------+
//! | off=5 |flags| window 0 |              | their IP header + 8 bytes|
//! | checksum  | urgent 0   |              +-------------------------+
//! ```

use super::packet::{PROTO_ICMP, PROTO_TCP};

const IPV4_HEADER_LEN: usize = 20;
const TCP_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
/// Largest IPv4 header (ihl 15) plus the 8 transport bytes ICMP quotes.
const MAX_QUOTE: usize = 60 + 8;

/// A buffer of this size always fits any reject reply.
pub const MAX_REJECT_LEN: usize = IPV4_HEADER_LEN + ICMP_HEADER_LEN + MAX_QUOTE;

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// Builds the reject reply for `packet` (an IPv4 packet as it crossed the firewall) into `out`.
/// Returns the reply's length, or `None` when no reply must be sent or `out` is too small.
pub fn build_reject(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    let header = packet.get(..IPV4_HEADER_LEN)?;
    if header[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(header[0] & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN || packet.len() < ihl {
        return None;
    }
    if u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0 {
        return None; // non-first fragment: no transport header to answer
    }
    let src = [header[12], header[13], header[14], header[15]];
    let dst = [header[16], header[17], header[18], header[19]];
    if dst[0] >= 224 || src[0] >= 224 || src == [0; 4] {
        // Multicast, reserved or broadcast destination, or a source that cannot be answered
        // (RFC 1122 3.2.2).
        return None;
    }
    match header[9] {
        PROTO_TCP => build_tcp_rst(packet, ihl, out),
        _ => build_icmp_prohibited(packet, ihl, out),
    }
}

fn build_tcp_rst(packet: &[u8], ihl: usize, out: &mut [u8]) -> Option<usize> {
    let tcp_in = packet.get(ihl..ihl + TCP_HEADER_LEN)?;
    let flags = tcp_in[13];
    if flags & TCP_RST != 0 {
        return None; // never answer a reset with a reset (RFC 793)
    }
    let len = IPV4_HEADER_LEN + TCP_HEADER_LEN;
    let out = out.get_mut(..len)?;
    write_ip_header(packet, PROTO_TCP, len, out);

    // Linux nf_reject: if they acked something, our RST carries that as its seq; otherwise our
    // RST acks everything they sent (SYN and FIN count as one each) so the socket accepts it.
    let (seq, ack, out_flags) = if flags & TCP_ACK != 0 {
        (be32(&tcp_in[8..12]), 0, TCP_RST)
    } else {
        let consumed = u32::from(flags & TCP_SYN != 0) + u32::from(flags & TCP_FIN != 0);
        let ack = be32(&tcp_in[4..8])
            .wrapping_add(consumed)
            .wrapping_add(tcp_payload_len(packet, ihl, tcp_in[12]));
        (0, ack, TCP_RST | TCP_ACK)
    };
    let (ip, tcp) = out.split_at_mut(IPV4_HEADER_LEN);
    tcp[0..2].copy_from_slice(&tcp_in[2..4]);
    tcp[2..4].copy_from_slice(&tcp_in[0..2]);
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = ((TCP_HEADER_LEN / 4) as u8) << 4;
    tcp[13] = out_flags;
    tcp[14..20].fill(0);
    let pseudo = pseudo_header_sum(&ip[12..16], &ip[16..20], PROTO_TCP, TCP_HEADER_LEN as u32);
    let sum = checksum(tcp, pseudo);
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// Segment payload length from the IP total length (falling back to what we hold when the
/// header's length is inconsistent).
fn tcp_payload_len(packet: &[u8], ihl: usize, data_offset_byte: u8) -> u32 {
    let doff = usize::from(data_offset_byte >> 4) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let total = if total >= ihl && total <= packet.len() {
        total
    } else {
        packet.len()
    };
    total.saturating_sub(ihl + doff) as u32
}

fn build_icmp_prohibited(packet: &[u8], ihl: usize, out: &mut [u8]) -> Option<usize> {
    if packet[9] == PROTO_ICMP {
        // Never answer ICMP errors (unreachable, source quench, redirect, time exceeded,
        // parameter problem); a missing type byte is no error message.
        if let Some(3 | 4 | 5 | 11 | 12) = packet.get(ihl) {
            return None;
        }
    }
    let quoted = packet.len().min(ihl + 8);
    let len = IPV4_HEADER_LEN + ICMP_HEADER_LEN + quoted;
    let out = out.get_mut(..len)?;
    write_ip_header(packet, PROTO_ICMP, len, out);
    let icmp = &mut out[IPV4_HEADER_LEN..];
    icmp[0] = 3; // destination unreachable
    icmp[1] = 13; // communication administratively prohibited
    icmp[2..8].fill(0);
    icmp[8..].copy_from_slice(&packet[..quoted]);
    let sum = checksum(icmp, 0);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Some(len)
}

/// A 20-byte IPv4 header from their destination back to their source.
fn write_ip_header(packet: &[u8], protocol: u8, total_len: usize, out: &mut [u8]) {
    let ip = &mut out[..IPV4_HEADER_LEN];
    ip[0] = 0x45;
    ip[1] = 0;
    ip[2..4].copy_from_slice(&(total_len as u16).to_be_bytes());
    ip[4..8].fill(0); // id, flags, fragment offset
    ip[8] = 64; // ttl
    ip[9] = protocol;
    ip[10..12].fill(0);
    ip[12..16].copy_from_slice(&packet[16..20]);
    ip[16..20].copy_from_slice(&packet[12..16]);
    let sum = checksum(ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// RFC 1071 internet checksum of `data`, starting from a partial sum.
fn checksum(data: &[u8], initial: u32) -> u16 {
    let mut sum = initial;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    !(sum as u16)
}

fn pseudo_header_sum(src: &[u8], dst: &[u8], protocol: u8, len: u32) -> u32 {
    let word = |b: &[u8], i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
    word(src, 0)
        + word(src, 2)
        + word(dst, 0)
        + word(dst, 2)
        + u32::from(protocol)
        + (len & 0xffff)
        + (len >> 16)
}

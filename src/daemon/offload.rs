//! TUN offload framing, pure (no syscalls, no clocks): what a read from an `IFF_VNET_HDR` device
//! means and how packets are handed back to it.
//!
//! Owns the virtio-net header rules: [`split`] turns one read (`virtio_net_hdr ‖ IP packet or
//! TSO/USO superpacket`) into MTU-sized IP packets with their IPv4 and TCP/UDP lengths and
//! checksums fixed, and [`Coalescer`] merges consecutive TCP segments (and UDP datagrams of
//! one flow) before they are written. Must not touch the device (that is `tun`) or judge what
//! the packets carry (that is the node).
//!
//! Segmentation is tun-rs's `gso_split` (its port of wireguard-go's, hardened against malformed
//! headers; we check the header first and fix up un-segmented packets ourselves). Coalescing is
//! ours: tun-rs's GRO table (behind `send_multiple`) copies every packet into a fresh `Vec`, one
//! allocation per packet, which the data path must not do. The property tests in
//! `tests/offload_prop.rs` and the `tun_split` fuzz target hold both to this module's contract.

use std::io;

pub use tun_rs::{VirtioNetHdr, VIRTIO_NET_HDR_LEN};

/// The largest read from the device: a 64 KiB superpacket behind its virtio-net header.
pub const MAX_READ: usize = VIRTIO_NET_HDR_LEN + 65535;

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_UDP_L4: u8 = 5;
const GSO_TCPV6: u8 = 4;
const F_NEEDS_CSUM: u8 = 1;

/// How many IP packets one superpacket for a device of MTU `mtu` can become: the kernel cuts at
/// the MSS, which is at least `mtu - 60 - 60` (largest IPv4 and TCP headers).
pub fn max_segments(mtu: usize) -> usize {
    let mss = mtu.saturating_sub(120).max(8);
    65535 / mss + 1
}

/// Splits one device read (`read[..VIRTIO_NET_HDR_LEN]` the header, then the packet) into
/// `out[i][..sizes[i]]`, returning how many packets. A packet without segmentation is copied as
/// it is (its checksum completed when the kernel left it partial). Errors name what is wrong
/// with the header or packet; nothing is written past an output buffer's length.
pub fn split<B: AsRef<[u8]> + AsMut<[u8]>>(
    read: &mut [u8],
    out: &mut [B],
    sizes: &mut [usize],
) -> io::Result<usize> {
    if read.len() <= VIRTIO_NET_HDR_LEN {
        return Err(invalid("read shorter than the virtio-net header"));
    }
    if out.is_empty() || sizes.len() < out.len() {
        return Err(invalid("no output buffers"));
    }
    let (head, packet) = read.split_at_mut(VIRTIO_NET_HDR_LEN);
    let mut hdr = VirtioNetHdr::decode(head)?;
    if hdr.gso_type == GSO_NONE {
        return copy_whole(&hdr, packet, out, sizes);
    }
    let is_v6 = match packet[0] >> 4 {
        4 => false,
        6 => true,
        _ => return Err(invalid("superpacket is neither IPv4 nor IPv6")),
    };
    hdr.hdr_len = transport_end(&hdr, packet, is_v6)?;
    tun_rs::gso_split(packet, hdr, out, sizes, 0, is_v6)
}

/// The end of the transport header, from the packet itself: the kernel's `hdr_len` can be the
/// whole first segment on the forwarding path, so it is not trusted.
fn transport_end(hdr: &VirtioNetHdr, packet: &[u8], is_v6: bool) -> io::Result<u16> {
    let start = usize::from(hdr.csum_start);
    let len = match (hdr.gso_type & 0x7f, is_v6) {
        (GSO_UDP_L4, _) => 8,
        (GSO_TCPV4, false) | (GSO_TCPV6, true) => {
            let off = packet
                .get(start + 12)
                .ok_or_else(|| invalid("superpacket ends inside its TCP header"))?;
            let len = usize::from(off >> 4) * 4;
            if !(20..=60).contains(&len) {
                return Err(invalid("TCP data offset out of range"));
            }
            len
        }
        _ => return Err(invalid("GSO type does not match the IP version")),
    };
    let end = start + len;
    if end > packet.len() {
        return Err(invalid("superpacket ends inside its transport header"));
    }
    u16::try_from(end).map_err(|_| invalid("transport header beyond 64 KiB"))
}

fn copy_whole<B: AsRef<[u8]> + AsMut<[u8]>>(
    hdr: &VirtioNetHdr,
    packet: &mut [u8],
    out: &mut [B],
    sizes: &mut [usize],
) -> io::Result<usize> {
    if hdr.flags & F_NEEDS_CSUM != 0 {
        complete_checksum(packet, hdr.csum_start, hdr.csum_offset)?;
    }
    let dst = out[0].as_mut();
    if dst.len() < packet.len() {
        return Err(invalid("packet larger than an output buffer"));
    }
    dst[..packet.len()].copy_from_slice(packet);
    sizes[0] = packet.len();
    Ok(1)
}

/// `CHECKSUM_PARTIAL`: the field at `start + offset` holds the pseudo-header sum; fold in the
/// bytes from `start` to the end and store the complement.
fn complete_checksum(packet: &mut [u8], start: u16, offset: u16) -> io::Result<()> {
    let start = usize::from(start);
    let at = start + usize::from(offset);
    if at + 2 > packet.len() {
        return Err(invalid("checksum field beyond the packet"));
    }
    let seed = u16::from_be_bytes([packet[at], packet[at + 1]]);
    packet[at] = 0;
    packet[at + 1] = 0;
    let sum = fold(ones_sum(&packet[start..], u32::from(seed)));
    packet[at..at + 2].copy_from_slice(&(!sum).to_be_bytes());
    Ok(())
}

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded), plus `seed`.
/// Summed four bytes at a time: 2^16 ≡ 1 modulo 2^16 - 1, so 32-bit words fold to the same value.
pub fn ones_sum(data: &[u8], seed: u32) -> u64 {
    let mut sum = u64::from(seed);
    let mut quads = data.chunks_exact(4);
    for q in &mut quads {
        sum += u64::from(u32::from_be_bytes([q[0], q[1], q[2], q[3]]));
    }
    let mut words = quads.remainder().chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a one's-complement sum to 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Open flows one flush can merge into at once; more flows are written unmerged.
const MAX_FLOWS: usize = 16;
/// Segments merged into one write at most.
const MAX_MERGE: usize = 64;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;

/// Packets waiting to be written to the device, each behind `VIRTIO_NET_HDR_LEN` bytes of room
/// for its header, and the GRO merge of them: consecutive TCP segments of one flow (same
/// addresses, ports, ACK, TTL/TOS, options; contiguous sequence numbers; only the last may be
/// short or carry PSH) and equal-size UDP datagrams of one flow become one superpacket with a
/// TSO/USO virtio-net header and a partial checksum, as Linux GRO would build it. Only IPv4
/// without options or fragments is merged; everything else is written as it came. Each merged
/// packet's checksum is verified first, so the kernel never trusts a corrupt segment.
///
/// Buffers, the flow table and the write list are allocated once with room for a whole
/// superpacket each, so merging never allocates.
pub struct Coalescer {
    bufs: Vec<Vec<u8>>,
    meta: Vec<Meta>,
    filled: usize,
    flows: [(FlowKey, usize); MAX_FLOWS],
    nflows: usize,
    written: Vec<usize>,
}

/// What a buffer that heads a write knows about its merge.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    segs: usize,
    gso: usize,
    next_seq: u32,
    /// Another segment may still be appended (no short segment or PSH yet).
    open: bool,
    proto: u8,
    ihl: usize,
    l4h: usize,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FlowKey {
    proto: u8,
    addrs: [u8; 8],
    ports: [u8; 4],
    ack: u32,
}

/// A packet that may be merged, as parsed from its headers.
struct Candidate {
    key: FlowKey,
    ihl: usize,
    l4h: usize,
    seq: u32,
    payload: usize,
    psh: bool,
}

impl Coalescer {
    /// `slots` packets per flush.
    pub fn new(slots: usize) -> Self {
        let slots = slots.max(1);
        let bufs = (0..slots)
            .map(|_| {
                let mut b = Vec::with_capacity(MAX_READ);
                b.resize(VIRTIO_NET_HDR_LEN, 0);
                b
            })
            .collect();
        Coalescer {
            bufs,
            meta: vec![Meta::default(); slots],
            filled: 0,
            flows: [(FlowKey::default(), 0); MAX_FLOWS],
            nflows: 0,
            written: Vec::with_capacity(slots),
        }
    }

    /// True when the next [`push`](Self::push) would fail; flush first.
    pub fn is_full(&self) -> bool {
        self.filled == self.bufs.len()
    }

    /// Packets queued.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Queues a copy of one IP packet; false when full, empty or larger than 64 KiB.
    pub fn push(&mut self, packet: &[u8]) -> bool {
        if self.is_full() || packet.is_empty() || packet.len() > 65535 {
            return false;
        }
        let b = &mut self.bufs[self.filled];
        b.truncate(VIRTIO_NET_HDR_LEN);
        b.extend_from_slice(packet);
        self.filled += 1;
        true
    }

    /// Packet `i` as queued (or, after [`coalesce`](Self::coalesce), the whole buffer
    /// `header ‖ packet`, which is what an offloading device is handed).
    pub fn buf(&self, i: usize) -> &[u8] {
        &self.bufs[i]
    }

    /// The queued packets without header room, in order (for a device without offloads).
    pub fn packets(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.bufs[..self.filled]
            .iter()
            .map(|b| &b[VIRTIO_NET_HDR_LEN..])
    }

    /// Merges the queued packets in place and returns the buffers to write, in order, each
    /// `virtio_net_hdr ‖ packet or superpacket`. `udp`: the device takes USO too.
    pub fn coalesce(&mut self, udp: bool) -> &[usize] {
        self.nflows = 0;
        self.written.clear();
        for i in 0..self.filled {
            if !self.merge(i, udp) {
                self.written.push(i);
            }
        }
        for k in 0..self.written.len() {
            let w = self.written[k];
            finish(&mut self.bufs[w], &self.meta[w]);
        }
        &self.written
    }

    /// The buffers the last [`coalesce`](Self::coalesce) left to write, in order.
    pub fn written(&self) -> &[usize] {
        &self.written
    }

    /// Forgets every queued packet (buffers keep their capacity).
    pub fn clear(&mut self) {
        self.written.clear();
        for b in &mut self.bufs[..self.filled] {
            b.truncate(VIRTIO_NET_HDR_LEN);
        }
        self.filled = 0;
    }

    /// Appends packet `i` to the open write of its flow and returns true, or makes it the
    /// head of a new write and returns false.
    fn merge(&mut self, i: usize, udp: bool) -> bool {
        self.meta[i] = Meta {
            segs: 1,
            ..Meta::default()
        };
        let Some(c) = candidate(&self.bufs[i][VIRTIO_NET_HDR_LEN..], udp) else {
            return false;
        };
        let slot = self.flows[..self.nflows].iter().position(|f| f.0 == c.key);
        if let Some(f) = slot {
            let head = self.flows[f].1;
            if self.can_append(head, i, &c) {
                self.append(head, i, &c);
                return true;
            }
            self.flows[f].1 = i;
        } else if self.nflows < MAX_FLOWS {
            self.flows[self.nflows] = (c.key, i);
            self.nflows += 1;
        }
        self.meta[i] = Meta {
            segs: 1,
            gso: c.payload,
            next_seq: c.seq.wrapping_add(c.payload as u32),
            open: !c.psh,
            proto: c.key.proto,
            ihl: c.ihl,
            l4h: c.l4h,
        };
        false
    }

    fn can_append(&self, head: usize, i: usize, c: &Candidate) -> bool {
        let m = &self.meta[head];
        let h = &self.bufs[head][VIRTIO_NET_HDR_LEN..];
        let p = &self.bufs[i][VIRTIO_NET_HDR_LEN..];
        m.open
            && m.segs < MAX_MERGE
            && c.payload <= m.gso
            && (m.proto == UDP || c.seq == m.next_seq)
            && h.len() + c.payload <= 65535
            && c.ihl == m.ihl
            && c.l4h == m.l4h
            && h[1] == p[1] // TOS
            && h[6] >> 5 == p[6] >> 5 // DF/MF
            && h[8] == p[8] // TTL
            && (m.proto == UDP || h[m.ihl + 20..m.ihl + m.l4h] == p[c.ihl + 20..c.ihl + c.l4h])
    }

    fn append(&mut self, head: usize, i: usize, c: &Candidate) {
        let (lo, hi) = self.bufs.split_at_mut(i);
        let from = VIRTIO_NET_HDR_LEN + c.ihl + c.l4h;
        lo[head].extend_from_slice(&hi[0][from..]);
        let m = &mut self.meta[head];
        m.segs += 1;
        m.next_seq = c.seq.wrapping_add(c.payload as u32);
        if c.payload < m.gso {
            m.open = false;
        }
        if c.psh {
            m.open = false;
            lo[head][VIRTIO_NET_HDR_LEN + m.ihl + 13] |= TCP_PSH;
        }
    }
}

/// Parses an IPv4 TCP or UDP packet that GRO may merge: no IP options or fragments, lengths
/// consistent, a payload, TCP flags ACK or ACK|PSH only, a valid non-zero checksum.
fn candidate(p: &[u8], udp: bool) -> Option<Candidate> {
    if p.len() < 28 || p[0] != 0x45 {
        return None;
    }
    if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
        return None;
    }
    if p[6] & 0x3f != 0 || p[7] != 0 {
        return None; // MF or a fragment offset
    }
    let proto = p[9];
    let (l4h, seq, ack, psh) = match proto {
        TCP if p.len() >= 40 => {
            let l4h = usize::from(p[32] >> 4) * 4;
            let flags = p[33];
            if !(20..=60).contains(&l4h) || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
                return None;
            }
            let seq = u32::from_be_bytes([p[24], p[25], p[26], p[27]]);
            let ack = u32::from_be_bytes([p[28], p[29], p[30], p[31]]);
            (l4h, seq, ack, flags & TCP_PSH != 0)
        }
        UDP if udp => {
            if usize::from(u16::from_be_bytes([p[24], p[25]])) != p.len() - 20
                || p[26..28] == [0, 0]
            {
                return None;
            }
            (8, 0, 0, false)
        }
        _ => return None,
    };
    if p.len() <= 20 + l4h || !transport_checksum_ok(p, 20) {
        return None;
    }
    let mut key = FlowKey {
        proto,
        ack,
        ..FlowKey::default()
    };
    key.addrs.copy_from_slice(&p[12..20]);
    key.ports.copy_from_slice(&p[20..24]);
    Some(Candidate {
        key,
        ihl: 20,
        l4h,
        seq,
        payload: p.len() - 20 - l4h,
        psh,
    })
}

fn pseudo_sum(p: &[u8], ihl: usize) -> u64 {
    let l4 = (p.len() - ihl) as u64;
    ones_sum(&p[12..20], 0) + u64::from(p[9]) + l4
}

fn transport_checksum_ok(p: &[u8], ihl: usize) -> bool {
    fold(ones_sum(&p[ihl..], 0) + pseudo_sum(p, ihl)) == 0xffff
}

/// Writes the virtio-net header of a write: none for a single packet; for a merge, TSO/USO
/// with the lengths, the IPv4 header checksum and the partial transport checksum (the pseudo
/// header sum, which the kernel completes) redone once for the whole superpacket.
fn finish(buf: &mut [u8], m: &Meta) {
    let (head, p) = buf.split_at_mut(VIRTIO_NET_HDR_LEN);
    if m.segs < 2 {
        head.fill(0);
        return;
    }
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[10..12].fill(0);
    let ck = !fold(ones_sum(&p[..m.ihl], 0));
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let (gso_type, csum_offset) = if m.proto == TCP {
        (GSO_TCPV4, 16)
    } else {
        let ulen = (p.len() - m.ihl) as u16;
        p[m.ihl + 4..m.ihl + 6].copy_from_slice(&ulen.to_be_bytes());
        (GSO_UDP_L4, 6)
    };
    let partial = fold(pseudo_sum(p, m.ihl));
    let at = m.ihl + csum_offset;
    p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let hdr = VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: (m.ihl + m.l4h) as u16,
        gso_size: m.gso as u16,
        csum_start: m.ihl as u16,
        csum_offset: csum_offset as u16,
    };
    // The header room is exactly VIRTIO_NET_HDR_LEN bytes, so encoding cannot fail.
    let _ = hdr.encode(head);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_segments_covers_a_64k_superpacket() {
        // MTU 1300, MSS 1260: 52 segments.
        assert!(max_segments(1300) > 65535 / 1260);
        assert!(max_segments(68) > 1000);
    }

    #[test]
    fn short_and_garbage_reads_are_errors() {
        let mut out = vec![vec![0u8; 2000]; 4];
        let mut sizes = [0usize; 4];
        assert!(split(&mut [0u8; 10], &mut out, &mut sizes).is_err());
        let mut read = vec![0u8; 60];
        read[1] = GSO_TCPV4;
        read[VIRTIO_NET_HDR_LEN] = 0x20; // IP version 2
        assert!(split(&mut read, &mut out, &mut sizes).is_err());
    }

    #[test]
    fn partial_checksum_is_completed() {
        // UDP over IPv4, checksum left partial with the pseudo-header sum seeded.
        let mut pkt = vec![
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2, // IPv4
            0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, // UDP, len 12
            b'p', b'i', b'n', b'g',
        ];
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&pkt[12..16]);
        pseudo[4..8].copy_from_slice(&pkt[16..20]);
        pseudo[9] = 17;
        pseudo[10..].copy_from_slice(&12u16.to_be_bytes());
        let seed = fold(ones_sum(&pseudo, 0));
        pkt[26..28].copy_from_slice(&seed.to_be_bytes());
        let mut read = vec![0u8; VIRTIO_NET_HDR_LEN];
        read[0] = F_NEEDS_CSUM;
        read[6..8].copy_from_slice(&20u16.to_le_bytes()); // csum_start
        read[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset
        read.extend_from_slice(&pkt);
        let mut out = vec![vec![0u8; 100]; 1];
        let mut sizes = [0usize; 1];
        assert_eq!(split(&mut read, &mut out, &mut sizes).unwrap(), 1);
        let got = &out[0][..sizes[0]];
        let mut all = pseudo.to_vec();
        all.extend_from_slice(&got[20..]);
        assert_eq!(fold(ones_sum(&all, 0)), 0xffff, "UDP checksum verifies");
    }
}

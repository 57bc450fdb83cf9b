//! Split then coalesce (the TUN offload framing in `daemon::offload`) gives back the original
//! byte stream for random TCP and UDP superpackets over IPv4, and every packet produced on the
//! way carries valid IPv4 and TCP/UDP checksums and lengths.

use meshd::daemon::offload::{fold, ones_sum, split, Coalescer, VIRTIO_NET_HDR_LEN};
use proptest::prelude::*;

const TCP: u8 = 6;
const UDP: u8 = 17;

/// One superpacket as the kernel hands it to an offloading TUN reader.
#[derive(Debug, Clone)]
struct Super {
    proto: u8,
    ip_options: usize,  // bytes of IPv4 options (multiple of 4)
    tcp_options: usize, // bytes of TCP options (multiple of 4)
    gso_size: usize,
    payload: Vec<u8>,
    seq: u32,
    ip_id: u16,
    psh: bool,
}

fn superpacket() -> impl Strategy<Value = Super> {
    (
        prop_oneof![Just(TCP), Just(UDP)],
        0usize..=2,
        0usize..=5,
        256usize..=1400,
        1usize..=60_000,
        any::<u32>(),
        any::<u16>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(proto, ipo, tcpo, gso_size, len, seq, ip_id, psh, seed)| Super {
                proto,
                ip_options: ipo * 4,
                tcp_options: if proto == TCP { tcpo * 4 } else { 0 },
                gso_size,
                payload: bytes(len, seed),
                seq,
                ip_id,
                psh,
            },
        )
}

fn bytes(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 56) as u8
        })
        .collect()
}

const SRC: [u8; 4] = [10, 42, 0, 1];
const DST: [u8; 4] = [10, 42, 0, 2];

fn pseudo(proto: u8, l4_len: usize) -> u32 {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&SRC);
    p[4..8].copy_from_slice(&DST);
    p[9] = proto;
    p[10..].copy_from_slice(&(l4_len as u16).to_be_bytes());
    fold(ones_sum(&p, 0)) as u32
}

/// `virtio_net_hdr ‖ IPv4 ‖ TCP/UDP ‖ payload` with the transport checksum left partial (the
/// pseudo-header sum without length, as Linux leaves it for TSO/USO).
fn build(s: &Super) -> Vec<u8> {
    let ihl = 20 + s.ip_options;
    let l4h = if s.proto == TCP {
        20 + s.tcp_options
    } else {
        8
    };
    let total = ihl + l4h + s.payload.len();
    let mut p = vec![0u8; ihl + l4h];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&((total.min(65535)) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&s.ip_id.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = s.proto;
    p[12..16].copy_from_slice(&SRC);
    p[16..20].copy_from_slice(&DST);
    p[20..ihl].fill(1); // NOP options
    let ck = !fold(ones_sum(&p[..ihl], 0));
    p[10..12].copy_from_slice(&ck.to_be_bytes());
    let t = ihl;
    p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
    if s.proto == TCP {
        p[t + 4..t + 8].copy_from_slice(&s.seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&7u32.to_be_bytes());
        p[t + 12] = ((l4h / 4) as u8) << 4;
        p[t + 13] = 0x10 | if s.psh { 0x08 } else { 0 }; // ACK (+PSH)
        p[t + 14..t + 16].copy_from_slice(&500u16.to_be_bytes());
        p[t + 20..t + l4h].fill(1); // NOP options
        let seed = fold(ones_sum(&pseudo(TCP, 0).to_be_bytes()[2..], 0));
        p[t + 16..t + 18].copy_from_slice(&seed.to_be_bytes());
    } else {
        let ulen = (8 + s.payload.len()).min(65535) as u16;
        p[t + 4..t + 6].copy_from_slice(&ulen.to_be_bytes());
        let seed = fold(ones_sum(&pseudo(UDP, 0).to_be_bytes()[2..], 0));
        p[t + 6..t + 8].copy_from_slice(&seed.to_be_bytes());
    }
    p.extend_from_slice(&s.payload);
    let mut v = vec![0u8; VIRTIO_NET_HDR_LEN];
    v[0] = 1; // NEEDS_CSUM
    v[1] = if s.proto == TCP { 1 } else { 5 }; // TCPV4 / UDP_L4
    v[2..4].copy_from_slice(&((ihl + l4h) as u16).to_le_bytes());
    v[4..6].copy_from_slice(&(s.gso_size as u16).to_le_bytes());
    v[6..8].copy_from_slice(&(ihl as u16).to_le_bytes());
    v[8..10].copy_from_slice(&(if s.proto == TCP { 16u16 } else { 6 }).to_le_bytes());
    v.extend_from_slice(&p);
    v
}

/// Checks one plain IP packet's IPv4 and transport checksums and lengths; returns its payload
/// and (for TCP) its sequence number.
fn verify(pkt: &[u8], proto: u8) -> Result<(Vec<u8>, u32), String> {
    let ihl = usize::from(pkt[0] & 0x0f) * 4;
    if pkt[0] >> 4 != 4 || pkt.len() < ihl {
        return Err("not IPv4".into());
    }
    if fold(ones_sum(&pkt[..ihl], 0)) != 0xffff {
        return Err("IPv4 header checksum".into());
    }
    let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
    if total != pkt.len() {
        return Err(format!("IPv4 total length {total} != {}", pkt.len()));
    }
    if pkt[9] != proto {
        return Err("protocol".into());
    }
    let l4 = &pkt[ihl..];
    if fold(ones_sum(l4, pseudo(proto, l4.len()))) != 0xffff {
        return Err("transport checksum".into());
    }
    if proto == TCP {
        let off = usize::from(l4[12] >> 4) * 4;
        let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
        Ok((l4[off..].to_vec(), seq))
    } else {
        let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
        if ulen != l4.len() {
            return Err(format!("UDP length {ulen} != {}", l4.len()));
        }
        Ok((l4[8..].to_vec(), 0))
    }
}

fn out_bufs(n: usize) -> (Vec<Vec<u8>>, Vec<usize>) {
    (vec![vec![0u8; 1600]; n], vec![0usize; n])
}

/// Splits `read` and checks every packet; returns the payloads in order.
fn split_checked(read: &mut [u8], s: &Super) -> Result<Vec<Vec<u8>>, TestCaseError> {
    let (mut out, mut sizes) = out_bufs(300);
    let n = split(read, &mut out, &mut sizes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut payloads = Vec::new();
    let mut next_seq = None;
    for i in 0..n {
        let (payload, seq) = verify(&out[i][..sizes[i]], s.proto)
            .map_err(|e| TestCaseError::fail(format!("packet {i}: {e}")))?;
        prop_assert!(payload.len() <= s.gso_size, "segment larger than gso_size");
        if s.proto == TCP {
            if let Some(want) = next_seq {
                prop_assert_eq!(seq, want, "sequence numbers are contiguous");
            }
            next_seq = Some(seq.wrapping_add(payload.len() as u32));
        }
        payloads.push(payload);
    }
    Ok(payloads)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn split_then_coalesce_restores_the_stream(s in superpacket()) {
        let mut read = build(&s);
        let payloads = split_checked(&mut read, &s)?;
        prop_assert_eq!(payloads.len(), s.payload.len().div_ceil(s.gso_size));
        prop_assert_eq!(payloads.concat(), s.payload.clone(), "split keeps the byte stream");

        // The split packets, as they would arrive decrypted, coalesced for the TUN write.
        let (mut out, mut sizes) = out_bufs(300);
        let n = split(&mut build(&s), &mut out, &mut sizes).unwrap();
        let mut c = Coalescer::new(300);
        for i in 0..n {
            prop_assert!(c.push(&out[i][..sizes[i]]));
        }
        let written = c.coalesce(true).to_vec();
        prop_assert!(!written.is_empty());
        if s.ip_options == 0 && n > 1 {
            prop_assert!(written.len() < n, "segments of one flow were coalesced");
        }
        // Each written buffer is exactly what a TUN read looks like: split it again.
        let mut stream = Vec::new();
        for &w in &written {
            let b = c.buf(w);
            if b[0] & 1 != 0 {
                // A merged write: the kernel completes the transport checksum from the pseudo
                // header sum left in the field (and trusts it on local delivery).
                let start = usize::from(u16::from_le_bytes([b[6], b[7]]));
                let at = VIRTIO_NET_HDR_LEN + start + usize::from(u16::from_le_bytes([b[8], b[9]]));
                let l4_len = b.len() - VIRTIO_NET_HDR_LEN - start;
                let field = u16::from_be_bytes([b[at], b[at + 1]]);
                prop_assert_eq!(field, fold(u64::from(pseudo(s.proto, l4_len))), "partial checksum");
                let total = u16::from_be_bytes([b[VIRTIO_NET_HDR_LEN + 2], b[VIRTIO_NET_HDR_LEN + 3]]);
                prop_assert_eq!(usize::from(total), b.len() - VIRTIO_NET_HDR_LEN, "IPv4 total length");
                let ip = &b[VIRTIO_NET_HDR_LEN..VIRTIO_NET_HDR_LEN + start];
                prop_assert_eq!(fold(ones_sum(ip, 0)), 0xffff, "IPv4 header checksum");
            }
            let mut again = b.to_vec();
            for p in split_checked(&mut again, &s)? {
                stream.extend_from_slice(&p);
            }
        }
        prop_assert_eq!(stream, s.payload, "coalesce keeps the byte stream");
    }
}

#[test]
fn split_refuses_a_superpacket_larger_than_the_output() {
    let s = Super {
        proto: TCP,
        ip_options: 0,
        tcp_options: 0,
        gso_size: 256,
        payload: bytes(60_000, 1),
        seq: 1,
        ip_id: 1,
        psh: false,
    };
    let mut read = build(&s);
    let (mut out, mut sizes) = out_bufs(10);
    assert!(split(&mut read, &mut out, &mut sizes).is_err());
}

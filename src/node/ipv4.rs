//! The little IPv4/ICMP knowledge the node needs: source/destination of an inner packet, and
//! answering an ICMP echo request addressed to ourselves when the TUN device is disabled
//! (`overlay/tun_disabled.go` in Nebula).
//!
//! ```text
//! IPv4: 0 ver|ihl  1 tos  2-3 total len  ...  9 protocol  10-11 checksum  12-15 src  16-19 dst
//! ICMP (at ihl*4): 0 type  1 code  2-3 checksum  4.. identifier, sequence, data
//! ```

use std::net::Ipv4Addr;

use super::types::DropReason;

pub const PROTO_ICMP: u8 = 1;

/// Addresses of an IPv4 packet that passed the same minimum checks as Nebula's `newPacket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ihl: usize,
}

/// Validates just enough of an IPv4 header to route and filter it.
pub fn parse(p: &[u8]) -> Result<Ipv4Info, DropReason> {
    let first = *p.first().ok_or(DropReason::MalformedIp)?;
    if first >> 4 != 4 {
        return Err(DropReason::NotIpv4);
    }
    if p.len() < 20 {
        return Err(DropReason::MalformedIp);
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x1fff != 0;
    let protocol = p[9];
    // Ports must be readable unless it is a fragment or ICMP.
    let min = if ihl < 20 {
        return Err(DropReason::MalformedIp);
    } else if fragment || protocol == PROTO_ICMP {
        ihl
    } else {
        ihl + 4
    };
    if p.len() < min {
        return Err(DropReason::MalformedIp);
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    Ok(Ipv4Info {
        src,
        dst,
        protocol,
        ihl,
    })
}

/// If `p` is an ICMP echo request, the matching echo reply (addresses swapped, checksums fixed).
/// Like 1.6.1's disabled tun: only option-less (IHL 5), unfragmented packets of 28..=9001 bytes
/// whose ICMP type is 8; any destination (the firewall already checked it is ours).
pub fn echo_reply(p: &[u8]) -> Option<Vec<u8>> {
    let simple = (28..=9001).contains(&p.len()) && p[0] == 0x45 && p[9] == PROTO_ICMP;
    if !simple || p[20] != 8 || p[7] != 0 || p[6] & 0x2f != 0 {
        return None;
    }
    let info = parse(p).ok()?;
    let mut out = p.to_vec();
    out[12..16].copy_from_slice(&info.dst.octets());
    out[16..20].copy_from_slice(&info.src.octets());
    out[10..12].copy_from_slice(&[0, 0]);
    let c = checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    let icmp = &mut out[20..];
    icmp[0] = 0;
    icmp[2..4].copy_from_slice(&[0, 0]);
    let c = checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// ICMP "fragmentation needed" (type 3 code 4, RFC 1191) from `from` back to the sender of
/// `p`, carrying `mtu` as the next-hop MTU. `None` when RFC 1122 forbids an ICMP error: not a
/// first fragment, DF not set, or `p` is itself an ICMP error.
///
/// ```text
/// 0-19 IPv4 header (from -> p.src, TTL 64, proto 1)
/// 20 type=3  21 code=4  22-23 checksum  24-25 unused  26-27 next-hop MTU
/// 28.. p's IP header + first 8 bytes of its payload
/// ```
pub fn frag_needed(p: &[u8], from: Ipv4Addr, mtu: u16) -> Option<Vec<u8>> {
    let info = parse(p).ok()?;
    let flags_frag = u16::from_be_bytes([p[6], p[7]]);
    let df = flags_frag & 0x4000 != 0;
    let first_fragment = flags_frag & 0x1fff == 0;
    if !df || !first_fragment || is_icmp_error(p, &info) {
        return None;
    }
    let quoted = &p[..p.len().min(info.ihl + 8)];
    let total = 28 + quoted.len();
    let mut out = vec![0u8; total];
    out[0] = 0x45;
    out[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    out[8] = 64;
    out[9] = PROTO_ICMP;
    out[12..16].copy_from_slice(&from.octets());
    out[16..20].copy_from_slice(&info.src.octets());
    let c = checksum(&out[..20]);
    out[10..12].copy_from_slice(&c.to_be_bytes());
    out[20] = 3;
    out[21] = 4;
    out[26..28].copy_from_slice(&mtu.to_be_bytes());
    out[28..].copy_from_slice(quoted);
    let c = checksum(&out[20..]);
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(out)
}

/// Destination unreachable, source quench, redirect, time exceeded, parameter problem.
fn is_icmp_error(p: &[u8], info: &Ipv4Info) -> bool {
    info.protocol == PROTO_ICMP
        && p.get(info.ihl)
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12))
}

/// Builds an ICMP echo request (used by tests and diagnostics).
pub fn echo_request(src: Ipv4Addr, dst: Ipv4Addr, id: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let total = 20 + 8 + data.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = PROTO_ICMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20] = 8;
    p[24..26].copy_from_slice(&id.to_be_bytes());
    p[26..28].copy_from_slice(&seq.to_be_bytes());
    p[28..].copy_from_slice(data);
    let c = checksum(&p[20..]);
    p[22..24].copy_from_slice(&c.to_be_bytes());
    p
}

/// RFC 1071 internet checksum.
pub fn checksum(b: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in b.chunks(2) {
        let word = match chunk {
            [a, b] => u16::from_be_bytes([*a, *b]),
            [a] => u16::from_be_bytes([*a, 0]),
            _ => 0,
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod frag_tests {
    use super::*;

    fn big_df_ping(len: usize) -> Vec<u8> {
        let mut p = echo_request(
            Ipv4Addr::new(10, 1, 0, 5),
            Ipv4Addr::new(10, 2, 0, 5),
            7,
            1,
            &vec![0xab; len - 28],
        );
        p[6] = 0x40; // DF
        p[10..12].copy_from_slice(&[0, 0]);
        let c = checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p
    }

    #[test]
    fn frag_needed_is_well_formed() {
        let p = big_df_ping(1428);
        let gw = Ipv4Addr::new(10, 42, 0, 1);
        let r = frag_needed(&p, gw, 1300).unwrap();
        assert_eq!(r.len(), 20 + 8 + 28);
        assert_eq!(checksum(&r[..20]), 0, "IP header checksum verifies");
        assert_eq!(checksum(&r[20..]), 0, "ICMP checksum verifies");
        let info = parse(&r).unwrap();
        assert_eq!((info.src, info.dst), (gw, Ipv4Addr::new(10, 1, 0, 5)));
        assert_eq!((r[20], r[21]), (3, 4));
        assert_eq!(u16::from_be_bytes([r[26], r[27]]), 1300);
        assert_eq!(&r[28..], &p[..28], "quotes the header and 8 payload bytes");
        assert_eq!(usize::from(u16::from_be_bytes([r[2], r[3]])), r.len());
    }

    #[test]
    fn no_error_for_non_df_fragments_or_icmp_errors() {
        let gw = Ipv4Addr::new(10, 42, 0, 1);
        let mut p = big_df_ping(1428);
        p[6] = 0;
        assert!(frag_needed(&p, gw, 1300).is_none(), "DF clear");
        let mut p = big_df_ping(1428);
        p[7] = 1;
        assert!(frag_needed(&p, gw, 1300).is_none(), "later fragment");
        let p = big_df_ping(1428);
        let err = frag_needed(&p, gw, 1300).unwrap();
        let mut err_df = err.clone();
        err_df[6] = 0x40;
        assert!(
            frag_needed(&err_df, gw, 576).is_none(),
            "ICMP error about an ICMP error"
        );
        assert!(frag_needed(&[0x45, 0, 0], gw, 1300).is_none(), "truncated");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_round_trip() {
        let a = Ipv4Addr::new(10, 1, 0, 1);
        let b = Ipv4Addr::new(10, 1, 0, 2);
        let req = echo_request(a, b, 7, 1, b"hello!");
        assert_eq!(checksum(&req[..20]), 0);
        assert_eq!(checksum(&req[20..]), 0);
        let rep = echo_reply(&req).unwrap();
        let info = parse(&rep).unwrap();
        assert_eq!((info.src, info.dst), (b, a));
        assert_eq!(rep[20], 0);
        assert_eq!(checksum(&rep[..20]), 0);
        assert_eq!(checksum(&rep[20..]), 0);
        assert!(echo_reply(&rep).is_none(), "a reply is not answered");
        let mut frag = req.clone();
        frag[7] = 1;
        assert!(echo_reply(&frag).is_none(), "fragments are not answered");
        let mut options = req.clone();
        options[0] = 0x46;
        assert!(echo_reply(&options).is_none(), "IHL must be 5");
        assert!(echo_reply(&req[..27]).is_none());
        assert!(echo_reply(&[]).is_none());
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(parse(&[]), Err(DropReason::MalformedIp));
        assert_eq!(parse(&[0x60; 40]), Err(DropReason::NotIpv4));
        assert_eq!(parse(&[0x45; 19]), Err(DropReason::MalformedIp));
        let mut udp = vec![0u8; 22];
        udp[0] = 0x45;
        udp[9] = 17;
        assert_eq!(
            parse(&udp),
            Err(DropReason::MalformedIp),
            "ports unreadable"
        );
        let mut bad_ihl = vec![0u8; 40];
        bad_ihl[0] = 0x44;
        assert_eq!(parse(&bad_ihl), Err(DropReason::MalformedIp));
    }
}

//! IPv4 packet → flow key, oriented to this node, exactly as nebula 1.6.1 `outside.go` `newPacket`
//! reads it. Owns only that extraction; it never allocates and never looks at payloads beyond the
//! first four transport bytes.
//!
//! ```text
//!  0       1       2       3
//! +-------+-------+---------------+
//! |ver|ihl|  tos  | total length  |
//! +-------+-------+---+-----------+
//! |  identification   |flg|frag off| bytes 6..8: offset != 0 => non-first fragment
//! +-------+-------+---+-----------+
//! |  ttl  | proto |   checksum    | byte 9: protocol
//! +-------+-------+---------------+
//! |        source address         | 12..16
//! |      destination address      | 16..20
//! +-------------------------------+
//! | options ... (ihl*4 - 20)      |
//! +---------------+---------------+
//! |  src port     |   dst port    | transport, only for first fragments of non-ICMP
//! +---------------+---------------+
//! ```

use std::net::Ipv4Addr;

use super::rules::Direction;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

const IPV4_HEADER_LEN: usize = 20;
/// Bytes of transport header needed for the two ports.
const MIN_TRANSPORT_LEN: usize = 4;

/// A flow key: the five-tuple (plus fragment flag) oriented to this node. Also the conntrack key.
/// ICMP packets and non-first fragments have both ports 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowPacket {
    pub local_ip: Ipv4Addr,
    pub remote_ip: Ipv4Addr,
    pub local_port: u16,
    pub remote_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// Non-first IPv4 fragment (fragment offset != 0).
    pub fragment: bool,
}

/// Why a packet could not be turned into a flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum PacketError {
    #[error("packet is shorter than an IPv4 header")]
    TooShort,
    #[error("not an IPv4 packet (version {0})")]
    NotIpv4(u8),
    #[error("IPv4 header length {0} is below 20")]
    BadHeaderLength(u8),
    #[error("packet ends before its transport ports")]
    Truncated,
}

impl FlowPacket {
    /// Reads the flow key of an IPv4 packet travelling in `direction`. Inbound packets come from
    /// the peer (source = remote); outbound ones go to it (destination = remote).
    pub fn parse(data: &[u8], direction: Direction) -> Result<FlowPacket, PacketError> {
        let header = data.get(..IPV4_HEADER_LEN).ok_or(PacketError::TooShort)?;
        let version = header[0] >> 4;
        if version != 4 {
            return Err(PacketError::NotIpv4(version));
        }
        let ihl = usize::from(header[0] & 0x0f) * 4;
        if ihl < IPV4_HEADER_LEN {
            return Err(PacketError::BadHeaderLength(ihl as u8));
        }
        let fragment = u16::from_be_bytes([header[6], header[7]]) & 0x1fff != 0;
        let protocol = header[9];
        let src = ip_at(header, 12);
        let dst = ip_at(header, 16);
        let has_ports = !fragment && protocol != PROTO_ICMP;
        let (src_port, dst_port) = if has_ports {
            let ports = data
                .get(ihl..ihl + MIN_TRANSPORT_LEN)
                .ok_or(PacketError::Truncated)?;
            (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
            )
        } else if data.len() < ihl {
            return Err(PacketError::Truncated);
        } else {
            (0, 0)
        };
        Ok(match direction {
            Direction::Inbound => FlowPacket {
                local_ip: dst,
                remote_ip: src,
                local_port: dst_port,
                remote_port: src_port,
                protocol,
                fragment,
            },
            Direction::Outbound => FlowPacket {
                local_ip: src,
                remote_ip: dst,
                local_port: src_port,
                remote_port: dst_port,
                protocol,
                fragment,
            },
        })
    }

    /// The port rules look at: the destination port of the packet in `direction`.
    pub fn rule_port(&self, direction: Direction) -> u16 {
        match direction {
            Direction::Inbound => self.local_port,
            Direction::Outbound => self.remote_port,
        }
    }
}

fn ip_at(header: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(header[at], header[at + 1], header[at + 2], header[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(proto: u8, frag: u16, ihl_words: u8, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x40 | ihl_words;
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[9] = proto;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let t = usize::from(ihl_words) * 4;
        if len >= t + 4 {
            p[t..t + 4].copy_from_slice(&[0x30, 0x39, 0x00, 0x50]); // 12345 -> 80
        }
        p
    }

    #[test]
    fn orients_by_direction() {
        let p = packet(PROTO_TCP, 0, 5, 40);
        let inbound = FlowPacket::parse(&p, Direction::Inbound).expect("valid");
        assert_eq!(inbound.remote_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(inbound.local_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!((inbound.remote_port, inbound.local_port), (12345, 80));
        assert_eq!(inbound.rule_port(Direction::Inbound), 80);
        let outbound = FlowPacket::parse(&p, Direction::Outbound).expect("valid");
        assert_eq!(outbound.local_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!((outbound.local_port, outbound.remote_port), (12345, 80));
        assert_eq!(outbound.rule_port(Direction::Outbound), 80);
    }

    #[test]
    fn options_shift_the_ports() {
        let p = packet(PROTO_UDP, 0, 6, 28);
        let f = FlowPacket::parse(&p, Direction::Inbound).expect("valid");
        assert_eq!((f.remote_port, f.local_port), (12345, 80));
    }

    #[test]
    fn icmp_and_fragments_have_no_ports() {
        let icmp =
            FlowPacket::parse(&packet(PROTO_ICMP, 0, 5, 20), Direction::Inbound).expect("ok");
        assert_eq!(
            (icmp.local_port, icmp.remote_port, icmp.fragment),
            (0, 0, false)
        );
        let frag =
            FlowPacket::parse(&packet(PROTO_TCP, 185, 5, 20), Direction::Inbound).expect("ok");
        assert_eq!(
            (frag.local_port, frag.remote_port, frag.fragment),
            (0, 0, true)
        );
        // More-fragments flag with offset 0 is a first fragment: ports are read.
        let first =
            FlowPacket::parse(&packet(PROTO_TCP, 0x2000, 5, 24), Direction::Inbound).expect("ok");
        assert!(!first.fragment);
        assert_eq!(first.local_port, 80);
    }

    #[test]
    fn refuses_bad_headers() {
        assert_eq!(
            FlowPacket::parse(&[0x45; 19], Direction::Inbound),
            Err(PacketError::TooShort)
        );
        assert_eq!(
            FlowPacket::parse(&packet(PROTO_TCP, 0, 5, 40)[..23], Direction::Inbound),
            Err(PacketError::Truncated)
        );
        let mut v6 = packet(PROTO_TCP, 0, 5, 40);
        v6[0] = 0x65;
        assert_eq!(
            FlowPacket::parse(&v6, Direction::Inbound),
            Err(PacketError::NotIpv4(6))
        );
        assert_eq!(
            FlowPacket::parse(&packet(PROTO_TCP, 0, 4, 40), Direction::Inbound),
            Err(PacketError::BadHeaderLength(16))
        );
        assert_eq!(
            FlowPacket::parse(&packet(PROTO_ICMP, 0, 15, 40), Direction::Inbound),
            Err(PacketError::Truncated)
        );
    }
}

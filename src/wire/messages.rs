//! Protobuf messages of Nebula 1.6.1's `nebula.proto`, written by hand with prost derive (field
//! numbers and types must match exactly; proto3 canonical encoding, packed repeated scalars).
//!
//! Owns only the message shapes; decoding hostile bytes returns an error, never panics.

/// Handshake payload (`NebulaHandshake`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NebulaHandshake {
    #[prost(message, optional, tag = "1")]
    pub details: Option<NebulaHandshakeDetails>,
    /// Legacy, never set.
    #[prost(bytes = "vec", tag = "2")]
    pub hmac: Vec<u8>,
}

/// `NebulaHandshakeDetails`; fields 6 and 7 are reserved upstream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NebulaHandshakeDetails {
    /// The sender's certificate marshalled without its public key.
    #[prost(bytes = "vec", tag = "1")]
    pub cert: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub initiator_index: u32,
    #[prost(uint32, tag = "3")]
    pub responder_index: u32,
    #[prost(uint64, tag = "4")]
    pub cookie: u64,
    /// Wall clock of the sender, nanoseconds since the Unix epoch.
    #[prost(uint64, tag = "5")]
    pub time: u64,
}

/// `NebulaMeta.MessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetaType {
    None = 0,
    HostQuery = 1,
    HostQueryReply = 2,
    HostUpdateNotification = 3,
    HostMovedNotification = 4,
    HostPunchNotification = 5,
    HostWhoami = 6,
    HostWhoamiReply = 7,
    PathCheck = 8,
    PathCheckReply = 9,
}

/// Lighthouse message (`NebulaMeta`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NebulaMeta {
    #[prost(enumeration = "MetaType", tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub details: Option<NebulaMetaDetails>,
}

/// `NebulaMetaDetails`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NebulaMetaDetails {
    #[prost(uint32, tag = "1")]
    pub vpn_ip: u32,
    #[prost(message, repeated, tag = "2")]
    pub ip4_and_ports: Vec<Ip4AndPort>,
    /// Unused by Nebula.
    #[prost(uint32, tag = "3")]
    pub counter: u32,
    #[prost(message, repeated, tag = "4")]
    pub ip6_and_ports: Vec<Ip6AndPort>,
    #[prost(uint32, repeated, tag = "5")]
    pub relay_vpn_ip: Vec<u32>,
}

/// IPv4 underlay endpoint; `ip` is the address read big-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Ip4AndPort {
    #[prost(uint32, tag = "1")]
    pub ip: u32,
    #[prost(uint32, tag = "2")]
    pub port: u32,
}

/// IPv6 underlay endpoint split into two big-endian halves.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Ip6AndPort {
    #[prost(uint64, tag = "1")]
    pub hi: u64,
    #[prost(uint64, tag = "2")]
    pub lo: u64,
    #[prost(uint32, tag = "3")]
    pub port: u32,
}

/// `NebulaControl.MessageType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ControlType {
    None = 0,
    CreateRelayRequest = 1,
    CreateRelayResponse = 2,
}

/// Relay control message (`NebulaControl`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct NebulaControl {
    #[prost(enumeration = "ControlType", tag = "1")]
    pub r#type: i32,
    #[prost(uint32, tag = "2")]
    pub initiator_relay_index: u32,
    #[prost(uint32, tag = "3")]
    pub responder_relay_index: u32,
    #[prost(uint32, tag = "4")]
    pub relay_to_ip: u32,
    #[prost(uint32, tag = "5")]
    pub relay_from_ip: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn handshake_field_layout() {
        let hs = NebulaHandshake {
            details: Some(NebulaHandshakeDetails {
                cert: vec![0xaa, 0xbb],
                initiator_index: 0x0102_0304,
                responder_index: 0,
                cookie: 0,
                time: 5,
            }),
            hmac: vec![],
        };
        let b = hs.encode_to_vec();
        // field 1 (len 11): cert(1) 2 bytes, initiator index(2), time(5); zero fields omitted.
        assert_eq!(
            b,
            hex::decode("0a0b0a02aabb1084868808 2805".replace(' ', "")).unwrap()
        );
        assert_eq!(NebulaHandshake::decode(b.as_slice()).unwrap(), hs);
    }

    #[test]
    fn meta_relays_packed_and_ip6_order() {
        let m = NebulaMeta {
            r#type: MetaType::HostQueryReply as i32,
            details: Some(NebulaMetaDetails {
                vpn_ip: 1,
                ip4_and_ports: vec![Ip4AndPort { ip: 2, port: 3 }],
                counter: 0,
                ip6_and_ports: vec![Ip6AndPort {
                    hi: 0xfd00_0000_0000_0000,
                    lo: 2,
                    port: 47003,
                }],
                relay_vpn_ip: vec![7, 8],
            }),
        };
        let b = m.encode_to_vec();
        assert_eq!(NebulaMeta::decode(b.as_slice()).unwrap(), m);
        // packed relay list: tag 5 wire type 2, length 2, values 7 8
        assert!(b.windows(4).any(|w| w == [0x2a, 0x02, 0x07, 0x08]));
        // unpacked relay entries are accepted too
        let unpacked = hex::decode("12042807280 8".replace(' ', "")).unwrap();
        let d = NebulaMeta::decode(unpacked.as_slice()).unwrap();
        assert_eq!(d.details.unwrap().relay_vpn_ip, vec![7, 8]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [&[0x0a, 0xff][..], &[0xff; 9], &[0x0a, 0x05, 0x01]] {
            assert!(NebulaHandshake::decode(bad).is_err());
        }
    }
}

//! The fixed 16-byte Nebula header (`header/header.go` in Nebula 1.6.1).
//!
//! ```text
//!  0        1        2        4                8                               16
//! +--------+--------+--------+----------------+--------------------------------+
//! |ver|type| subtype|reserved| remote index BE|        message counter BE       |
//! +--------+--------+--------+----------------+--------------------------------+
//! ```
//!
//! The remote index is the *receiver's* local index for the tunnel. The counter doubles as the
//! AEAD nonce. 1.6.1 ignores the version nibble and the reserved bytes on receive; so do we.

use thiserror::Error;

/// Length of the header in bytes.
pub const HEADER_LEN: usize = 16;
/// The only header version Nebula has ever sent.
pub const VERSION: u8 = 1;

/// Index naming a tunnel on the side that receives the packet (0 in handshake stage 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RemoteIndex(pub u32);

/// Packet type (low nibble of byte 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MessageType {
    Handshake,
    Message,
    RecvError,
    LightHouse,
    Test,
    CloseTunnel,
    Control,
}

impl MessageType {
    /// Wire value of the type nibble.
    pub fn to_u8(self) -> u8 {
        match self {
            MessageType::Handshake => 0,
            MessageType::Message => 1,
            MessageType::RecvError => 2,
            MessageType::LightHouse => 3,
            MessageType::Test => 4,
            MessageType::CloseTunnel => 5,
            MessageType::Control => 6,
        }
    }

    /// Parses the type nibble; unknown types are not representable.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => MessageType::Handshake,
            1 => MessageType::Message,
            2 => MessageType::RecvError,
            3 => MessageType::LightHouse,
            4 => MessageType::Test,
            5 => MessageType::CloseTunnel,
            6 => MessageType::Control,
            _ => return None,
        })
    }
}

/// Subtype byte. Its meaning depends on the type; 1.6.1 does not validate it on receive, so any
/// value is representable and the named constants give the meaningful ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Subtype(pub u8);

impl Subtype {
    /// Handshake: Noise IX (the "psk0" in the name is historical; no PSK is used).
    pub const HANDSHAKE_IX_PSK0: Subtype = Subtype(0);
    /// Message: a tunnelled IP packet.
    pub const MESSAGE_NONE: Subtype = Subtype(0);
    /// Message: a relayed inner packet (authenticated only).
    pub const MESSAGE_RELAY: Subtype = Subtype(1);
    /// Test: request.
    pub const TEST_REQUEST: Subtype = Subtype(0);
    /// Test: reply.
    pub const TEST_REPLY: Subtype = Subtype(1);
    /// Every other type uses subtype 0.
    pub const NONE: Subtype = Subtype(0);
}

/// A parsed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub message_type: MessageType,
    pub subtype: Subtype,
    pub reserved: u16,
    pub remote_index: RemoteIndex,
    pub counter: u64,
}

/// Why a datagram does not start with a usable header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum HeaderError {
    #[error("datagram of {0} bytes is shorter than the 16-byte header")]
    TooShort(usize),
    #[error("unknown message type {0}")]
    UnknownType(u8),
}

impl Header {
    /// A version-1 header with reserved bytes zero.
    pub fn new(
        message_type: MessageType,
        subtype: Subtype,
        remote_index: RemoteIndex,
        counter: u64,
    ) -> Self {
        Header {
            version: VERSION,
            message_type,
            subtype,
            reserved: 0,
            remote_index,
            counter,
        }
    }

    /// Parses the first 16 bytes of `b`; never panics.
    pub fn parse(b: &[u8]) -> Result<Self, HeaderError> {
        let Some(h) = b.get(..HEADER_LEN) else {
            return Err(HeaderError::TooShort(b.len()));
        };
        let message_type =
            MessageType::from_u8(h[0] & 0x0f).ok_or(HeaderError::UnknownType(h[0] & 0x0f))?;
        Ok(Header {
            version: h[0] >> 4,
            message_type,
            subtype: Subtype(h[1]),
            reserved: u16::from_be_bytes([h[2], h[3]]),
            remote_index: RemoteIndex(u32::from_be_bytes([h[4], h[5], h[6], h[7]])),
            counter: u64::from_be_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]]),
        })
    }

    /// The 16 wire bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = (self.version << 4) | (self.message_type.to_u8() & 0x0f);
        out[1] = self.subtype.0;
        out[2..4].copy_from_slice(&self.reserved.to_be_bytes());
        out[4..8].copy_from_slice(&self.remote_index.0.to_be_bytes());
        out[8..16].copy_from_slice(&self.counter.to_be_bytes());
        out
    }

    /// Writes the header into the start of `buf`; returns false if `buf` is too short.
    pub fn write_to(&self, buf: &mut [u8]) -> bool {
        match buf.get_mut(..HEADER_LEN) {
            Some(dst) => {
                dst.copy_from_slice(&self.encode());
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_all_types() {
        for t in 0u8..7 {
            let mt = MessageType::from_u8(t).unwrap();
            let h = Header::new(
                mt,
                Subtype(t % 2),
                RemoteIndex(0xdead_beef),
                0x0102_0304_0506_0708,
            );
            let b = h.encode();
            assert_eq!(b[0], 0x10 | t);
            assert_eq!(&b[4..8], &[0xde, 0xad, 0xbe, 0xef]);
            assert_eq!(&b[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
            assert_eq!(Header::parse(&b).unwrap(), h);
        }
    }

    #[test]
    fn observed_nebula_bytes() {
        // Stage 1 and recv_error as captured from nebula 1.6.1 (protocol doc §1.1).
        let stage1 = hex::decode("10000000000000000000000000000001").unwrap();
        let h = Header::parse(&stage1).unwrap();
        assert_eq!(h.message_type, MessageType::Handshake);
        assert_eq!(h.subtype, Subtype::HANDSHAKE_IX_PSK0);
        assert_eq!(h.remote_index, RemoteIndex(0));
        assert_eq!(h.counter, 1);
        let re = hex::decode("12000000a1b2c3d40000000000000000").unwrap();
        let h = Header::parse(&re).unwrap();
        assert_eq!(h.message_type, MessageType::RecvError);
        assert_eq!(h.remote_index, RemoteIndex(0xa1b2_c3d4));
        assert_eq!(h.encode().to_vec(), re);
    }

    #[test]
    fn short_and_odd_input() {
        let cases: &[(&[u8], Result<(), HeaderError>)] = &[
            (&[], Err(HeaderError::TooShort(0))),
            (&[0x00], Err(HeaderError::TooShort(1))),
            (&[0x10; 15], Err(HeaderError::TooShort(15))),
            (&[0x17; 16], Err(HeaderError::UnknownType(7))),
            (&[0x1f; 40], Err(HeaderError::UnknownType(15))),
            (&[0x00; 16], Ok(())),
            (&[0xf1; 16], Ok(())),
        ];
        for (input, want) in cases {
            assert_eq!(
                Header::parse(input).map(|_| ()),
                *want,
                "input {input:02x?}"
            );
        }
        // Version nibble and reserved bytes are carried but not judged (1.6.1 behaviour).
        let h = Header::parse(&[0xf1, 9, 0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]).unwrap();
        assert_eq!(
            (h.version, h.subtype, h.reserved),
            (0xf, Subtype(9), 0xabcd)
        );
        assert_eq!(h.message_type, MessageType::Message);
    }

    #[test]
    fn write_to_checks_length() {
        let h = Header::new(MessageType::Test, Subtype::TEST_REPLY, RemoteIndex(7), 3);
        let mut short = [0u8; 15];
        assert!(!h.write_to(&mut short));
        let mut buf = [0u8; 20];
        assert!(h.write_to(&mut buf));
        assert_eq!(Header::parse(&buf).unwrap(), h);
    }
}

//! Nebula wire formats: the 16-byte packet header and the protobuf messages carried inside
//! handshakes, lighthouse and control packets.
//!
//! Owns parsing/encoding only. Must not touch crypto, sockets, time or node state; parsing never
//! panics on hostile input.

mod header;
mod messages;

pub use header::{Header, HeaderError, MessageType, RemoteIndex, Subtype, HEADER_LEN, VERSION};
pub use messages::{
    ControlType, Ip4AndPort, Ip6AndPort, MetaType, NebulaControl, NebulaHandshake,
    NebulaHandshakeDetails, NebulaMeta, NebulaMetaDetails,
};

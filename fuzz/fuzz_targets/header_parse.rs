//! Fuzz the header parser and the protobuf message decoders: never panic, and whatever parses
//! re-encodes to the same 16 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::wire::{Header, NebulaControl, NebulaHandshake, NebulaMeta};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = Header::parse(data) {
        assert_eq!(&h.encode()[..], &data[..16]);
        let body = &data[16..];
        let _ = NebulaHandshake::decode(body);
        let _ = NebulaMeta::decode(body);
        let _ = NebulaControl::decode(body);
    }
});

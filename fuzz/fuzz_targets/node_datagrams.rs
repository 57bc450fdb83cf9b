//! Fuzz an established node with a stream of arbitrary datagrams (each prefixed by a length
//! byte and a source selector) interleaved with timer ticks. Must never panic and must keep its
//! tables bounded.
#![no_main]

#[path = "node_common.rs"]
mod node_common;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let (mut a, mut b) = node_common::established(start);
    let mut now = start;
    let mut rest = data;
    while let [len, sel, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let from = match sel % 3 {
            0 => node_common::addr(node_common::A_ADDR),
            1 => node_common::addr(([198, 51, 100, 1], 9)),
            _ => node_common::addr(([10, 0, 0, 9], 4242)),
        };
        let mut buf = chunk.to_vec();
        b.handle_datagram(now, from, &mut buf);
        if sel & 0x80 != 0 {
            now += Duration::from_millis(u64::from(*sel));
            b.handle_timeout(now);
            a.handle_timeout(now);
        }
        node_common::exchange(now, &mut a, &mut b);
    }
    assert!(b.hostmap().host_count() <= 1);
    assert!(b.hostmap().pending_count() <= 1);
});

//! Fuzz the TUN offload path with arbitrary virtio-net headers and superpackets: `split` never
//! panics or writes past its buffers, and whatever it produces (plus the raw bytes as a packet)
//! goes through the coalescer, whose every write splits again without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::daemon::offload::{split, Coalescer, VIRTIO_NET_HDR_LEN};

fuzz_target!(|data: &[u8]| {
    let mut read = data.to_vec();
    let mut out = vec![vec![0u8; 1500]; 64];
    let mut sizes = vec![0usize; 64];
    let mut c = Coalescer::new(66);
    if let Ok(n) = split(&mut read, &mut out, &mut sizes) {
        assert!(n <= out.len());
        for i in 0..n {
            assert!(sizes[i] <= out[i].len());
            assert!(c.push(&out[i][..sizes[i]]) || sizes[i] == 0);
        }
    }
    if data.len() > VIRTIO_NET_HDR_LEN {
        c.push(&data[VIRTIO_NET_HDR_LEN..]);
    }
    let written = c.coalesce(data.first().is_some_and(|b| b & 1 == 0)).to_vec();
    for w in written {
        let mut again = c.buf(w).to_vec();
        let mut out2 = vec![vec![0u8; 1500]; 64];
        let _ = split(&mut again, &mut out2, &mut sizes);
    }
});

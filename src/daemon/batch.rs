//! Packet batches: buffers allocated once, handed to the kernel many packets per syscall
//! (`recvmmsg`/`sendmmsg` for UDP, repeated reads for TUN), so the data path never allocates.
//!
//! Owns the slots and the kernel-facing arrays that point into them. Must not look inside packets.
//!
//! Slot layout (one contiguous allocation per batch, `slots * slot_size` bytes):
//!
//! ```text
//! | slot 0: slot_size bytes | slot 1 | ... | slot n-1 |
//!   ^ iovec[i] points at slot i; lens[i] bytes are valid after recv / are sent by send
//! ```
//!
//! Later: UDP GSO (`UDP_SEGMENT`) and GRO, and TUN virtio-net offload, would reuse the same slots.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Nebula's largest outside datagram (`udp.MTU`); a slot must hold it.
pub const MAX_DATAGRAM: usize = 9001;
/// Extra room per slot so the node can prepend relay framing (header + tag) in place.
pub const HEADROOM: usize = 64;
/// Default bytes per slot.
pub const SLOT_SIZE: usize = MAX_DATAGRAM + HEADROOM;
/// Default slots per batch (`listen.batch` default in Nebula).
pub const DEFAULT_BATCH: usize = 64;

/// Received datagrams: slot `i` holds `datagram(i)` from `peer(i)` after a receive.
pub struct RecvBatch {
    slots: Slots,
    filled: usize,
}

impl RecvBatch {
    /// Allocates `slots` buffers of `slot_size` bytes, once.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        RecvBatch {
            slots: Slots::new(slots, slot_size),
            filled: 0,
        }
    }

    /// How many datagrams the last receive delivered.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when the last receive delivered nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.lens.len()
    }

    /// Sender of datagram `i`; IPv4 senders on a dual-stack socket come back as plain IPv4.
    pub fn peer(&self, i: usize) -> SocketAddr {
        self.slots.addrs[i]
    }

    /// Datagram `i`. A datagram larger than a slot was truncated by the kernel and shows as empty.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.slots.slot(i)[..self.slots.lens[i]]
    }

    /// Datagram `i`, writable so it can be decrypted in place.
    pub fn datagram_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.slots.lens[i];
        &mut self.slots.slot_mut(i)[..len]
    }

    /// All received datagrams with their senders.
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.filled).map(|i| (self.peer(i), self.datagram(i)))
    }
}

/// Datagrams waiting to be sent. The node writes straight into [`slot`](Self::slot) and then
/// [`commit`](Self::commit)s the length and destination.
pub struct SendBatch {
    slots: Slots,
    filled: usize,
}

impl SendBatch {
    /// Allocates `slots` buffers of `slot_size` bytes, once.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        SendBatch {
            slots: Slots::new(slots, slot_size),
            filled: 0,
        }
    }

    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// True when no slot is free; send before queueing more.
    pub fn is_full(&self) -> bool {
        self.filled == self.capacity()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.lens.len()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.slots.slot_size
    }

    /// The whole next free slot to write a datagram into, or `None` when full.
    pub fn slot(&mut self) -> Option<&mut [u8]> {
        if self.is_full() {
            return None;
        }
        Some(self.slots.slot_mut(self.filled))
    }

    /// Queues the first `len` bytes of the slot returned by [`slot`](Self::slot) for `dest`.
    /// Returns false (and queues nothing) when the batch is full or `len` exceeds a slot.
    pub fn commit(&mut self, len: usize, dest: SocketAddr) -> bool {
        if self.is_full() || len > self.slots.slot_size {
            return false;
        }
        self.slots.lens[self.filled] = len;
        self.slots.addrs[self.filled] = dest;
        self.filled += 1;
        true
    }

    /// Copies `datagram` into the next slot and queues it; false when full or too big.
    pub fn push(&mut self, datagram: &[u8], dest: SocketAddr) -> bool {
        match self.slot() {
            Some(slot) if datagram.len() <= slot.len() => {
                slot[..datagram.len()].copy_from_slice(datagram);
                self.commit(datagram.len(), dest)
            }
            _ => false,
        }
    }

    /// Destination of queued datagram `i`.
    pub fn dest(&self, i: usize) -> SocketAddr {
        self.slots.addrs[i]
    }

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.filled = 0;
    }
}

/// IP packets read from the TUN device: slot `i` holds `packet(i)` after a read.
pub struct PacketBatch {
    slots: Slots,
    filled: usize,
}

impl PacketBatch {
    /// Allocates `slots` buffers of `slot_size` bytes, once.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        PacketBatch {
            slots: Slots::new(slots, slot_size),
            filled: 0,
        }
    }

    /// Packets delivered by the last read.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// True when the last read delivered nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.lens.len()
    }

    /// Packet `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.slots.slot(i)[..self.slots.lens[i]]
    }

    /// Packet `i`, writable.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.slots.lens[i];
        &mut self.slots.slot_mut(i)[..len]
    }

    /// All packets of the last read.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.filled).map(|i| self.packet(i))
    }

    /// Calls `read` into successive slots until it would block or the batch is full. Returns the
    /// count; `WouldBlock` only when not even one packet was ready (so the caller's readiness
    /// flag is cleared exactly when the queue is empty).
    pub(super) fn fill_with(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.filled = 0;
        while self.filled < self.capacity() {
            let i = self.filled;
            match read(self.slots.slot_mut(i)) {
                Ok(n) => {
                    self.slots.lens[i] = n;
                    self.filled += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.filled > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.filled)
    }
}

/// The buffers plus the kernel-facing arrays that point into them. The arrays are rebuilt right
/// before each syscall, so the raw pointers inside are never used while stale.
pub(super) struct Slots {
    slot_size: usize,
    data: Box<[u8]>,
    lens: Box<[usize]>,
    addrs: Box<[SocketAddr]>,
    names: Box<[libc::sockaddr_storage]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[libc::mmsghdr]>,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` only ever point into `data`/`names`/`iovs`, which this
// struct owns; they are rewritten before every use, so moving the struct to another thread is sound.
unsafe impl Send for Slots {}

const UNSPECIFIED: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

impl Slots {
    fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        // SAFETY: all-zero bytes are valid for these plain C structs (null pointers, zero lengths).
        let zeroed_name: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let zeroed_iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: as above.
        let zeroed_hdr: libc::mmsghdr = unsafe { mem::zeroed() };
        Slots {
            slot_size,
            data: vec![0u8; slots * slot_size].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            addrs: vec![UNSPECIFIED; slots].into_boxed_slice(),
            names: vec![zeroed_name; slots].into_boxed_slice(),
            iovs: vec![zeroed_iov; slots].into_boxed_slice(),
            hdrs: vec![zeroed_hdr; slots].into_boxed_slice(),
        }
    }

    fn slot(&self, i: usize) -> &[u8] {
        &self.data[i * self.slot_size..(i + 1) * self.slot_size]
    }

    fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * self.slot_size..(i + 1) * self.slot_size]
    }

    /// Points header `i` at slot `i` (length `len`) and name `i` (length `name_len`).
    fn link(&mut self, i: usize, len: usize, name_len: libc::socklen_t) {
        let base = self.data.as_mut_ptr();
        // SAFETY: i < slots, so the offset stays inside `data`.
        self.iovs[i].iov_base = unsafe { base.add(i * self.slot_size) }.cast();
        self.iovs[i].iov_len = len;
        let iov: *mut libc::iovec = &mut self.iovs[i];
        let name: *mut libc::sockaddr_storage = &mut self.names[i];
        let hdr = &mut self.hdrs[i];
        hdr.msg_hdr.msg_name = name.cast();
        hdr.msg_hdr.msg_namelen = name_len;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = std::ptr::null_mut();
        hdr.msg_hdr.msg_controllen = 0;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
    }
}
pub(super) fn recv_mmsg(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    let n = batch.capacity();
    let slot_size = batch.slots.slot_size;
    for i in 0..n {
        batch
            .slots
            .link(i, slot_size, mem::size_of::<libc::sockaddr_storage>() as _);
    }
    // SAFETY: every header points at live buffers of the lengths given, owned by `batch`.
    let got = unsafe {
        libc::recvmmsg(
            fd,
            batch.slots.hdrs.as_mut_ptr(),
            n as _,
            0,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        batch.filled = 0;
        return Err(io::Error::last_os_error());
    }
    let got = got as usize;
    for i in 0..got {
        let hdr = &batch.slots.hdrs[i];
        let truncated = hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        batch.slots.lens[i] = if truncated { 0 } else { hdr.msg_len as usize };
        batch.slots.addrs[i] = from_sockaddr(&batch.slots.names[i]).unwrap_or(UNSPECIFIED);
    }
    batch.filled = got;
    Ok(got)
}

pub(super) fn send_mmsg(
    fd: RawFd,
    batch: &mut SendBatch,
    from: usize,
    ipv6: bool,
) -> io::Result<usize> {
    let end = batch.len();
    for i in from..end {
        let dest = batch.slots.addrs[i];
        let name_len = to_sockaddr(dest, ipv6, &mut batch.slots.names[i]);
        let len = batch.slots.lens[i];
        batch.slots.link(i, len, name_len);
    }
    let hdrs = batch.slots.hdrs[from..end].as_mut_ptr();
    // SAFETY: headers from..end point at live slots and addresses owned by `batch`.
    let sent = unsafe { libc::sendmmsg(fd, hdrs, (end - from) as _, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// Errors that mean the socket itself is unusable, as opposed to one datagram being refused.
/// Writes `addr` as a C socket address for a socket of the given family (IPv4 destinations on an
/// IPv6 socket become v4-mapped). Returns the length used.
pub(super) fn to_sockaddr(
    addr: SocketAddr,
    ipv6: bool,
    out: &mut libc::sockaddr_storage,
) -> libc::socklen_t {
    match (addr, ipv6) {
        (SocketAddr::V4(v4), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        (SocketAddr::V4(v4), true) => {
            let mapped = SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0);
            write_v6(&mapped, out)
        }
        (SocketAddr::V6(v6), _) => write_v6(&v6, out),
    }
}

fn write_v6(v6: &SocketAddrV6, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let sin6 = libc::sockaddr_in6 {
        sin6_family: libc::AF_INET6 as libc::sa_family_t,
        sin6_port: v6.port().to_be(),
        sin6_flowinfo: v6.flowinfo().to_be(),
        sin6_addr: libc::in6_addr {
            s6_addr: v6.ip().octets(),
        },
        sin6_scope_id: v6.scope_id(),
    };
    // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
    unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
    mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
}

fn from_sockaddr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match name.ss_family as i32 {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: &libc::sockaddr_in =
                unsafe { &*(name as *const _ as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(name as *const _ as *const libc::sockaddr_in6) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            let v6 = SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id);
            Some(canonical(SocketAddr::V6(v6)))
        }
        _ => None,
    }
}

/// v4-mapped IPv6 addresses become IPv4 so one peer has one address whatever the socket family.
pub(super) fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trip_v4_and_v6() {
        let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
        let a: SocketAddr = "192.0.2.7:4242".parse().unwrap();
        to_sockaddr(a, false, &mut ss);
        assert_eq!(from_sockaddr(&ss), Some(a));
        // A v4 destination on a v6 socket goes out mapped and comes back canonical.
        to_sockaddr(a, true, &mut ss);
        assert_eq!(ss.ss_family as i32, libc::AF_INET6);
        assert_eq!(from_sockaddr(&ss), Some(a));
        let b: SocketAddr = "[2001:db8::1]:9".parse().unwrap();
        to_sockaddr(b, true, &mut ss);
        assert_eq!(from_sockaddr(&ss), Some(b));
    }

    #[test]
    fn send_batch_refuses_overflow_and_oversize() {
        let dest: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let mut batch = SendBatch::new(2, 16);
        assert!(!batch.push(&[0u8; 17], dest));
        assert!(batch.push(b"a", dest));
        assert!(batch.push(b"b", dest));
        assert!(batch.is_full());
        assert!(batch.slot().is_none());
        assert!(!batch.push(b"c", dest));
        batch.clear();
        assert!(batch.is_empty());
    }

    #[test]
    fn packet_batch_fills_until_would_block() {
        let mut batch = PacketBatch::new(4, 8);
        let mut queue = vec![vec![1u8, 2], vec![3u8; 8]];
        let mut read = |buf: &mut [u8]| match queue.pop() {
            Some(p) => {
                buf[..p.len()].copy_from_slice(&p);
                Ok(p.len())
            }
            None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        };
        assert_eq!(batch.fill_with(&mut read).unwrap(), 2);
        assert_eq!(batch.packet(0), &[3u8; 8]);
        assert_eq!(batch.iter().nth(1), Some(&[1u8, 2][..]));
        // Nothing queued: the caller must see WouldBlock, not an empty success.
        let err = batch.fill_with(&mut read).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
    }
}

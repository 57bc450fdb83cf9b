//! Packet batches: buffers allocated once, handed to the kernel many packets per syscall
//! (`recvmmsg`/`sendmmsg` for UDP, repeated reads for TUN), so the data path never allocates.
//! With UDP offloads a run of equal-size datagrams to one peer leaves as one `sendmmsg` entry
//! with `UDP_SEGMENT` (its iovecs are the slots themselves, so nothing is copied), and a
//! `UDP_GRO` receive fills one slot with several datagrams at a stride.
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
//! A GRO receive slot holds `datagram ‖ datagram ‖ ... ‖ last (maybe shorter)`, each `stride`
//! bytes apart; [`RecvBatch::segments`] cuts it. A GSO send entry points `msg_iov` at a run of
//! consecutive slots.

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
/// A GRO receive slot must hold the largest coalesced datagram the kernel builds.
pub const GRO_SLOT_SIZE: usize = 65535;
/// Kernel limits for one `UDP_SEGMENT` send (`UDP_MAX_SEGMENTS`, and the payload under 64 KiB).
pub const GSO_MAX_SEGMENTS: usize = 64;
pub const GSO_MAX_BYTES: usize = 65000;

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

    /// All received datagrams with their senders (a GRO slot counts as one).
    pub fn iter(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> + '_ {
        (0..self.filled).map(|i| (self.peer(i), self.datagram(i)))
    }

    /// The datagrams inside slot `i`: one range, or several `stride` apart after a GRO receive.
    pub fn segments(&self, i: usize) -> Segments {
        let len = self.slots.lens[i];
        let stride = match self.slots.strides[i] {
            0 => len.max(1),
            s => s,
        };
        Segments {
            next: 0,
            len,
            stride,
        }
    }
}

/// Byte ranges of the datagrams in one receive slot.
#[derive(Debug, Clone)]
pub struct Segments {
    next: usize,
    len: usize,
    stride: usize,
}

impl Iterator for Segments {
    type Item = std::ops::Range<usize>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let start = self.next;
        self.next = (start + self.stride).min(self.len);
        Some(start..self.next)
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

/// IP packets read from the TUN device: `packet(i)` after a read. With offloads each read may be
/// a superpacket that is split into several slots.
pub struct PacketBatch {
    bufs: Box<[Box<[u8]>]>,
    lens: Box<[usize]>,
    filled: usize,
    /// Room for one device read (virtio-net header + 64 KiB) when offloading, else empty.
    read: Box<[u8]>,
    /// Free slots a read needs before it is attempted (1, or the most one split can produce).
    reserve: usize,
}

impl PacketBatch {
    /// Allocates `slots` buffers of `slot_size` bytes, once; one packet per read.
    pub fn new(slots: usize, slot_size: usize) -> Self {
        let slots = slots.max(1);
        PacketBatch {
            bufs: (0..slots).map(|_| vec![0u8; slot_size].into()).collect(),
            lens: vec![0; slots].into(),
            filled: 0,
            read: Box::new([]),
            reserve: 1,
        }
    }

    /// For a device with the virtio-net header and MTU `mtu`: slots for at least two whole
    /// superpackets, each `mtu` bytes, plus the read buffer.
    pub fn with_offload(slots: usize, mtu: usize) -> Self {
        let reserve = super::offload::max_segments(mtu);
        let mut b = PacketBatch::new(slots.max(2 * reserve), mtu);
        b.read = vec![0u8; super::offload::MAX_READ].into();
        b.reserve = reserve;
        b
    }

    /// True when reads carry the virtio-net header.
    pub fn offload(&self) -> bool {
        !self.read.is_empty()
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
        self.lens.len()
    }

    /// Packet `i`.
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.lens[i]]
    }

    /// Packet `i`, writable.
    pub fn packet_mut(&mut self, i: usize) -> &mut [u8] {
        let len = self.lens[i];
        &mut self.bufs[i][..len]
    }

    /// All packets of the last read.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.filled).map(|i| self.packet(i))
    }

    /// Calls `read` until it would block or the batch has no room for another read. Returns the
    /// packet count; `WouldBlock` only when not even one packet was ready (so the caller's
    /// readiness flag is cleared exactly when the queue is empty). With offloads each read is
    /// split; a read that cannot be split (malformed header) is dropped and logged.
    pub(super) fn fill_with(
        &mut self,
        mut read: impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.filled = 0;
        let mut reads = 0usize;
        while self.capacity() - self.filled >= self.reserve {
            match self.read_one(&mut read) {
                Ok(()) => reads += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && reads > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(self.filled)
    }

    fn read_one(
        &mut self,
        read: &mut impl FnMut(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<()> {
        let i = self.filled;
        if !self.offload() {
            self.lens[i] = read(&mut self.bufs[i])?;
            self.filled += 1;
            return Ok(());
        }
        let n = read(&mut self.read)?;
        match super::offload::split(
            &mut self.read[..n],
            &mut self.bufs[i..],
            &mut self.lens[i..],
        ) {
            Ok(got) => self.filled += got,
            Err(e) => tracing::debug!(error = %e, len = n, "tun superpacket dropped"),
        }
        Ok(())
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
    /// One control-message buffer per header (`UDP_SEGMENT` out, `UDP_GRO` in).
    cmsgs: Box<[Cmsg]>,
    /// After a receive: the GRO stride of slot `i`, 0 for a single datagram.
    strides: Box<[usize]>,
    /// During a GSO send: one past the last slot of entry `g`.
    group_end: Box<[usize]>,
}

/// Room for one `cmsghdr` carrying an `int` (or `u16`), aligned as the kernel wants.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 32]);

const _: () = assert!(std::mem::size_of::<Cmsg>() >= cmsg_space_int());

const fn cmsg_space_int() -> usize {
    // CMSG_SPACE(sizeof(int)) on Linux: header (16) + data rounded up to 8.
    mem::size_of::<libc::cmsghdr>() + 8
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
            cmsgs: vec![Cmsg([0; 32]); slots].into_boxed_slice(),
            strides: vec![0; slots].into_boxed_slice(),
            group_end: vec![0; slots].into_boxed_slice(),
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
/// `gro`: the socket has `UDP_GRO` on, so each header also gets a control buffer for the stride.
pub(super) fn recv_mmsg(fd: RawFd, batch: &mut RecvBatch, gro: bool) -> io::Result<usize> {
    let n = batch.capacity();
    let slot_size = batch.slots.slot_size;
    for i in 0..n {
        batch
            .slots
            .link(i, slot_size, mem::size_of::<libc::sockaddr_storage>() as _);
        if gro {
            let ctl: *mut Cmsg = &mut batch.slots.cmsgs[i];
            let hdr = &mut batch.slots.hdrs[i].msg_hdr;
            hdr.msg_control = ctl.cast();
            hdr.msg_controllen = mem::size_of::<Cmsg>() as _;
        }
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
        batch.slots.strides[i] = if gro { gro_stride(&hdr.msg_hdr) } else { 0 };
        batch.slots.addrs[i] = from_sockaddr(&batch.slots.names[i]).unwrap_or(UNSPECIFIED);
    }
    batch.filled = got;
    Ok(got)
}

/// The `UDP_GRO` segment size the kernel attached, or 0 when the datagram arrived whole.
fn gro_stride(msg: &libc::msghdr) -> usize {
    // SAFETY: msg_control/msg_controllen describe our own Cmsg buffer as the kernel left it;
    // CMSG_FIRSTHDR/NXTHDR stay inside it and CMSG_DATA of a matching header holds an int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                return usize::try_from(v).unwrap_or(0);
            }
            c = libc::CMSG_NXTHDR(msg, c);
        }
    }
    0
}

/// Sends queued datagrams `from..` in one `sendmmsg`. With `gso`, each run of datagrams to one
/// destination whose sizes are equal (the last may be shorter) becomes one entry with
/// `UDP_SEGMENT`, within the kernel's segment and byte limits. Returns how many datagrams
/// (not entries) the kernel took.
pub(super) fn send_mmsg(
    fd: RawFd,
    batch: &mut SendBatch,
    from: usize,
    ipv6: bool,
    gso: bool,
) -> io::Result<usize> {
    let end = batch.len();
    let slots = &mut batch.slots;
    let base = slots.data.as_mut_ptr();
    let mut groups = 0;
    let mut i = from;
    while i < end {
        let start = i;
        let seg = slots.lens[i];
        let dest = slots.addrs[i];
        let mut bytes = seg;
        i += 1;
        while gso && i < end && i - start < GSO_MAX_SEGMENTS && slots.addrs[i] == dest {
            let len = slots.lens[i];
            if len > seg || len == 0 || bytes + len > GSO_MAX_BYTES {
                break;
            }
            bytes += len;
            i += 1;
            if len < seg {
                break; // only the last segment may be short
            }
        }
        for k in start..i {
            // SAFETY: k < slots, so the offset stays inside `data`.
            slots.iovs[k].iov_base = unsafe { base.add(k * slots.slot_size) }.cast();
            slots.iovs[k].iov_len = slots.lens[k];
        }
        let g = groups;
        let name_len = to_sockaddr(dest, ipv6, &mut slots.names[g]);
        let iov: *mut libc::iovec = &mut slots.iovs[start];
        let name: *mut libc::sockaddr_storage = &mut slots.names[g];
        let ctl: *mut Cmsg = &mut slots.cmsgs[g];
        let hdr = &mut slots.hdrs[g];
        hdr.msg_hdr.msg_name = name.cast();
        hdr.msg_hdr.msg_namelen = name_len;
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = (i - start) as _;
        hdr.msg_hdr.msg_flags = 0;
        hdr.msg_len = 0;
        if i - start > 1 {
            hdr.msg_hdr.msg_control = ctl.cast();
            hdr.msg_hdr.msg_controllen = write_segment_cmsg(&mut slots.cmsgs[g], seg as u16);
        } else {
            hdr.msg_hdr.msg_control = std::ptr::null_mut();
            hdr.msg_hdr.msg_controllen = 0;
        }
        slots.group_end[g] = i;
        groups += 1;
    }
    // SAFETY: headers 0..groups point at live slots, names and control buffers owned by `batch`.
    let sent = unsafe { libc::sendmmsg(fd, slots.hdrs.as_mut_ptr(), groups as _, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let sent = sent as usize;
    Ok(if sent == 0 {
        0
    } else {
        slots.group_end[sent - 1] - from
    })
}

/// Writes a `SOL_UDP`/`UDP_SEGMENT` control message carrying `size`; returns its length.
fn write_segment_cmsg(buf: &mut Cmsg, size: u16) -> usize {
    buf.0 = [0; 32];
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of::<Cmsg>();
    // SAFETY: `msg` describes our aligned 32-byte buffer, large enough for CMSG_SPACE(2);
    // CMSG_FIRSTHDR is non-null for it and CMSG_DATA points inside it.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
        libc::CMSG_SPACE(mem::size_of::<u16>() as u32) as usize
    }
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

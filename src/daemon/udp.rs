//! The outside UDP socket (`listen.*`) with batched I/O: `recvmmsg`/`sendmmsg` into buffers
//! allocated once per batch, driven by tokio's `AsyncFd`.
//!
//! Owns the socket and the packet slots. Must not parse or judge datagrams: what arrives goes to
//! the node untouched, what the node wrote goes out untouched. No allocation per packet.
//!
//! Slot layout (one contiguous allocation per batch, `slots * slot_size` bytes):
//!
//! ```text
//! | slot 0: slot_size bytes | slot 1 | ... | slot n-1 |
//!   ^ iovec[i] points at slot i; lens[i] bytes are valid after recv / are sent by send
//! ```
//!
//! Later: UDP GSO (`UDP_SEGMENT`) and GRO would reuse the same slots with one iovec per run.

use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::Context;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Nebula's largest outside datagram (`udp.MTU`); a slot must hold it.
pub const MAX_DATAGRAM: usize = 9001;
/// Extra room per slot so the node can prepend relay framing (header + tag) in place.
pub const HEADROOM: usize = 64;
/// Default bytes per slot.
pub const SLOT_SIZE: usize = MAX_DATAGRAM + HEADROOM;
/// Default slots per batch (`listen.batch` default in Nebula).
pub const DEFAULT_BATCH: usize = 64;

/// What the socket needs from `listen.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSettings {
    /// `listen.host`; an IPv6 wildcard also accepts IPv4 (dual stack).
    pub host: IpAddr,
    /// `listen.port`; 0 lets the kernel choose (see [`UdpSocket::local_addr`]).
    pub port: u16,
    /// `listen.read_buffer`; 0 keeps the system default.
    pub read_buffer: usize,
    /// `listen.write_buffer`; 0 keeps the system default.
    pub write_buffer: usize,
    /// Set SO_REUSEPORT so several sockets (`routines` > 1) can share the port.
    pub reuse_port: bool,
}

/// The bound, non-blocking outside socket.
#[derive(Debug)]
pub struct UdpSocket {
    io: AsyncFd<std::net::UdpSocket>,
    local: SocketAddr,
    ipv6: bool,
}

impl UdpSocket {
    /// Creates and binds the socket. Must be called inside a tokio runtime.
    pub fn bind(settings: &UdpSettings) -> anyhow::Result<Self> {
        let bind_addr = SocketAddr::new(settings.host, settings.port);
        let sock = new_socket(settings.host.is_ipv6())
            .with_context(|| format!("creating UDP socket for {bind_addr}"))?;
        let fd = sock.as_raw_fd();
        if settings.reuse_port {
            set_int_opt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, 1).context("SO_REUSEPORT")?;
        }
        if settings.host.is_ipv6() {
            // Dual stack, like Nebula on "[::]": IPv4 peers arrive as v4-mapped addresses.
            set_int_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0).context("IPV6_V6ONLY")?;
        }
        apply_buffers(fd, settings.read_buffer, settings.write_buffer)?;
        bind_fd(fd, &bind_addr).with_context(|| format!("binding UDP socket to {bind_addr}"))?;
        let std_sock = std::net::UdpSocket::from(sock);
        let local = std_sock.local_addr().context("reading bound UDP address")?;
        // SAFETY: the UdpSocket owns its descriptor and nothing else closes or replaces it.
        let io =
            unsafe { AsyncFd::register(std_sock) }.context("registering UDP socket with tokio")?;
        Ok(UdpSocket {
            io,
            local,
            ipv6: settings.host.is_ipv6(),
        })
    }

    /// The address actually bound (the real port when `listen.port` was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Re-applies `listen.read_buffer` / `write_buffer` (reload); zero leaves a size alone.
    pub fn set_buffers(&self, read_buffer: usize, write_buffer: usize) -> anyhow::Result<()> {
        apply_buffers(self.io.as_raw_fd(), read_buffer, write_buffer)
    }

    /// Current (receive, send) kernel buffer sizes as reported by the kernel (which doubles them).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        let fd = self.io.as_raw_fd();
        let rcv = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF)?;
        let snd = get_int_opt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF)?;
        Ok((rcv as usize, snd as usize))
    }

    /// Waits for datagrams and fills `batch` with as many as are queued (at most its capacity).
    /// Returns how many arrived.
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.io.readable().await?;
            match guard.try_io(|inner| recv_mmsg(inner.as_raw_fd(), batch)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Like [`recv_batch`](Self::recv_batch) but never waits: `WouldBlock` when nothing is queued.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        self.io.try_io(Interest::READABLE, |inner| {
            recv_mmsg(inner.as_raw_fd(), batch)
        })
    }

    /// Sends every datagram in `batch`, then empties it. A datagram the kernel refuses (no route,
    /// too big) is skipped, not retried: network failures are drop reasons. Returns how many went.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let total = batch.len();
        let mut next = 0;
        let mut sent = 0;
        while next < total {
            let mut guard = self.io.writable().await?;
            let res = guard.try_io(|inner| send_mmsg(inner.as_raw_fd(), batch, next, self.ipv6));
            match res {
                Ok(Ok(n)) => {
                    next += n;
                    sent += n;
                }
                Ok(Err(e)) if is_fatal(&e) => {
                    batch.clear();
                    return Err(e);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, dest = %batch.slots.addrs[next], "udp send dropped");
                    next += 1;
                }
                Err(_would_block) => continue,
            }
        }
        batch.clear();
        Ok(sent)
    }

    /// Sends one datagram (control traffic: handshakes, lighthouse, punches).
    pub async fn send_to(&self, datagram: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let dest = self.outgoing(dest);
        self.io
            .async_io(Interest::WRITABLE, |inner| inner.send_to(datagram, dest))
            .await
    }

    /// Receives one datagram (tests and slow paths).
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (n, from) = self
            .io
            .async_io(Interest::READABLE, |inner| inner.recv_from(buf))
            .await?;
        Ok((n, canonical(from)))
    }

    fn outgoing(&self, dest: SocketAddr) -> SocketAddr {
        match (self.ipv6, dest) {
            (true, SocketAddr::V4(v4)) => {
                SocketAddr::V6(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0))
            }
            _ => dest,
        }
    }
}

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

    /// Forgets every queued datagram.
    pub fn clear(&mut self) {
        self.filled = 0;
    }
}

/// The buffers plus the kernel-facing arrays that point into them. The arrays are rebuilt right
/// before each syscall, so the raw pointers inside are never used while stale.
struct Slots {
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

fn recv_mmsg(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
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

fn send_mmsg(fd: RawFd, batch: &mut SendBatch, from: usize, ipv6: bool) -> io::Result<usize> {
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
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EFAULT)
    )
}

fn new_socket(ipv6: bool) -> io::Result<OwnedFd> {
    let family = if ipv6 { libc::AF_INET6 } else { libc::AF_INET };
    let kind = libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain socket(2) call; the result is checked before use.
    let fd = unsafe { libc::socket(family, kind, libc::IPPROTO_UDP) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind_fd(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut name: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = to_sockaddr(*addr, addr.is_ipv6(), &mut name);
    // SAFETY: name is initialised for len bytes.
    let rc = unsafe { libc::bind(fd, (&name as *const libc::sockaddr_storage).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn apply_buffers(fd: RawFd, read_buffer: usize, write_buffer: usize) -> anyhow::Result<()> {
    if read_buffer > 0 {
        set_buffer(fd, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF, read_buffer)
            .with_context(|| format!("setting listen.read_buffer to {read_buffer}"))?;
    }
    if write_buffer > 0 {
        set_buffer(fd, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF, write_buffer)
            .with_context(|| format!("setting listen.write_buffer to {write_buffer}"))?;
    }
    Ok(())
}

/// The FORCE variant (like Nebula) lets root exceed net.core.*mem_max; others fall back.
fn set_buffer(fd: RawFd, force: i32, plain: i32, size: usize) -> io::Result<()> {
    let size = i32::try_from(size).unwrap_or(i32::MAX);
    set_int_opt(fd, libc::SOL_SOCKET, force, size)
        .or_else(|_| set_int_opt(fd, libc::SOL_SOCKET, plain, size))
}

fn set_int_opt(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: value lives across the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int_opt(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// Writes `addr` as a C socket address for a socket of the given family (IPv4 destinations on an
/// IPv6 socket become v4-mapped). Returns the length used.
fn to_sockaddr(addr: SocketAddr, ipv6: bool, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
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
fn canonical(addr: SocketAddr) -> SocketAddr {
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

    fn loopback(port: u16) -> UdpSettings {
        UdpSettings {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            read_buffer: 0,
            write_buffer: 0,
            reuse_port: false,
        }
    }

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

    #[tokio::test]
    async fn random_port_is_reported() {
        let sock = UdpSocket::bind(&loopback(0)).unwrap();
        assert_ne!(sock.local_addr().port(), 0);
        assert_eq!(sock.local_addr().ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    #[tokio::test]
    async fn buffer_sizes_are_applied() {
        let mut s = loopback(0);
        s.read_buffer = 1 << 20;
        s.write_buffer = 1 << 19;
        let sock = UdpSocket::bind(&s).unwrap();
        let (rcv, snd) = sock.buffer_sizes().unwrap();
        // Linux doubles the requested size for bookkeeping.
        assert!(rcv >= 1 << 20, "rcvbuf {rcv}");
        assert!(snd >= 1 << 19, "sndbuf {snd}");
    }

    #[tokio::test]
    async fn batch_round_trip_on_loopback() {
        const N: usize = 48;
        let a = UdpSocket::bind(&loopback(0)).unwrap();
        // Room for the whole burst, so the test checks batching rather than the default buffer.
        let b = UdpSocket::bind(&UdpSettings {
            read_buffer: 4 << 20,
            ..loopback(0)
        })
        .unwrap();
        let mut out = SendBatch::new(DEFAULT_BATCH, SLOT_SIZE);
        for i in 0..N {
            let slot = out.slot().unwrap();
            let len = 100 + i * 150;
            for (j, byte) in slot[..len].iter_mut().enumerate() {
                *byte = (i * 7 + j) as u8;
            }
            assert!(out.commit(len, b.local_addr()));
        }
        assert_eq!(a.send_batch(&mut out).await.unwrap(), N);
        assert!(out.is_empty());

        let mut inb = RecvBatch::new(DEFAULT_BATCH, SLOT_SIZE);
        let mut seen = 0;
        let mut largest = 0;
        while seen < N {
            let got =
                tokio::time::timeout(std::time::Duration::from_secs(5), b.recv_batch(&mut inb))
                    .await
                    .expect("datagrams arrive")
                    .unwrap();
            for k in 0..got {
                let i = seen + k;
                assert_eq!(inb.peer(k), a.local_addr());
                let d = inb.datagram(k);
                assert_eq!(d.len(), 100 + i * 150);
                assert!(d
                    .iter()
                    .enumerate()
                    .all(|(j, &byte)| byte == (i * 7 + j) as u8));
            }
            seen += got;
            largest = largest.max(got);
        }
        assert_eq!(seen, N);
        // Everything was queued before the first receive, so one call must take several.
        assert!(largest > 1, "recvmmsg returned one datagram at a time");
        assert!(
            matches!(b.try_recv_batch(&mut inb), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        );
    }

    #[tokio::test]
    async fn dual_stack_socket_reports_ipv4_peers_plainly() {
        let mut s = loopback(0);
        s.host = IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let v6 = UdpSocket::bind(&s).unwrap();
        let v4 = UdpSocket::bind(&loopback(0)).unwrap();
        let to: SocketAddr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), v6.local_addr().port());
        v4.send_to(b"hello", to).await.unwrap();
        let mut inb = RecvBatch::new(4, 64);
        let got = v6.recv_batch(&mut inb).await.unwrap();
        assert_eq!(got, 1);
        assert_eq!(inb.peer(0), v4.local_addr());
        assert_eq!(inb.datagram(0), b"hello");
        // And the reply through the v6 socket to a plain v4 address works.
        let mut out = SendBatch::new(1, 64);
        out.push(b"back", v4.local_addr());
        assert_eq!(v6.send_batch(&mut out).await.unwrap(), 1);
        let mut buf = [0u8; 16];
        let (n, from) = v4.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"back");
        assert_eq!(from.port(), v6.local_addr().port());
    }

    #[tokio::test]
    async fn oversized_datagram_shows_as_truncated() {
        let a = UdpSocket::bind(&loopback(0)).unwrap();
        let b = UdpSocket::bind(&loopback(0)).unwrap();
        a.send_to(&[1u8; 200], b.local_addr()).await.unwrap();
        let mut inb = RecvBatch::new(2, 100);
        assert_eq!(b.recv_batch(&mut inb).await.unwrap(), 1);
        assert!(inb.datagram(0).is_empty());
    }
}

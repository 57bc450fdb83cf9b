//! The outside UDP socket (`listen.*`) with batched I/O: `recvmmsg`/`sendmmsg` into buffers
//! allocated once per batch, driven by tokio's `AsyncFd`.
//!
//! Owns the socket. Must not parse or judge datagrams: what arrives goes to
//! the node untouched, what the node wrote goes out untouched. No allocation per packet.
//!
//! The batches themselves live in `batch`. With `listen.udp_offloads` the socket also gets
//! `UDP_GRO` (coalesced receives, split at the stride by the batch) and sends with `UDP_SEGMENT`
//! where the kernel has it; an EIO from a GSO send turns GSO off for the socket and the batch
//! is resent without it.

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::batch::{canonical, recv_mmsg, send_mmsg, to_sockaddr};
pub use super::batch::{
    RecvBatch, SendBatch, DEFAULT_BATCH, GRO_SLOT_SIZE, HEADROOM, MAX_DATAGRAM, SLOT_SIZE,
};

/// Receive buffer asked for when `listen.read_buffer` is unset and offloads are on. Peers send
/// runs of up to 64 datagrams at once; the usual 208 KiB default holds about 150 of them, so a
/// receiver that is descheduled for a moment drops whole runs (measured: a fifth of the
/// datagrams on a loaded 2-core host). This is kernel memory, not the daemon's.
pub const OFFLOAD_READ_BUFFER: usize = 4 << 20;

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
    /// `listen.udp_offloads`: try UDP GSO and GRO.
    pub offloads: bool,
    /// `listen.so_mark` (since Nebula 1.10.0): SO_MARK on every datagram sent, for policy
    /// routing; 0 leaves it unset.
    pub so_mark: u32,
}

/// The bound, non-blocking outside socket.
#[derive(Debug)]
pub struct UdpSocket {
    io: AsyncFd<std::net::UdpSocket>,
    local: SocketAddr,
    ipv6: bool,
    /// Sends may carry `UDP_SEGMENT` (cleared for good by an EIO).
    gso: AtomicBool,
    /// Receives may be coalesced (`UDP_GRO` accepted by the kernel).
    gro: bool,
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
        let read_buffer = match settings.read_buffer {
            0 if settings.offloads => OFFLOAD_READ_BUFFER,
            n => n,
        };
        apply_buffers(fd, read_buffer, settings.write_buffer)?;
        let (gso, gro) = if settings.offloads {
            probe_offloads(fd)
        } else {
            (false, false)
        };
        if settings.so_mark != 0 {
            // The option takes the mark's bits as a C int.
            set_int_opt(fd, libc::SOL_SOCKET, libc::SO_MARK, settings.so_mark as i32)
                .context("SO_MARK (listen.so_mark needs CAP_NET_ADMIN)")?;
        }
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
            gso: AtomicBool::new(gso),
            gro,
        })
    }

    /// True while sends use `UDP_SEGMENT`.
    pub fn gso(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// True when receives can be coalesced: receive batches then need [`GRO_SLOT_SIZE`] slots.
    pub fn gro(&self) -> bool {
        self.gro
    }

    /// A receive batch sized for this socket: `slots` datagrams, or with GRO `gro_slots`
    /// coalesced ones of up to 64 KiB each.
    pub fn recv_batch_for(&self, slots: usize, gro_slots: usize) -> RecvBatch {
        if self.gro {
            RecvBatch::new(gro_slots.min(slots).max(1), GRO_SLOT_SIZE)
        } else {
            RecvBatch::new(slots, SLOT_SIZE)
        }
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
            match guard.try_io(|inner| recv_mmsg(inner.as_raw_fd(), batch, self.gro)) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Like [`recv_batch`](Self::recv_batch) but never waits: `WouldBlock` when nothing is queued.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        self.io.try_io(Interest::READABLE, |inner| {
            recv_mmsg(inner.as_raw_fd(), batch, self.gro)
        })
    }

    /// Sends every datagram in `batch`, then empties it. A datagram the kernel refuses (no route,
    /// too big) is skipped, not retried: network failures are drop reasons. Returns how many went.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<usize> {
        let total = batch.len();
        let mut next = 0;
        let mut sent = 0;
        let mut gso = self.gso();
        while next < total {
            let mut guard = self.io.writable().await?;
            let res =
                guard.try_io(|inner| send_mmsg(inner.as_raw_fd(), batch, next, self.ipv6, gso));
            match res {
                Ok(Ok(n)) => {
                    next += n;
                    sent += n;
                    gso = self.gso();
                }
                Ok(Err(e)) if gso && e.raw_os_error() == Some(libc::EIO) => {
                    // The route's device cannot checksum segments: no GSO on this socket again.
                    self.gso.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "UDP GSO send refused; sending without listen.udp_offloads segmentation from now on");
                    gso = false;
                }
                Ok(Err(e)) if gso && e.raw_os_error() == Some(libc::EINVAL) => {
                    // A run too large for this path's MTU: resend this batch datagram by datagram.
                    gso = false;
                }
                Ok(Err(e)) if is_fatal(&e) => {
                    batch.clear();
                    return Err(e);
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, dest = %batch.dest(next), "udp send dropped");
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
/// Which of GSO and GRO the kernel accepts on `fd`: an unknown option means an old kernel.
fn probe_offloads(fd: RawFd) -> (bool, bool) {
    // Size 0 keeps sends unsegmented unless a send asks; the call only tests the option exists.
    let gso = set_int_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok();
    let gro = set_int_opt(fd, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
    if !gso || !gro {
        tracing::info!(
            gso,
            gro,
            "listen.udp_offloads: the kernel lacks some UDP offloads"
        );
    }
    (gso, gro)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn loopback(port: u16) -> UdpSettings {
        UdpSettings {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            read_buffer: 0,
            write_buffer: 0,
            reuse_port: false,
            offloads: false,
            so_mark: 0,
        }
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

//! The TUN device (`tun.*`): created with tun-rs as IFF_TUN|IFF_NO_PI, addressed, sized, brought
//! up, and exposed as non-blocking queues for tokio.
//!
//! Owns the device file descriptors. Must not look inside packets or install routes (that is
//! `routes`). The device is not persistent: it disappears when the last queue is dropped, which is
//! the drop guard that removes it on exit, panic included.
//!
//! Room for later: `queues > 1` already opens IFF_MULTI_QUEUE queues (one per `routines`);
//! IFF_VNET_HDR offloads (TSO/GSO batches) would add a `recv_batch`/`send_batch` pair per queue
//! using tun-rs's `recv_multiple`/`send_multiple`, behind a setting that defaults to off.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

pub use super::batch::PacketBatch;

/// Linux interface names are at most 15 bytes (IFNAMSIZ - 1).
const MAX_NAME: usize = 15;

/// What the device needs from `tun.*`, `routines` and the certificate's VPN address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunSettings {
    /// `tun.dev`; `None` lets the kernel choose (tun0, tun1, ...).
    pub name: Option<String>,
    /// Our VPN IP (first IP of the certificate).
    pub addr: Ipv4Addr,
    /// Prefix length of the VPN network (from the certificate).
    pub prefix_len: u8,
    /// Device MTU: the largest of `tun.mtu` and every route MTU (see `routes::plan`).
    pub mtu: u16,
    /// `tun.tx_queue` (Nebula default 500).
    pub tx_queue: u32,
    /// Number of queues (`routines`); more than one opens a multi-queue device.
    pub queues: usize,
}

/// The open device. Dropping it closes every queue, which removes the interface.
#[derive(Debug)]
pub struct Tun {
    name: String,
    index: u32,
    queues: Vec<TunQueue>,
}

/// One queue of the device; reads and writes whole IP packets without any prefix.
pub struct TunQueue {
    io: AsyncFd<SyncDevice>,
}

impl Tun {
    /// Creates, configures and brings up the device. Must be called inside a tokio runtime,
    /// with CAP_NET_ADMIN.
    pub fn open(settings: &TunSettings) -> anyhow::Result<Tun> {
        validate(settings)?;
        let first = build(settings).context("creating the tun device (need CAP_NET_ADMIN)")?;
        let mut devices = Vec::with_capacity(settings.queues);
        for _ in 1..settings.queues {
            devices.push(first.try_clone().context("opening another tun queue")?);
        }
        devices.insert(0, first);
        let name = devices[0].name().context("reading the tun device name")?;
        let index = if_index(&name)?;
        let queues = devices
            .into_iter()
            .map(TunQueue::new)
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Tun {
            name,
            index,
            queues,
        })
    }

    /// Interface name (the kernel's choice when `tun.dev` was unset).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Interface index, for netlink (routes).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The queues, one per routine; index 0 always exists.
    pub fn queues(&self) -> &[TunQueue] {
        &self.queues
    }

    /// The first queue.
    pub fn queue(&self) -> &TunQueue {
        &self.queues[0]
    }

    /// Current device MTU as the kernel reports it.
    pub fn mtu(&self) -> anyhow::Result<u16> {
        self.queues[0].io.get_ref().mtu().context("reading tun MTU")
    }
}

impl TunQueue {
    fn new(dev: SyncDevice) -> io::Result<TunQueue> {
        dev.set_nonblocking(true)?;
        // SAFETY: the SyncDevice owns its descriptor and nothing else closes or replaces it.
        Ok(TunQueue {
            io: unsafe { AsyncFd::register(dev)? },
        })
    }

    /// Waits for the next packet from the kernel; returns its length.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io
            .async_io(Interest::READABLE, |dev| dev.recv(buf))
            .await
    }

    /// Reads a queued packet without waiting (`WouldBlock` when none), to drain in batches.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.try_io(Interest::READABLE, |dev| dev.recv(buf))
    }

    /// Waits until packets are queued, then reads as many as are ready into `batch` (one wakeup,
    /// many packets). Returns how many.
    pub async fn recv_batch(&self, batch: &mut PacketBatch) -> io::Result<usize> {
        loop {
            let mut guard = self.io.readable().await?;
            match guard.try_io(|dev| batch.fill_with(|buf| dev.get_ref().recv(buf))) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Hands one IP packet to the kernel.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.io
            .async_io(Interest::WRITABLE, |dev| dev.send(packet))
            .await
    }

    /// Raw descriptor, for diagnostics.
    pub fn as_raw_fd(&self) -> i32 {
        self.io.as_raw_fd()
    }
}

impl std::fmt::Debug for TunQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunQueue")
            .field("fd", &self.io.as_raw_fd())
            .finish()
    }
}

fn validate(s: &TunSettings) -> anyhow::Result<()> {
    if let Some(name) = &s.name {
        if name.is_empty() || name.len() > MAX_NAME || name.contains(['/', ' ', '\0']) {
            bail!("tun.dev {name:?} is not a valid interface name (1-15 bytes, no '/' or spaces)");
        }
    }
    if s.prefix_len > 32 {
        bail!("VPN network prefix /{} is longer than 32", s.prefix_len);
    }
    if s.mtu < 68 {
        bail!("tun.mtu {} is below the IPv4 minimum of 68", s.mtu);
    }
    if s.queues == 0 {
        bail!("routines must be at least 1");
    }
    Ok(())
}

fn build(s: &TunSettings) -> io::Result<SyncDevice> {
    let mut builder = DeviceBuilder::new()
        .ipv4(s.addr, s.prefix_len, None)
        .mtu(s.mtu)
        .tx_queue_len(s.tx_queue)
        .packet_information(false)
        .multi_queue(s.queues > 1)
        .enable(true);
    if let Some(name) = &s.name {
        builder = builder.name(name.clone());
    }
    builder.build_sync()
}

fn if_index(name: &str) -> anyhow::Result<u32> {
    let c_name = std::ffi::CString::new(name).context("interface name contains NUL")?;
    // SAFETY: c_name is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("index of {name}"));
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> TunSettings {
        TunSettings {
            name: Some("nebula1".into()),
            addr: Ipv4Addr::new(192, 168, 100, 1),
            prefix_len: 24,
            mtu: 1300,
            tx_queue: 500,
            queues: 1,
        }
    }

    #[test]
    fn bad_settings_are_named() {
        let long = TunSettings {
            name: Some("a-very-long-device-name".into()),
            ..settings()
        };
        assert!(validate(&long).unwrap_err().to_string().contains("tun.dev"));
        let slash = TunSettings {
            name: Some("a/b".into()),
            ..settings()
        };
        assert!(validate(&slash).is_err());
        let mtu = TunSettings {
            mtu: 10,
            ..settings()
        };
        assert!(validate(&mtu).unwrap_err().to_string().contains("tun.mtu"));
        let prefix = TunSettings {
            prefix_len: 33,
            ..settings()
        };
        assert!(validate(&prefix).is_err());
        let queues = TunSettings {
            queues: 0,
            ..settings()
        };
        assert!(validate(&queues)
            .unwrap_err()
            .to_string()
            .contains("routines"));
        assert!(validate(&settings()).is_ok());
    }
}

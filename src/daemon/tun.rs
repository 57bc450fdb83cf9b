//! The TUN device (`tun.*`): created with tun-rs as IFF_TUN|IFF_NO_PI, addressed, sized, brought
//! up, and exposed as non-blocking queues for tokio.
//!
//! Owns the device file descriptors. Must not look inside packets or install routes (that is
//! `routes`). The device is not persistent: it disappears when the last queue is dropped, which is
//! the drop guard that removes it on exit, panic included.
//!
//! `tun.use_offloads` (default on) opens the device with IFF_VNET_HDR and TUNSETOFFLOAD
//! (CSUM|TSO4|TSO6, plus USO4|USO6 where the kernel has them, all through tun-rs): reads are then
//! superpackets that `offload::split` cuts into MTU-sized packets, and writes go through
//! `offload::Coalescer` and tun-rs's `send_multiple` so segments of one flow reach the kernel
//! as one. Where the kernel refuses, the device is reopened plain and the log says so.
//!
//! `queues > 1` opens IFF_MULTI_QUEUE queues (one per `routines`).

use std::io::{self, IoSlice};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use anyhow::{bail, Context};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tun_rs::{DeviceBuilder, SyncDevice};

pub use super::batch::PacketBatch;
use super::offload::{Coalescer, VIRTIO_NET_HDR_LEN};

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
    /// `tun.use_offloads`: ask for the virtio-net header and TSO/USO.
    pub offloads: bool,
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
    /// Reads and writes carry the virtio-net header.
    offload: bool,
    /// The kernel took USO too, so UDP datagrams of one flow may be coalesced on write.
    udp_gso: bool,
}

impl Tun {
    /// Creates, configures and brings up the device. Must be called inside a tokio runtime,
    /// with CAP_NET_ADMIN.
    pub fn open(settings: &TunSettings) -> anyhow::Result<Tun> {
        validate(settings)?;
        let first = match build(settings, settings.offloads) {
            Ok(dev) => dev,
            Err(e) if settings.offloads => {
                tracing::warn!(error = %e, "tun.use_offloads: the kernel refused IFF_VNET_HDR/TUNSETOFFLOAD; using a plain tun device");
                build(settings, false).context("creating the tun device (need CAP_NET_ADMIN)")?
            }
            Err(e) => return Err(e).context("creating the tun device (need CAP_NET_ADMIN)"),
        };
        if settings.offloads && first.tcp_gso() {
            tracing::info!(
                udp = first.udp_gso(),
                "tun offloads on (TSO, checksum; USO when udp)"
            );
        }
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

    /// True when the device speaks the virtio-net header (TSO reads, GRO writes).
    pub fn offload(&self) -> bool {
        self.queues[0].offload
    }

    /// A read batch matching the device: `slots` packets, or with offloads room for at least two
    /// split superpackets of `mtu`-sized packets.
    pub fn packet_batch(&self, slots: usize, mtu: usize, plain_slot: usize) -> PacketBatch {
        if self.offload() {
            PacketBatch::with_offload(slots, mtu)
        } else {
            PacketBatch::new(slots, plain_slot)
        }
    }

    /// Current device MTU as the kernel reports it.
    pub fn mtu(&self) -> anyhow::Result<u16> {
        self.queues[0].io.get_ref().mtu().context("reading tun MTU")
    }
}

impl TunQueue {
    fn new(dev: SyncDevice) -> io::Result<TunQueue> {
        dev.set_nonblocking(true)?;
        let (offload, udp_gso) = (dev.tcp_gso(), dev.udp_gso());
        // SAFETY: the SyncDevice owns its descriptor and nothing else closes or replaces it.
        Ok(TunQueue {
            io: unsafe { AsyncFd::register(dev)? },
            offload,
            udp_gso,
        })
    }

    /// Waits until packets are queued, then reads as many as are ready into `batch` (one wakeup,
    /// many packets; with offloads, superpackets split). Returns how many packets.
    pub async fn recv_batch(&self, batch: &mut PacketBatch) -> io::Result<usize> {
        if batch.offload() != self.offload {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "packet batch and tun device disagree about the virtio-net header",
            ));
        }
        loop {
            let mut guard = self.io.readable().await?;
            match guard.try_io(|dev| batch.fill_with(|buf| dev.get_ref().recv(buf))) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Hands one IP packet to the kernel (behind an empty virtio-net header when offloading).
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        const NO_OFFLOAD: [u8; VIRTIO_NET_HDR_LEN] = [0; VIRTIO_NET_HDR_LEN];
        self.io
            .async_io(Interest::WRITABLE, |dev| {
                if self.offload {
                    let n =
                        dev.send_vectored(&[IoSlice::new(&NO_OFFLOAD), IoSlice::new(packet)])?;
                    Ok(n.saturating_sub(VIRTIO_NET_HDR_LEN))
                } else {
                    dev.send(packet)
                }
            })
            .await
    }

    /// Writes every packet queued in `out`, merged per flow when offloading, then empties it.
    /// A write the kernel refuses is dropped (the last error is returned), as a lost packet
    /// would be.
    pub fn send_coalesced(&self, out: &mut Coalescer) -> io::Result<usize> {
        let dev = self.io.get_ref();
        let mut sent = 0;
        let mut failed = None;
        let mut write = |buf: &[u8]| match dev.send(buf) {
            Ok(_) => sent += 1,
            Err(e) => failed = Some(e),
        };
        if self.offload {
            out.coalesce(self.udp_gso);
            for &i in out.written() {
                write(out.buf(i));
            }
        } else {
            out.packets().for_each(&mut write);
        }
        out.clear();
        match failed {
            Some(e) => Err(e),
            None => Ok(sent),
        }
    }

    /// True when the device takes coalesced UDP (USO) as well as TCP.
    pub fn udp_gso(&self) -> bool {
        self.udp_gso
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

fn build(s: &TunSettings, offload: bool) -> io::Result<SyncDevice> {
    let mut builder = DeviceBuilder::new()
        .offload(offload)
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
            offloads: true,
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

//! The event loop: one task owns the sans-IO `Node` and drives it from the TUN device, the UDP
//! socket, signals and the node's own deadlines. No locks, no per-packet allocation on the data
//! path: datagrams are decrypted in place in the receive batch, TUN packets are sealed straight
//! into send-batch slots, and each wake-up moves a whole batch (`recvmmsg` / repeated TUN reads
//! in, `sendmmsg` out).
//!
//! Owns start-up order (logging, device, routes, socket, node), the loop and shutdown (closeTunnel
//! to every peer, flush, remove routes and device). Must not make protocol decisions (the node
//! does) or parse configuration (that is `setup`).
//!
//! SIGHUP runs `reload` (load and check everything first, then apply); systemd hears READY only
//! once device, routes and socket are up, RELOADING/READY around a reload, STOPPING at the end,
//! a periodic STATUS line and watchdog keep-alives.
//!
//! Growth points: several `routines`
//! would run one `Daemon`-like worker per TUN queue + SO_REUSEPORT socket, sharded by peer; TUN
//! and UDP offloads would change only the batch types and `on_tun_batch` / `on_udp_batch`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::time::sleep_until;
use tracing::{debug, error, info, warn};

use super::batch::{PacketBatch, RecvBatch, SendBatch, MAX_DATAGRAM, SLOT_SIZE};
use super::dns::{self, DnsServer};
use super::entropy;
use super::local_addrs::LocalAddrs;
use super::logging::{self, LogHandle};
use super::notify::Notifier;
use super::reload::{self, Fixed};
use super::routes::{self, InstalledRoutes};
use super::setup::{self, Plan};
use super::signals::{SignalEvent, Signals};
use super::tun::{Tun, TunQueue};
use super::udp::UdpSocket;
use crate::node::filter::FirewallFilter;
use crate::node::{CaPoolVerifier, DatagramOutcome, Event, Node, TunOutcome};

/// How often idle filter state (conntrack) is swept when nothing else wakes the loop.
const SWEEP_EVERY: Duration = Duration::from_secs(5);
/// Upper bound on one sleep, so the sweep tick still runs when the node has no deadline.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// `meshd -config PATH`: runs the daemon until SIGINT/SIGTERM. Blocks the calling thread.
pub fn main(config: &Path) -> anyhow::Result<()> {
    // One thread: the node has one owner and the data path never waits on another thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let plan = setup::load(config, unix_now_secs())?;
        let log = logging::init(plan.log_level, plan.log_format)?;
        let mut daemon = Daemon::start(plan, log)?;
        daemon.config_path = Some(config.to_path_buf());
        daemon.run().await
    })
}

/// The node as the daemon runs it: keyed by OS randomness ([`entropy::node_rng`], the only
/// source of the daemon's keys and indexes), verifying peers against the plan's CA pool and
/// filtering through its firewall. `now` and `unix_ns` are the two clocks at the same instant.
pub fn build_node(plan: Plan, now: Instant, unix_ns: u64) -> anyhow::Result<Node> {
    let mut node = Node::new(
        plan.node,
        plan.identity,
        Box::new(CaPoolVerifier { pool: plan.ca_pool }),
        entropy::node_rng()?,
        now,
        unix_ns,
    );
    node.set_filter(Box::new(FirewallFilter::new(plan.firewall, plan.local)));
    Ok(node)
}

/// Why the loop woke up.
enum Wake {
    Signal(SignalEvent),
    Udp(std::io::Result<usize>),
    Tun(std::io::Result<usize>),
    Dns(std::io::Result<(usize, std::net::SocketAddr)>),
    Timer,
}

/// The running daemon: the node plus every OS resource it is driven by.
pub struct Daemon {
    node: Node,
    udp: UdpSocket,
    /// Declared before `tun` so routes go before the device does.
    routes: Option<InstalledRoutes>,
    tun: Option<Tun>,
    signals: Signals,
    udp_in: RecvBatch,
    udp_out: SendBatch,
    tun_in: PacketBatch,
    next_sweep: Instant,
    notifier: Notifier,
    local_addrs: LocalAddrs,
    dns: Option<DnsServer>,
    log: LogHandle,
    /// Where SIGHUP re-reads the configuration from (`None`: reload is refused).
    pub config_path: Option<PathBuf>,
    /// Restart-only settings as started, to tell a reload what it cannot change.
    fixed: Fixed,
    /// Outcome of the last reload, kept in `STATUS=` until the next one.
    last_reload: Option<String>,
}

impl Daemon {
    /// Opens the device, routes and socket and builds the node. Must run inside tokio.
    pub fn start(mut plan: Plan, log: LogHandle) -> anyhow::Result<Daemon> {
        for w in &plan.warnings {
            warn!("{w}");
        }
        let tun = match &plan.tun {
            Some(s) => Some(Tun::open(s).context("opening the tun device")?),
            None => None,
        };
        let routes = match &tun {
            Some(t) => Some(routes::install(t.index(), &plan.routes.routes)?),
            None => None,
        };
        let udp = UdpSocket::bind(&plan.udp)?;
        super::burst_buffer::size_for_bursts(&udp, plan.node.am_lighthouse, plan.udp.read_buffer);
        let fixed = Fixed::of(&plan);
        plan.node.listen_port = udp.local_addr().port();
        let dns = plan.dns.as_ref().map(DnsServer::bind).transpose()?;
        let signals = Signals::new().context("installing signal handlers")?;
        let now = Instant::now();
        let (batch, local_interfaces) = (plan.batch, std::mem::take(&mut plan.local_interfaces));
        let mut node = build_node(plan, now, unix_now_nanos())?;
        let mut local_addrs = LocalAddrs::new(local_interfaces);
        local_addrs.refresh(&mut node, now);
        info!(
            vpn_ip = %node.identity().vpn_ip,
            listen = %udp.local_addr(),
            tun = tun.as_ref().map(|t| t.name()).unwrap_or("(disabled)"),
            "meshd started"
        );
        if let Some(addr) = dns.as_ref().and_then(DnsServer::local_addr) {
            info!(%addr, "serving lighthouse DNS");
        }
        let notifier = Notifier::from_env();
        if let Err(e) = notifier.ready() {
            debug!(error = %e, "sd_notify READY failed");
        }
        Ok(Daemon {
            node,
            udp,
            routes,
            tun,
            signals,
            udp_in: RecvBatch::new(batch, SLOT_SIZE),
            udp_out: SendBatch::new(batch, SLOT_SIZE),
            tun_in: PacketBatch::new(batch, MAX_DATAGRAM),
            next_sweep: now,
            notifier,
            local_addrs,
            dns,
            log,
            config_path: None,
            fixed,
            last_reload: None,
        })
    }

    /// The loop; returns after a clean shutdown.
    pub async fn run(&mut self) -> anyhow::Result<()> {
        loop {
            match self.wait().await {
                Wake::Signal(SignalEvent::Shutdown) => return self.shutdown().await,
                Wake::Signal(s) => self.on_signal(s),
                Wake::Udp(Ok(_)) => self.on_udp_batch().await,
                Wake::Udp(Err(e)) => warn!(error = %e, "udp receive failed"),
                Wake::Tun(Ok(_)) => self.on_tun_batch().await,
                Wake::Tun(Err(e)) => warn!(error = %e, "tun read failed"),
                Wake::Dns(Ok((len, from))) => {
                    if let Some(d) = &self.dns {
                        d.answer(&self.node, len, from);
                    }
                }
                Wake::Dns(Err(e)) => debug!(error = %e, "dns receive failed"),
                Wake::Timer => self.on_timer(),
            }
            self.drain_outputs().await;
        }
    }

    /// Sleeps until a batch, a signal or the next deadline. Every branch is cancel-safe.
    async fn wait(&mut self) -> Wake {
        let now = Instant::now();
        let deadline = self
            .node
            .poll_timeout()
            .unwrap_or(now + MAX_SLEEP)
            .min(self.next_sweep);
        let Daemon {
            udp,
            tun,
            signals,
            udp_in,
            tun_in,
            dns,
            ..
        } = self;
        tokio::select! {
            s = signals.recv() => Wake::Signal(s),
            r = udp.recv_batch(udp_in) => Wake::Udp(r),
            r = tun_recv(tun.as_ref().map(Tun::queue), tun_in) => Wake::Tun(r),
            r = dns::recv(dns.as_mut()) => Wake::Dns(r),
            _ = sleep_until(deadline.into()) => Wake::Timer,
        }
    }

    fn on_signal(&mut self, s: SignalEvent) {
        match s {
            SignalEvent::Reload => self.reload(),
            SignalEvent::Shutdown => {}
        }
    }

    /// SIGHUP: all or nothing. A config that fails any check changes nothing; the failure is
    /// logged and shown in `STATUS=` until the next reload.
    fn reload(&mut self) {
        info!("SIGHUP received: reloading the configuration");
        let _ = self.notifier.reloading();
        let outcome = self.try_reload();
        let line = match outcome {
            Ok(summary) => {
                info!("{summary}");
                summary
            }
            Err(e) => {
                let msg = format!("reload failed, running configuration kept: {e:#}");
                error!("{msg}");
                msg
            }
        };
        self.last_reload = Some(line);
        let _ = self.notifier.ready();
        self.send_status();
    }

    fn try_reload(&mut self) -> anyhow::Result<String> {
        let path = self
            .config_path
            .as_deref()
            .context("no configuration path to reload from")?;
        let unix_now = unix_now_secs();
        let mut plan = setup::load(path, unix_now)?;
        // The socket stays bound where it is (a listen change is reported by `Fixed`), so the
        // node keeps advertising the port actually bound, also for `listen.port: 0`.
        plan.node.listen_port = self.udp.local_addr().port();
        for w in &plan.warnings {
            warn!("{w}");
        }
        let summary = reload::apply(
            Instant::now(),
            unix_now,
            plan,
            &self.fixed,
            &mut self.node,
            &self.log,
        )?;
        for ip in &summary.node.disconnected {
            info!(vpn_ip = %ip, "peer no longer accepted by the new pki: tunnel closed");
        }
        Ok(summary.describe())
    }

    /// One-line summary for `systemctl status`.
    fn send_status(&self) {
        if !self.notifier.is_enabled() {
            return;
        }
        let cfg = self.node.config();
        let up = cfg
            .lighthouses
            .iter()
            .filter(|ip| self.node.hostmap().host(**ip).is_some())
            .count();
        let mut line = format!(
            "{} tunnels, {} pending, lighthouses {}/{} up",
            self.node.hostmap().host_count(),
            self.node.hostmap().pending_count(),
            up,
            cfg.lighthouses.len()
        );
        if let Some(r) = &self.last_reload {
            line.push_str("; ");
            line.push_str(r);
        }
        if let Err(e) = self.notifier.status(&line) {
            debug!(error = %e, "sd_notify STATUS failed");
        }
    }

    /// Decrypts every received datagram in place and writes the inner packets to TUN.
    async fn on_udp_batch(&mut self) {
        let now = Instant::now();
        for i in 0..self.udp_in.len() {
            let from = self.udp_in.peer(i);
            let buf = self.udp_in.datagram_mut(i);
            if let DatagramOutcome::ToTun(range) = self.node.handle_datagram(now, from, buf) {
                if let Some(tun) = &self.tun {
                    if let Err(e) = tun.queue().send(&buf[range]).await {
                        debug!(error = %e, "tun write failed");
                    }
                }
            }
        }
    }

    /// Seals every TUN packet straight into a send slot; the batch goes out in one `sendmmsg`.
    async fn on_tun_batch(&mut self) {
        let now = Instant::now();
        for i in 0..self.tun_in.len() {
            if self.udp_out.is_full() {
                self.flush().await;
            }
            let packet = self.tun_in.packet(i);
            let Some(slot) = self.udp_out.slot() else {
                continue; // unreachable: just flushed
            };
            if let TunOutcome::Send { to, len } = self.node.handle_tun_packet(now, packet, slot) {
                self.udp_out.commit(len, to);
            }
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.node.handle_timeout(now);
        if now >= self.next_sweep {
            self.node.expire_filter(now);
            if let Some(drops) = self.node.filter_mut().drop_report() {
                debug!(%drops, "firewall drops");
            }
            self.local_addrs.refresh(&mut self.node, now);
            self.send_status();
            if self.notifier.watchdog_interval().is_some() {
                let _ = self.notifier.watchdog();
            }
            let every = self
                .notifier
                .watchdog_interval()
                .map_or(SWEEP_EVERY, |w| w.min(SWEEP_EVERY));
            self.next_sweep = now + every;
        }
    }

    /// Moves everything the node queued (control datagrams, local TUN replies, events) out, then
    /// sends the batch.
    async fn drain_outputs(&mut self) {
        while let Some(t) = self.node.poll_transmit() {
            if self.udp_out.is_full() {
                self.flush().await;
            }
            self.udp_out.push(&t.bytes, t.to);
        }
        while let Some(p) = self.node.poll_tun() {
            if let Some(tun) = &self.tun {
                if let Err(e) = tun.queue().send(&p).await {
                    debug!(error = %e, "tun write failed");
                }
            }
        }
        while let Some(e) = self.node.poll_event() {
            log_event(&e);
        }
        self.flush().await;
    }

    async fn flush(&mut self) {
        if self.udp_out.is_empty() {
            return;
        }
        if let Err(e) = self.udp.send_batch(&mut self.udp_out).await {
            warn!(error = %e, "udp send failed");
        }
    }

    /// closeTunnel to every peer, flush, then remove routes and the device.
    async fn shutdown(&mut self) -> anyhow::Result<()> {
        info!("shutting down: closing tunnels");
        let _ = self.notifier.stopping();
        self.node.close_all(Instant::now());
        self.drain_outputs().await;
        if let Some(r) = self.routes.take() {
            if let Err(e) = r.remove() {
                warn!(error = %e, "removing routes");
            }
        }
        // Closing the last queue removes the (non-persistent) device.
        self.tun = None;
        info!("meshd stopped");
        Ok(())
    }
}

/// Reads a TUN batch, or never completes when the device is disabled.
async fn tun_recv(q: Option<&TunQueue>, batch: &mut PacketBatch) -> std::io::Result<usize> {
    match q {
        Some(q) => q.recv_batch(batch).await,
        None => std::future::pending().await,
    }
}

fn log_event(e: &Event) {
    match e {
        Event::HandshakeComplete {
            vpn_ip,
            remote,
            initiator,
        } => info!(%vpn_ip, remote = ?remote, initiator, "tunnel established"),
        Event::HandshakeTimedOut {
            vpn_ip,
            dropped_packets,
        } => info!(%vpn_ip, dropped_packets, "handshake timed out"),
        Event::HandshakeFailed { vpn_ip, reason } => {
            info!(%vpn_ip, reason = ?reason, "handshake failed")
        }
        Event::TunnelClosed { vpn_ip, reason } => {
            info!(%vpn_ip, reason = ?reason, "tunnel closed")
        }
        Event::Roamed { vpn_ip, from, to } => {
            info!(%vpn_ip, from = ?from, %to, "peer roamed")
        }
    }
}

fn unix_now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn unix_now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use prost::Message;

    use super::*;
    use crate::node::{RngOrigin, VpnIp};
    use crate::wire::{NebulaHandshake, HEADER_LEN};

    /// Two daemons started from the same configuration at the same instant (both clocks) still
    /// draw different local indexes and ephemeral keys: the node is keyed by the OS, not by
    /// anything in the configuration or the clock.
    #[test]
    fn identical_daemons_draw_different_indexes_and_ephemeral_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = setup::tests::pki_for(dir.path());
        yaml.push_str(
            "static_host_map: {\"10.9.0.1\": [\"127.0.0.1:4242\"]}\ntun: {disabled: true}\n",
        );
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let (now, unix_ns) = (Instant::now(), unix_now_nanos());
        let peer = VpnIp::from(Ipv4Addr::new(10, 9, 0, 1));
        let start = || {
            let plan = setup::load(&cfg, (unix_ns / 1_000_000_000) as i64).unwrap();
            let mut node = build_node(plan, now, unix_ns).unwrap();
            node.connect(now, peer);
            let stage1 = node
                .poll_transmit()
                .expect("stage 1 sent to the static host");
            let index = node.hostmap().pending(peer).unwrap().local_index;
            (node, stage1.bytes, index)
        };
        let (a, a1, a_index) = start();
        let (_b, b1, b_index) = start();
        assert_eq!(a.rng_origin(), RngOrigin::Os);
        // Stage 1 after the header: ephemeral key (32, clear), static key (32, clear), payload.
        let details = |m: &[u8]| {
            NebulaHandshake::decode(&m[HEADER_LEN + 64..])
                .unwrap()
                .details
                .unwrap()
        };
        let (da, db) = (details(&a1), details(&b1));
        assert_eq!(
            da.initiator_index, a_index.0,
            "index on the wire is the pending one"
        );
        assert_eq!(db.initiator_index, b_index.0);
        assert_eq!(da.time, db.time, "same clock");
        assert_eq!(
            a1[HEADER_LEN + 32..HEADER_LEN + 64],
            b1[HEADER_LEN + 32..HEADER_LEN + 64]
        );
        assert_ne!(a_index, b_index, "two daemons drew the same local index");
        assert_ne!(
            a1[HEADER_LEN..HEADER_LEN + 32],
            b1[HEADER_LEN..HEADER_LEN + 32],
            "two daemons drew the same ephemeral key"
        );
    }
}

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
//! With offloads a TUN read is a superpacket split into the read batch, its packets sealed into
//! consecutive send slots that leave as UDP GSO runs; a GRO receive slot holds many datagrams,
//! each opened in place and queued in the TUN coalescer, which is written once per batch.
//!
//! Growth point: several `routines` would run one `Daemon`-like worker per TUN queue +
//! SO_REUSEPORT socket, sharded by peer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::time::sleep_until;
use tracing::{debug, error, info, warn};

use super::batch::{PacketBatch, RecvBatch, SendBatch, MAX_DATAGRAM, SLOT_SIZE};
use super::control::{self, Command, ControlState, Reply};
use super::dns::{self, DnsServer};
use super::entropy;
use super::local_addrs::LocalAddrs;
use super::logging::{self, LogHandle};
use super::notify::Notifier;
use super::offload::Coalescer;
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
/// Receive slots with UDP GRO: each holds up to 64 datagrams, so fewer keep memory down.
const GRO_SLOTS: usize = 16;
/// Send slots with TUN offloads: room for two split superpackets per `sendmmsg`.
const OFFLOAD_SEND_SLOTS: usize = 128;
/// Packets decrypted per TUN write (coalesced per flow when the device offloads).
const TUN_WRITE_SLOTS: usize = 64;

/// `meshd -config PATH`: runs the daemon until SIGINT/SIGTERM. Blocks the calling thread.
pub fn main(config: &Path) -> anyhow::Result<()> {
    // One thread: the node has one owner and the data path never waits on another thread.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async {
        let plan = setup::load(config, unix_now_secs())?;
        let log = logging::init(plan.log_level, plan.log_format, plan.log_time.clone())?;
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
    Control(Option<control::Request>),
    /// A SIGHUP's configuration finished loading (off the loop: files and DNS may be slow).
    Loaded(Box<anyhow::Result<Plan>>),
    /// A `static_map.cadence` re-resolution finished (generation, addresses, warnings).
    Resolved(Resolution),
    /// `tun.use_system_route_table`: the kernel's gateway routes on our device changed.
    SystemRoutes,
    Timer,
}

type Resolution = (u64, StaticMap, Vec<String>);
type StaticMap = std::collections::BTreeMap<crate::node::VpnIp, Vec<std::net::SocketAddr>>;

/// Shortest `static_map.cadence` honoured, so a zero cannot spin the loop.
const MIN_CADENCE: Duration = Duration::from_secs(1);

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
    tun_out: Coalescer,
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
    /// Control socket, metrics listener and what they show.
    ctl: ControlState,
    /// Sum of the node's drop counters at the last report.
    last_drops: u64,
    /// A reload's `setup::load` running on a blocking thread, so a slow resolver for a
    /// `static_host_map` name delays only the reload, never the tunnels.
    /// (A thread per reload rather than tokio's blocking pool: nothing lingers after it.)
    loading: Option<tokio::sync::oneshot::Receiver<anyhow::Result<Plan>>>,
    /// `static_host_map` names and `static_map.*`, re-resolved every cadence on a thread.
    static_resolve: setup::StaticResolve,
    next_resolve: Instant,
    resolving: Option<tokio::sync::oneshot::Receiver<Resolution>>,
    /// Bumped by each reload, so a resolution started under the old map is dropped.
    resolve_gen: u64,
    /// `reload` requests on the control socket, answered when the running load finishes.
    reload_waiters: Vec<tokio::sync::oneshot::Sender<Reply>>,
    /// `tun.use_system_route_table` watcher (restart-only, as in Nebula).
    system_routes: Option<tokio::sync::watch::Receiver<super::system_routes::SystemRoutes>>,
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
        let system_routes = match (&tun, plan.use_system_route_table) {
            (Some(t), true) => Some(
                super::system_routes::watch_routes(t.index(), plan.identity.vpn_net)
                    .context("tun.use_system_route_table")?,
            ),
            _ => None,
        };
        let udp = UdpSocket::bind(&plan.udp)?;
        super::burst_buffer::size_for_bursts(&udp, plan.node.am_lighthouse, plan.udp.read_buffer);
        let fixed = Fixed::of(&plan);
        plan.node.listen_port = udp.local_addr().port();
        let dns = plan.dns.as_ref().map(DnsServer::bind).transpose()?;
        let signals = Signals::new().context("installing signal handlers")?;
        let now = Instant::now();
        let ctl = ControlState::start(plan.control.clone(), now)?;
        let (batch, local_interfaces) = (plan.batch, std::mem::take(&mut plan.local_interfaces));
        let tun_mtu = plan.tun.as_ref().map(|s| usize::from(s.mtu));
        let static_resolve = plan.static_resolve.clone();
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
        if let Some(path) = ctl.socket_path() {
            info!(path = %path.display(), "control socket listening");
        }
        if let Some(addr) = ctl.metrics_addr {
            info!(%addr, "serving Prometheus metrics");
        }
        let notifier = Notifier::from_env();
        if let Err(e) = notifier.ready() {
            debug!(error = %e, "sd_notify READY failed");
        }
        let offload = tun.as_ref().is_some_and(Tun::offload);
        let tun_in = match (&tun, tun_mtu) {
            (Some(t), Some(mtu)) => t.packet_batch(batch, mtu, MAX_DATAGRAM),
            _ => PacketBatch::new(1, 1),
        };
        let send_slots = if offload {
            batch.max(OFFLOAD_SEND_SLOTS)
        } else {
            batch
        };
        info!(
            tun_offload = offload,
            udp_gso = udp.gso(),
            udp_gro = udp.gro(),
            "data path offloads"
        );
        Ok(Daemon {
            node,
            udp_in: udp.recv_batch_for(batch, GRO_SLOTS),
            udp_out: SendBatch::new(send_slots, SLOT_SIZE),
            udp,
            routes,
            tun,
            signals,
            tun_in,
            tun_out: Coalescer::new(TUN_WRITE_SLOTS),
            next_sweep: now,
            notifier,
            local_addrs,
            dns,
            log,
            config_path: None,
            fixed,
            last_reload: None,
            ctl,
            last_drops: 0,
            loading: None,
            next_resolve: now + static_resolve.cadence.max(MIN_CADENCE),
            static_resolve,
            resolving: None,
            resolve_gen: 0,
            reload_waiters: Vec::new(),
            system_routes,
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
                Wake::Control(Some(req)) => self.on_control(req),
                Wake::Control(None) => {}
                Wake::Loaded(plan) => self.finish_reload(*plan),
                Wake::Resolved(r) => self.on_resolved(r),
                Wake::SystemRoutes => self.on_system_routes(),
                Wake::Timer => self.on_timer(),
            }
            self.drain_outputs().await;
        }
    }

    /// Sleeps until a batch, a signal or the next deadline. Every branch is cancel-safe.
    async fn wait(&mut self) -> Wake {
        let now = Instant::now();
        let mut deadline = self
            .node
            .poll_timeout()
            .unwrap_or(now + MAX_SLEEP)
            .min(self.next_sweep);
        if self.static_resolve.has_names() {
            deadline = deadline.min(self.next_resolve);
        }
        let Daemon {
            udp,
            tun,
            signals,
            udp_in,
            tun_in,
            dns,
            ctl,
            loading,
            resolving,
            system_routes,
            ..
        } = self;
        tokio::select! {
            _ = routes_changed(system_routes) => Wake::SystemRoutes,
            p = loaded(loading) => Wake::Loaded(Box::new(p)),
            r = resolved(resolving) => Wake::Resolved(r),
            s = signals.recv() => Wake::Signal(s),
            r = udp.recv_batch(udp_in) => Wake::Udp(r),
            r = tun_recv(tun.as_ref().map(Tun::queue), tun_in) => Wake::Tun(r),
            r = dns::recv(dns.as_mut()) => Wake::Dns(r),
            r = ctl.recv() => Wake::Control(r),
            _ = sleep_until(deadline.into()) => Wake::Timer,
        }
    }

    fn on_signal(&mut self, s: SignalEvent) {
        match s {
            SignalEvent::Reload => self.reload(),
            SignalEvent::Shutdown => {}
        }
    }

    /// SIGHUP: starts loading the configuration on a blocking thread; the loop keeps moving
    /// packets meanwhile and applies the result in [`Daemon::finish_reload`]. A SIGHUP while a
    /// load is running is logged and dropped: that load already reads the current files.
    fn reload(&mut self) {
        if self.loading.is_some() {
            info!("SIGHUP received while a reload is still loading; ignored");
            return;
        }
        info!("SIGHUP received: reloading the configuration");
        let _ = self.notifier.reloading();
        let Some(path) = self.config_path.clone() else {
            self.finish_reload(Err(anyhow::anyhow!("no configuration path to reload from")));
            return;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("meshd-reload".into())
            .spawn(move || {
                let _ = tx.send(setup::load(&path, unix_now_secs()));
            });
        match spawned {
            Ok(_) => self.loading = Some(rx),
            Err(e) => self.finish_reload(Err(e).context("starting the reload thread")),
        }
    }

    /// All or nothing: a config that fails any check changes nothing; the failure is logged and
    /// shown in `STATUS=` until the next reload.
    fn finish_reload(&mut self, plan: anyhow::Result<Plan>) {
        self.loading = None;
        let outcome = plan.and_then(|p| self.try_reload(p));
        let line = match outcome {
            Ok((summary, pki)) => {
                info!("{summary}");
                self.ctl.reloaded(Some(pki));
                summary
            }
            Err(e) => {
                self.ctl.reloaded(None);
                let msg = format!("reload failed, running configuration kept: {e:#}");
                error!("{msg}");
                msg
            }
        };
        for waiter in self.reload_waiters.drain(..) {
            let _ = waiter.send(ControlState::reload_reply(Some(&line)));
        }
        self.last_reload = Some(line);
        let _ = self.notifier.ready();
        self.send_status();
    }

    fn try_reload(&mut self, mut plan: Plan) -> anyhow::Result<(String, control::PkiView)> {
        let unix_now = unix_now_secs();
        let static_resolve = plan.static_resolve.clone();
        // The socket stays bound where it is (a listen change is reported by `Fixed`), so the
        // node keeps advertising the port actually bound, also for `listen.port: 0`.
        plan.node.listen_port = self.udp.local_addr().port();
        for w in &plan.warnings {
            warn!("{w}");
        }
        let pki = plan.control.pki.clone();
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
        // The reload resolved the new map just now; re-resolution restarts from it.
        self.resolve_gen += 1;
        self.resolving = None;
        self.next_resolve = Instant::now() + static_resolve.cadence.max(MIN_CADENCE);
        self.static_resolve = static_resolve;
        Ok((summary.describe(), pki))
    }

    /// A control-socket or metrics request, answered between batches.
    fn on_control(&mut self, req: control::Request) {
        let now = Instant::now();
        let reply = match req.cmd {
            Command::Reload => {
                self.reload();
                if self.loading.is_some() {
                    // Answered by `finish_reload` once the load running off the loop is done.
                    self.reload_waiters.push(req.reply);
                    return;
                }
                ControlState::reload_reply(self.last_reload.as_deref())
            }
            Command::Metrics => Reply::Metrics(Box::new(self.ctl.snapshot(&mut self.node))),
            cmd => {
                let facts = control::DaemonFacts {
                    listen: self.udp.local_addr(),
                    tun: self.tun.as_ref().map(|t| t.name()),
                    last_reload: self.last_reload.as_deref(),
                    started: self.ctl.started,
                    firewall: super::metrics::firewall_counts(&mut self.node),
                };
                let (node, log, pki) = (&mut self.node, &self.log, &self.ctl.pki);
                control::answer(cmd, node, log, pki, &facts, now, unix_now_secs())
            }
        };
        let _ = req.reply.send(reply);
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

    /// Decrypts every received datagram in place (a GRO slot datagram by datagram) and queues
    /// the inner packets for the TUN, written coalesced once per batch.
    async fn on_udp_batch(&mut self) {
        let now = Instant::now();
        for i in 0..self.udp_in.len() {
            let from = self.udp_in.peer(i);
            for seg in self.udp_in.segments(i) {
                let buf = &mut self.udp_in.datagram_mut(i)[seg];
                if let DatagramOutcome::ToTun(range) = self.node.handle_datagram(now, from, buf) {
                    if self.tun_out.is_full() {
                        write_tun(self.tun.as_ref(), &mut self.tun_out);
                    }
                    self.tun_out.push(&buf[range]);
                }
            }
        }
        self.write_tun();
    }

    /// Writes the queued TUN packets (coalesced when the device offloads).
    fn write_tun(&mut self) {
        write_tun(self.tun.as_ref(), &mut self.tun_out);
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

    /// `static_map.cadence`: resolves the names again on a thread of its own (a slow resolver
    /// never holds up the loop); the answer arrives as [`Wake::Resolved`].
    fn start_resolve(&mut self, now: Instant) {
        self.next_resolve = now + self.static_resolve.cadence.max(MIN_CADENCE);
        if self.resolving.is_some() || !self.static_resolve.has_names() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (spec, generation) = (self.static_resolve.clone(), self.resolve_gen);
        let spawned = std::thread::Builder::new()
            .name("meshd-static-map".into())
            .spawn(move || {
                let mut warnings = Vec::new();
                let map = setup::resolve_static(&spec, &mut warnings);
                let _ = tx.send((generation, map, warnings));
            });
        match spawned {
            Ok(_) => self.resolving = Some(rx),
            Err(e) => warn!(error = %e, "cannot start static_host_map re-resolution"),
        }
    }

    fn on_system_routes(&mut self) {
        let Some(rx) = &mut self.system_routes else {
            return;
        };
        let routes: Vec<crate::node::UnsafeRoute> = rx
            .borrow_and_update()
            .iter()
            .map(|(route, via)| crate::node::UnsafeRoute {
                route: *route,
                via: crate::node::VpnIp::from(*via),
                mtu: None,
            })
            .collect();
        info!(
            routes = routes.len(),
            "unsafe routes from the system route table"
        );
        self.node.set_system_routes(routes);
    }

    fn on_resolved(&mut self, (generation, map, warnings): Resolution) {
        self.resolving = None;
        if generation != self.resolve_gen {
            return;
        }
        for w in &warnings {
            debug!("{w}");
        }
        if self.node.set_static_host_map(map) {
            info!("static_host_map names resolved to new addresses");
        }
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        self.node.handle_timeout(now);
        if self.static_resolve.has_names() && now >= self.next_resolve {
            self.start_resolve(now);
        }
        if now >= self.next_sweep {
            self.node.expire_filter(now);
            if let Some(drops) = self.node.filter_mut().drop_report() {
                debug!(%drops, "firewall drops");
            }
            self.report_drops();
            self.local_addrs.refresh(&mut self.node, now);
            self.ctl.check_expiry(now, unix_now_secs());
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

    /// Logs the node's data-path drop counters (replay, auth, ...) at debug level when they
    /// changed since the last sweep; a cheap way to see whether batching reorders past the
    /// replay window.
    fn report_drops(&mut self) {
        if !tracing::enabled!(tracing::Level::DEBUG) {
            return;
        }
        let total: u64 = self.node.drops().nonzero().iter().map(|(_, n)| n).sum();
        if total != self.last_drops {
            self.last_drops = total;
            debug!(drops = ?self.node.drops().nonzero(), "data path drops");
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
            if self.tun_out.is_full() {
                self.write_tun();
            }
            self.tun_out.push(&p);
        }
        self.write_tun();
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

fn write_tun(tun: Option<&Tun>, out: &mut Coalescer) {
    match tun {
        Some(tun) => {
            if let Err(e) = tun.queue().send_coalesced(out) {
                debug!(error = %e, "tun write failed");
            }
        }
        None => out.clear(),
    }
}

/// The loading reload's result, or never completes when none is loading.
async fn loaded(
    loading: &mut Option<tokio::sync::oneshot::Receiver<anyhow::Result<Plan>>>,
) -> anyhow::Result<Plan> {
    match loading {
        Some(rx) => match rx.await {
            Ok(plan) => plan,
            Err(_) => Err(anyhow::anyhow!("the reload thread ended without a result")),
        },
        None => std::future::pending().await,
    }
}

/// The route watcher saw a change, or never completes without one (or once it is gone).
async fn routes_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<super::system_routes::SystemRoutes>>,
) {
    match rx {
        Some(r) => {
            if r.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// A finished re-resolution, or never completes when none is running.
async fn resolved(
    resolving: &mut Option<tokio::sync::oneshot::Receiver<Resolution>>,
) -> Resolution {
    match resolving {
        Some(rx) => match rx.await {
            Ok(r) => r,
            // The thread died without answering: an out-of-date generation is ignored.
            Err(_) => (u64::MAX, StaticMap::new(), Vec::new()),
        },
        None => std::future::pending().await,
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

//! Start-up plan: turns a loaded `config::Config` plus its checked `PkiState` into the settings
//! each piece of the daemon takes (`NodeConfig` + `Identity` for the node, `TunSettings`,
//! `UdpSettings`, the route plan, `FirewallConfig`, logging). Errors carry context for the
//! operator (anyhow).
//!
//! Owns only this mapping. Must not open sockets, devices or routes (that is `run`), and must not
//! make protocol decisions. The one side effect is DNS resolution of `static_host_map` names
//! (bounded by `static_map.lookup_timeout`; the daemon runs reloads off its event loop).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{bail, Context};

use super::control::{self, PkiView};
use super::logging::{Format, Level, TimeStyle};
use super::metrics::MetricsSettings;
use super::routes::{self, RoutePlan, RouteSpec};
use super::tun::TunSettings;
use super::udp::UdpSettings;
use crate::cert::CaPool;
use crate::config::{self, Config, Host, IpNet, LogFormat, LogLevel, PkiState};
use crate::crypto::Cipher;
use crate::firewall::{ConntrackTimeouts, FirewallConfig, LocalIdentity};
use crate::node::{self, Identity, NodeConfig, SendRecvError, VpnIp};

/// Everything the event loop needs to start, derived once from the configuration.
#[derive(Debug)]
pub struct Plan {
    pub node: NodeConfig,
    pub identity: Identity,
    pub ca_pool: CaPool,
    /// `None` when `tun.disabled`.
    pub tun: Option<TunSettings>,
    /// Kernel routes for the tun device (ignored when the device is disabled).
    pub routes: RoutePlan,
    pub udp: UdpSettings,
    /// Datagrams per `recvmmsg`/`sendmmsg` (`listen.batch`).
    pub batch: usize,
    pub firewall: FirewallConfig,
    pub local: LocalIdentity,
    pub log_level: Level,
    pub log_format: Format,
    /// `logging.disable_timestamp` / `logging.timestamp_format`.
    pub log_time: TimeStyle,
    /// Non-fatal findings (config warnings, unresolvable static hosts) to log once logging is up.
    pub warnings: Vec<String>,
    /// `local_allow_list.interfaces` rules, applied by `local_addrs` before the node sees them.
    pub local_interfaces: Vec<(regex::Regex, bool)>,
    /// Where to serve `lighthouse.serve_dns` (only when also `am_lighthouse`).
    pub dns: Option<DnsListen>,
    /// `static_host_map` names to re-resolve every `static_map.cadence`.
    pub static_resolve: StaticResolve,
    /// `tun.use_system_route_table`: watch the kernel table for unsafe routes.
    pub use_system_route_table: bool,
    /// The control socket, the certificates it shows, and the Prometheus exposition.
    pub control: ControlPlan,
}

/// `control:` and `stats:` as the daemon's management side uses them.
#[derive(Debug, Clone)]
pub struct ControlPlan {
    pub socket: std::path::PathBuf,
    /// `control.socket` was set: failing to bind it stops start-up. The default path only warns,
    /// so an unprivileged `tun.disabled` node still runs without `/run/meshd`.
    pub socket_required: bool,
    pub pki: PkiView,
    pub metrics: Option<MetricsSettings>,
}

/// `lighthouse.dns.host` / `port`; an empty host means every address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsListen {
    pub host: String,
    pub port: u16,
}

/// Loads `path` (file or directory), runs every start-up check and builds the plan.
pub fn load(path: &Path, unix_now: i64) -> anyhow::Result<Plan> {
    let loaded =
        config::load_path(path).with_context(|| format!("loading config {}", path.display()))?;
    let read = |p: &Path| std::fs::read(p);
    let (pki, report) = config::check_startup(&loaded.config, &read, unix_now);
    if !report.problems.is_empty() {
        let lines: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        bail!(
            "{}: configuration is invalid:\n  {}",
            path.display(),
            lines.join("\n  ")
        );
    }
    let pki = pki.context("the pki section yielded no usable certificate")?;
    let mut warnings: Vec<String> = loaded.warnings.iter().map(|w| w.to_string()).collect();
    warnings.extend(report.warnings.iter().map(|w| w.to_string()));
    let mut plan = plan(&loaded.config, pki)?;
    plan.warnings.splice(0..0, warnings);
    Ok(plan)
}

/// Maps a checked configuration to the daemon's settings.
pub fn plan(c: &Config, pki: PkiState) -> anyhow::Result<Plan> {
    let identity =
        node::identity_from_cert(&pki.cert, &pki.key).context("building our identity from pki")?;
    let mut warnings = Vec::new();
    let mut node = node_config(c, &mut warnings);
    routing_config(c, &mut node)?;
    if c.lighthouse.serve_dns && !c.lighthouse.am_lighthouse {
        warnings.push("DNS server refusing to run because this host is not a lighthouse.".into());
    }
    let cert_ips: Vec<Ipv4Addr> = pki.cert.ips().iter().map(|n| n.addr()).collect();
    let local = LocalIdentity::new(cert_ips, pki.cert.subnets().to_vec());
    let routes = route_plan(c, &identity)?;
    let tun = tun_settings(c, &identity, &routes)?;
    let cas = pki.ca_pool.cas().cloned().collect();
    Ok(Plan {
        node,
        identity,
        ca_pool: pki.ca_pool,
        tun,
        routes,
        udp: udp_settings(c),
        batch: c.listen.batch.clamp(1, 1024),
        firewall: firewall_config(c, &pki.cert),
        local,
        log_level: log_level(c.logging.level),
        log_format: match c.logging.format {
            LogFormat::Text => Format::Text,
            LogFormat::Json => Format::Json,
        },
        log_time: log_time(c),
        warnings,
        local_interfaces: c
            .lighthouse
            .local_allow_list
            .as_ref()
            .map(|l| l.interfaces.clone())
            .unwrap_or_default(),
        dns: (c.lighthouse.serve_dns && c.lighthouse.am_lighthouse).then(|| DnsListen {
            host: c.lighthouse.dns.host.clone(),
            port: c.lighthouse.dns.port,
        }),
        control: ControlPlan {
            socket: control_socket(c),
            socket_required: c.control.socket.is_some(),
            pki: PkiView {
                cas,
                cert: pki.cert,
                warn_within: c.control.cert_expiry_warning,
            },
            metrics: metrics_settings(c)?,
        },
        static_resolve: static_resolve(c),
        use_system_route_table: c.tun.use_system_route_table,
    })
}

/// `control.socket`, else `/run/meshd/<tun.dev>.sock`.
pub fn control_socket(c: &Config) -> std::path::PathBuf {
    c.control
        .socket
        .clone()
        .unwrap_or_else(|| control::default_socket(c.tun.dev.as_deref()))
}

/// `stats:` with `type: prometheus` (graphite is refused by the config checks).
fn metrics_settings(c: &Config) -> anyhow::Result<Option<MetricsSettings>> {
    let config::StatsBackend::Prometheus {
        listen,
        path,
        namespace,
        subsystem,
    } = &c.stats.backend
    else {
        return Ok(None);
    };
    let addr = listen
        .to_socket_addrs()
        .with_context(|| format!("stats.listen {listen:?}"))?
        .next()
        .with_context(|| format!("stats.listen {listen:?} resolves to nothing"))?;
    Ok(Some(MetricsSettings::new(
        addr,
        path,
        namespace,
        subsystem,
        c.stats.message_metrics,
        c.stats.lighthouse_metrics,
    )))
}

fn node_config(c: &Config, warnings: &mut Vec<String>) -> NodeConfig {
    NodeConfig {
        cipher: match c.cipher {
            config::Cipher::Aes => Cipher::AesGcm,
            config::Cipher::ChaChaPoly => Cipher::ChaChaPoly,
        },
        handshake_try_interval: c.handshakes.try_interval,
        handshake_retries: c.handshakes.retries,
        static_host_map: resolve_static(&static_resolve(c), warnings),
        send_recv_error: recv_error_mode(c.listen.send_recv_error),
        accept_recv_error: recv_error_mode(c.listen.accept_recv_error),
        tun_disabled: c.tun.disabled,
        connection_alive_interval: c.timers.connection_alive_interval,
        pending_deletion_interval: c.timers.pending_deletion_interval,
        disconnect_invalid: c.pki.disconnect_invalid,
        am_lighthouse: c.lighthouse.am_lighthouse,
        lighthouses: lighthouses(c),
        lighthouse_interval: c.lighthouse.interval,
        advertise_addrs: advertise_addrs(c, warnings),
        local_allow_list: c
            .lighthouse
            .local_allow_list
            .as_ref()
            .map(|l| l.cidrs.clone()),
        remote_allow_list: c.lighthouse.remote_allow_list.clone(),
        remote_allow_ranges: remote_allow_ranges(c, warnings),
        preferred_ranges: c.preferred_ranges.clone(),
        punch: c.punchy.punch,
        punch_respond: c.punchy.respond,
        punch_delay: c.punchy.delay,
        punch_respond_delay: c.punchy.respond_delay,
        // A relay forwards for others and never advertises relays of its own (1.6.1).
        advertise_relays: if c.relay.am_relay {
            Vec::new()
        } else {
            c.relay.relays.iter().map(|r| VpnIp::from(*r)).collect()
        },
        am_relay: c.relay.am_relay,
        use_relays: c.relay.use_relays,
        // Replaced by the bound port once the socket is open (`listen.port: 0`).
        listen_port: c.listen.port,
        serve_dns: c.lighthouse.serve_dns && c.lighthouse.am_lighthouse,
        drop_local_broadcast: c.tun.drop_local_broadcast,
        drop_multicast: c.tun.drop_multicast,
        try_promote_every: c.counters.try_promote,
        requery_every_packets: c.counters.requery_every_packets,
        punch_target_all_remotes: c.punchy.target_all_remotes,
        drop_inactive: c.tunnels.drop_inactive,
        inactivity_timeout: c.tunnels.inactivity_timeout,
        requery_wait: c.timers.requery_wait,
        calculated_remotes: calculated_remotes(c, warnings),
        max_hosts: c.bounds.max_hosts,
        max_pending: c.bounds.max_pending,
        max_relay_legs: c.bounds.max_relay_legs,
        ..NodeConfig::default()
    }
}

fn recv_error_mode(m: config::SendRecvError) -> SendRecvError {
    match m {
        config::SendRecvError::Always => SendRecvError::Always,
        config::SendRecvError::Never => SendRecvError::Never,
        config::SendRecvError::Private => SendRecvError::Private,
    }
}

/// `lighthouse.hosts`; a lighthouse ignores the list (1.6.1 warns and treats it as empty).
fn lighthouses(c: &Config) -> Vec<VpnIp> {
    if c.lighthouse.am_lighthouse {
        return Vec::new();
    }
    c.lighthouse.hosts.iter().map(|h| VpnIp::from(*h)).collect()
}

/// `lighthouse.advertise_addrs` with host names resolved now; unresolvable names are warnings.
fn advertise_addrs(c: &Config, warnings: &mut Vec<String>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for hp in &c.lighthouse.advertise_addrs {
        match resolve(&hp.host, hp.port) {
            Ok(found) => out.extend(found),
            Err(e) => warnings.push(format!("lighthouse.advertise_addrs: {e}")),
        }
    }
    out.dedup();
    out
}

/// What re-resolving `static_host_map` needs (`static_map.*`); the daemon repeats it every
/// `cadence` off its event loop when any entry is a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticResolve {
    pub hosts: Vec<config::StaticHost>,
    pub network: config::LookupNetwork,
    pub lookup_timeout: std::time::Duration,
    pub cadence: std::time::Duration,
}

impl StaticResolve {
    /// Whether any entry is a DNS name (only then is there anything to re-resolve).
    pub fn has_names(&self) -> bool {
        self.hosts
            .iter()
            .flat_map(|h| &h.addrs)
            .any(|hp| matches!(hp.host, Host::Name(_)))
    }
}

fn static_resolve(c: &Config) -> StaticResolve {
    StaticResolve {
        hosts: c.static_host_map.clone(),
        network: c.static_map.network,
        lookup_timeout: c.static_map.lookup_timeout,
        cadence: c.static_map.cadence,
    }
}

/// `lighthouse.calculated_remotes`: IPv4 VPN ranges with IPv4 masks (1.6.1's VPN is IPv4).
fn calculated_remotes(
    c: &Config,
    warnings: &mut Vec<String>,
) -> Vec<(node::Ipv4Net, Vec<node::CalculatedRemote>)> {
    let mut out = Vec::new();
    for (range, entries) in &c.lighthouse.calculated_remotes {
        let IpNet::V4(range) = range else {
            warnings.push(format!(
                "lighthouse.calculated_remotes: {range} is not an IPv4 VPN range; ignored"
            ));
            continue;
        };
        let mut list = Vec::new();
        for e in entries {
            match e.mask {
                IpNet::V4(mask) => list.push(node::CalculatedRemote { mask, port: e.port }),
                IpNet::V6(..) => warnings.push(format!(
                    "lighthouse.calculated_remotes.{range}: IPv6 mask {} ignored",
                    e.mask
                )),
            }
        }
        out.push((*range, list));
    }
    out
}

/// `lighthouse.remote_allow_ranges`: only IPv4 VPN ranges can match a VPN IP in 1.6.1.
fn remote_allow_ranges(
    c: &Config,
    warnings: &mut Vec<String>,
) -> Vec<(node::Ipv4Net, config::AllowList)> {
    let mut out = Vec::new();
    for (net, list) in &c.lighthouse.remote_allow_ranges {
        match net {
            IpNet::V4(n) => out.push((*n, list.clone())),
            IpNet::V6(..) => warnings.push(format!(
                "lighthouse.remote_allow_ranges: {net} is not an IPv4 VPN range; ignored"
            )),
        }
    }
    out
}

/// Resolves `host` with the system resolver (IP literals pass straight through).
fn resolve(host: &Host, port: u16) -> Result<Vec<SocketAddr>, String> {
    match host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
        Host::Name(name) => (name.as_str(), port)
            .to_socket_addrs()
            .map(|found| found.collect())
            .map_err(|e| format!("cannot resolve {name}: {e}")),
    }
}

/// `static_host_map` with DNS names resolved now: every name at once, each on its own thread,
/// all given up after `static_map.lookup_timeout`, keeping the `static_map.network` family. A
/// name that does not resolve in time is a warning, as in Nebula, not a start-up failure.
pub fn resolve_static(
    s: &StaticResolve,
    warnings: &mut Vec<String>,
) -> BTreeMap<VpnIp, Vec<SocketAddr>> {
    let names: Vec<&str> = s
        .hosts
        .iter()
        .flat_map(|h| &h.addrs)
        .filter_map(|hp| match &hp.host {
            Host::Name(n) => Some(n.as_str()),
            Host::Ip(_) => None,
        })
        .collect();
    let resolved = resolve_names(&names, s.lookup_timeout);
    let mut map = BTreeMap::new();
    for host in &s.hosts {
        let mut addrs = Vec::new();
        for hp in &host.addrs {
            match &hp.host {
                Host::Ip(ip) => addrs.push(SocketAddr::new(*ip, hp.port)),
                Host::Name(name) => match resolved.get(name.as_str()) {
                    Some(Ok(ips)) => {
                        let kept: Vec<SocketAddr> = ips
                            .iter()
                            .filter(|ip| in_network(**ip, s.network))
                            .map(|ip| SocketAddr::new(*ip, hp.port))
                            .collect();
                        if kept.is_empty() {
                            warnings.push(format!(
                                "static_host_map {}: {name} has no address of static_map.network {:?}",
                                host.vpn_ip, s.network
                            ));
                        }
                        addrs.extend(kept);
                    }
                    Some(Err(e)) => warnings.push(format!("static_host_map {}: {e}", host.vpn_ip)),
                    None => warnings.push(format!(
                        "static_host_map {}: cannot resolve {name}: no answer within \
                         static_map.lookup_timeout ({:?})",
                        host.vpn_ip, s.lookup_timeout
                    )),
                },
            }
        }
        addrs.dedup();
        map.insert(VpnIp::from(host.vpn_ip), addrs);
    }
    map
}

fn in_network(ip: std::net::IpAddr, network: config::LookupNetwork) -> bool {
    match network {
        config::LookupNetwork::Ip4 => ip.is_ipv4(),
        config::LookupNetwork::Ip6 => ip.is_ipv6(),
        config::LookupNetwork::Ip => true,
    }
}

/// Resolves every distinct name in parallel, waiting at most `timeout` in all. A name missing
/// from the result did not answer in time; its thread ends whenever the resolver gives up (the
/// system resolver cannot be cancelled), holding nothing but its own answer.
fn resolve_names(
    names: &[&str],
    timeout: std::time::Duration,
) -> BTreeMap<String, Result<Vec<std::net::IpAddr>, String>> {
    let mut out = BTreeMap::new();
    if timeout.is_zero() {
        return out;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let mut asked = std::collections::BTreeSet::new();
    for name in names.iter().copied().filter(|n| asked.insert(*n)) {
        let (tx, owned) = (tx.clone(), name.to_string());
        let spawned = std::thread::Builder::new()
            .name("meshd-resolve".into())
            .spawn(move || {
                let found = (owned.as_str(), 0)
                    .to_socket_addrs()
                    .map(|a| a.map(|s| s.ip()).collect::<Vec<_>>())
                    .map_err(|e| format!("cannot resolve {owned}: {e}"));
                let _ = tx.send((owned, found));
            });
        if let Err(e) = spawned {
            out.insert(name.to_string(), Err(format!("cannot resolve {name}: {e}")));
        }
    }
    drop(tx);
    let deadline = std::time::Instant::now() + timeout;
    while out.len() < asked.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok((name, found)) => {
                out.insert(name, found);
            }
            Err(_) => break,
        }
    }
    out
}

/// `tun.mtu`, `tun.routes` MTUs and `tun.unsafe_routes` for the node's next-hop lookup.
fn routing_config(c: &Config, node: &mut NodeConfig) -> anyhow::Result<()> {
    let mtu16 = |m: usize, key: &str| {
        u16::try_from(m).with_context(|| format!("{key}: mtu {m} is too large"))
    };
    node.tun_mtu = mtu16(c.tun.mtu, "tun.mtu")?;
    node.route_mtus = Vec::new();
    for r in &c.tun.routes {
        node.route_mtus
            .push((v4_net(&r.route, "tun.routes")?, mtu16(r.mtu, "tun.routes")?));
    }
    node.unsafe_routes = Vec::new();
    for r in &c.tun.unsafe_routes {
        node.unsafe_routes.push(node::UnsafeRoute {
            route: v4_net(&r.route, "tun.unsafe_routes")?,
            via: VpnIp::from(r.via),
            mtu: r.mtu.map(|m| mtu16(m, "tun.unsafe_routes")).transpose()?,
        });
    }
    Ok(())
}

fn route_plan(c: &Config, id: &Identity) -> anyhow::Result<RoutePlan> {
    let mut specs = Vec::new();
    for r in &c.tun.routes {
        specs.push(RouteSpec {
            dest: v4_net(&r.route, "tun.routes")?,
            mtu: Some(u32::try_from(r.mtu).context("tun.routes mtu is too large")?),
            metric: 0,
        });
    }
    for r in c.tun.unsafe_routes.iter().filter(|r| r.install) {
        specs.push(RouteSpec {
            dest: v4_net(&r.route, "tun.unsafe_routes")?,
            mtu: r.mtu.map(|m| u32::try_from(m).unwrap_or(u32::MAX)),
            metric: r.metric,
        });
    }
    let mtu = u32::try_from(c.tun.mtu).context("tun.mtu is too large")?;
    Ok(routes::plan(id.vpn_ip.addr(), id.vpn_net, mtu, &specs))
}

fn v4_net(net: &IpNet, key: &str) -> anyhow::Result<routes::Ipv4Net> {
    match net {
        IpNet::V4(n) => Ok(*n),
        IpNet::V6(..) => bail!("{key}: IPv6 route {net} is not supported (Nebula 1.6.1 is IPv4)"),
    }
}

fn tun_settings(
    c: &Config,
    id: &Identity,
    routes: &RoutePlan,
) -> anyhow::Result<Option<TunSettings>> {
    if c.tun.disabled {
        return Ok(None);
    }
    let mtu = u16::try_from(routes.device_mtu)
        .with_context(|| format!("tun.mtu {} is too large", routes.device_mtu))?;
    Ok(Some(TunSettings {
        name: c.tun.dev.clone().filter(|d| !d.is_empty()),
        addr: id.vpn_ip.addr(),
        prefix_len: id.vpn_net.prefix(),
        mtu,
        tx_queue: u32::try_from(c.tun.tx_queue).unwrap_or(u32::MAX),
        // One reader/writer pair for now; `routines` > 1 would open more queues.
        queues: 1,
        offloads: c.tun.use_offloads,
    }))
}

fn udp_settings(c: &Config) -> UdpSettings {
    UdpSettings {
        host: c.listen.host,
        port: c.listen.port,
        read_buffer: c.listen.read_buffer as usize,
        write_buffer: c.listen.write_buffer as usize,
        reuse_port: false,
        offloads: c.listen.udp_offloads,
        so_mark: c.listen.so_mark,
    }
}

fn firewall_config(c: &Config, cert: &crate::cert::NebulaCertificate) -> FirewallConfig {
    let local = default_local_cidrs(c, cert);
    FirewallConfig {
        inbound: with_default_local_cidr(&c.firewall.inbound, &local),
        outbound: with_default_local_cidr(&c.firewall.outbound, &local),
        inbound_action: c.firewall.inbound_action,
        outbound_action: c.firewall.outbound_action,
        timeouts: ConntrackTimeouts {
            tcp: c.firewall.conntrack.tcp_timeout,
            udp: c.firewall.conntrack.udp_timeout,
            default: c.firewall.conntrack.default_timeout,
        },
        conntrack_capacity: c.firewall.conntrack.max_connections,
    }
}

/// logrus: `disable_timestamp` wins; an empty layout keeps the default timestamp.
fn log_time(c: &Config) -> TimeStyle {
    if c.logging.disable_timestamp {
        TimeStyle::Off
    } else if c.logging.timestamp_format.is_empty() {
        TimeStyle::Default
    } else {
        TimeStyle::Layout(super::logtime::GoLayout::parse(&c.logging.timestamp_format))
    }
}

/// `firewall.default_local_cidr_any: false` (Nebula 1.9+): on a host whose certificate carries
/// unsafe networks, a rule without `local_cidr` covers only the certificate's VPN networks. `None`
/// when rules without it cover every local address (the key true, meshd's and 1.6.1's default,
/// or no unsafe networks).
fn default_local_cidrs(
    c: &Config,
    cert: &crate::cert::NebulaCertificate,
) -> Option<Vec<crate::firewall::CidrSpec>> {
    if c.firewall.default_local_cidr_any || cert.subnets().is_empty() {
        return None;
    }
    Some(
        cert.ips()
            .iter()
            .map(|n| crate::firewall::CidrSpec::V4(*n))
            .collect(),
    )
}

/// Each rule without `local_cidr` once per default local network (same rule otherwise).
fn with_default_local_cidr(
    rules: &[crate::firewall::Rule],
    local: &Option<Vec<crate::firewall::CidrSpec>>,
) -> Vec<crate::firewall::Rule> {
    let Some(nets) = local else {
        return rules.to_vec();
    };
    let mut out = Vec::with_capacity(rules.len());
    for rule in rules {
        if rule.local_cidr.is_some() {
            out.push(rule.clone());
            continue;
        }
        for net in nets {
            let mut r = rule.clone();
            r.local_cidr = Some(*net);
            out.push(r);
        }
    }
    out
}

fn log_level(l: LogLevel) -> Level {
    match l {
        LogLevel::Panic => Level::Panic,
        LogLevel::Fatal => Level::Fatal,
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warning,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
        LogLevel::Trace => Level::Trace,
    }
}

/// The listen address the node reports (for logs).
pub fn describe_listen(u: &UdpSettings) -> String {
    SocketAddr::new(u.host, u.port).to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn pki_for(dir: &Path) -> String {
        // Uses the CLI tool so the test builds real PEM exactly as operators do.
        let run = |args: &[&str]| {
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            let (mut o, mut e) = (Vec::new(), Vec::new());
            let code = crate::cli::cert::run(&args, &mut o, &mut e);
            assert_eq!(code, 0, "{}", String::from_utf8_lossy(&e));
        };
        let p = |f: &str| dir.join(f).to_string_lossy().into_owned();
        run(&[
            "ca",
            "-name",
            "t",
            "-out-crt",
            &p("ca.crt"),
            "-out-key",
            &p("ca.key"),
        ]);
        run(&[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.9.0.5/16",
            "-subnets",
            "192.168.77.0/24",
            "-ca-crt",
            &p("ca.crt"),
            "-ca-key",
            &p("ca.key"),
            "-out-crt",
            &p("h.crt"),
            "-out-key",
            &p("h.key"),
        ]);
        format!(
            "pki: {{ca: {}, cert: {}, key: {}}}\n",
            p("ca.crt"),
            p("h.crt"),
            p("h.key")
        )
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn config_maps_to_daemon_settings() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = pki_for(dir.path());
        yaml.push_str(
            "static_host_map: {\"10.9.0.1\": [\"192.0.2.1:4242\", \"localhost:4243\"]}\n\
             listen: {host: \"::\", port: 4300, read_buffer: 1048576, batch: 32, \
               send_recv_error: never, accept_recv_error: private}\n\
             cipher: chachapoly\n\
             tun: {dev: mesh7, mtu: 1400, tx_queue: 900, routes: [{mtu: 8800, route: 10.9.8.0/24}]}\n\
             logging: {level: debug, format: json}\n\
             firewall: {outbound_action: reject, conntrack: {tcp_timeout: 1m}, \
               inbound: [{port: 22, proto: tcp, host: any}], outbound: [{port: any, proto: any, host: any}]}\n",
        );
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let plan = load(&cfg, now()).unwrap();
        assert_eq!(plan.node.cipher, Cipher::ChaChaPoly);
        assert_eq!(plan.node.send_recv_error, SendRecvError::Never);
        assert_eq!(plan.node.accept_recv_error, SendRecvError::Private);
        let statics = &plan.node.static_host_map[&VpnIp::from(Ipv4Addr::new(10, 9, 0, 1))];
        assert!(statics.contains(&"192.0.2.1:4242".parse().unwrap()));
        assert!(
            statics
                .iter()
                .any(|a| a.port() == 4243 && a.ip().is_loopback()),
            "{statics:?}"
        );
        let tun = plan.tun.as_ref().unwrap();
        assert_eq!(tun.name.as_deref(), Some("mesh7"));
        assert_eq!((tun.addr, tun.prefix_len), (Ipv4Addr::new(10, 9, 0, 5), 16));
        // The device carries the biggest route MTU; the VPN route keeps tun.mtu.
        assert_eq!(tun.mtu, 8800);
        assert_eq!(tun.tx_queue, 900);
        assert_eq!(plan.routes.routes[0].mtu, 1400);
        assert_eq!(plan.routes.routes.len(), 2);
        assert_eq!(plan.udp.port, 4300);
        assert_eq!(plan.udp.read_buffer, 1 << 20);
        assert!(plan.udp.host.is_ipv6());
        assert_eq!(plan.batch, 32);
        assert_eq!(plan.log_level, Level::Debug);
        assert_eq!(plan.log_format, Format::Json);
        assert_eq!(plan.firewall.inbound.len(), 1);
        assert_eq!(
            plan.firewall.outbound_action,
            crate::firewall::Action::Reject
        );
        assert_eq!(plan.firewall.timeouts.tcp.as_secs(), 60);
        assert!(plan.local.handles(Ipv4Addr::new(192, 168, 77, 9)));
        assert!(!plan.local.handles(Ipv4Addr::new(10, 9, 0, 6)));
    }

    /// One place for defaults: the node settings setup derives from a config that sets nothing
    /// equal `NodeConfig::default()` (which takes its values from `config::defaults`), so the
    /// sims and the daemon run with the same defaults.
    #[test]
    fn empty_config_gives_the_node_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, pki_for(dir.path())).unwrap();
        let mut plan = load(&cfg, now()).unwrap();
        // The port the socket is bound to replaces this at start-up either way.
        plan.node.listen_port = NodeConfig::default().listen_port;
        assert_eq!(
            format!("{:#?}", plan.node),
            format!("{:#?}", NodeConfig::default())
        );
    }

    /// `firewall.default_local_cidr_any`: true (meshd's and 1.6.1's default) lets a rule
    /// without `local_cidr` cover the certificate's unsafe network; false (Nebula 1.9+'s
    /// default) limits it to the VPN network, while an explicit `local_cidr` still works.
    #[test]
    fn default_local_cidr_any_decides_what_rules_without_local_cidr_cover() {
        use crate::firewall::{Direction, Firewall, Peer};
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yml");
        let pki = pki_for(dir.path());
        let verdicts = |any: bool| {
            let mut yaml = pki.clone();
            yaml.push_str(&format!(
                "firewall: {{default_local_cidr_any: {any}, outbound: [{{port: any, proto: any, host: any}}], \
                 inbound: [{{port: any, proto: icmp, host: any}}, \
                 {{port: any, proto: any, host: any, local_cidr: 192.168.77.200/32}}]}}\n"
            ));
            std::fs::write(&cfg, yaml).unwrap();
            let plan = load(&cfg, now()).unwrap();
            let mut fw = Firewall::new(plan.firewall, plan.local);
            let peer_ip = Ipv4Addr::new(10, 9, 0, 1);
            let peer = Peer {
                vpn_ip: peer_ip,
                name: "p",
                groups: &[],
                issuer: "",
                ca_name: None,
                ips: &[peer_ip],
                subnets: &[],
            };
            let mut allowed = |dst: [u8; 4]| {
                let p = crate::node::ipv4::echo_request(peer_ip, Ipv4Addr::from(dst), 1, 1, b"x");
                fw.check_packet(&p, Direction::Inbound, &peer, std::time::Instant::now())
                    .is_allow()
            };
            (
                allowed([10, 9, 0, 5]),
                allowed([192, 168, 77, 9]),
                allowed([192, 168, 77, 200]),
            )
        };
        assert_eq!(verdicts(true), (true, true, true));
        assert_eq!(verdicts(false), (true, false, true));
    }

    #[test]
    fn offload_keys_default_on_map_and_need_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let base = pki_for(dir.path());
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, &base).unwrap();
        let on = load(&cfg, now()).unwrap();
        assert!(on.udp.offloads && on.tun.as_ref().unwrap().offloads);
        let mut yaml = base.clone();
        yaml.push_str("tun: {use_offloads: false}\nlisten: {udp_offloads: false}\n");
        std::fs::write(&cfg, &yaml).unwrap();
        let off = load(&cfg, now()).unwrap();
        assert!(!off.udp.offloads && !off.tun.as_ref().unwrap().offloads);
        assert!(
            !off.warnings.iter().any(|w| w.contains("offloads")),
            "known keys: {:?}",
            off.warnings
        );
        let keys = super::super::reload::Fixed::of(&on).needs_restart(&off);
        assert_eq!(keys, vec!["listen.udp_offloads", "tun.use_offloads"]);
        assert!(super::super::reload::Fixed::of(&on)
            .needs_restart(&on)
            .is_empty());
    }

    #[test]
    fn disabled_tun_and_bad_config_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = pki_for(dir.path());
        yaml.push_str("tun: {disabled: true}\n");
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, &yaml).unwrap();
        let plan = load(&cfg, now()).unwrap();
        assert!(plan.tun.is_none());
        assert!(plan.node.tun_disabled);

        std::fs::write(&cfg, "pki: {ca: /nonexistent/ca.crt}\n").unwrap();
        let err = format!("{:#}", load(&cfg, now()).unwrap_err());
        assert!(err.contains("ca.crt") || err.contains("pki"), "{err}");
    }

    #[test]
    fn lighthouse_punchy_relay_and_dns_keys_map() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = pki_for(dir.path());
        yaml.push_str(
            "static_host_map: {\"10.9.0.1\": [\"192.0.2.1:4242\"]}\n\
             lighthouse: {am_lighthouse: false, serve_dns: true, interval: 30, hosts: [10.9.0.1], \
               advertise_addrs: [\"localhost:0\", \"198.51.100.7:4300\"], \
               remote_allow_list: {10.0.0.0/8: false}, \
               remote_allow_ranges: {10.9.1.0/24: {192.168.0.0/16: false}}, \
               local_allow_list: {interfaces: {'docker.*': false}, 172.16.0.0/12: false}}\n\
             preferred_ranges: [192.168.1.0/24]\n\
             punchy: {punch: true, respond: true, delay: 2s, respond_delay: 3s}\n\
             relay: {relays: [10.9.0.7], use_relays: false}\n\
             listen: {port: 0}\n",
        );
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, &yaml).unwrap();
        let plan = load(&cfg, now()).unwrap();
        let n = &plan.node;
        assert!(!n.am_lighthouse && !n.serve_dns && plan.dns.is_none());
        // serve_dns without am_lighthouse: refused with a warning, as 1.6.1 does.
        assert!(
            plan.warnings.iter().any(|w| w.contains("not a lighthouse")),
            "{:?}",
            plan.warnings
        );
        assert_eq!(n.lighthouses, vec![VpnIp::from(Ipv4Addr::new(10, 9, 0, 1))]);
        assert_eq!(n.lighthouse_interval.as_secs(), 30);
        assert!(n
            .advertise_addrs
            .iter()
            .any(|a| a.ip().is_loopback() && a.port() == 0));
        assert!(n
            .advertise_addrs
            .contains(&"198.51.100.7:4300".parse().unwrap()));
        let remote = n.remote_allow_list.as_ref().unwrap();
        assert!(!remote.allows("10.1.2.3".parse().unwrap()));
        assert!(remote.allows("192.0.2.1".parse().unwrap()));
        assert_eq!(n.remote_allow_ranges.len(), 1);
        let local = n.local_allow_list.as_ref().unwrap();
        assert!(!local.allows("172.17.0.1".parse().unwrap()));
        assert_eq!(plan.local_interfaces.len(), 1);
        assert_eq!(n.preferred_ranges.len(), 1);
        assert!(n.punch && n.punch_respond);
        assert_eq!(
            (n.punch_delay.as_secs(), n.punch_respond_delay.as_secs()),
            (2, 3)
        );
        assert_eq!(
            n.advertise_relays,
            vec![VpnIp::from(Ipv4Addr::new(10, 9, 0, 7))]
        );
        assert!(!n.am_relay && !n.use_relays);

        // A relay that is also a DNS-serving lighthouse: advertises no relays, ignores hosts.
        yaml.push_str(
            "lighthouse: {am_lighthouse: true, serve_dns: true, hosts: [10.9.0.1], \
               dns: {host: 127.0.0.1, port: 5353}}\n\
             relay: {am_relay: true, relays: [10.9.0.7]}\n",
        );
        let yaml = yaml.replacen(
            "lighthouse: {am_lighthouse: false",
            "x_lighthouse: {a: false",
            1,
        );
        let yaml = yaml.replacen("relay: {relays: [10.9.0.7], use_relays: false}", "", 1);
        // A lighthouse needs a fixed port.
        let yaml = yaml.replacen("listen: {port: 0}", "listen: {port: 4242}", 1);
        std::fs::write(&cfg, &yaml).unwrap();
        let plan = load(&cfg, now()).unwrap();
        let n = &plan.node;
        assert!(n.am_lighthouse && n.serve_dns && n.am_relay);
        assert!(n.lighthouses.is_empty() && n.advertise_relays.is_empty());
        assert_eq!(
            plan.dns,
            Some(DnsListen {
                host: "127.0.0.1".into(),
                port: 5353
            })
        );
    }

    #[test]
    fn meshd_bounds_reach_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = pki_for(dir.path());
        yaml.push_str(
            "meshd: {max_hosts: 200000, max_pending_handshakes: 64, max_relay_legs: 9}\n",
        );
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, &yaml).unwrap();
        let plan = load(&cfg, now()).unwrap();
        let n = &plan.node;
        assert_eq!(
            (n.max_hosts, n.max_pending, n.max_relay_legs),
            (200_000, 64, 9)
        );
    }
}

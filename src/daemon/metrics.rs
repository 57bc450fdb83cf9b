//! Prometheus exposition for `stats: {type: prometheus}`: an HTTP/1.1 listener on `stats.listen`
//! serving `stats.path` in the Prometheus text format (0.0.4), encoded with `prometheus-client`.
//!
//! Names are Nebula 1.6.1's (`<namespace>_<subsystem>_<key>`, dots as underscores, all gauges as
//! its go-metrics exporter makes them: `handshake_manager_initiated`, `hostmap_main_hosts`,
//! `firewall_incoming_dropped_no_rule`, `messages_rx_recv_error`, `lighthouse_rx_HostQuery`, ...)
//! so existing dashboards keep working; meshd's own series are `meshd_*` counters (drops per
//! reason, per-tunnel traffic labelled by VPN IP, reload outcomes, certificate expiry).
//!
//! Owns the listener and the encoding. Values come from a [`Snapshot`] the event loop builds
//! between batches when a scrape asks for it (through the control channel), so a scrape never
//! touches the node or blocks packet processing; counters on the data path stay plain integers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tracing::warn;

use super::control::{ask_loop, Command, Reply, Request};
use crate::firewall::{self, Direction as FwDirection};
use crate::node::status::{NodeCounters, TunnelCounters, LIGHTHOUSE_KINDS, MESSAGE_KINDS};

/// Longest request head read from a scraper.
const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CLIENTS: usize = 4;

/// `stats:` as the exposition uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    pub listen: SocketAddr,
    pub path: String,
    /// `namespace` and `subsystem` joined by `_` (empty parts left out, as Prometheus does).
    pub prefix: String,
    pub message_metrics: bool,
    pub lighthouse_metrics: bool,
}

impl MetricsSettings {
    pub fn new(
        listen: SocketAddr,
        path: &str,
        namespace: &str,
        subsystem: &str,
        message_metrics: bool,
        lighthouse_metrics: bool,
    ) -> MetricsSettings {
        let prefix = [namespace, subsystem]
            .iter()
            .filter(|p| !p.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join("_");
        MetricsSettings {
            listen,
            path: path.to_string(),
            prefix,
            message_metrics,
            lighthouse_metrics,
        }
    }
}

/// Firewall drops and conntrack fill, read from the installed filter.
#[derive(Debug, Clone)]
pub struct FirewallCounts {
    pub drops: firewall::DropCounters,
    pub conntrack: usize,
    pub conntrack_max: usize,
    pub rules_version: u16,
}

impl FirewallCounts {
    pub fn to_json(&self) -> Value {
        let dir = |d: FwDirection| -> Value {
            Value::Object(
                firewall::DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_string(), json!(self.drops.get(d, *r))))
                    .collect(),
            )
        };
        json!({
            "conntrack": self.conntrack,
            "conntrack_max": self.conntrack_max,
            "dropped": {"inbound": dir(FwDirection::Inbound), "outbound": dir(FwDirection::Outbound)},
        })
    }
}

/// One tunnel's traffic, labelled for the exposition.
#[derive(Debug, Clone)]
pub struct TunnelSample {
    pub vpn_ip: String,
    pub name: String,
    pub counters: TunnelCounters,
}

/// Everything one scrape shows, built by the loop.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub counters: NodeCounters,
    pub hosts: usize,
    pub pending: usize,
    /// Every node drop reason with its count (zeros included, so series exist from the start).
    pub drops: Vec<(String, u64)>,
    pub firewall: Option<FirewallCounts>,
    pub tunnels: Vec<TunnelSample>,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    /// (kind, name, NotAfter) of the host certificate and each CA.
    pub certs: Vec<(&'static str, String, i64)>,
}

/// Binds the listener now (so a bad address fails start-up) and spawns the server. Must run
/// inside tokio.
pub fn start(
    settings: MetricsSettings,
    to_loop: mpsc::Sender<Request>,
) -> anyhow::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind(settings.listen)
        .with_context(|| format!("binding stats.listen {}", settings.listen))?;
    std_listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(std_listener)?;
    let addr = listener.local_addr()?;
    tokio::spawn(serve_loop(listener, Arc::new(settings), to_loop));
    Ok(addr)
}

async fn serve_loop(
    listener: TcpListener,
    settings: Arc<MetricsSettings>,
    to_loop: mpsc::Sender<Request>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (settings, to_loop) = (settings.clone(), to_loop.clone());
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(READ_TIMEOUT * 2, scrape(stream, &settings, &to_loop)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and answers it; the connection closes afterwards.
async fn scrape(
    mut stream: TcpStream,
    settings: &MetricsSettings,
    to_loop: &mpsc::Sender<Request>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(&mut stream, "431 Request Header Fields Too Large", "", "").await;
        }
        let n = tokio::time::timeout(READ_TIMEOUT, stream.read(&mut buf))
            .await
            .map_err(|_| std::io::ErrorKind::TimedOut)??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" {
        return respond(&mut stream, "405 Method Not Allowed", "", "").await;
    }
    if path != settings.path {
        return respond(&mut stream, "404 Not Found", "text/plain", "not found\n").await;
    }
    match ask_loop(to_loop, Command::Metrics).await {
        Reply::Metrics(snap) => {
            let body = encode(&snap, settings);
            respond(&mut stream, "200 OK", prometheus_text::CONTENT_TYPE, &body).await
        }
        Reply::Error(e) => respond(&mut stream, "503 Service Unavailable", "text/plain", &e).await,
        Reply::Json(_) => respond(&mut stream, "500 Internal Server Error", "", "").await,
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: &str,
    ctype: &str,
    body: &str,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if !ctype.is_empty() {
        head.push_str(&format!("Content-Type: {ctype}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Registers Nebula-named gauges on a registry built for one scrape.
struct Gauges<'r>(&'r mut Registry);

impl Gauges<'_> {
    fn set(&mut self, name: &str, help: &str, v: u64) {
        let g: Gauge = Gauge::default();
        g.set(clamp(v));
        self.0.register(name, help, g);
    }
}

type Labels = Vec<(String, String)>;

fn counter_family(
    reg: &mut Registry,
    name: &str,
    help: &str,
    samples: impl Iterator<Item = (Labels, u64)>,
) {
    let f: Family<Labels, Counter> = Family::default();
    for (labels, v) in samples {
        f.get_or_create(&labels).inc_by(v);
    }
    reg.register(name, help, f);
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The exposition text for one scrape.
pub fn encode(s: &Snapshot, settings: &MetricsSettings) -> String {
    let mut reg = if settings.prefix.is_empty() {
        Registry::default()
    } else {
        Registry::with_prefix(settings.prefix.clone())
    };
    nebula_gauges(&mut Gauges(&mut reg), s, settings);
    meshd_series(&mut reg, s);
    let mut out = String::new();
    let _ = prometheus_text::encode(&mut out, &reg);
    out
}

fn nebula_gauges(g: &mut Gauges<'_>, s: &Snapshot, settings: &MetricsSettings) {
    let c = &s.counters;
    g.set(
        "handshake_manager_initiated",
        "Handshakes initiated",
        c.handshakes_initiated,
    );
    g.set(
        "handshake_manager_timed_out",
        "Handshakes timed out",
        c.handshakes_timed_out,
    );
    for (map, hosts) in [("main", s.hosts), ("pending", s.pending)] {
        let n = hosts as u64;
        g.set(&format!("hostmap_{map}_hosts"), "Hosts in the hostmap", n);
        g.set(&format!("hostmap_{map}_indexes"), "Local indexes", n);
        g.set(&format!("hostmap_{map}_remoteIndexes"), "Remote indexes", n);
    }
    g.set(
        "hostmap_main_relayIndexes",
        "Relay indexes",
        c.relay_legs as u64,
    );
    g.set("hostmap_pending_relayIndexes", "Pending relay indexes", 0);
    g.set(
        "network_packets_lost",
        "Packets skipped by peer counters",
        c.packets_lost,
    );
    g.set(
        "network_packets_duplicate",
        "Replayed packets",
        c.packets_duplicate,
    );
    g.set("routines", "Reader/writer routines", 1);
    g.set(
        "hostinfo_cached_packets_sent",
        "Packets held for a handshake, sent when it completed",
        c.cached_packets_sent,
    );
    g.set(
        "hostinfo_cached_packets_dropped",
        "Packets held for a handshake and dropped",
        c.cached_packets_dropped,
    );
    if let Some(fw) = &s.firewall {
        for (dir, d) in [
            ("incoming", FwDirection::Inbound),
            ("outgoing", FwDirection::Outbound),
        ] {
            for r in [
                firewall::DropReason::LocalIp,
                firewall::DropReason::RemoteIp,
                firewall::DropReason::NoRule,
            ] {
                let name = format!("firewall_{dir}_dropped_{}", r.name());
                g.set(&name, "Packets dropped by the firewall", fw.drops.get(d, r));
            }
        }
        g.set(
            "firewall_conntrack_count",
            "Tracked flows",
            fw.conntrack as u64,
        );
        g.set(
            "firewall_rules_version",
            "Rule set version",
            u64::from(fw.rules_version),
        );
    }
    let m = &c.messages;
    // Without message_metrics Nebula still counts recv_error (its historic metric).
    for (i, kind) in MESSAGE_KINDS.iter().enumerate() {
        if settings.message_metrics || *kind == "recv_error" {
            g.set(&format!("messages_rx_{kind}"), "Messages received", m.rx[i]);
            g.set(&format!("messages_tx_{kind}"), "Messages sent", m.tx[i]);
        }
    }
    g.set("messages_tx_holepunch", "Hole punches sent", m.tx_holepunch);
    if settings.lighthouse_metrics {
        for (i, kind) in LIGHTHOUSE_KINDS.iter().enumerate() {
            g.set(
                &format!("lighthouse_rx_{kind}"),
                "Lighthouse messages received",
                m.lighthouse_rx[i],
            );
            g.set(
                &format!("lighthouse_tx_{kind}"),
                "Lighthouse messages sent",
                m.lighthouse_tx[i],
            );
        }
    }
}

fn meshd_series(reg: &mut Registry, s: &Snapshot) {
    let info: Family<Labels, Gauge> = Family::default();
    info.get_or_create(&labels(&[("version", env!("CARGO_PKG_VERSION"))]))
        .set(1);
    reg.register("meshd_info", "meshd version.", info);
    counter_family(
        reg,
        "meshd_dropped_packets",
        "Packets dropped by the node, by reason",
        s.drops.iter().map(|(r, n)| (labels(&[("reason", r)]), *n)),
    );
    if let Some(fw) = &s.firewall {
        let samples = [
            ("inbound", FwDirection::Inbound),
            ("outbound", FwDirection::Outbound),
        ]
        .into_iter()
        .flat_map(|(dn, d)| {
            firewall::DropReason::ALL.iter().map(move |r| {
                (
                    labels(&[("direction", dn), ("reason", r.name())]),
                    fw.drops.get(d, *r),
                )
            })
        });
        counter_family(reg, "meshd_firewall_dropped", "Firewall drops", samples);
        let max: Gauge = Gauge::default();
        max.set(clamp(fw.conntrack_max as u64));
        reg.register("meshd_firewall_conntrack_max", "Conntrack bound", max);
    }
    let tunnel = |f: fn(&TunnelCounters) -> u64| {
        s.tunnels.iter().map(move |t| {
            let l = labels(&[("vpn_ip", &t.vpn_ip), ("name", &t.name)]);
            (l, f(&t.counters))
        })
    };
    counter_family(
        reg,
        "meshd_tunnel_rx_bytes",
        "Plaintext bytes received",
        tunnel(|c| c.rx_bytes),
    );
    counter_family(
        reg,
        "meshd_tunnel_tx_bytes",
        "Plaintext bytes sent",
        tunnel(|c| c.tx_bytes),
    );
    counter_family(
        reg,
        "meshd_tunnel_rx_packets",
        "Packets received",
        tunnel(|c| c.rx_packets),
    );
    counter_family(
        reg,
        "meshd_tunnel_tx_packets",
        "Packets sent",
        tunnel(|c| c.tx_packets),
    );
    counter_family(
        reg,
        "meshd_reloads",
        "Configuration reloads by outcome",
        [("ok", s.reloads_ok), ("failed", s.reloads_failed)]
            .into_iter()
            .map(|(o, n)| (labels(&[("outcome", o)]), n)),
    );
    let expiry: Family<Labels, Gauge> = Family::default();
    for (kind, name, not_after) in &s.certs {
        expiry
            .get_or_create(&labels(&[("kind", kind), ("name", name)]))
            .set(*not_after);
    }
    reg.register(
        "meshd_certificate_not_after_seconds",
        "NotAfter of the host certificate and each CA (Unix time)",
        expiry,
    );
}

/// Drops and conntrack of the installed firewall (none when the node runs without one).
pub fn firewall_counts(node: &mut crate::node::Node) -> Option<FirewallCounts> {
    let any = node.filter_mut().as_any_mut()?;
    let fw = any
        .downcast_mut::<crate::node::filter::FirewallFilter>()?
        .firewall();
    Some(FirewallCounts {
        drops: *fw.drops(),
        conntrack: fw.conntrack().len(),
        conntrack_max: fw.conntrack().capacity(),
        rules_version: fw.rules_version(),
    })
}

//! The local control socket: a Unix stream socket (default `/run/meshd/<tun.dev>.sock`, its
//! directory 0700, the socket 0600, peers other than our own user or root refused by
//! `SO_PEERCRED`) speaking line-delimited JSON, one request per line:
//! `{"cmd":"print-tunnel","args":["10.42.0.2"]}` → `{"ok":true,"result":{...}}` or
//! `{"ok":false,"error":"..."}`. The only local management interface; no TCP listener.
//!
//! Owns the socket, request parsing (bounded: 64 KiB per line, 5 s to finish a line, 8 clients at
//! once) and the answers built from a node snapshot. The node stays with the event loop: a
//! connection task hands each parsed [`Command`] over a bounded channel and the loop answers it
//! between batches ([`answer`]), so a client never blocks packet processing. Must not make
//! protocol decisions (commands are thin calls into `node::status`).

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use super::logging::{Format, Level, LogHandle};
use crate::cert::NebulaCertificate;
use crate::node::{Node, VpnIp};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Time a client has to finish a request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more wait for a slot.
const MAX_CLIENTS: usize = 8;
/// Requests waiting for the event loop.
const QUEUE: usize = 16;

/// A parsed request. Parse at the edge: the loop only ever sees well-formed commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    ListHostmap,
    ListPendingHostmap,
    ListLighthouseAddrmap,
    PrintCert(Option<VpnIp>),
    PrintTunnel(VpnIp),
    PrintRelays,
    QueryLighthouse(VpnIp),
    CloseTunnel(VpnIp),
    CreateTunnel(VpnIp),
    ChangeRemote(VpnIp, SocketAddr),
    Reload,
    LogLevel(Option<Level>),
    LogFormat(Option<Format>),
    Version,
    /// Internal: the Prometheus exposition's snapshot.
    Metrics,
}

/// Every command name a client may send, for help and errors.
pub const COMMANDS: &[&str] = &[
    "status",
    "list-hostmap",
    "list-pending-hostmap",
    "list-lighthouse-addrmap",
    "print-cert",
    "print-tunnel",
    "print-relays",
    "query-lighthouse",
    "close-tunnel",
    "create-tunnel",
    "change-remote",
    "reload",
    "log-level",
    "log-format",
    "version",
];

/// What the loop answers.
#[derive(Debug)]
pub enum Reply {
    Json(Value),
    Metrics(Box<super::metrics::Snapshot>),
    Error(String),
}

/// A command on its way to the loop, with the channel for its answer.
pub struct Request {
    pub cmd: Command,
    pub reply: oneshot::Sender<Reply>,
}

/// Parses one request line.
pub fn parse_request(line: &[u8]) -> Result<Command, String> {
    let v: Value = serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))?;
    let cmd = v
        .get("cmd")
        .and_then(Value::as_str)
        .ok_or("malformed request: no \"cmd\" string")?;
    let args: Vec<&str> = match v.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().ok_or("malformed request: args must be strings"))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("malformed request: args must be a list".into()),
    };
    parse_command(cmd, &args)
}

/// A command name and its arguments (shared with the CLI, which checks them before sending).
pub fn parse_command(cmd: &str, args: &[&str]) -> Result<Command, String> {
    let ip = |i: usize| -> Result<VpnIp, String> {
        let a = args
            .get(i)
            .ok_or_else(|| format!("{cmd}: missing <vpn-ip>"))?;
        a.parse::<Ipv4Addr>()
            .map(VpnIp::from)
            .map_err(|_| format!("{cmd}: {a:?} is not an IPv4 address"))
    };
    let max = |n: usize| -> Result<(), String> {
        if args.len() > n {
            Err(format!("{cmd}: takes at most {n} argument(s)"))
        } else {
            Ok(())
        }
    };
    let c = match cmd {
        "status" => Command::Status,
        "list-hostmap" => Command::ListHostmap,
        "list-pending-hostmap" => Command::ListPendingHostmap,
        "list-lighthouse-addrmap" => Command::ListLighthouseAddrmap,
        "print-relays" => Command::PrintRelays,
        "reload" => Command::Reload,
        "version" => Command::Version,
        "print-cert" => {
            max(1)?;
            Command::PrintCert(if args.is_empty() { None } else { Some(ip(0)?) })
        }
        "print-tunnel" => Command::PrintTunnel(ip(0)?),
        "query-lighthouse" => Command::QueryLighthouse(ip(0)?),
        "close-tunnel" => Command::CloseTunnel(ip(0)?),
        "create-tunnel" => Command::CreateTunnel(ip(0)?),
        "change-remote" => {
            max(2)?;
            let a = args
                .get(1)
                .ok_or("change-remote: missing <addr> (ip:port)")?;
            let to = a
                .parse::<SocketAddr>()
                .map_err(|_| format!("change-remote: {a:?} is not an ip:port"))?;
            Command::ChangeRemote(ip(0)?, to)
        }
        "log-level" => {
            max(1)?;
            Command::LogLevel(args.first().map(|a| parse_level(a)).transpose()?)
        }
        "log-format" => {
            max(1)?;
            Command::LogFormat(args.first().map(|a| parse_format(a)).transpose()?)
        }
        other => {
            return Err(format!(
                "unknown command {other:?} (one of: {})",
                COMMANDS.join(", ")
            ))
        }
    };
    if !matches!(
        c,
        Command::PrintCert(_)
            | Command::ChangeRemote(..)
            | Command::LogLevel(_)
            | Command::LogFormat(_)
    ) {
        let takes = usize::from(matches!(
            c,
            Command::PrintTunnel(_)
                | Command::QueryLighthouse(_)
                | Command::CloseTunnel(_)
                | Command::CreateTunnel(_)
        ));
        max(takes)?;
    }
    Ok(c)
}

fn parse_level(a: &str) -> Result<Level, String> {
    a.parse::<Level>()
        .map_err(|_| format!("log-level: unknown level {a:?}"))
}

fn parse_format(a: &str) -> Result<Format, String> {
    a.parse::<Format>()
        .map_err(|_| format!("log-format: unknown format {a:?} (text or json)"))
}

/// The socket path when `control.socket` is not set.
pub fn default_socket(tun_dev: Option<&str>) -> PathBuf {
    let name = tun_dev.filter(|d| !d.is_empty()).unwrap_or("meshd");
    PathBuf::from(format!("/run/meshd/{name}.sock"))
}

/// The listening socket; removes its file when dropped.
pub struct ControlServer {
    path: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds `path` (0600, its directory created 0700 when missing) and spawns the accept task.
/// A stale socket file is replaced; one a live daemon answers on is an error.
pub fn start(path: &Path, to_loop: mpsc::Sender<Request>) -> anyhow::Result<ControlServer> {
    prepare_dir(path)?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another process",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    tokio::spawn(accept_loop(listener, to_loop));
    Ok(ControlServer {
        path: path.to_path_buf(),
    })
}

fn prepare_dir(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))
}

async fn accept_loop(listener: UnixListener, to_loop: mpsc::Sender<Request>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let to_loop = to_loop.clone();
        tokio::spawn(async move {
            serve(stream, to_loop).await;
            drop(permit);
        });
    }
}

/// Only our own user (and root) may talk to the daemon, whatever the file mode says.
fn peer_allowed(stream: &UnixStream) -> bool {
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) => c.uid() == me || c.uid() == 0,
        Err(_) => false,
    }
}

async fn serve(stream: UnixStream, to_loop: mpsc::Sender<Request>) {
    let allowed = peer_allowed(&stream);
    let (rd, mut wr) = stream.into_split();
    if !allowed {
        let _ = write_reply(&mut wr, &Reply::Error("permission denied".into())).await;
        return;
    }
    let mut rd = BufReader::new(rd).take(0);
    loop {
        rd.set_limit(MAX_REQUEST as u64 + 1);
        let mut line = Vec::new();
        let read = tokio::time::timeout(READ_TIMEOUT, rd.read_until(b'\n', &mut line)).await;
        let reply = match read {
            Err(_) if line.is_empty() => return,
            Err(_) => Reply::Error("incomplete request: no newline within 5 s".into()),
            Ok(Err(e)) => {
                debug!(error = %e, "control read failed");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST => {
                Reply::Error(format!("request longer than {MAX_REQUEST} bytes"))
            }
            Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                Reply::Error("incomplete request: connection closed before the newline".into())
            }
            Ok(Ok(_)) => handle_line(&line, &to_loop).await,
        };
        let done = !matches!(reply, Reply::Json(_)) && line.last() != Some(&b'\n');
        if write_reply(&mut wr, &reply).await.is_err() || done {
            return;
        }
    }
}

async fn handle_line(line: &[u8], to_loop: &mpsc::Sender<Request>) -> Reply {
    if line.trim_ascii().is_empty() {
        return Reply::Error("empty request".into());
    }
    let cmd = match parse_request(line) {
        Ok(c) => c,
        Err(e) => return Reply::Error(e),
    };
    if cmd == Command::Version {
        return Reply::Json(version());
    }
    ask_loop(to_loop, cmd).await
}

/// Hands `cmd` to the event loop and waits (bounded) for its answer.
pub async fn ask_loop(to_loop: &mpsc::Sender<Request>, cmd: Command) -> Reply {
    let (tx, rx) = oneshot::channel();
    if to_loop.try_send(Request { cmd, reply: tx }).is_err() {
        return Reply::Error("daemon busy, try again".into());
    }
    match tokio::time::timeout(READ_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        _ => Reply::Error("daemon did not answer".into()),
    }
}

async fn write_reply(wr: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    let v = match r {
        Reply::Json(v) => json!({"ok": true, "result": v}),
        Reply::Error(e) => json!({"ok": false, "error": e}),
        Reply::Metrics(_) => json!({"ok": false, "error": "not a client command"}),
    };
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    wr.write_all(&bytes).await
}

/// A bounded queue from the control and metrics tasks to the loop.
pub fn channel() -> (mpsc::Sender<Request>, mpsc::Receiver<Request>) {
    mpsc::channel(QUEUE)
}

/// Waits for the next request, or forever when there is no channel.
pub async fn recv(rx: Option<&mut mpsc::Receiver<Request>>) -> Option<Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn version() -> Value {
    json!({"version": env!("CARGO_PKG_VERSION"), "name": "meshd"})
}

/// The certificates the daemon runs with (for `print-cert`, `status` and expiry warnings).
#[derive(Debug, Clone)]
pub struct PkiView {
    pub cert: NebulaCertificate,
    pub cas: Vec<NebulaCertificate>,
    pub warn_within: Duration,
}

/// Loop-side facts `status` shows besides the node's own.
pub struct DaemonFacts<'a> {
    pub listen: SocketAddr,
    pub tun: Option<&'a str>,
    pub last_reload: Option<&'a str>,
    pub started: Instant,
    pub firewall: Option<super::metrics::FirewallCounts>,
}

/// Answers `cmd` from the node (called by the loop between batches). `Reload` and `Metrics` are
/// the loop's own; they never get here.
pub fn answer(
    cmd: Command,
    node: &mut Node,
    log: &LogHandle,
    pki: &PkiView,
    facts: &DaemonFacts<'_>,
    now: Instant,
    unix_now: i64,
) -> Reply {
    match cmd {
        Command::Status => Reply::Json(status(node, pki, facts, now, unix_now)),
        Command::ListHostmap => Reply::Json(json!(node.status(now).tunnels)),
        Command::ListPendingHostmap => Reply::Json(json!(node.status(now).pending)),
        Command::ListLighthouseAddrmap => Reply::Json(Value::Array(
            node.addrmap()
                .into_iter()
                .map(|(ip, addrs, relays)| json!({"vpn_ip": ip, "addrs": addrs, "relays": relays}))
                .collect(),
        )),
        Command::PrintCert(None) => Reply::Json(own_cert(&pki.cert)),
        Command::PrintCert(Some(ip)) if ip == node.identity().vpn_ip => {
            Reply::Json(own_cert(&pki.cert))
        }
        Command::PrintCert(Some(ip)) => match node.peer_cert(ip) {
            Some(p) => Reply::Json(json!({
                "details": {
                    "name": p.name, "ips": p.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                    "subnets": p.subnets.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                    "groups": p.groups, "notAfter": p.not_after, "issuer": p.issuer,
                    "issuerName": p.issuer_name,
                },
                "fingerprint": p.fingerprint,
            })),
            None => Reply::Error(format!("no tunnel to {ip}")),
        },
        Command::PrintTunnel(ip) => match node.tunnel_status(now, ip) {
            Some(t) => Reply::Json(json!(t)),
            None => Reply::Error(format!("no tunnel to {ip}")),
        },
        Command::PrintRelays => Reply::Json(json!(node.status(now).relays)),
        Command::QueryLighthouse(ip) => {
            let (addrs, relays) = node.query_lighthouse(now, ip);
            Reply::Json(json!({"vpn_ip": ip.to_string(), "addrs": addrs, "relays": relays}))
        }
        Command::CloseTunnel(ip) => match node.close_tunnel_cmd(now, ip) {
            true => Reply::Json(json!({"closed": ip.to_string()})),
            false => Reply::Error(format!("no tunnel to {ip}")),
        },
        Command::CreateTunnel(ip) => match node.create_tunnel(now, ip) {
            Ok(()) => Reply::Json(json!({"handshaking": ip.to_string()})),
            Err(e) => Reply::Error(e),
        },
        Command::ChangeRemote(ip, to) => match node.change_remote(ip, to) {
            Ok(()) => Reply::Json(json!({"vpn_ip": ip.to_string(), "remote": to.to_string()})),
            Err(e) => Reply::Error(e),
        },
        Command::LogLevel(l) => log_level(log, l),
        Command::LogFormat(f) => log_format(log, f),
        Command::Version => Reply::Json(version()),
        Command::Reload | Command::Metrics => Reply::Error("not answered here".into()),
    }
}

fn log_level(log: &LogHandle, level: Option<Level>) -> Reply {
    if let Some(l) = level {
        if let Err(e) = log.set_level(l) {
            return Reply::Error(format!("{e:#}"));
        }
    }
    Reply::Json(json!({"level": log.current().0.to_string()}))
}

fn log_format(log: &LogHandle, format: Option<Format>) -> Reply {
    if let Some(f) = format {
        if let Err(e) = log.set_format(f) {
            return Reply::Error(format!("{e:#}"));
        }
    }
    let name = match log.current().1 {
        Format::Text => "text",
        Format::Json => "json",
    };
    Reply::Json(json!({"format": name}))
}

/// `print-cert` of our own certificate: exactly `meshd cert print -json`'s object plus the PEM.
fn own_cert(cert: &NebulaCertificate) -> Value {
    let printed = cert.to_json(&crate::cert::Utc);
    let parsed: Value = serde_json::from_str(&printed).unwrap_or(Value::Null);
    json!({"cert": parsed, "pem": cert.to_pem()})
}

fn cert_summary(c: &NebulaCertificate, unix_now: i64, warn_within: Duration) -> Value {
    let left = c.not_after() - unix_now;
    json!({
        "name": c.name(),
        "not_after": c.not_after(),
        "expires_in_secs": left,
        "expiring_soon": left <= warn_within.as_secs() as i64,
        "fingerprint": c.fingerprint().to_string(),
    })
}

/// Certificates expiring within the warning window (for the start-up and daily warnings).
pub fn expiring(pki: &PkiView, unix_now: i64) -> Vec<String> {
    let within = pki.warn_within.as_secs() as i64;
    let mut out = Vec::new();
    let mut check = |what: &str, c: &NebulaCertificate| {
        let left = c.not_after() - unix_now;
        if left <= within {
            let when = if left <= 0 {
                "has expired".to_string()
            } else {
                format!("expires in {}", human_secs(left))
            };
            out.push(format!("{what} {:?} {when}", c.name()));
        }
    };
    check("host certificate", &pki.cert);
    for ca in &pki.cas {
        check("CA", ca);
    }
    out
}

/// `3d 4h`, `5h 2m`, `42s`.
pub fn human_secs(s: i64) -> String {
    let s = s.max(0);
    let (d, h, m) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m {}s", s % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

fn status(
    node: &Node,
    pki: &PkiView,
    facts: &DaemonFacts<'_>,
    now: Instant,
    unix_now: i64,
) -> Value {
    let s = node.status(now);
    let mut v = json!(s);
    let warn = pki.warn_within;
    v["name"] = json!(pki.cert.name());
    v["groups"] = json!(pki.cert.groups());
    v["cert"] = cert_summary(&pki.cert, unix_now, warn);
    v["cas"] = Value::Array(
        pki.cas
            .iter()
            .map(|c| cert_summary(c, unix_now, warn))
            .collect(),
    );
    v["listen"] = json!(facts.listen.to_string());
    v["tun"] = json!(facts.tun);
    v["uptime_secs"] = json!(now.saturating_duration_since(facts.started).as_secs());
    v["last_reload"] = json!(facts.last_reload);
    v["version"] = json!(env!("CARGO_PKG_VERSION"));
    v["drops"] = Value::Object(s.drops.iter().map(|(r, n)| (r.clone(), json!(n))).collect());
    if let Some(fw) = &facts.firewall {
        v["firewall"] = fw.to_json();
    }
    v
}

/// The daemon's management side as the event loop holds it: the request channel, the socket,
/// the certificates shown, reload outcomes and the expiry-warning schedule.
pub struct ControlState {
    rx: mpsc::Receiver<Request>,
    /// Kept so the channel never closes while the loop waits on it.
    _tx: mpsc::Sender<Request>,
    server: Option<ControlServer>,
    pub metrics_addr: Option<SocketAddr>,
    pub pki: PkiView,
    pub started: Instant,
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    next_expiry_check: Instant,
}

/// Expiry warnings repeat this often.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(24 * 3600);

impl ControlState {
    /// Binds the control socket and the metrics listener (both before READY, so a bad path or
    /// address fails start-up) and logs the first certificate-expiry check.
    pub fn start(plan: super::setup::ControlPlan, now: Instant) -> anyhow::Result<ControlState> {
        let (tx, rx) = channel();
        let server = match start(&plan.socket, tx.clone()) {
            Ok(s) => Some(s),
            Err(e) if !plan.socket_required => {
                warn!("no control socket ({e:#}); set control.socket to a writable path");
                None
            }
            Err(e) => return Err(e),
        };
        let metrics_addr = match plan.metrics {
            Some(m) => Some(super::metrics::start(m, tx.clone())?),
            None => None,
        };
        let mut state = ControlState {
            rx,
            _tx: tx,
            server,
            metrics_addr,
            pki: plan.pki,
            started: now,
            reloads_ok: 0,
            reloads_failed: 0,
            next_expiry_check: now,
        };
        state.check_expiry(now, unix_now());
        Ok(state)
    }

    pub fn socket_path(&self) -> Option<&Path> {
        self.server.as_ref().map(ControlServer::path)
    }

    /// The next request for the loop (cancel-safe).
    pub async fn recv(&mut self) -> Option<Request> {
        self.rx.recv().await
    }

    /// Warns about certificates expiring soon, at start and then daily.
    pub fn check_expiry(&mut self, now: Instant, unix_now: i64) {
        if now < self.next_expiry_check {
            return;
        }
        self.next_expiry_check = now + EXPIRY_CHECK_EVERY;
        for w in expiring(&self.pki, unix_now) {
            warn!("certificate expiry: {w}");
        }
    }

    /// Records a reload outcome and, on success, the certificates now in use.
    pub fn reloaded(&mut self, pki: Option<PkiView>) {
        match pki {
            Some(p) => {
                self.pki = p;
                self.reloads_ok += 1;
                // A new certificate is checked at once, not a day later.
                self.next_expiry_check = Instant::now();
            }
            None => self.reloads_failed += 1,
        }
    }

    /// The reply to a `reload` command, from the line the loop logged.
    pub fn reload_reply(line: Option<&str>) -> Reply {
        match line {
            Some(l) if l.starts_with("reload failed") => Reply::Error(l.to_string()),
            Some(l) => Reply::Json(json!({"reloaded": l})),
            None => Reply::Error("no reload ran".into()),
        }
    }

    /// The metrics snapshot (built by the loop between batches).
    pub fn snapshot(&self, node: &mut Node) -> super::metrics::Snapshot {
        let firewall = super::metrics::firewall_counts(node);
        let counters = node.node_counters();
        let mut certs = vec![(
            "host",
            self.pki.cert.name().to_string(),
            self.pki.cert.not_after(),
        )];
        certs.extend(
            self.pki
                .cas
                .iter()
                .map(|c| ("ca", c.name().to_string(), c.not_after())),
        );
        super::metrics::Snapshot {
            hosts: node.hostmap().host_count(),
            pending: node.hostmap().pending_count(),
            drops: crate::node::DropReason::ALL
                .iter()
                .map(|r| (format!("{r:?}"), node.drops().get(*r)))
                .collect(),
            tunnels: node
                .tunnel_counters()
                .map(|(ip, c)| super::metrics::TunnelSample {
                    vpn_ip: ip.to_string(),
                    name: node
                        .peer_cert(ip)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    counters: *c,
                })
                .collect(),
            counters,
            firewall,
            reloads_ok: self.reloads_ok,
            reloads_failed: self.reloads_failed,
            certs,
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_at_the_edge() {
        assert_eq!(parse_request(br#"{"cmd":"status"}"#), Ok(Command::Status));
        assert_eq!(
            parse_request(br#"{"cmd":"close-tunnel","args":["10.1.2.3"]}"#),
            Ok(Command::CloseTunnel(VpnIp::from(Ipv4Addr::new(
                10, 1, 2, 3
            ))))
        );
        assert!(parse_request(b"garbage").unwrap_err().contains("malformed"));
        assert!(parse_request(br#"{"cmd":"nope"}"#)
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse_request(br#"{"cmd":"print-tunnel"}"#)
            .unwrap_err()
            .contains("missing"));
        assert!(parse_request(br#"{"cmd":"status","args":["x"]}"#).is_err());
        assert!(parse_request(br#"{"cmd":"change-remote","args":["10.0.0.1","nope"]}"#).is_err());
        assert_eq!(
            parse_request(br#"{"cmd":"change-remote","args":["10.0.0.1","192.0.2.1:4242"]}"#),
            Ok(Command::ChangeRemote(
                VpnIp::from(Ipv4Addr::new(10, 0, 0, 1)),
                "192.0.2.1:4242".parse().unwrap()
            ))
        );
        assert_eq!(
            parse_request(br#"{"cmd":"print-cert"}"#),
            Ok(Command::PrintCert(None))
        );
        assert!(parse_request(br#"{"cmd":"log-level","args":["loud"]}"#).is_err());
    }

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_secs(42), "42s");
        assert_eq!(human_secs(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_secs(5 * 3600 + 120), "5h 2m");
    }
}

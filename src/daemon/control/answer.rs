//! The answers: what each [`Command`] returns, built by the event loop from the node's
//! snapshot (`node::status`) plus the daemon's own facts (certificates, listen address, reload
//! outcome, firewall counters), and the certificate-expiry checks. Must not make protocol
//! decisions: commands are thin calls into the node.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::protocol::{Command, Reply};
use super::server::version;
use crate::cert::NebulaCertificate;
use crate::daemon::logging::{Format, Level, LogHandle};
use crate::node::Node;

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
    pub firewall: Option<crate::daemon::metrics::FirewallCounts>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(human_secs(42), "42s");
        assert_eq!(human_secs(3 * 86_400 + 4 * 3600 + 5), "3d 4h");
        assert_eq!(human_secs(5 * 3600 + 120), "5h 2m");
    }
}

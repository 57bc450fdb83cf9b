//! `meshd status` and the other control commands (`list-hostmap`, `print-tunnel <vpn-ip>`, ...,
//! named after Nebula's SSH commands): a client of the daemon's control socket. Sends one
//! request line, reads one reply line, prints it as text or, with `--json`, as the reply's
//! `result` object (documented in the README; the tests read it).
//!
//! Owns argument parsing and the text rendering; the answers come from `daemon::control`.
//! Socket: `-socket PATH`, else `control.socket` (or its default) of `-config PATH`, else
//! `$MESHD_SOCKET`, else the only `*.sock` in `/run/meshd`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cert::NebulaCertificate;
use crate::daemon::control::{self, human_secs};

/// How long the client waits for the daemon.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Is `name` a control command (as opposed to `cert` or the node's flags)?
pub fn is_command(name: &str) -> bool {
    control::COMMANDS.contains(&name)
}

struct Args {
    cmd: String,
    positional: Vec<String>,
    json: bool,
    socket: Option<PathBuf>,
    config: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let cmd = it.next().cloned().unwrap_or_default();
    let mut a = Args {
        cmd,
        positional: Vec::new(),
        json: false,
        socket: None,
        config: None,
    };
    while let Some(arg) = it.next() {
        let flag = arg.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if !arg.starts_with('-') || arg == "-" {
            a.positional.push(arg.clone());
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match name {
            "json" => a.json = true,
            "socket" => a.socket = Some(PathBuf::from(value()?)),
            "config" => a.config = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    Ok(a)
}

/// Runs one control command; returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(
                err,
                "{e}\nusage: meshd {} [args] [--json] [-socket PATH | -config PATH]",
                args[0]
            );
            return 2;
        }
    };
    let positional: Vec<&str> = a.positional.iter().map(String::as_str).collect();
    if let Err(e) = control::parse_command(&a.cmd, &positional) {
        let _ = writeln!(err, "{e}");
        return 2;
    }
    let socket = match find_socket(&a) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "{e}");
            return 1;
        }
    };
    let request = serde_json::json!({"cmd": a.cmd, "args": a.positional});
    let reply = match call(&socket, &request) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "{}: {e}", socket.display());
            return 1;
        }
    };
    if reply.get("ok") != Some(&Value::Bool(true)) {
        let msg = reply
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let _ = writeln!(err, "{msg}");
        return 1;
    }
    let result = reply.get("result").cloned().unwrap_or(Value::Null);
    let text = if a.json {
        json_output(&a.cmd, &result)
    } else {
        render(&a.cmd, &result)
    };
    let _ = writeln!(out, "{}", text.trim_end());
    0
}

fn find_socket(a: &Args) -> Result<PathBuf, String> {
    if let Some(s) = &a.socket {
        return Ok(s.clone());
    }
    if let Some(c) = &a.config {
        let loaded = crate::config::load_path(c).map_err(|e| format!("{}: {e}", c.display()))?;
        return Ok(crate::daemon::setup::control_socket(&loaded.config));
    }
    if let Some(s) = std::env::var_os("MESHD_SOCKET") {
        return Ok(PathBuf::from(s));
    }
    let dir = Path::new("/run/meshd");
    let socks: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sock"))
                .collect()
        })
        .unwrap_or_default();
    match socks.as_slice() {
        [one] => Ok(one.clone()),
        [] => {
            Err("no control socket in /run/meshd (is meshd running? use -socket or -config)".into())
        }
        _ => Err(format!(
            "several daemons in /run/meshd ({}); pick one with -socket or -config",
            socks
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// One request, one reply line.
pub fn call(socket: &Path, request: &Value) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    let mut line = serde_json::to_vec(request)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| std::io::Error::other(format!("bad reply: {e}")))
}

/// `--json`: the result as the daemon sent it, except `print-cert` of our own certificate,
/// which prints exactly what `meshd cert print -json` prints.
fn json_output(cmd: &str, result: &Value) -> String {
    if cmd == "print-cert" {
        if let Some(cert) = own_cert(result) {
            return cert.to_json(&super::cert::LocalZone);
        }
    }
    serde_json::to_string_pretty(result).unwrap_or_default()
}

fn own_cert(result: &Value) -> Option<NebulaCertificate> {
    let pem = result.get("pem")?.as_str()?;
    NebulaCertificate::from_pem(pem.as_bytes())
        .ok()
        .map(|(c, _)| c)
}

fn render(cmd: &str, r: &Value) -> String {
    match cmd {
        "status" => render_status(r),
        "list-hostmap" => list(r, render_tunnel),
        "print-tunnel" => render_tunnel(r),
        "list-pending-hostmap" => list(r, render_pending),
        "list-lighthouse-addrmap" => list(r, |e| {
            format!(
                "{}: {} relays: {}",
                s(e, "vpn_ip"),
                join(&e["addrs"]),
                join(&e["relays"])
            )
        }),
        "print-relays" => list(r, render_relay),
        "query-lighthouse" => format!(
            "{}: {} relays: {}",
            s(r, "vpn_ip"),
            join(&r["addrs"]),
            join(&r["relays"])
        ),
        "print-cert" => match own_cert(r) {
            Some(c) => c.to_text(&super::cert::LocalZone),
            None => serde_json::to_string_pretty(r).unwrap_or_default(),
        },
        _ => match r {
            Value::Object(m) => m
                .iter()
                .map(|(k, v)| format!("{k}: {}", plain(v)))
                .collect::<Vec<_>>()
                .join("\n"),
            v => plain(v),
        },
    }
}

fn list(r: &Value, f: impl Fn(&Value) -> String) -> String {
    match r.as_array() {
        Some(a) if a.is_empty() => "(none)".into(),
        Some(a) => a.iter().map(f).collect::<Vec<_>>().join("\n"),
        None => plain(r),
    }
}

fn s(v: &Value, key: &str) -> String {
    plain(&v[key])
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn join(v: &Value) -> String {
    match v.as_array() {
        Some(a) if !a.is_empty() => a.iter().map(plain).collect::<Vec<_>>().join(", "),
        _ => "none".into(),
    }
}

fn ago(v: &Value) -> String {
    match v.as_f64() {
        Some(secs) if secs < 10.0 => format!("{secs:.1}s ago"),
        Some(secs) => format!("{} ago", human_secs(secs as i64)),
        None => "never".into(),
    }
}

fn bytes(v: &Value) -> String {
    let n = v.as_u64().unwrap_or(0) as f64;
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n;
    let mut i = 0;
    while x >= 1024.0 && i + 1 < units.len() {
        x /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{x:.2} {}", units[i])
    }
}

fn path_of(t: &Value) -> String {
    match (&t["remote"], &t["relay"]) {
        (Value::String(r), _) => r.clone(),
        (_, Value::String(relay)) => format!("relay via {relay}"),
        _ => "no path".into(),
    }
}

fn render_tunnel(t: &Value) -> String {
    format!(
        "peer {} ({})\n  path: {}\n  cipher: {}  handshake: {}  last received: {}\n  \
         transfer: {} received ({} packets), {} sent ({} packets)\n  groups: {}  remotes: {}",
        s(t, "vpn_ip"),
        s(t, "name"),
        path_of(t),
        s(t, "cipher"),
        ago(&t["handshake_age_secs"]),
        ago(&t["last_rx_secs"]),
        bytes(&t["rx_bytes"]),
        plain(&t["rx_packets"]),
        bytes(&t["tx_bytes"]),
        plain(&t["tx_packets"]),
        join(&t["groups"]),
        join(&t["remotes"]),
    )
}

fn render_pending(p: &Value) -> String {
    format!(
        "{}: attempt {}, started {}, {} packets queued, trying {}",
        s(p, "vpn_ip"),
        plain(&p["attempts"]),
        ago(&p["age_secs"]),
        plain(&p["queued_packets"]),
        join(&p["remotes"])
    )
}

fn render_relay(r: &Value) -> String {
    let what = if s(r, "role") == "forwarding" {
        "relaying for"
    } else {
        "reached via"
    };
    format!(
        "{} {what} {} ({})",
        s(r, "peer"),
        s(r, "hop"),
        s(r, "state")
    )
}

fn expiry(c: &Value) -> String {
    let left = c["expires_in_secs"].as_i64().unwrap_or(0);
    let when = if left <= 0 {
        "EXPIRED".to_string()
    } else {
        format!("expires in {}", human_secs(left))
    };
    let warn = if c["expiring_soon"] == Value::Bool(true) && left > 0 {
        " (SOON)"
    } else {
        ""
    };
    format!("{when}{warn}")
}

fn render_status(r: &Value) -> String {
    let mut o = String::new();
    let line = |o: &mut String, l: String| {
        o.push_str(&l);
        o.push('\n');
    };
    line(
        &mut o,
        format!(
            "meshd {}: {} ({}), groups: {}",
            s(r, "version"),
            s(r, "name"),
            s(r, "vpn_net"),
            join(&r["groups"])
        ),
    );
    line(&mut o, format!("  certificate: {}", expiry(&r["cert"])));
    for ca in r["cas"].as_array().into_iter().flatten() {
        line(&mut o, format!("  CA {}: {}", s(ca, "name"), expiry(ca)));
    }
    line(
        &mut o,
        format!(
            "  listening: {}  tun: {}  advertised: {}  up {}",
            s(r, "listen"),
            s(r, "tun"),
            join(&r["advertised_addrs"]),
            human_secs(r["uptime_secs"].as_i64().unwrap_or(0))
        ),
    );
    let lhs = r["lighthouses"].as_array().cloned().unwrap_or_default();
    if !lhs.is_empty() {
        let shown: Vec<String> = lhs
            .iter()
            .map(|l| {
                let state = if l["answered_recently"] == Value::Bool(true) {
                    format!("answered {}", ago(&l["last_rx_secs"]))
                } else if l["tunnel"] == Value::Bool(true) {
                    format!("silent, last heard {}", ago(&l["last_rx_secs"]))
                } else {
                    "no tunnel".into()
                };
                format!("{} ({state})", s(l, "vpn_ip"))
            })
            .collect();
        line(&mut o, format!("  lighthouses: {}", shown.join(", ")));
    }
    if let Some(l) = r["last_reload"].as_str() {
        line(&mut o, format!("  last reload: {l}"));
    }
    let tunnels = r["tunnels"].as_array().cloned().unwrap_or_default();
    line(&mut o, format!("\ntunnels: {}", tunnels.len()));
    for t in &tunnels {
        line(&mut o, indent(&render_tunnel(t)));
    }
    let pending = r["pending"].as_array().cloned().unwrap_or_default();
    if !pending.is_empty() {
        line(&mut o, format!("\npending handshakes: {}", pending.len()));
        for p in &pending {
            line(&mut o, format!("  {}", render_pending(p)));
        }
    }
    let relays = r["relays"].as_array().cloned().unwrap_or_default();
    if !relays.is_empty() {
        line(&mut o, format!("\nrelays: {}", relays.len()));
        for x in &relays {
            line(&mut o, format!("  {}", render_relay(x)));
        }
    }
    if let Some(fw) = r.get("firewall") {
        line(&mut o, format!("\n{}", render_firewall(fw)));
    }
    if let Some(d) = r["drops"].as_object().filter(|d| !d.is_empty()) {
        let parts: Vec<String> = d.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect();
        line(&mut o, format!("dropped packets: {}", parts.join(" ")));
    }
    o
}

fn render_firewall(fw: &Value) -> String {
    let mut drops = Vec::new();
    for dir in ["inbound", "outbound"] {
        for (reason, n) in fw["dropped"][dir].as_object().into_iter().flatten() {
            if n.as_u64().unwrap_or(0) > 0 {
                drops.push(format!("{dir}.{reason}={n}"));
            }
        }
    }
    let drops = if drops.is_empty() {
        "none".to_string()
    } else {
        drops.join(" ")
    };
    format!(
        "firewall: conntrack {} of {} flows; dropped: {drops}",
        plain(&fw["conntrack"]),
        plain(&fw["conntrack_max"])
    )
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

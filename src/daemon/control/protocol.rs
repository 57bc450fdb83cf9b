//! The control protocol: one JSON object per line, `{"cmd":"print-tunnel","args":["10.42.0.2"]}`
//! in, `{"ok":true,"result":{...}}` or `{"ok":false,"error":"..."}` out. Parses requests into
//! [`Command`]s at the edge (the loop only ever sees well-formed commands) and names what goes
//! back ([`Reply`]). Owns no socket and no answers.

use std::net::{Ipv4Addr, SocketAddr};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::daemon::logging::{Format, Level};
use crate::node::VpnIp;

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
    Metrics(Box<crate::daemon::metrics::Snapshot>),
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
}

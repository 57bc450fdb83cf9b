//! Builds the typed `Config` from the merged YAML tree, one section at a time, mirroring the
//! `c.Get*` calls of Nebula v1.6.1 (the Go file each section mirrors is named). Checks that need
//! the VPN network or certificates are elsewhere (`checks`, `pki`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::firewall::{parse_rules, Action, Direction, Rule};

use super::model::defaults as d;
use super::model::*;
use super::reader::{describe, Reader};
use super::sections::{
    allow_lists, calculated_remotes, static_host_map, tun_routes, unsafe_routes,
};
use super::types::{Cipher, HostPort, IpNet, LogFormat, LogLevel, LookupNetwork, SendRecvError};

/// Reads every section; problems and warnings accumulate in `r`.
pub fn build(r: &mut Reader<'_>) -> Config {
    let routines = routines(r);
    let config = Config {
        pki: pki(r),
        static_host_map: static_host_map(r),
        static_map: static_map(r),
        lighthouse: lighthouse(r),
        listen: listen(r),
        punchy: punchy(r),
        cipher: cipher(r),
        preferred_ranges: preferred_ranges(r),
        routines,
        sshd: sshd(r),
        relay: relay(r),
        tun: tun(r),
        logging: logging(r),
        stats: stats(r),
        handshakes: handshakes(r),
        firewall: firewall(r, routines),
        timers: timers(r),
        tunnels: tunnels(r),
    };
    r.report_unknown();
    config
}

/// `cert.go`: pki.ca/cert/key are required (a path or inline PEM).
fn pki(r: &mut Reader<'_>) -> Pki {
    let required = |r: &mut Reader<'_>, key: &str| match r.opt_string(key) {
        Some(s) => PemSource::from_config(&s),
        None => {
            r.problem(key, "no path or PEM data provided");
            PemSource::Path(PathBuf::new())
        }
    };
    let ca = required(r, "pki.ca");
    let cert = required(r, "pki.cert");
    let key = required(r, "pki.key");
    let mut blocklist: Vec<String> = r.string_list("pki.blocklist");
    let legacy = r.string_list("pki.blacklist");
    if !legacy.is_empty() {
        r.warn("pki.blacklist", "deprecated, use pki.blocklist");
        blocklist.extend(legacy);
    }
    let blocklist = blocklist
        .into_iter()
        .map(|f| f.to_ascii_lowercase())
        .collect();
    r.get("pki.initiating_version"); // since v1.10.0; only v1 certificates exist in 1.6.1
    let disconnect_invalid = r.bool("pki.disconnect_invalid", false);
    Pki {
        ca,
        cert,
        key,
        blocklist,
        disconnect_invalid,
    }
}

fn static_map(r: &mut Reader<'_>) -> StaticMap {
    let network = match r.string("static_map.network", "ip4").as_str() {
        "ip4" => LookupNetwork::Ip4,
        "ip6" => LookupNetwork::Ip6,
        "ip" => LookupNetwork::Ip,
        other => {
            r.problem(
                "static_map.network",
                format!("unknown network {other:?} (ip4, ip6 or ip)"),
            );
            LookupNetwork::Ip4
        }
    };
    StaticMap {
        cadence: r.duration("static_map.cadence", d::STATIC_MAP_CADENCE),
        network,
        lookup_timeout: r.duration("static_map.lookup_timeout", d::STATIC_MAP_LOOKUP_TIMEOUT),
    }
}

/// `lighthouse.go`, `dns_server.go`, `allow_list.go`.
fn lighthouse(r: &mut Reader<'_>) -> Lighthouse {
    let interval = r.int("lighthouse.interval", d::LIGHTHOUSE_INTERVAL_SECS);
    let interval = if interval < 1 {
        r.problem(
            "lighthouse.interval",
            format!("{interval} is not a positive number of seconds"),
        );
        d::LIGHTHOUSE_INTERVAL_SECS
    } else {
        interval
    };
    let hosts = vpn_ip_list(r, "lighthouse.hosts");
    let (remote_allow_list, remote_allow_ranges, local_allow_list) = allow_lists(r);
    let advertise_addrs = r
        .string_list("lighthouse.advertise_addrs")
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            parse_or_problem::<HostPort>(r, &format!("lighthouse.advertise_addrs[{i}]"), s)
        })
        .collect();
    Lighthouse {
        am_lighthouse: r.bool("lighthouse.am_lighthouse", false),
        serve_dns: r.bool("lighthouse.serve_dns", false),
        dns: Dns {
            host: r.string("lighthouse.dns.host", d::DNS_HOST),
            port: r.int_in("lighthouse.dns.port", d::DNS_PORT, 0, 65535) as u16,
        },
        interval: std::time::Duration::from_secs(interval as u64),
        hosts,
        remote_allow_list,
        remote_allow_ranges,
        local_allow_list,
        advertise_addrs,
        calculated_remotes: calculated_remotes(r),
    }
}

/// Parses `s` or records a problem under `key`.
pub fn parse_or_problem<T: std::str::FromStr>(r: &mut Reader<'_>, key: &str, s: &str) -> Option<T>
where
    T::Err: std::fmt::Display,
{
    match s.parse::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            r.problem(key, format!("{s:?}: {e}"));
            None
        }
    }
}

/// A list of IPv4 VPN addresses; each bad entry is a problem naming its index.
fn vpn_ip_list(r: &mut Reader<'_>, key: &str) -> Vec<Ipv4Addr> {
    let raw = r.string_list(key);
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        match s.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => out.push(ip),
            _ => r.problem(
                &format!("{key}[{i}]"),
                format!("{s:?} is not an IPv4 VPN address"),
            ),
        }
    }
    out
}

/// `main.go`, `udp/udp_linux.go`, `interface.go`.
fn listen(r: &mut Reader<'_>) -> Listen {
    let host_text = r.string("listen.host", d::LISTEN_HOST);
    let bare = host_text.trim_start_matches('[').trim_end_matches(']');
    let host = match bare.parse::<IpAddr>() {
        Ok(ip) => ip,
        Err(_) => {
            r.problem(
                "listen.host",
                format!("{host_text:?} is not an IP address (use 0.0.0.0 or \"[::]\")"),
            );
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
    };
    let buffer = |r: &mut Reader<'_>, key: &str| {
        r.int_in(key, d::LISTEN_BUFFER, i64::MIN, i64::from(u32::MAX))
            .max(0) as u32
    };
    Listen {
        host,
        port: r.int_in("listen.port", d::LISTEN_PORT, 0, 65535) as u16,
        batch: r.int_in("listen.batch", d::LISTEN_BATCH, 1, 1 << 16) as usize,
        read_buffer: buffer(r, "listen.read_buffer"),
        write_buffer: buffer(r, "listen.write_buffer"),
        send_recv_error: recv_error_mode(r, "listen.send_recv_error"),
        accept_recv_error: recv_error_mode(r, "listen.accept_recv_error"),
        so_mark: r.int_in("listen.so_mark", 0, 0, i64::from(u32::MAX)) as u32,
    }
}

/// `always|never|private`, else Nebula re-reads the value as a boolean (default true = always).
fn recv_error_mode(r: &mut Reader<'_>, key: &str) -> SendRecvError {
    let Some(text) = r.opt_string(key) else {
        return SendRecvError::Always;
    };
    match text.as_str() {
        "always" => SendRecvError::Always,
        "never" => SendRecvError::Never,
        "private" => SendRecvError::Private,
        _ if r.bool(key, true) => SendRecvError::Always,
        _ => SendRecvError::Never,
    }
}

/// `main.go`: `routines` wins; else the larger of the deprecated per-side values.
fn routines(r: &mut Reader<'_>) -> usize {
    let routines = r.int("routines", 0);
    if routines != 0 {
        return routines.clamp(1, 1024) as usize;
    }
    let tun = r.int("tun.routines", d::ROUTINES);
    let udp = r.int("listen.routines", d::ROUTINES);
    let n = tun.max(udp);
    if n != 1 {
        r.warn(
            "tun.routines",
            "tun.routines and listen.routines are deprecated, use routines",
        );
    }
    n.clamp(1, 1024) as usize
}

/// `punchy.go`: `punchy.punch` or the legacy top-level `punchy: true`; `punchy.respond` or the
/// legacy `punch_back`.
fn punchy(r: &mut Reader<'_>) -> Punchy {
    let nested = matches!(r.get("punchy"), Some(serde_yaml::Value::Mapping(_)));
    r.know("punchy.punch");
    let punch = if nested {
        r.bool("punchy.punch", false)
    } else {
        r.bool("punchy", false)
    };
    let respond = if nested && r.get("punchy.respond").is_some() {
        r.bool("punchy.respond", false)
    } else {
        r.bool("punch_back", false)
    };
    Punchy {
        punch,
        respond,
        delay: if nested {
            r.duration("punchy.delay", d::PUNCHY_DELAY)
        } else {
            d::PUNCHY_DELAY
        },
        respond_delay: if nested {
            r.duration("punchy.respond_delay", d::PUNCHY_RESPOND_DELAY)
        } else {
            d::PUNCHY_RESPOND_DELAY
        },
        target_all_remotes: nested && r.bool("punchy.target_all_remotes", false),
    }
}

/// `main.go`: exact, case-sensitive match or start-up fails.
fn cipher(r: &mut Reader<'_>) -> Cipher {
    match r.string("cipher", d::CIPHER).as_str() {
        "aes" => Cipher::Aes,
        "chachapoly" => Cipher::ChaChaPoly,
        other => {
            r.problem(
                "cipher",
                format!("unknown cipher {other:?} (aes or chachapoly)"),
            );
            Cipher::Aes
        }
    }
}

/// `main.go`: `preferred_ranges` plus the deprecated single `local_range`.
fn preferred_ranges(r: &mut Reader<'_>) -> Vec<IpNet> {
    let raw = r.string_list("preferred_ranges");
    let mut out: Vec<IpNet> = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        if let Some(net) = parse_or_problem::<IpNet>(r, &format!("preferred_ranges[{i}]"), s) {
            out.push(net);
        }
    }
    if let Some(s) = r.opt_string("local_range") {
        if let Some(net) = parse_or_problem::<IpNet>(r, "local_range", &s) {
            if !out.contains(&net) {
                out.push(net);
            }
        }
    }
    out
}

/// `ssh.go`: only checked when enabled; authorized user mistakes are warnings there too.
fn sshd(r: &mut Reader<'_>) -> Sshd {
    let enabled = r.bool("sshd.enabled", false);
    let listen = r.string("sshd.listen", "");
    let host_key = r.opt_string("sshd.host_key").map(PathBuf::from);
    let authorized_users = ssh_users(r);
    let trusted_cas = r.string_list("sshd.trusted_cas");
    r.get("sshd.sandbox_dir");
    if enabled {
        check_ssh_listen(r, &listen);
        if host_key.is_none() {
            r.problem(
                "sshd.host_key",
                "must be provided when sshd.enabled is true",
            );
        }
    }
    Sshd {
        enabled,
        listen,
        host_key,
        authorized_users,
        trusted_cas,
    }
}

fn check_ssh_listen(r: &mut Reader<'_>, listen: &str) {
    if listen.is_empty() {
        r.problem("sshd.listen", "must be provided when sshd.enabled is true");
        return;
    }
    match super::types::split_host_port(listen) {
        Err(e) => r.problem("sshd.listen", format!("invalid address: {e}")),
        Ok((_, "22")) => r.problem("sshd.listen", "can not use port 22"),
        Ok(_) => {}
    }
}

fn ssh_users(r: &mut Reader<'_>) -> Vec<SshUser> {
    r.know("sshd.authorized_users[].user");
    r.know("sshd.authorized_users[].keys");
    let mut out = Vec::new();
    for (key, m) in r.map_list("sshd.authorized_users") {
        let user = m.get("user").and_then(super::coerce::go_string);
        let keys = match m.get("keys") {
            Some(serde_yaml::Value::String(k)) => vec![k.clone()],
            Some(serde_yaml::Value::Sequence(ks)) => {
                let mut keys = Vec::new();
                for (i, k) in ks.iter().enumerate() {
                    match super::coerce::go_string(k) {
                        Some(k) => keys.push(k),
                        None => r.warn(
                            &format!("{key}.keys[{i}]"),
                            format!("expected a key, found {}; ignored", describe(k)),
                        ),
                    }
                }
                keys
            }
            other => {
                let found = other.map(describe).unwrap_or_else(|| "nothing".into());
                r.warn(
                    &format!("{key}.keys"),
                    format!("expected a key or a list of keys, found {found}; user ignored"),
                );
                continue;
            }
        };
        match user {
            Some(user) => out.push(SshUser { user, keys }),
            None => r.warn(&format!("{key}.user"), "missing; entry ignored"),
        }
    }
    out
}

/// `relay_manager.go`, `lighthouse.go`: unparsable relay IPs are skipped by Nebula; we warn.
fn relay(r: &mut Reader<'_>) -> Relay {
    let am_relay = r.bool("relay.am_relay", false);
    let mut relays = Vec::new();
    for (i, s) in r.string_list("relay.relays").iter().enumerate() {
        match s.parse::<Ipv4Addr>() {
            Ok(ip) => relays.push(ip),
            Err(_) => r.warn(
                &format!("relay.relays[{i}]"),
                format!("{s:?} is not an IPv4 VPN address; ignored"),
            ),
        }
    }
    if am_relay && !relays.is_empty() {
        r.warn("relay.relays", "ignored because relay.am_relay is true");
        relays.clear();
    }
    Relay {
        relays,
        am_relay,
        use_relays: r.bool("relay.use_relays", d::USE_RELAYS),
    }
}

/// `overlay/tun.go`, `overlay/route.go`.
fn tun(r: &mut Reader<'_>) -> Tun {
    let mtu = r.int_in("tun.mtu", d::TUN_MTU, 1, 65535) as usize;
    Tun {
        disabled: r.bool("tun.disabled", false),
        dev: r.opt_string("tun.dev"),
        drop_local_broadcast: r.bool("tun.drop_local_broadcast", false),
        drop_multicast: r.bool("tun.drop_multicast", false),
        tx_queue: r.int_in("tun.tx_queue", d::TUN_TX_QUEUE, 0, i64::from(i32::MAX)) as usize,
        mtu,
        routes: tun_routes(r),
        unsafe_routes: unsafe_routes(r),
        use_system_route_table: r.bool("tun.use_system_route_table", false),
    }
}

/// `logger.go`: unknown level or format stops start-up.
fn logging(r: &mut Reader<'_>) -> Logging {
    let level_text = r.string("logging.level", d::LOG_LEVEL);
    let level = level_text.parse::<LogLevel>().unwrap_or_else(|()| {
        let msg = format!(
            "unknown level {level_text:?} (panic, fatal, error, warning, info, debug, trace)"
        );
        r.problem("logging.level", msg);
        LogLevel::Info
    });
    let format = match r
        .string("logging.format", d::LOG_FORMAT)
        .to_ascii_lowercase()
        .as_str()
    {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            r.problem(
                "logging.format",
                format!("unknown format {other:?} (text or json)"),
            );
            LogFormat::Text
        }
    };
    Logging {
        level,
        format,
        disable_timestamp: r.bool("logging.disable_timestamp", false),
        timestamp_format: r.string("logging.timestamp_format", ""),
    }
}

/// `stats.go`: with a type set, the interval and the backend's address keys are required.
fn stats(r: &mut Reader<'_>) -> Stats {
    let kind = r.string("stats.type", "");
    let interval_set = r.get("stats.interval").is_some();
    let interval = r.duration("stats.interval", std::time::Duration::ZERO);
    let required = |r: &mut Reader<'_>, key: &str, default: &str| {
        let v = r.string(key, default);
        if v.is_empty() {
            r.problem(key, format!("must be set when stats.type is {kind}"));
        }
        v
    };
    let backend = match kind.as_str() {
        "" => StatsBackend::Off,
        "graphite" => StatsBackend::Graphite {
            protocol: r.string("stats.protocol", d::STATS_PROTOCOL),
            host: required(r, "stats.host", ""),
            prefix: r.string("stats.prefix", d::STATS_PREFIX),
        },
        "prometheus" => StatsBackend::Prometheus {
            listen: required(r, "stats.listen", ""),
            path: required(r, "stats.path", ""),
            namespace: r.string("stats.namespace", ""),
            subsystem: r.string("stats.subsystem", ""),
        },
        other => {
            r.problem(
                "stats.type",
                format!("not understood: {other:?} (graphite or prometheus)"),
            );
            StatsBackend::Off
        }
    };
    for key in [
        "stats.protocol",
        "stats.host",
        "stats.prefix",
        "stats.listen",
        "stats.path",
        "stats.namespace",
        "stats.subsystem",
    ] {
        r.know(key);
    }
    if backend != StatsBackend::Off && interval.is_zero() {
        let shown = if interval_set {
            "an invalid or zero duration"
        } else {
            "missing"
        };
        r.problem(
            "stats.interval",
            format!("{shown}; required when stats.type is set"),
        );
    }
    Stats {
        backend,
        interval: if interval.is_zero() {
            d::STATS_INTERVAL
        } else {
            interval
        },
        message_metrics: r.bool("stats.message_metrics", false),
        lighthouse_metrics: r.bool("stats.lighthouse_metrics", false),
    }
}

fn handshakes(r: &mut Reader<'_>) -> Handshakes {
    Handshakes {
        try_interval: r.duration("handshakes.try_interval", d::HANDSHAKE_TRY_INTERVAL),
        retries: r.int_in("handshakes.retries", d::HANDSHAKE_RETRIES, 0, 10_000) as u32,
        trigger_buffer: r.int_in(
            "handshakes.trigger_buffer",
            d::HANDSHAKE_TRIGGER_BUFFER,
            0,
            1 << 20,
        ) as usize,
        query_buffer: r.int_in(
            "handshakes.query_buffer",
            d::HANDSHAKE_QUERY_BUFFER,
            0,
            1 << 20,
        ) as usize,
    }
}

/// `firewall.go`, `main.go` (routine cache).
fn firewall(r: &mut Reader<'_>, routines: usize) -> Firewall {
    let cache_set = r.get("firewall.conntrack.routine_cache_timeout").is_some();
    let mut cache = r.duration(
        "firewall.conntrack.routine_cache_timeout",
        std::time::Duration::ZERO,
    );
    if routines > 1 && !cache_set {
        cache = d::CONNTRACK_ROUTINE_CACHE_MULTI;
    }
    Firewall {
        conntrack: Conntrack {
            tcp_timeout: r.duration("firewall.conntrack.tcp_timeout", d::CONNTRACK_TCP),
            udp_timeout: r.duration("firewall.conntrack.udp_timeout", d::CONNTRACK_UDP),
            default_timeout: r.duration("firewall.conntrack.default_timeout", d::CONNTRACK_DEFAULT),
            routine_cache_timeout: cache,
        },
        outbound: rule_list(r, Direction::Outbound),
        inbound: rule_list(r, Direction::Inbound),
        inbound_action: firewall_action(r, "firewall.inbound_action"),
        outbound_action: firewall_action(r, "firewall.outbound_action"),
        default_local_cidr_any: r.bool("firewall.default_local_cidr_any", true),
    }
}

/// `firewall.go`: rule errors stop start-up; the firewall module owns the rule syntax.
fn rule_list(r: &mut Reader<'_>, direction: Direction) -> Vec<Rule> {
    let key = direction.config_key();
    let value = r.opaque(key).cloned().unwrap_or(serde_yaml::Value::Null);
    match parse_rules(direction, &value, key) {
        Ok((rules, warnings)) => {
            for w in warnings {
                let (k, m) = w.split_once(": ").unwrap_or((key, w.as_str()));
                r.warn(k, m);
            }
            rules
        }
        Err(errors) => {
            for e in errors {
                r.problem(&e.path, e.message);
            }
            Vec::new()
        }
    }
}

/// 1.6.1 ignores these keys (always drops), so a bad value warns instead of stopping start-up.
fn firewall_action(r: &mut Reader<'_>, key: &str) -> Action {
    let (action, warning) = Action::parse(r.get(key), key);
    if let Some(w) = warning {
        let msg = w
            .strip_prefix(&format!("{key}: "))
            .unwrap_or(&w)
            .to_string();
        r.warn(key, msg);
    }
    action
}

fn timers(r: &mut Reader<'_>) -> Timers {
    let secs = |r: &mut Reader<'_>, key: &str, default: i64| {
        std::time::Duration::from_secs(r.int_in(key, default, 1, 86_400) as u64)
    };
    Timers {
        connection_alive_interval: secs(
            r,
            "timers.connection_alive_interval",
            d::CONNECTION_ALIVE_INTERVAL_SECS,
        ),
        pending_deletion_interval: secs(
            r,
            "timers.pending_deletion_interval",
            d::PENDING_DELETION_INTERVAL_SECS,
        ),
    }
}

fn tunnels(r: &mut Reader<'_>) -> Tunnels {
    Tunnels {
        drop_inactive: r.bool("tunnels.drop_inactive", false),
        inactivity_timeout: r.duration("tunnels.inactivity_timeout", d::TUNNELS_INACTIVITY_TIMEOUT),
    }
}

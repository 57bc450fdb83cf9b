//! Builds the typed `Config` from the merged YAML tree, one section at a time, mirroring the
//! `c.Get*` calls of Nebula v1.6.1 (the Go file each section mirrors is named). Checks that need
//! the VPN network or certificates are elsewhere (`checks`, `pki`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use crate::firewall::{parse_rules, Action, Direction, Rule};

use super::model::defaults as d;
use super::model::*;
use super::reader::Reader;
use super::sections::{
    allow_lists, calculated_remotes, static_host_map, tun_routes, unsafe_routes,
};
use super::services::{control, handshakes, logging, sshd, stats, timers, tunnels};
use super::types::{Cipher, HostPort, IpNet, LookupNetwork, SendRecvError};

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
        control: control(r),
        counters: Counters {
            try_promote: r.int_in(
                "counters.try_promote",
                d::TRY_PROMOTE_EVERY,
                1,
                i64::from(u32::MAX),
            ) as u32,
            requery_every_packets: r.int_in(
                "counters.requery_every_packets",
                d::REQUERY_EVERY_PACKETS,
                1,
                i64::from(u32::MAX),
            ) as u32,
        },
        bounds: bounds(r),
    };
    accept_platform_keys(r);
    r.report_unknown();
    config
}

/// Upper bound for the `meshd.*` table sizes (each entry costs a few KB at most).
const MAX_TABLE_BOUND: i64 = 16_777_216;

/// `meshd.*`: the bounds of the node's peer-growable tables (meshd only).
fn bounds(r: &mut Reader<'_>) -> Bounds {
    let mut get =
        |key: &str, default: usize| r.int_in(key, default as i64, 1, MAX_TABLE_BOUND) as usize;
    Bounds {
        max_hosts: get("meshd.max_hosts", d::MAX_HOSTS),
        max_pending: get("meshd.max_pending_handshakes", d::MAX_PENDING_HANDSHAKES),
        max_relay_legs: get("meshd.max_relay_legs", d::MAX_RELAY_LEGS),
    }
}

/// Keys of newer releases that tune platform details meshd decides itself (offloads, thread
/// pinning, Windows options): accepted so such configs load, otherwise unused.
const PLATFORM_KEYS: &[&str] = &[
    "listen.rebind_on_network_change",
    "listen.windows_bypass_wdf",
    "tun.cpu_affinity",
    "tun.network_category",
    "tun.pin_threads",
    "tun.pin_threads_key",
    "tun.use_system_route_table_buffer_size",
    "tun.windows_bypass_wdf",
];

fn accept_platform_keys(r: &mut Reader<'_>) {
    for key in PLATFORM_KEYS {
        r.opaque(key);
    }
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
    let am_lighthouse = r.bool("lighthouse.am_lighthouse", false);
    let interval = r.int("lighthouse.interval", d::LIGHTHOUSE_INTERVAL_SECS);
    let interval = if interval < 1 {
        // Nebula's update loop panics on a non-positive ticker; lighthouses never run it.
        let msg = format!("{interval} is not a positive number of seconds");
        if am_lighthouse {
            r.warn(
                "lighthouse.interval",
                format!("{msg}; unused on a lighthouse"),
            );
        } else {
            r.problem("lighthouse.interval", msg);
        }
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
        am_lighthouse,
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
            // udp_linux.go copies net.ParseIP's nil into the bind address: all addresses, v4 and v6.
            let msg = format!("{host_text:?} is not an IP address; binding to all addresses ([::]) as Nebula does");
            r.warn("listen.host", msg);
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
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
        udp_offloads: r.bool("listen.udp_offloads", true),
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
    // The nested keys exist whatever shape this file uses (the schema is not per file).
    for key in [
        "punch",
        "respond",
        "delay",
        "respond_delay",
        "target_all_remotes",
    ] {
        r.know(&format!("punchy.{key}"));
    }
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
        // Unset keeps 1.6.1's behaviour (every address); newer releases default to false.
        target_all_remotes: !nested
            || r.bool("punchy.target_all_remotes", d::PUNCHY_TARGET_ALL_REMOTES),
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
        use_offloads: r.bool("tun.use_offloads", true),
    }
}

/// Upper bound for `firewall.conntrack.max_connections` (about 1 GB of conntrack at most).
const MAX_CONNTRACK_CAPACITY: i64 = 10_000_000;

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
            max_connections: r.int_in(
                "firewall.conntrack.max_connections",
                crate::firewall::DEFAULT_CONNTRACK_CAPACITY as i64,
                1,
                MAX_CONNTRACK_CAPACITY,
            ) as usize,
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

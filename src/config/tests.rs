//! Whole-loader unit tests: code defaults, lenient coercions through real keys, fallback
//! warnings naming key, value and default, and the cross-section checks.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

const PKI: &str = "pki: {ca: /ca.crt, cert: /host.crt, key: /host.key}\n";

fn load(extra: &str) -> Loaded {
    from_str(&format!("{PKI}{extra}")).unwrap_or_else(|e| panic!("{e}"))
}

fn problems(extra: &str) -> Vec<String> {
    match from_str(&format!("{PKI}{extra}")) {
        Err(ConfigError::Invalid { problems, .. }) => {
            problems.iter().map(|p| p.to_string()).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

#[test]
fn code_defaults() {
    let c = load("").config;
    assert_eq!(c.pki.ca, PemSource::Path("/ca.crt".into()));
    assert!(!c.pki.disconnect_invalid && c.pki.blocklist.is_empty());
    assert_eq!(c.lighthouse.interval, Duration::from_secs(10));
    assert_eq!(
        (c.lighthouse.dns.host.as_str(), c.lighthouse.dns.port),
        ("", 53)
    );
    assert_eq!(c.listen.host, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    assert_eq!(
        (c.listen.port, c.listen.batch, c.listen.read_buffer),
        (0, 64, 0)
    );
    assert_eq!(c.listen.send_recv_error, SendRecvError::Always);
    assert_eq!(c.routines, 1);
    assert!(!c.punchy.punch && !c.punchy.respond);
    assert_eq!(c.punchy.delay, Duration::from_secs(1));
    assert_eq!(c.cipher, Cipher::Aes);
    assert!(c.relay.use_relays && !c.relay.am_relay);
    assert_eq!(
        (c.tun.mtu, c.tun.tx_queue, c.tun.dev.as_deref()),
        (1300, 500, None)
    );
    assert_eq!(
        (c.logging.level, c.logging.format),
        (LogLevel::Info, LogFormat::Text)
    );
    assert_eq!(c.stats.backend, StatsBackend::Off);
    assert_eq!(c.handshakes.try_interval, Duration::from_millis(100));
    assert_eq!(
        (c.handshakes.retries, c.handshakes.trigger_buffer),
        (10, 64)
    );
    let ct = &c.firewall.conntrack;
    assert_eq!(
        (ct.tcp_timeout, ct.udp_timeout, ct.default_timeout),
        (
            Duration::from_secs(720),
            Duration::from_secs(180),
            Duration::from_secs(600)
        )
    );
    assert_eq!(ct.routine_cache_timeout, Duration::ZERO);
    assert!(c.firewall.inbound.is_empty() && c.firewall.outbound.is_empty());
    assert_eq!(c.timers.connection_alive_interval, Duration::from_secs(5));
    assert_eq!(c.timers.pending_deletion_interval, Duration::from_secs(10));
}

#[test]
fn numbers_bools_and_durations_as_strings() {
    let extra = "listen: {port: '4242', batch: \"32\"}\npunchy: {punch: 'on', respond: YES, delay: 250ms}\n\
                 tun: {mtu: '1400', disabled: 'true'}\nfirewall: {conntrack: {tcp_timeout: 1h30m, udp_timeout: '90s'}}\n\
                 lighthouse: {interval: '60', am_lighthouse: n}";
    let l = load(extra);
    let c = &l.config;
    assert_eq!((c.listen.port, c.listen.batch), (4242, 32));
    assert!(c.punchy.punch && c.punchy.respond);
    assert_eq!(c.punchy.delay, Duration::from_millis(250));
    assert_eq!(c.tun.mtu, 1400);
    assert!(c.tun.disabled);
    assert_eq!(c.firewall.conntrack.tcp_timeout, Duration::from_secs(5400));
    assert_eq!(c.firewall.conntrack.udp_timeout, Duration::from_secs(90));
    assert_eq!(c.lighthouse.interval, Duration::from_secs(60));
    assert!(!c.lighthouse.am_lighthouse);
}

#[test]
fn silent_nebula_fallbacks_warn_with_key_value_and_default() {
    let l = load("punchy: {punch: maybe, delay: 5}\nlisten: {batch: 1.5}\nfirewall: {conntrack: {udp_timeout: 3}}");
    let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    let has = |key: &str, value: &str, default: &str| {
        w.iter().any(|m| {
            m.starts_with(&format!("{key}:"))
                && m.contains(value)
                && m.ends_with(&format!("default {default}"))
        })
    };
    assert!(has("punchy.punch", "\"maybe\"", "false"), "{w:?}");
    assert!(has("punchy.delay", "5", "1s"), "{w:?}");
    assert!(has("listen.batch", "1.5", "64"), "{w:?}");
    assert!(has("firewall.conntrack.udp_timeout", "3", "3m0s"), "{w:?}");
    let c = &l.config;
    assert!(!c.punchy.punch);
    assert_eq!(
        (c.punchy.delay, c.listen.batch),
        (Duration::from_secs(1), 64)
    );
}

#[test]
fn legacy_forms() {
    let c = load("punchy: true\npunch_back: yes\nlocal_range: 10.0.0.0/8\npreferred_ranges: ['10.0.0.0/8', '172.16.0.0/12']").config;
    assert!(c.punchy.punch && c.punchy.respond);
    assert_eq!(c.preferred_ranges.len(), 2);
    let l = from_str("pki: {ca: /ca, cert: /c, key: /k, blacklist: [ABCD]}\ntun: {routines: 2}")
        .unwrap();
    assert_eq!(l.config.pki.blocklist, ["abcd"]);
    assert_eq!(l.config.routines, 2);
    assert_eq!(
        l.config.firewall.conntrack.routine_cache_timeout,
        Duration::from_secs(1)
    );
    assert!(l.warnings.iter().any(|w| w.key == "pki.blacklist"));
}

#[test]
fn cross_section_problems_name_keys() {
    let p = problems("lighthouse: {am_lighthouse: true, hosts: ['10.0.0.1']}\ncipher: AES\nlogging: {level: loud}");
    assert!(p.iter().any(|m| m.starts_with("listen.port:")), "{p:?}");
    assert!(
        p.iter()
            .any(|m| m.starts_with("lighthouse.hosts[0]:") && m.contains("static_host_map")),
        "{p:?}"
    );
    assert!(p.iter().any(|m| m.starts_with("cipher:")), "{p:?}");
    assert!(p.iter().any(|m| m.starts_with("logging.level:")), "{p:?}");
    let p = problems("tun: {unsafe_routes: [{route: 10.0.0.0/8}], routes: [{route: 10.1.0.0/16}]}");
    assert!(
        p.iter().any(|m| m.starts_with("tun.unsafe_routes[0].via:")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|m| m.starts_with("tun.routes[0].mtu:")),
        "{p:?}"
    );
}

#[test]
fn network_checks() {
    let c = load(
        "static_host_map: {'10.1.0.1': ['1.2.3.4:4242'], '192.168.0.1': ['1.2.3.4:4242']}\n\
         lighthouse: {hosts: ['10.1.0.1']}\n\
         tun: {routes: [{mtu: 9000, route: 10.2.0.0/16}], unsafe_routes: [{route: 10.1.5.0/24, via: 10.1.0.1}, {route: 10.0.0.0/8, via: 10.1.0.1}]}",
    )
    .config;
    let net: IpNet = "10.1.0.0/16".parse().unwrap();
    let (p, w) = check_network(&c, net);
    let p: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p
        .iter()
        .any(|m| m.starts_with("static_host_map.192.168.0.1:")));
    assert!(p.iter().any(|m| m.starts_with("tun.routes[0].route:")));
    assert!(p
        .iter()
        .any(|m| m.starts_with("tun.unsafe_routes[0].route:")));
    assert!(
        w.iter().any(|w| w.key == "tun.unsafe_routes[1].route"),
        "{w:?}"
    );
}

#[test]
fn directory_style_merge_appends_rules() {
    let a = Source::new(
        "a.yml",
        format!("{PKI}firewall: {{inbound: [{{port: 22, proto: tcp, host: any}}]}}"),
    );
    let b = Source::new(
        "b.yml",
        "firewall: {inbound: [{port: 443, proto: tcp, group: web}]}",
    );
    let l = from_sources(&[a, b]).unwrap();
    assert_eq!(l.config.firewall.inbound.len(), 2);
    assert_eq!(l.sources, ["a.yml", "b.yml"]);
}

#[test]
fn missing_pki_is_a_problem_per_key() {
    let Err(ConfigError::Invalid { problems, .. }) = from_str("pki: {cert: /x}") else {
        panic!("accepted")
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["pki.ca", "pki.key"]);
}

#[test]
fn conntrack_max_connections_bounded() {
    let ct = |extra: &str| load(extra).config.firewall.conntrack.max_connections;
    assert_eq!(ct(""), crate::firewall::DEFAULT_CONNTRACK_CAPACITY);
    assert_eq!(ct("firewall: {conntrack: {max_connections: 5000}}"), 5000);
    for bad in ["0", "-1", "20000000"] {
        let p = problems(&format!(
            "firewall: {{conntrack: {{max_connections: {bad}}}}}"
        ));
        assert!(
            p.iter()
                .any(|m| m.contains("firewall.conntrack.max_connections") && m.contains(bad)),
            "{bad}: {p:?}"
        );
    }
}

#[test]
fn meshd_table_bounds_default_to_a_100k_lighthouse_and_are_checked() {
    let b = |extra: &str| load(extra).config.bounds;
    let d = b("");
    assert!(d.max_hosts >= 100_000, "{d:?}");
    assert_eq!(d.max_pending, super::defaults::MAX_PENDING_HANDSHAKES);
    let set = b("meshd: {max_hosts: 250000, max_pending_handshakes: 100, max_relay_legs: 7}");
    assert_eq!(
        (set.max_hosts, set.max_pending, set.max_relay_legs),
        (250_000, 100, 7)
    );
    for bad in ["0", "-5", "99999999"] {
        let p = problems(&format!("meshd: {{max_hosts: {bad}}}"));
        assert!(
            p.iter()
                .any(|m| m.contains("meshd.max_hosts") && m.contains(bad)),
            "{bad}: {p:?}"
        );
    }
}

//! No silent no-ops: every key path the config reader accepts is either consumed by `setup` (the
//! plan it builds changes when the key is set to something other than its default) or listed in
//! `config::NOT_SUPPORTED`, which `-test` and start-up report. Test-only.

use std::path::Path;

use super::setup;
use crate::config;

/// Per accepted key: YAML that enables it where it only matters in some setting (merged over the
/// base), and YAML that sets it to a non-default value (merged over both). A new key needs an
/// entry here (and to be consumed by `setup`) or a `NOT_SUPPORTED` entry.
fn mutation(key: &str, other_pki: &OtherPki) -> Option<(String, String)> {
    let none = String::new();
    let lh = "lighthouse: {am_lighthouse: true, serve_dns: true}\n".to_string();
    let m = |s: &str| Some((none.clone(), s.to_string()));
    match key {
        "cipher" => m("cipher: chachapoly"),
        "counters.requery_every_packets" => m("counters: {requery_every_packets: 7}"),
        "counters.try_promote" => m("counters: {try_promote: 7}"),
        "firewall.conntrack.default_timeout" => m("firewall: {conntrack: {default_timeout: 1m}}"),
        "firewall.conntrack.max_connections" => m("firewall: {conntrack: {max_connections: 7}}"),
        "firewall.conntrack.tcp_timeout" => m("firewall: {conntrack: {tcp_timeout: 1m}}"),
        "firewall.conntrack.udp_timeout" => m("firewall: {conntrack: {udp_timeout: 1m}}"),
        "firewall.default_local_cidr_any" => Some((
            // The base certificate carries an unsafe network, so the key matters.
            "firewall: {inbound: [{port: any, proto: any, host: any}]}".into(),
            "firewall: {default_local_cidr_any: false}".into(),
        )),
        "firewall.inbound" => m("firewall: {inbound: [{port: 22, proto: tcp, host: any}]}"),
        "firewall.outbound" => m("firewall: {outbound: [{port: 22, proto: tcp, host: any}]}"),
        "firewall.inbound_action" => m("firewall: {inbound_action: reject}"),
        "firewall.outbound_action" => m("firewall: {outbound_action: reject}"),
        "handshakes.query_buffer" => m("handshakes: {query_buffer: 7}"),
        "handshakes.retries" => m("handshakes: {retries: 7}"),
        "handshakes.trigger_buffer" => m("handshakes: {trigger_buffer: 7}"),
        "handshakes.try_interval" => m("handshakes: {try_interval: 7s}"),
        "lighthouse.advertise_addrs" => m("lighthouse: {advertise_addrs: ['198.51.100.7:4300']}"),
        "lighthouse.am_lighthouse" => m("lighthouse: {am_lighthouse: true}"),
        "lighthouse.calculated_remotes" => m(
            "lighthouse: {calculated_remotes: {10.9.0.0/16: [{mask: 192.168.0.0/16, port: 4242}]}}",
        ),
        "lighthouse.dns.host" => Some((lh, "lighthouse: {dns: {host: 127.0.0.1}}".into())),
        "lighthouse.dns.port" => Some((lh, "lighthouse: {dns: {port: 5353}}".into())),
        "lighthouse.serve_dns" => Some((
            "lighthouse: {am_lighthouse: true}".into(),
            "lighthouse: {serve_dns: true}".into(),
        )),
        "lighthouse.hosts" => Some((
            "static_host_map: {'10.9.0.1': ['192.0.2.1:4242']}".into(),
            "lighthouse: {hosts: [10.9.0.1]}".into(),
        )),
        "lighthouse.interval" => m("lighthouse: {interval: 30}"),
        "lighthouse.local_allow_list" => m("lighthouse: {local_allow_list: {10.0.0.0/8: false}}"),
        "lighthouse.remote_allow_list" => m("lighthouse: {remote_allow_list: {10.0.0.0/8: false}}"),
        "lighthouse.remote_allow_ranges" => {
            m("lighthouse: {remote_allow_ranges: {10.9.1.0/24: {192.168.0.0/16: false}}}")
        }
        "listen.accept_recv_error" => m("listen: {accept_recv_error: never}"),
        "listen.send_recv_error" => m("listen: {send_recv_error: never}"),
        "listen.batch" => m("listen: {batch: 7}"),
        "listen.host" => m("listen: {host: 127.0.0.1}"),
        "listen.port" => m("listen: {port: 4300}"),
        "listen.read_buffer" => m("listen: {read_buffer: 65536}"),
        "listen.write_buffer" => m("listen: {write_buffer: 65536}"),
        "listen.so_mark" => m("listen: {so_mark: 7}"),
        "meshd.max_hosts" => m("meshd: {max_hosts: 7}"),
        "meshd.max_pending_handshakes" => m("meshd: {max_pending_handshakes: 7}"),
        "meshd.max_relay_legs" => m("meshd: {max_relay_legs: 7}"),
        "listen.udp_offloads" => m("listen: {udp_offloads: false}"),
        "tun.use_offloads" => m("tun: {use_offloads: false}"),
        "control.socket" => m("control: {socket: /tmp/meshd-coverage.sock}"),
        "control.cert_expiry_warning" => m("control: {cert_expiry_warning: 1h}"),
        "stats.type" => Some((
            "stats: {listen: '127.0.0.1:8080', path: /metrics, interval: 10s}".into(),
            "stats: {type: prometheus}".into(),
        )),
        "stats.listen"
        | "stats.path"
        | "stats.namespace"
        | "stats.subsystem"
        | "stats.message_metrics"
        | "stats.lighthouse_metrics" => {
            let field = key.trim_start_matches("stats.");
            let value = match field {
                "listen" => "'127.0.0.1:9090'",
                "path" => "/other",
                "message_metrics" | "lighthouse_metrics" => "true",
                _ => "other",
            };
            Some((
                "stats: {type: prometheus, listen: '127.0.0.1:8080', path: /metrics, interval: 10s}"
                    .into(),
                format!("stats: {{{field}: {value}}}"),
            ))
        }
        "local_range" => m("local_range: 10.1.0.0/16"),
        "preferred_ranges" => m("preferred_ranges: [10.1.0.0/16]"),
        "logging.disable_timestamp" => m("logging: {disable_timestamp: true}"),
        "logging.format" => m("logging: {format: json}"),
        "logging.level" => m("logging: {level: debug}"),
        "logging.timestamp_format" => m("logging: {timestamp_format: '15:04:05'}"),
        "pki.blocklist" => m(&format!("pki: {{blocklist: [{}]}}", other_pki.fingerprint)),
        "pki.blacklist" => m(&format!("pki: {{blacklist: [{}]}}", other_pki.fingerprint)),
        "pki.ca" => m(&format!("pki: {{ca: {:?}}}", other_pki.ca_bundle)),
        "pki.cert" | "pki.key" => m(&format!(
            "pki: {{cert: {}, key: {}}}",
            other_pki.cert, other_pki.key
        )),
        "pki.disconnect_invalid" => m("pki: {disconnect_invalid: true}"),
        "punch_back" => m("punch_back: true"),
        "punchy" => m("punchy: true"),
        "punchy.punch" => m("punchy: {punch: true}"),
        "punchy.respond" => m("punchy: {respond: true}"),
        "punchy.delay" => m("punchy: {delay: 7s}"),
        "punchy.respond_delay" => m("punchy: {respond_delay: 7s}"),
        "punchy.target_all_remotes" => m("punchy: {target_all_remotes: false}"),
        "relay.am_relay" => m("relay: {am_relay: true}"),
        "relay.relays" => m("relay: {relays: [10.9.0.7]}"),
        "relay.use_relays" => m("relay: {use_relays: false}"),
        "static_host_map" => m("static_host_map: {'10.9.0.1': ['192.0.2.1:4242']}"),
        "static_map.cadence" => m("static_map: {cadence: 7s}"),
        "static_map.lookup_timeout" => Some((
            "static_host_map: {'10.9.0.1': ['localhost:4242']}".into(),
            // Zero gives up before asking (as a context that has already expired does).
            "static_map: {lookup_timeout: 0s}".into(),
        )),
        "static_map.network" => Some((
            "static_host_map: {'10.9.0.1': ['localhost:4242']}".into(),
            "static_map: {network: ip6}".into(),
        )),
        "timers.connection_alive_interval" => m("timers: {connection_alive_interval: 7}"),
        "timers.pending_deletion_interval" => m("timers: {pending_deletion_interval: 7}"),
        "timers.requery_wait_duration" => m("timers: {requery_wait_duration: 7s}"),
        "tun.dev" => m("tun: {dev: mesh7}"),
        "tun.disabled" => m("tun: {disabled: true}"),
        "tun.drop_local_broadcast" => m("tun: {drop_local_broadcast: true}"),
        "tun.drop_multicast" => m("tun: {drop_multicast: true}"),
        "tun.mtu" => m("tun: {mtu: 1400}"),
        "tun.tx_queue" => m("tun: {tx_queue: 900}"),
        "tun.use_system_route_table" => m("tun: {use_system_route_table: true}"),
        "tun.routes" | "tun.routes[].mtu" | "tun.routes[].route" => {
            m("tun: {routes: [{mtu: 8800, route: 10.9.8.0/24}]}")
        }
        "tun.unsafe_routes" | "tun.unsafe_routes[].route" | "tun.unsafe_routes[].via" => {
            m("tun: {unsafe_routes: [{route: 172.16.1.0/24, via: 10.9.0.99}]}")
        }
        "tun.unsafe_routes[].mtu"
        | "tun.unsafe_routes[].metric"
        | "tun.unsafe_routes[].install" => {
            let field = key.rsplit('.').next().unwrap_or_default();
            let value = match field {
                "mtu" => "1200",
                "metric" => "100",
                _ => "false",
            };
            Some((
                "tun: {unsafe_routes: [{route: 172.16.1.0/24, via: 10.9.0.99}]}".into(),
                // Lists append, so the mutated file names a second route with the field set.
                format!("tun: {{unsafe_routes: [{{route: 172.16.2.0/24, via: 10.9.0.99, {field}: {value}}}]}}"),
            ))
        }
        "tunnels.drop_inactive" => m("tunnels: {drop_inactive: true}"),
        "tunnels.inactivity_timeout" => Some((
            "tunnels: {drop_inactive: true}".into(),
            "tunnels: {inactivity_timeout: 7s}".into(),
        )),
        _ => None,
    }
}

/// A second certificate and CA, for the keys whose values are certificates or fingerprints.
struct OtherPki {
    cert: String,
    key: String,
    /// Our CA plus another one, inline.
    ca_bundle: String,
    /// The other CA's fingerprint (blocklisting it changes the pool, not our own validity).
    fingerprint: String,
}

fn other_pki(base_dir: &Path, dir: &Path) -> OtherPki {
    let yaml = setup::tests::pki_for(dir);
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let ours = std::fs::read_to_string(base_dir.join("ca.crt")).unwrap();
    let theirs = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let ca = crate::cert::NebulaCertificate::from_pem(theirs.as_bytes())
        .unwrap()
        .0;
    assert!(yaml.contains("h.crt"), "{yaml}");
    // Same VPN IP under a CA we also trust: a different identity, still a valid config.
    let ours_key = std::fs::read_to_string(base_dir.join("ca.key")).unwrap();
    std::fs::write(dir.join("ours.key"), ours_key).unwrap();
    std::fs::write(dir.join("ours.crt"), &ours).unwrap();
    let args: Vec<String> = [
        "sign",
        "-name",
        "h2",
        "-ip",
        "10.9.0.5/16",
        "-ca-crt",
        &path("ours.crt"),
        "-ca-key",
        &path("ours.key"),
        "-out-crt",
        &path("h2.crt"),
        "-out-key",
        &path("h2.key"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (mut o, mut e) = (Vec::new(), Vec::new());
    assert_eq!(
        crate::cli::cert::run(&args, &mut o, &mut e),
        0,
        "{}",
        String::from_utf8_lossy(&e)
    );
    OtherPki {
        cert: path("h2.crt"),
        key: path("h2.key"),
        ca_bundle: format!("{ours}{theirs}"),
        fingerprint: ca.fingerprint().to_string(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The plan `setup` builds from the files, without its warnings (those name every key).
fn plan_text(dir: &Path, files: &[&str]) -> Result<String, String> {
    for f in std::fs::read_dir(dir).unwrap() {
        let f = f.unwrap().path();
        if f.extension().is_some_and(|e| e == "yml") {
            std::fs::remove_file(f).unwrap();
        }
    }
    for (i, text) in files.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:02}.yml")), text).unwrap();
    }
    let mut plan = setup::load(dir, now()).map_err(|e| format!("{e:#}"))?;
    let unknown: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("unknown key"))
        .collect();
    if !unknown.is_empty() {
        return Err(format!("unknown keys: {unknown:?}"));
    }
    plan.warnings.clear();
    Ok(format!("{plan:#?}"))
}

#[test]
fn every_accepted_key_is_consumed_or_reported_unsupported() {
    let base_dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let base = format!(
        "{}listen: {{port: 4242}}\n",
        setup::tests::pki_for(base_dir.path())
    );
    let other = other_pki(base_dir.path(), other_dir.path());
    let accepted = config::accepted_keys();
    assert!(accepted.len() > 100, "only {} keys", accepted.len());
    let mut failures = Vec::new();
    for key in &accepted {
        if config::unsupported_entry(key).is_some() {
            continue;
        }
        let Some((ctx, change)) = mutation(key, &other) else {
            failures.push(format!(
                "{key}: no mutation here; consume it in setup or list it in NOT_SUPPORTED"
            ));
            continue;
        };
        let before = plan_text(conf_dir.path(), &[&base, &ctx]);
        let after = plan_text(conf_dir.path(), &[&base, &ctx, &change]);
        match (before, after) {
            (Ok(b), Ok(a)) if a == b => failures.push(format!(
                "{key}: accepted but ignored (setting it changes nothing setup builds)"
            )),
            (Ok(_), Ok(_)) => {}
            (b, a) => failures.push(format!("{key}: test config does not load: {b:?} / {a:?}")),
        }
    }
    for u in config::NOT_SUPPORTED {
        if !accepted
            .iter()
            .any(|k| k == u.key || config::unsupported_entry(k).is_some_and(|e| e.key == u.key))
        {
            failures.push(format!(
                "NOT_SUPPORTED lists {}, which is not accepted",
                u.key
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

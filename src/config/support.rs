//! Which accepted keys meshd does not act on, and the warning that says so. Every key the reader
//! accepts is either turned into a daemon setting by `daemon::setup` or listed in
//! [`NOT_SUPPORTED`] with the reason; `daemon::key_coverage` enforces that split, and `-test` and
//! start-up print one warning per listed key present in the config. Owns only the list and the
//! presence check; knows nothing about what the other keys mean.

use serde_yaml::Value;

use super::coerce::go_string;
use super::reader::Warning;

/// One key (or whole section) meshd reads without acting on it.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported {
    /// Dotted path in reader notation (`tun.unsafe_routes[].via`); a section covers its keys.
    pub key: &'static str,
    /// Why, in one clause, for the operator.
    pub reason: &'static str,
    /// A scalar value that asks for exactly what meshd does anyway (no warning then).
    pub harmless: Option<&'static str>,
}

const fn unsupported(key: &'static str, reason: &'static str) -> Unsupported {
    Unsupported {
        key,
        reason,
        harmless: None,
    }
}

const fn unless(key: &'static str, harmless: &'static str, reason: &'static str) -> Unsupported {
    Unsupported {
        key,
        reason,
        harmless: Some(harmless),
    }
}

/// The keys meshd accepts (so Nebula configs load) but does not honour. Drop an entry when the
/// daemon starts consuming the key; the coverage test then demands it be consumed.
pub const NOT_SUPPORTED: &[Unsupported] = &[
    unless(
        "routines",
        "1",
        "meshd runs one reader/writer pair (multiple routines are not implemented yet)",
    ),
    unless(
        "tun.routines",
        "1",
        "meshd runs one reader/writer pair (multiple routines are not implemented yet)",
    ),
    unless(
        "listen.routines",
        "1",
        "meshd runs one reader/writer pair (multiple routines are not implemented yet)",
    ),
    unsupported(
        "firewall.conntrack.routine_cache_timeout",
        "meshd has no per-routine conntrack cache (it runs one routine)",
    ),
    unsupported(
        "sshd",
        "meshd does not run an SSH server; use `meshd status` and the other control commands \
         (`meshd list-hostmap`, `meshd print-tunnel <vpn-ip>`, ...) over the local control \
         socket instead",
    ),
    unsupported(
        "stats.interval",
        "meshd computes every value when it is scraped, so there is no sampling interval",
    ),
    unsupported(
        "stats.prefix",
        "graphite is not supported (only stats.type: prometheus)",
    ),
    unsupported(
        "stats.protocol",
        "graphite is not supported (only stats.type: prometheus)",
    ),
    unsupported(
        "stats.host",
        "graphite is not supported (only stats.type: prometheus)",
    ),
    unless(
        "pki.initiating_version",
        "1",
        "meshd speaks only v1 certificates (cert v2 is not implemented)",
    ),
    unsupported(
        "listen.rebind_on_network_change",
        "meshd keeps its socket bound; only the addresses it reports follow interface changes",
    ),
    unsupported("listen.windows_bypass_wdf", "a Windows-only setting"),
    unsupported("tun.windows_bypass_wdf", "a Windows-only setting"),
    unsupported("tun.network_category", "a Windows-only setting"),
    unsupported("tun.cpu_affinity", "thread pinning is not implemented"),
    unsupported("tun.pin_threads", "thread pinning is not implemented"),
    unsupported("tun.pin_threads_key", "thread pinning is not implemented"),
    unsupported(
        "tun.use_system_route_table_buffer_size",
        "the route watcher uses the kernel's default netlink buffer",
    ),
    unless(
        "handshakes.trigger_buffer",
        "64",
        "meshd starts lighthouse-triggered handshakes at once, without a queue",
    ),
    unless(
        "handshakes.query_buffer",
        "64",
        "meshd sends lighthouse queries at once, without a queue",
    ),
];

/// A warning for every [`NOT_SUPPORTED`] key set in `tree` (a null value counts as unset, as in
/// Nebula; a harmless value is not reported).
pub fn report(tree: &Value) -> Vec<Warning> {
    NOT_SUPPORTED
        .iter()
        .filter(|u| present(tree, u))
        .map(|u| Warning {
            key: u.key.to_string(),
            message: format!("not supported by meshd: {}; ignored", u.reason),
        })
        .collect()
}

fn present(tree: &Value, u: &Unsupported) -> bool {
    let mut found = Vec::new();
    values_at(tree, u.key, &mut found);
    found.iter().any(|v| match (u.harmless, go_string(v)) {
        (Some(h), Some(s)) => !s.eq_ignore_ascii_case(h),
        _ => true,
    })
}

/// Every non-null value at `path`, where `name[]` walks each element of a list.
fn values_at<'v>(v: &'v Value, path: &str, out: &mut Vec<&'v Value>) {
    let empty = match v {
        Value::Mapping(m) => m.is_empty(),
        Value::Sequence(s) => s.is_empty(),
        other => other.is_null(),
    };
    if empty {
        return;
    }
    let Some(first) = path.split('.').next().filter(|s| !s.is_empty()) else {
        out.push(v);
        return;
    };
    let rest = path[first.len()..].trim_start_matches('.');
    let (name, each) = match first.strip_suffix("[]") {
        Some(n) => (n, true),
        None => (first, false),
    };
    let Value::Mapping(m) = v else { return };
    let Some(child) = m
        .iter()
        .find(|(k, _)| go_string(k).as_deref() == Some(name))
        .map(|(_, c)| c)
    else {
        return;
    };
    match (each, child) {
        (true, Value::Sequence(items)) => items.iter().for_each(|i| values_at(i, rest, out)),
        (true, _) => {}
        (false, c) => values_at(c, rest, out),
    }
}

/// The entry covering a normalised key path, if any.
pub fn entry_for(key: &str) -> Option<&'static Unsupported> {
    NOT_SUPPORTED.iter().find(|u| {
        key == u.key
            || key
                .strip_prefix(u.key)
                .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(yaml: &str) -> Vec<String> {
        let tree: Value = serde_yaml::from_str(yaml).unwrap();
        report(&tree).into_iter().map(|w| w.key).collect()
    }

    #[test]
    fn set_keys_are_reported_once_harmless_and_null_values_are_not() {
        assert_eq!(
            keys("routines: 4\nsshd: {enabled: true, listen: x}"),
            ["routines", "sshd"]
        );
        assert!(keys("routines: 1\nsshd:\npki: {initiating_version: 1}").is_empty());
        assert_eq!(
            keys("pki: {initiating_version: '2'}"),
            ["pki.initiating_version"]
        );
        assert!(keys("tun: {dev: x}\nlisten: {port: 1}").is_empty());
    }

    #[test]
    fn sections_cover_their_keys() {
        assert_eq!(
            entry_for("sshd.authorized_users[].user").unwrap().key,
            "sshd"
        );
        assert_eq!(entry_for("routines").unwrap().key, "routines");
        assert!(entry_for("routinesx").is_none());
        assert!(entry_for("tun.routes[].mtu").is_none());
    }
}

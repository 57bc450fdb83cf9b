//! The operational sections: `sshd` (`ssh.go`), `logging` (`logger.go`), `stats` (`stats.go`),
//! `handshakes`, `timers` (`main.go`) and `tunnels` (newer releases). Same rules as `build`:
//! read through the `Reader`, Nebula's defaults from `model::defaults`.

use std::path::PathBuf;

use super::model::defaults as d;
use super::model::*;
use super::reader::{describe, Reader};
use super::types::{LogFormat, LogLevel};

/// `ssh.go`: only checked when enabled; authorized user mistakes are warnings there too.
pub fn sshd(r: &mut Reader<'_>) -> Sshd {
    let enabled = r.bool("sshd.enabled", false);
    let listen = r.string("sshd.listen", "");
    let host_key = r.opt_string("sshd.host_key").map(PathBuf::from);
    let authorized_users = ssh_users(r);
    let trusted_cas = r.string_list("sshd.trusted_cas");
    r.get("sshd.sandbox_dir");
    // That meshd runs no SSH server is said by `support::NOT_SUPPORTED` (one warning for the
    // section); the keys are still checked as Nebula checks them, so a Nebula config stays valid.
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

/// `logger.go`: unknown level or format stops start-up.
pub fn logging(r: &mut Reader<'_>) -> Logging {
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
pub fn stats(r: &mut Reader<'_>) -> Stats {
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
        "graphite" => {
            r.problem(
                "stats.type",
                "graphite is not supported by meshd; use `type: prometheus` (same metric names)",
            );
            StatsBackend::Graphite {
                protocol: r.string("stats.protocol", d::STATS_PROTOCOL),
                host: required(r, "stats.host", ""),
                prefix: r.string("stats.prefix", d::STATS_PREFIX),
            }
        }
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

pub fn handshakes(r: &mut Reader<'_>) -> Handshakes {
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

pub fn timers(r: &mut Reader<'_>) -> Timers {
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
        requery_wait: r.duration("timers.requery_wait_duration", d::REQUERY_WAIT),
    }
}

pub fn tunnels(r: &mut Reader<'_>) -> Tunnels {
    Tunnels {
        drop_inactive: r.bool("tunnels.drop_inactive", false),
        inactivity_timeout: r.duration("tunnels.inactivity_timeout", d::TUNNELS_INACTIVITY_TIMEOUT),
    }
}

/// meshd-only `control:`: where the control socket listens and when certificates count as
/// about to expire.
pub fn control(r: &mut Reader<'_>) -> Control {
    Control {
        socket: r.opt_string("control.socket").map(PathBuf::from),
        cert_expiry_warning: r.duration("control.cert_expiry_warning", d::CERT_EXPIRY_WARNING),
    }
}

//! SIGHUP reload, all or nothing: the new configuration is loaded and fully checked by
//! `setup::load` (same checks as `-test`, plus every derived structure) before anything changes;
//! only then are the node, firewall and logging handed their new values.
//!
//! Owns the split between reloadable and restart-only settings on the daemon side (listen
//! address, TUN device, MTU and routes, batch size) and the re-check of established peers against
//! a new CA pool and blocklist. Must not open or close OS resources (the loop owns them) and must
//! not make protocol decisions (the node's `apply_config` does).

use std::time::Instant;

use crate::cert::CaPool;
use crate::node::filter::FirewallFilter;
use crate::node::{still_valid, CaPoolVerifier, Node, PeerCert, ReloadInput, Reloaded};

use super::logging::LogHandle;
use super::routes::RoutePlan;
use super::setup::Plan;
use super::tun::TunSettings;
use super::udp::UdpSettings;

/// Settings fixed for the life of the process; a reload that changes them is told so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    tun: Option<TunSettings>,
    routes: RoutePlan,
    udp: UdpSettings,
    batch: usize,
    control_socket: std::path::PathBuf,
    metrics: Option<super::metrics::MetricsSettings>,
    use_system_route_table: bool,
}

impl Fixed {
    pub fn of(plan: &Plan) -> Fixed {
        Fixed {
            tun: plan.tun.clone(),
            routes: plan.routes.clone(),
            udp: plan.udp.clone(),
            batch: plan.batch,
            control_socket: plan.control.socket.clone(),
            metrics: plan.control.metrics.clone(),
            use_system_route_table: plan.use_system_route_table,
        }
    }

    /// Keys of `plan` that differ from the running process and need a restart.
    pub fn needs_restart(&self, plan: &Plan) -> Vec<&'static str> {
        let new = Fixed::of(plan);
        let mut keys = Vec::new();
        if (new.udp.host, new.udp.port) != (self.udp.host, self.udp.port) {
            keys.push("listen.host/port");
        }
        if new.udp.offloads != self.udp.offloads {
            keys.push("listen.udp_offloads");
        }
        let same_addr = (new.udp.host, new.udp.port) == (self.udp.host, self.udp.port);
        if same_addr
            && (new.udp.read_buffer, new.udp.write_buffer, new.udp.so_mark)
                != (
                    self.udp.read_buffer,
                    self.udp.write_buffer,
                    self.udp.so_mark,
                )
        {
            keys.push("listen buffers/so_mark");
        }
        if new.batch != self.batch {
            keys.push("listen.batch");
        }
        let offloads = |t: &Option<TunSettings>| t.as_ref().map(|t| t.offloads);
        if offloads(&new.tun) != offloads(&self.tun) && new.tun.is_some() && self.tun.is_some() {
            keys.push("tun.use_offloads");
        }
        let rest = |t: &Option<TunSettings>| {
            t.clone().map(|t| TunSettings {
                offloads: false,
                ..t
            })
        };
        if rest(&new.tun) != rest(&self.tun) {
            keys.push("tun (dev/mtu/disabled/tx_queue)");
        }
        if new.routes != self.routes {
            keys.push("tun.routes/unsafe_routes");
        }
        if new.control_socket != self.control_socket {
            keys.push("control.socket");
        }
        if new.metrics != self.metrics {
            keys.push("stats");
        }
        if new.use_system_route_table != self.use_system_route_table {
            keys.push("tun.use_system_route_table");
        }
        keys
    }
}

/// What one successful reload did, for the log and `STATUS=`.
#[derive(Debug, Default)]
pub struct Summary {
    pub node: Reloaded,
    pub restart_keys: Vec<&'static str>,
    pub firewall_replaced: bool,
}

impl Summary {
    pub fn describe(&self) -> String {
        let mut changed: Vec<&str> = self.node.changed.clone();
        if self.firewall_replaced {
            changed.push("firewall");
        }
        let mut s = format!("reloaded ({})", list(&changed));
        let mut restart: Vec<&str> = self.restart_keys.clone();
        restart.extend(self.node.needs_restart.iter().copied());
        if !restart.is_empty() {
            s.push_str(&format!(
                "; needs a restart, left unchanged: {}",
                list(&restart)
            ));
        }
        if !self.node.disconnected.is_empty() {
            s.push_str(&format!(
                "; disconnected {} peer(s) no longer accepted",
                self.node.disconnected.len()
            ));
        }
        s
    }
}

fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "no changes".into()
    } else {
        keys.join(", ")
    }
}

/// Applies an already loaded and checked `plan` to the running pieces. Nothing here can fail
/// half-way: every value was built by `setup::load` before the first change.
pub fn apply(
    now: Instant,
    unix_now: i64,
    plan: Plan,
    fixed: &Fixed,
    node: &mut Node,
    log: &LogHandle,
) -> anyhow::Result<Summary> {
    let restart_keys = fixed.needs_restart(&plan);
    // A certificate for another VPN IP is refused by the node; the firewall keeps our old
    // addresses with it.
    let same_ip = plan.identity.vpn_ip == node.identity().vpn_ip;
    let firewall_replaced = match node
        .filter_mut()
        .as_any_mut()
        .and_then(|f| f.downcast_mut::<FirewallFilter>())
    {
        Some(f) => {
            let fw = f.firewall_mut();
            fw.replace_rules(plan.firewall);
            if same_ip {
                fw.set_local_identity(plan.local);
            }
            true
        }
        None => false,
    };
    let accepts = accepts(&plan.ca_pool, unix_now);
    let reloaded = node.apply_config(
        now,
        ReloadInput {
            config: plan.node,
            identity: plan.identity,
            verifier: Box::new(CaPoolVerifier { pool: plan.ca_pool }),
            accepts,
        },
    );
    // Only fails if the subscriber is gone, in which case there is nothing to log to anyway.
    log.apply(plan.log_level, plan.log_format)?;
    log.set_time(plan.log_time)?;
    Ok(Summary {
        node: reloaded,
        restart_keys,
        firewall_replaced,
    })
}

/// Does the new pki still accept an established peer: its CA is in the pool and unexpired, its
/// fingerprint is not blocklisted and it has not expired ([`still_valid`], the same rule as
/// `pki.disconnect_invalid`)?
///
/// `pki.blocklist` is already part of the pool (`config::pki` loads it there).
pub fn accepts(pool: &CaPool, unix_now: i64) -> Box<dyn Fn(&PeerCert) -> bool> {
    let pool = pool.clone();
    Box::new(move |p: &PeerCert| still_valid(&pool, p, unix_now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{CaSigningKey, CertDetails, NebulaCertificate};
    use crate::node::VpnIp;
    use std::net::Ipv4Addr;

    fn ca(seed: u8, not_after: i64) -> NebulaCertificate {
        let key = CaSigningKey::from_seed([seed; 32]);
        CertDetails {
            name: format!("ca{seed}"),
            ips: vec![],
            subnets: vec![],
            groups: vec![],
            not_before: 0,
            not_after,
            public_key: key.public_key(),
            is_ca: true,
            issuer: None,
        }
        .sign(&key)
    }

    fn peer(issuer: &NebulaCertificate, not_after: i64) -> PeerCert {
        PeerCert {
            vpn_ip: VpnIp::from(Ipv4Addr::new(10, 0, 0, 2)),
            ips: vec![Ipv4Addr::new(10, 0, 0, 2)],
            subnets: vec![],
            name: "peer".into(),
            groups: vec![],
            fingerprint: "ab".repeat(32),
            issuer: issuer.fingerprint().to_string(),
            issuer_name: issuer.name().to_string(),
            not_after,
            cert: None,
        }
    }

    /// The SIGHUP path end to end: `pki.blocklist` naming the CA (not a leaf) makes the reloaded
    /// pool refuse every certificate the CA signed, for new handshakes and for kept tunnels.
    #[test]
    fn blocklisting_the_ca_in_the_config_revokes_its_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::setup::tests::pki_for(dir.path());
        let read = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
        let ca = NebulaCertificate::from_pem(&read("ca.crt")).unwrap().0;
        let leaf = NebulaCertificate::from_pem(&read("h.crt")).unwrap().0;
        let yaml = pki.replace("}\n", &format!(", blocklist: [{}]}}\n", ca.fingerprint()));
        assert_ne!(yaml, pki);
        let cfg = dir.path().join("c.yml");
        std::fs::write(&cfg, yaml).unwrap();
        let now = leaf.not_before() + 10;
        let plan = super::super::setup::load(&cfg, now).unwrap();
        assert_eq!(
            plan.ca_pool.verify(&leaf, now),
            Err(crate::cert::CertError::CaBlocked)
        );
        let kept = crate::node::peer_cert(&leaf, ca.name().to_string()).unwrap();
        assert!(
            !accepts(&plan.ca_pool, now)(&kept),
            "tunnel under a blocked CA kept"
        );
        assert!(
            plan.warnings.iter().any(|w| w.contains("blocked CA")),
            "own certificate under the blocked CA not reported: {:?}",
            plan.warnings
        );
    }

    /// What a reload keeps: peers of a live CA in the new pool, not blocklisted, not expired.
    #[test]
    fn reload_accepts_only_peers_still_valid() {
        let now = 1_000;
        let (live, dead, gone) = (ca(1, 5_000), ca(2, 500), ca(3, 5_000));
        let mut pool = CaPool::new();
        pool.add_ca(live.clone(), now).unwrap();
        pool.add_ca(dead.clone(), now).unwrap();
        let ok = accepts(&pool, now);
        assert!(ok(&peer(&live, 2_000)), "valid peer refused");
        assert!(ok(&peer(&live, now)), "NotAfter is inclusive");
        assert!(!ok(&peer(&live, now - 1)), "expired peer kept");
        assert!(!ok(&peer(&dead, 2_000)), "peer of an expired CA kept");
        assert!(
            !ok(&peer(&gone, 2_000)),
            "peer of a CA no longer in pki.ca kept"
        );
        // pki.blocklist lives in the pool; the same rule serves pki.disconnect_invalid.
        let mut in_pool = pool.clone();
        in_pool.blocklist_fingerprint("AB".repeat(32).parse().unwrap());
        let blocked = accepts(&in_pool, now);
        assert!(!blocked(&peer(&live, 2_000)), "blocklisted peer kept");
        assert!(still_valid(&pool, &peer(&live, 2_000), now));
        assert!(!still_valid(&in_pool, &peer(&live, 2_000), now));
        // A blocklisted CA revokes its leaves (nebula#1824); the other CA's peers stay.
        let mut ca_blocked = pool.clone();
        ca_blocked.add_ca(gone.clone(), now).unwrap();
        ca_blocked.blocklist_fingerprint(live.fingerprint());
        let by_ca = accepts(&ca_blocked, now);
        assert!(!by_ca(&peer(&live, 2_000)), "peer of a blocklisted CA kept");
        assert!(by_ca(&peer(&gone, 2_000)), "peer of another CA dropped");
    }
}

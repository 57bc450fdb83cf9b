//! Reload (SIGHUP) on the node side: applies the reloadable parts of a new [`NodeConfig`],
//! identity and certificate verifier to a running node, and says what changed.
//!
//! Owns only the decision of what a reload touches inside the node: static hosts and the
//! remote allow lists (known addresses are re-filtered), lighthouses and their interval,
//! punchy, relay use, handshake timing, a new own certificate, a new CA pool (peers it no
//! longer accepts are disconnected). Keys that need a restart are reported and
//! left as they were. Must not read files or validate configuration; the driver hands in values
//! that are already checked.

use std::time::Instant;

use super::lighthouse::{remote_allowed_by, static_targets};
use super::{CertVerifier, Identity, Node, NodeConfig, PeerCert, RemoteList, VpnIp};

/// What [`Node::apply_config`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// Config keys whose new value is now in effect.
    pub changed: Vec<&'static str>,
    /// Config keys that changed but need a restart; their old value stays in effect.
    pub needs_restart: Vec<&'static str>,
    /// Peers disconnected because the new CA pool / blocklist no longer accepts them.
    pub disconnected: Vec<VpnIp>,
}

/// The new state a reload offers the node.
pub struct ReloadInput {
    pub config: NodeConfig,
    pub identity: Identity,
    pub verifier: Box<dyn CertVerifier>,
    /// Does the new pki still accept this established peer (CA present, not blocklisted)?
    pub accepts: Box<dyn Fn(&PeerCert) -> bool>,
}

impl Node {
    /// `static_map.cadence`: the driver re-resolved the `static_host_map` names; the new
    /// addresses replace the old as a reload of that map alone would. True if anything changed.
    pub fn set_static_host_map(
        &mut self,
        map: std::collections::BTreeMap<VpnIp, Vec<std::net::SocketAddr>>,
    ) -> bool {
        if map == self.config.static_host_map {
            return false;
        }
        let mut cfg = self.config.clone();
        cfg.static_host_map = map;
        let mut r = Reloaded::default();
        self.reload_static_hosts(&cfg, &mut r);
        self.config.static_host_map = cfg.static_host_map;
        true
    }

    /// Applies a reload. Tunnels survive unless our certificate changed (all re-handshake) or
    /// the peer is no longer accepted.
    pub fn apply_config(&mut self, now: Instant, new: ReloadInput) -> Reloaded {
        let mut r = Reloaded::default();
        let mut cfg = new.config;
        keep_restart_only(&self.config, &mut cfg, &mut r);
        if cfg.am_relay {
            cfg.advertise_relays.clear();
        }
        self.reload_static_hosts(&cfg, &mut r);
        self.reload_lighthouses(now, &cfg, &mut r);
        if cfg.punch != self.config.punch {
            self.lh.punch.set_keepalive(cfg.punch, now);
        }
        for (key, differs) in [
            ("punchy", punchy_differs(&self.config, &cfg)),
            ("relay", relay_differs(&self.config, &cfg)),
            ("handshakes", handshakes_differ(&self.config, &cfg)),
            ("timers", timers_differ(&self.config, &cfg)),
            (
                "listen.send_recv_error",
                self.config.send_recv_error != cfg.send_recv_error,
            ),
            (
                "listen.accept_recv_error",
                self.config.accept_recv_error != cfg.accept_recv_error,
            ),
        ] {
            if differs {
                r.changed.push(key);
            }
        }
        if (cfg.drop_inactive, cfg.inactivity_timeout)
            != (self.config.drop_inactive, self.config.inactivity_timeout)
        {
            r.changed.push("tunnels");
        }
        self.config = cfg;
        self.inactivity_at = None;
        self.arm_inactivity(now);
        self.verifier = new.verifier;
        self.reload_identity(now, new.identity, &mut r);
        self.drop_unaccepted(now, new.accepts.as_ref(), &mut r);
        r
    }

    /// Static addresses are re-read, and learned ones re-filtered, whenever the map or the
    /// remote allow lists change: targets the new lists refuse are never sent to again.
    fn reload_static_hosts(&mut self, cfg: &NodeConfig, r: &mut Reloaded) {
        let map_changed = cfg.static_host_map != self.config.static_host_map;
        let allow_changed = cfg.remote_allow_list != self.config.remote_allow_list
            || cfg.remote_allow_ranges != self.config.remote_allow_ranges;
        if !map_changed && !allow_changed {
            return;
        }
        for ip in self.config.static_host_map.keys() {
            if !cfg.static_host_map.contains_key(ip) {
                if let Some(list) = self.remotes.get_mut(ip) {
                    list.set_static(&[]);
                }
            }
        }
        let net = self.identity.vpn_net;
        for (ip, addrs) in &cfg.static_host_map {
            let targets = static_targets(cfg, net, *ip, addrs);
            match self.remotes.get_mut(ip) {
                Some(list) => list.set_static(&targets),
                None => {
                    self.remotes.insert(*ip, RemoteList::with_static(&targets));
                }
            }
        }
        if allow_changed {
            for (ip, list) in self.remotes.iter_mut() {
                list.retain_learned(|a| remote_allowed_by(cfg, *ip, a.ip()));
            }
            r.changed.push("lighthouse.remote_allow_list");
        }
        if map_changed {
            r.changed.push("static_host_map");
        }
    }

    fn reload_lighthouses(&mut self, now: Instant, cfg: &NodeConfig, r: &mut Reloaded) {
        let hosts_changed = cfg.lighthouses != self.config.lighthouses;
        let interval_changed = cfg.lighthouse_interval != self.config.lighthouse_interval;
        if !hosts_changed && !interval_changed && cfg.advertise_addrs == self.config.advertise_addrs
        {
            return;
        }
        for old in &self.config.lighthouses {
            if !cfg.lighthouses.contains(old) {
                // What a lighthouse we no longer use told us must not steer handshakes.
                for list in self.remotes.values_mut() {
                    list.forget_owner(*old);
                }
            }
        }
        let client = !cfg.am_lighthouse && !cfg.lighthouses.is_empty();
        self.lh.restart_updates(client, now);
        r.changed.push("lighthouse");
    }

    /// A new certificate for the same VPN IP replaces ours; every tunnel is closed so the next
    /// packet re-handshakes with it. A different VPN IP needs a restart (routes, device).
    fn reload_identity(&mut self, now: Instant, id: Identity, r: &mut Reloaded) {
        let same = id.cert_handshake_bytes == self.identity.cert_handshake_bytes
            && id.static_secret.0 == self.identity.static_secret.0;
        if same {
            return;
        }
        if id.vpn_ip != self.identity.vpn_ip || id.vpn_net != self.identity.vpn_net {
            r.needs_restart.push("pki.cert (vpn ip)");
            return;
        }
        self.identity = id;
        self.close_all(now);
        r.changed.push("pki.cert");
    }

    fn drop_unaccepted(
        &mut self,
        now: Instant,
        accepts: &dyn Fn(&PeerCert) -> bool,
        r: &mut Reloaded,
    ) {
        let gone: Vec<VpnIp> = self
            .hostmap
            .hosts()
            .filter(|h| !accepts(&h.peer))
            .map(|h| h.vpn_ip)
            .collect();
        for ip in gone {
            self.close_tunnel(now, ip);
            r.disconnected.push(ip);
        }
        // An unproven candidate must not become a tunnel the new rules refuse.
        let refused: Vec<VpnIp> = self
            .hostmap
            .candidates()
            .filter(|c| !accepts(&c.host.peer))
            .map(|c| c.host.vpn_ip)
            .collect();
        for ip in refused {
            self.hostmap.remove_candidate(ip);
        }
    }
}

/// Restores keys a running node cannot change, recording the ones that differ.
fn keep_restart_only(old: &NodeConfig, new: &mut NodeConfig, r: &mut Reloaded) {
    if new.cipher != old.cipher {
        r.needs_restart.push("cipher");
        new.cipher = old.cipher;
    }
    if new.tun_disabled != old.tun_disabled {
        r.needs_restart.push("tun.disabled");
        new.tun_disabled = old.tun_disabled;
    }
    if new.disconnect_invalid != old.disconnect_invalid {
        r.needs_restart.push("pki.disconnect_invalid");
        new.disconnect_invalid = old.disconnect_invalid;
    }
    if new.listen_port != old.listen_port {
        r.needs_restart.push("listen.port");
        new.listen_port = old.listen_port;
    }
    if new.am_lighthouse != old.am_lighthouse || new.serve_dns != old.serve_dns {
        r.needs_restart.push("lighthouse.am_lighthouse");
        new.am_lighthouse = old.am_lighthouse;
        new.serve_dns = old.serve_dns;
    }
    if (new.drop_local_broadcast, new.drop_multicast)
        != (old.drop_local_broadcast, old.drop_multicast)
    {
        r.needs_restart
            .push("tun.drop_local_broadcast/drop_multicast");
        new.drop_local_broadcast = old.drop_local_broadcast;
        new.drop_multicast = old.drop_multicast;
    }
    // Kernel routes and the device stay as started (the daemon reports those keys), so the
    // next-hop table must match them.
    new.unsafe_routes = old.unsafe_routes.clone();
    new.route_mtus = old.route_mtus.clone();
    new.tun_mtu = old.tun_mtu;
    // Table bounds size preallocated state; they are not configuration keys.
    new.max_hosts = old.max_hosts;
    new.max_pending = old.max_pending;
    new.max_queued_outputs = old.max_queued_outputs;
    new.max_relay_legs = old.max_relay_legs;
    new.handshake_queue_len = old.handshake_queue_len;
}

fn punchy_differs(a: &NodeConfig, b: &NodeConfig) -> bool {
    (
        a.punch,
        a.punch_respond,
        a.punch_delay,
        a.punch_respond_delay,
    ) != (
        b.punch,
        b.punch_respond,
        b.punch_delay,
        b.punch_respond_delay,
    )
}

fn relay_differs(a: &NodeConfig, b: &NodeConfig) -> bool {
    (&a.advertise_relays, a.am_relay, a.use_relays)
        != (&b.advertise_relays, b.am_relay, b.use_relays)
}

fn handshakes_differ(a: &NodeConfig, b: &NodeConfig) -> bool {
    (a.handshake_try_interval, a.handshake_retries)
        != (b.handshake_try_interval, b.handshake_retries)
}

fn timers_differ(a: &NodeConfig, b: &NodeConfig) -> bool {
    (a.connection_alive_interval, a.pending_deletion_interval)
        != (b.connection_alive_interval, b.pending_deletion_interval)
}

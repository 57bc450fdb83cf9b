//! Kernel routes for `tun.routes` and `tun.unsafe_routes` on the TUN device, over rtnetlink.
//!
//! Owns the routes it installs and removes them again on drop (exit, panic, failed start-up).
//! Must not decide which peer carries a route: an unsafe route's `via` is the node's business; the
//! kernel only learns "this prefix goes to the tun device, with this MTU and metric". The layout
//! mirrors Nebula's `overlay/tun_linux.go` (`Activate`, `advMSS`).

use std::io;
use std::net::Ipv4Addr;

use anyhow::Context;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{constants::NETLINK_ROUTE, Socket, SocketAddr};

pub use crate::net::Ipv4Net;

/// One entry of `tun.routes` (mtu set) or `tun.unsafe_routes` (mtu and metric optional).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// `route`.
    pub dest: Ipv4Net,
    /// `mtu`; `None` means `tun.mtu`.
    pub mtu: Option<u32>,
    /// `metric`; 0 leaves the kernel default.
    pub metric: u32,
}

/// A route as the kernel will hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    pub dest: Ipv4Net,
    pub mtu: u32,
    /// Advertised TCP MSS; 0 = unset (the route MTU equals the device MTU).
    pub adv_mss: u32,
    pub metric: u32,
    /// Preferred source; only on the VPN network route.
    pub src: Option<Ipv4Addr>,
    /// The VPN network route already exists (the kernel made it with the address); we only
    /// replace it to set its MTU and never delete it.
    pub replace: bool,
}

/// The device MTU and the routes to install, derived from the settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePlan {
    /// Largest of `tun.mtu` and every route MTU: the device must carry the biggest packet.
    pub device_mtu: u32,
    pub routes: Vec<KernelRoute>,
}

/// Works out the routes like Nebula: the VPN network route carries `tun.mtu`, each configured
/// route its own MTU, and routes whose MTU differs from the device MTU advertise MSS = MTU - 40.
pub fn plan(vpn_ip: Ipv4Addr, vpn_net: Ipv4Net, tun_mtu: u32, specs: &[RouteSpec]) -> RoutePlan {
    let device_mtu = specs.iter().filter_map(|s| s.mtu).fold(tun_mtu, u32::max);
    let adv_mss = |mtu: u32| {
        if mtu != device_mtu {
            mtu.saturating_sub(40)
        } else {
            0
        }
    };
    let mut routes = Vec::with_capacity(specs.len() + 1);
    routes.push(KernelRoute {
        dest: vpn_net.network(),
        mtu: tun_mtu,
        adv_mss: adv_mss(tun_mtu),
        metric: 0,
        src: Some(vpn_ip),
        replace: true,
    });
    for s in specs {
        let mtu = s.mtu.unwrap_or(tun_mtu);
        routes.push(KernelRoute {
            dest: s.dest.network(),
            mtu,
            adv_mss: adv_mss(mtu),
            metric: s.metric,
            src: None,
            replace: false,
        });
    }
    RoutePlan { device_mtu, routes }
}

/// Routes installed on one interface; dropping this removes the ones we added.
#[derive(Debug)]
pub struct InstalledRoutes {
    ifindex: u32,
    added: Vec<KernelRoute>,
}

/// Installs `routes` on interface `ifindex`. On failure, whatever was added is removed again.
pub fn install(ifindex: u32, routes: &[KernelRoute]) -> anyhow::Result<InstalledRoutes> {
    let mut nl = Netlink::open().context("opening rtnetlink socket")?;
    let mut installed = InstalledRoutes {
        ifindex,
        added: Vec::with_capacity(routes.len()),
    };
    for r in routes {
        let flags = if r.replace {
            NLM_F_CREATE | NLM_F_REPLACE
        } else {
            NLM_F_CREATE | NLM_F_EXCL
        };
        let msg = route_message(ifindex, r, true);
        nl.request(RouteNetlinkMessage::NewRoute(msg), flags)
            .with_context(|| {
                format!(
                    "installing route {} (mtu {}) on the tun device",
                    r.dest, r.mtu
                )
            })?;
        if !r.replace {
            installed.added.push(*r);
        }
    }
    Ok(installed)
}

impl InstalledRoutes {
    /// The routes we added (and will remove).
    pub fn routes(&self) -> &[KernelRoute] {
        &self.added
    }

    /// Removes the routes now, reporting the first failure. Routes already gone (the device
    /// vanished, an admin deleted them) count as removed.
    pub fn remove(mut self) -> anyhow::Result<()> {
        self.remove_all()
    }

    fn remove_all(&mut self) -> anyhow::Result<()> {
        if self.added.is_empty() {
            return Ok(());
        }
        let mut nl = Netlink::open().context("opening rtnetlink socket")?;
        let mut first_err = None;
        for r in self.added.drain(..).rev() {
            let msg = route_message(self.ifindex, &r, false);
            match nl.request(RouteNetlinkMessage::DelRoute(msg), 0) {
                Ok(()) => {}
                Err(e) if already_gone(&e) => {}
                Err(e) => {
                    first_err.get_or_insert(
                        anyhow::Error::new(e).context(format!("removing route {}", r.dest)),
                    );
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for InstalledRoutes {
    fn drop(&mut self) {
        if let Err(e) = self.remove_all() {
            tracing::warn!(error = %format!("{e:#}"), "could not remove tun routes");
        }
    }
}

fn already_gone(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)
    )
}

fn route_message(ifindex: u32, r: &KernelRoute, adding: bool) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = r.dest.prefix();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.scope = RouteScope::Link;
    msg.header.kind = RouteType::Unicast;
    msg.header.protocol = if r.replace {
        RouteProtocol::Kernel
    } else {
        RouteProtocol::Boot
    };
    let attrs = &mut msg.attributes;
    attrs.push(RouteAttribute::Destination(RouteAddress::Inet(
        r.dest.network().addr(),
    )));
    attrs.push(RouteAttribute::Oif(ifindex));
    if r.metric > 0 {
        attrs.push(RouteAttribute::Priority(r.metric));
    }
    if adding {
        if let Some(src) = r.src {
            attrs.push(RouteAttribute::PrefSource(RouteAddress::Inet(src)));
        }
        let mut metrics = vec![RouteMetric::Mtu(r.mtu)];
        if r.adv_mss > 0 {
            metrics.push(RouteMetric::Advmss(r.adv_mss));
        }
        attrs.push(RouteAttribute::Metrics(metrics));
    }
    msg
}

/// A blocking rtnetlink socket that sends one request at a time and waits for its ack. Route
/// changes happen at start-up and exit only, so blocking is fine here.
struct Netlink {
    sock: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink { sock, seq: 0 })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0u8; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        self.wait_ack()
    }

    fn wait_ack(&mut self) -> io::Result<()> {
        loop {
            let (data, _) = self.sock.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    if let NetlinkPayload::Error(err) = reply.payload {
                        return match err.code {
                            None => Ok(()),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        let (a, p) = s.split_once('/').unwrap();
        Ipv4Net::new(a.parse().unwrap(), p.parse().unwrap())
            .unwrap()
            .network()
    }

    #[test]
    fn networks_clear_host_bits() {
        assert_eq!(net("10.1.2.3/16"), net("10.1.0.0/16"));
        assert_eq!(net("10.1.2.3/16").to_string(), "10.1.0.0/16");
        assert!(net("10.1.0.0/16").contains("10.1.255.9".parse().unwrap()));
        assert!(!net("10.1.0.0/16").contains("10.2.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert_eq!(Ipv4Net::new(Ipv4Addr::LOCALHOST, 33), None);
    }

    #[test]
    fn plan_mirrors_nebula_mtu_and_advmss() {
        let vpn_ip = "192.168.100.5".parse().unwrap();
        let specs = [
            RouteSpec {
                dest: net("192.168.100.128/25"),
                mtu: Some(8800),
                metric: 0,
            },
            RouteSpec {
                dest: net("10.9.0.0/16"),
                mtu: None,
                metric: 100,
            },
        ];
        let p = plan(vpn_ip, net("192.168.100.0/24"), 1300, &specs);
        assert_eq!(p.device_mtu, 8800);
        let vpn = p.routes[0];
        assert!(vpn.replace);
        assert_eq!((vpn.mtu, vpn.adv_mss, vpn.src), (1300, 1260, Some(vpn_ip)));
        // The route that sets the device MTU needs no MSS hint.
        assert_eq!((p.routes[1].mtu, p.routes[1].adv_mss), (8800, 0));
        let unsafe_route = p.routes[2];
        assert_eq!(
            (unsafe_route.mtu, unsafe_route.adv_mss, unsafe_route.metric),
            (1300, 1260, 100)
        );
        assert!(!unsafe_route.replace && unsafe_route.src.is_none());
    }

    #[test]
    fn plan_without_routes_keeps_tun_mtu_and_no_mss() {
        let p = plan("10.0.0.1".parse().unwrap(), net("10.0.0.0/8"), 1300, &[]);
        assert_eq!(p.device_mtu, 1300);
        assert_eq!(p.routes.len(), 1);
        assert_eq!(p.routes[0].adv_mss, 0);
    }

    #[test]
    fn delete_message_matches_on_metric_but_carries_no_metrics() {
        let r = KernelRoute {
            dest: net("10.9.0.0/16"),
            mtu: 1300,
            adv_mss: 1260,
            metric: 7,
            src: None,
            replace: false,
        };
        let del = route_message(3, &r, false);
        assert!(del.attributes.contains(&RouteAttribute::Priority(7)));
        assert!(!del
            .attributes
            .iter()
            .any(|a| matches!(a, RouteAttribute::Metrics(_))));
        let add = route_message(3, &r, true);
        assert!(add.attributes.contains(&RouteAttribute::Metrics(vec![
            RouteMetric::Mtu(1300),
            RouteMetric::Advmss(1260)
        ])));
    }
}

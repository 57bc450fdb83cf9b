//! `tun.use_system_route_table` (Nebula 1.7+, Linux): unsafe routes taken from the kernel's main
//! table instead of the config. Every IPv4 route on our TUN device whose gateway is a VPN IP
//! (`ip route add 172.16.5.0/24 via 10.0.0.2 dev nebula1`) becomes "this prefix goes through
//! that peer". A thread of its own reads rtnetlink (a dump, then the RTNLGRP_IPV4_ROUTE
//! multicast group) and publishes the whole current set through a `watch` channel; the loop
//! hands it to the node. Owns only the watching; never changes routes.

use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

use anyhow::Context;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{constants::NETLINK_ROUTE, Socket, SocketAddr};
use tokio::sync::watch;

use crate::net::Ipv4Net;

/// `RTNLGRP_IPV4_ROUTE` (linux/rtnetlink.h).
const GROUP_IPV4_ROUTE: u32 = 7;
/// The main routing table (`RT_TABLE_MAIN`).
const TABLE_MAIN: u32 = 254;
/// Routes kept at most (a route table is operator-controlled, but stay bounded).
const MAX_ROUTES: usize = 65_536;

/// Destination → gateway VPN IP, as the kernel table has them now.
pub type SystemRoutes = BTreeMap<Ipv4Net, Ipv4Addr>;

/// Starts the watcher for routes on `ifindex` with gateways inside `vpn_net`.
pub fn watch_routes(
    ifindex: u32,
    vpn_net: Ipv4Net,
) -> anyhow::Result<watch::Receiver<SystemRoutes>> {
    let mut sock = Socket::new(NETLINK_ROUTE).context("opening rtnetlink")?;
    sock.bind(&SocketAddr::new(0, 0))
        .context("binding rtnetlink")?;
    sock.add_membership(GROUP_IPV4_ROUTE)
        .context("joining the IPv4 route group")?;
    request_dump(&sock).context("asking for the route table")?;
    let (tx, rx) = watch::channel(SystemRoutes::new());
    std::thread::Builder::new()
        .name("meshd-routes".into())
        .spawn(move || watch_loop(sock, ifindex, vpn_net, tx))
        .context("starting the route watcher")?;
    Ok(rx)
}

fn request_dump(sock: &Socket) -> io::Result<()> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut req = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetRoute(msg)),
    );
    req.finalize();
    let mut buf = vec![0u8; req.buffer_len()];
    req.serialize(&mut buf);
    sock.send_to(&buf, &SocketAddr::new(0, 0), 0).map(|_| ())
}

fn watch_loop(sock: Socket, ifindex: u32, vpn_net: Ipv4Net, tx: watch::Sender<SystemRoutes>) {
    let mut routes = SystemRoutes::new();
    loop {
        let Ok((data, _)) = sock.recv_from_full() else {
            // A lost batch (ENOBUFS) would leave the set stale; ask for the whole table again.
            let _ = request_dump(&sock);
            continue;
        };
        let mut offset = 0;
        let mut changed = false;
        while offset < data.len() {
            let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
            else {
                break;
            };
            let len = msg.header.length as usize;
            changed |= apply(&mut routes, msg.payload, ifindex, vpn_net);
            if len == 0 {
                break;
            }
            offset += len;
        }
        if changed && tx.send(routes.clone()).is_err() {
            return; // the daemon is gone
        }
    }
}

/// Updates `routes` from one netlink message; true if it changed.
fn apply(
    routes: &mut SystemRoutes,
    payload: NetlinkPayload<RouteNetlinkMessage>,
    ifindex: u32,
    vpn_net: Ipv4Net,
) -> bool {
    let (msg, add) = match payload {
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)) => (m, true),
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(m)) => (m, false),
        _ => return false,
    };
    let Some((dest, via)) = gateway_route(&msg, ifindex, vpn_net) else {
        return false;
    };
    if add {
        if routes.len() >= MAX_ROUTES && !routes.contains_key(&dest) {
            return false;
        }
        routes.insert(dest, via) != Some(via)
    } else {
        routes.remove(&dest).is_some()
    }
}

/// `(destination, gateway)` of an IPv4 main-table route on `ifindex` via a VPN IP.
fn gateway_route(m: &RouteMessage, ifindex: u32, vpn_net: Ipv4Net) -> Option<(Ipv4Net, Ipv4Addr)> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    let (mut dest, mut via, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dest = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    let via = via.filter(|v| vpn_net.contains(*v))?;
    if oif != Some(ifindex) || table != TABLE_MAIN {
        return None;
    }
    let dest = Ipv4Net::new(dest, m.header.destination_prefix_length)?.network();
    Some((dest, via))
}

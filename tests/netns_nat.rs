//! The NAT router harness behaves like the NAT types the hole-punching tests rely on: a
//! port-restricted router keeps one public port per inside socket, a symmetric one picks a new port
//! per destination (unsolicited inbound is covered in netns_nebula).

mod common;

use std::time::Duration;

use common::netns::{wait_for, NatKind, NatRouter, Netns, Switch};

/// Prints "<local port> <peer ip> <peer port>" for each datagram on ports 7001 and 7002.
const ECHO_SERVER: &str = r#"
import socket, select, sys
socks = []
for port in (7001, 7002):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    socks.append(s)
while True:
    for s in select.select(socks, [], [], 30)[0]:
        data, peer = s.recvfrom(2048)
        print(s.getsockname()[1], peer[0], peer[1], flush=True)
"#;

/// Sends one datagram to each of two ports of the server, from the same local socket.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5000))
for port in (7001, 7002):
    s.sendto(b"x", (sys.argv[1], port))
"#;

/// Returns the (public ip, public port) the server saw for each of its two ports.
fn observed_mappings(kind: NatKind) -> Vec<(String, u16)> {
    let dir = common::tempdir();
    let internet = Switch::new("nti");
    let server = Netns::new("nts");
    let router = NatRouter::new("ntr", &internet, "198.51.100.21/24", "192.168.7.1/24", kind);
    let host = Netns::new("nth");
    internet.attach(&server, "198.51.100.2/24");
    router.add_host(&host, "192.168.7.2/24");

    let log = dir.path().join("server.log");
    let srv = server.spawn(&["python3", "-c", ECHO_SERVER], &log);
    let listening = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        server.run(&["ss", "-uln"]).contains(":7002")
    });
    assert!(listening, "echo server did not start: {}", srv.log());

    host.run(&["python3", "-c", CLIENT, "198.51.100.2"]);
    let two = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        srv.log().lines().count() >= 2
    });
    assert!(two, "server saw too few datagrams:\n{}", srv.log());
    let lines = srv.log();
    let rows: Vec<Vec<String>> = lines
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect();
    let from_router: Vec<(String, u16)> = rows
        .iter()
        .filter(|r| r.len() == 3 && r[1] == router.wan_ip())
        .map(|r| (r[1].clone(), r[2].parse().expect("port")))
        .collect();
    assert_eq!(from_router.len(), 2, "server log:\n{lines}");
    from_router
}

#[test]
fn port_restricted_nat_keeps_one_public_port() {
    if !common::require_root("port_restricted_nat_keeps_one_public_port")
        || !common::require_tool("nat", "nft")
        || !common::require_tool("nat", "python3")
    {
        return;
    }
    let seen = observed_mappings(NatKind::PortRestricted);
    assert_eq!(seen[0], seen[1], "mapping changed with the destination");
    assert_eq!(seen[0].1, 5000, "masquerade should keep a free source port");
}

#[test]
fn symmetric_nat_maps_each_destination_to_a_new_port() {
    if !common::require_root("symmetric_nat_maps_each_destination_to_a_new_port")
        || !common::require_tool("nat", "nft")
        || !common::require_tool("nat", "python3")
    {
        return;
    }
    let seen = observed_mappings(NatKind::Symmetric);
    assert_ne!(
        seen[0].1, seen[1].1,
        "symmetric NAT reused one port: {seen:?}"
    );
}

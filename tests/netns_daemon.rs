//! The daemon's OS building blocks against a real kernel, inside throw-away namespaces: the TUN
//! device (address, MTU, queues, packets both ways), kernel routes (installed, then removed) and
//! the UDP socket inside a namespace.

mod common;

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::netns::{netns_exists, Netns};
use meshd::daemon::routes::{self, Ipv4Net, RouteSpec};
use meshd::daemon::tun::{Tun, TunSettings};

fn settings(dev: &str) -> TunSettings {
    TunSettings {
        name: Some(dev.to_string()),
        addr: Ipv4Addr::new(10, 77, 0, 1),
        prefix_len: 24,
        mtu: 1300,
        tx_queue: 500,
        queues: 1,
        offloads: true,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn tun_device_is_configured_and_removed_on_drop() {
    if !common::require_root("tun_device_is_configured_and_removed_on_drop") {
        return;
    }
    let ns = Netns::new("dtn");
    let dev = common::unique_name("mt");
    let s = TunSettings {
        queues: 2,
        tx_queue: 777,
        ..settings(&dev)
    };
    ns.enter(|| {
        let rt = runtime();
        let _guard = rt.enter();
        let tun = Tun::open(&s).expect("open tun");
        assert_eq!(tun.name(), dev);
        assert_eq!(tun.queues().len(), 2);
        assert_eq!(tun.mtu().unwrap(), 1300);
        let addr = ns.ip(&["-4", "addr", "show", "dev", &dev]);
        assert!(addr.contains("inet 10.77.0.1/24"), "{addr}");
        let link = ns.ip(&["-d", "link", "show", "dev", &dev]);
        for want in ["mtu 1300", "qlen 777", "UP", "pi off", "multi_queue"] {
            assert!(link.contains(want), "missing {want:?} in:\n{link}");
        }
        drop(tun);
        assert!(!ns.has_link(&dev), "tun device survived its drop");
    });
}

#[test]
fn tun_device_rejects_a_bad_name_clearly() {
    if !common::require_root("tun_device_rejects_a_bad_name_clearly") {
        return;
    }
    let ns = Netns::new("dtb");
    ns.enter(|| {
        let rt = runtime();
        let _guard = rt.enter();
        let err = Tun::open(&settings("name-way-too-long-for-linux")).unwrap_err();
        assert!(format!("{err:#}").contains("tun.dev"), "{err:#}");
    });
}

/// Answers ICMP echo requests read from the tun device by writing replies back into it, so a
/// real `ping` in the namespace proves both directions of the queue.
#[test]
fn tun_queue_carries_packets_both_ways() {
    if !common::require_root("tun_queue_carries_packets_both_ways")
        || !common::require_tool("tun", "ping")
    {
        return;
    }
    let ns = Netns::new("dtp");
    let dev = common::unique_name("mt");
    ns.enter(|| {
        let rt = runtime();
        rt.block_on(async {
            let tun = Tun::open(&settings(&dev)).expect("open tun");
            // The kernel only routes 10.77.0.2 into the device once it is up with its address.
            // -l 3 sends three requests back to back, so one wakeup can read several.
            let mut ping = Command::new("ping")
                .args([
                    "-n",
                    "-q",
                    "-c",
                    "6",
                    "-l",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "2",
                    "10.77.0.2",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn ping");
            // With offloads on (the default) reads carry the virtio-net header: the batch follows.
            let mut batch = tun.packet_batch(8, 1300, 2000);
            let mut answered = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while answered < 6 {
                let got = tokio::time::timeout_at(deadline, tun.queue().recv_batch(&mut batch))
                    .await
                    .expect("echo requests reach the tun device")
                    .unwrap();
                for i in 0..got {
                    let packet = batch.packet_mut(i);
                    if echo_reply_in_place(packet) {
                        let n = packet.len();
                        assert_eq!(tun.queue().send(batch.packet(i)).await.unwrap(), n);
                        answered += 1;
                    }
                }
            }
            let status = tokio::task::spawn_blocking(move || ping.wait())
                .await
                .unwrap()
                .unwrap();
            assert!(
                status.success(),
                "ping did not get its replies back through the tun device"
            );
        });
    });
}

#[test]
fn routes_are_installed_with_mtu_and_metric_then_removed() {
    if !common::require_root("routes_are_installed_with_mtu_and_metric_then_removed") {
        return;
    }
    let ns = Netns::new("dtr");
    let dev = common::unique_name("mt");
    let vpn_net = Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 24).unwrap();
    let specs = [
        RouteSpec {
            dest: Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 128), 25).unwrap(),
            mtu: Some(8800),
            metric: 0,
        },
        RouteSpec {
            dest: Ipv4Net::new(Ipv4Addr::new(10, 99, 0, 0), 16).unwrap(),
            mtu: None,
            metric: 100,
        },
    ];
    let plan = routes::plan(Ipv4Addr::new(10, 77, 0, 1), vpn_net, 1300, &specs);
    ns.enter(|| {
        let rt = runtime();
        let _guard = rt.enter();
        let s = TunSettings {
            mtu: plan.device_mtu as u16,
            ..settings(&dev)
        };
        let tun = Tun::open(&s).expect("open tun");
        assert_eq!(tun.mtu().unwrap(), 8800);
        let installed = routes::install(tun.index(), &plan.routes).expect("install routes");
        assert_eq!(installed.routes().len(), 2);
        let table = ns.ip(&["-4", "route", "show", "dev", &dev]);
        for want in [
            "10.77.0.0/24 proto kernel scope link src 10.77.0.1 mtu 1300 advmss 1260",
            "10.77.0.128/25 scope link mtu 8800",
            "10.99.0.0/16 scope link metric 100 mtu 1300 advmss 1260",
        ] {
            assert!(table.contains(want), "missing {want:?} in:\n{table}");
        }

        // A set whose second route already exists fails, names it, and removes the first again.
        let mut fresh = plan.routes[2];
        fresh.dest = Ipv4Net::new(Ipv4Addr::new(10, 88, 0, 0), 16).unwrap();
        let err = routes::install(tun.index(), &[fresh, plan.routes[2]]).unwrap_err();
        assert!(format!("{err:#}").contains("10.99.0.0/16"), "{err:#}");
        let still = ns.ip(&["-4", "route", "show", "dev", &dev]);
        assert!(
            !still.contains("10.88.0.0/16"),
            "failed install left a route behind:\n{still}"
        );
        assert!(
            still.contains("10.99.0.0/16"),
            "rollback removed a route it did not add:\n{still}"
        );

        drop(installed);
        let after = ns.ip(&["-4", "route", "show", "dev", &dev]);
        assert!(
            !after.contains("10.77.0.128/25") && !after.contains("10.99.0.0/16"),
            "{after}"
        );
        assert!(
            after.contains("10.77.0.0/24"),
            "the VPN network route must stay:\n{after}"
        );
    });
    let name = ns.name().to_string();
    drop(ns);
    assert!(!netns_exists(&name));
}

#[test]
fn udp_socket_binds_inside_a_namespace() {
    if !common::require_root("udp_socket_binds_inside_a_namespace") {
        return;
    }
    use meshd::daemon::udp::{RecvBatch, UdpSettings, UdpSocket};
    let ns = Netns::new("dtu");
    ns.ip(&["addr", "add", "192.0.2.10/32", "dev", "lo"]);
    ns.enter(|| {
        runtime().block_on(async {
            let s = UdpSettings {
                host: "192.0.2.10".parse().unwrap(),
                port: 0,
                read_buffer: 0,
                write_buffer: 0,
                reuse_port: false,
                offloads: true,
                so_mark: 0,
            };
            let sock = UdpSocket::bind(&s).expect("bind inside the namespace");
            let port = sock.local_addr().port();
            let listing = ns.run(&["ss", "-uln"]);
            assert!(listing.contains(&format!("192.0.2.10:{port}")), "{listing}");
            sock.send_to(b"ping", sock.local_addr()).await.unwrap();
            let mut batch = RecvBatch::new(8, 64);
            assert_eq!(sock.recv_batch(&mut batch).await.unwrap(), 1);
            assert_eq!(batch.datagram(0), b"ping");
        });
    });
}

/// Turns an IPv4 ICMP echo request into its reply in place; false for any other packet.
fn echo_reply_in_place(p: &mut [u8]) -> bool {
    if p.len() < 28 || p[0] >> 4 != 4 || p[9] != 1 {
        return false;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    if p.len() < ihl + 8 || p[ihl] != 8 {
        return false;
    }
    let (src, dst) = ([p[12], p[13], p[14], p[15]], [p[16], p[17], p[18], p[19]]);
    p[12..16].copy_from_slice(&dst);
    p[16..20].copy_from_slice(&src);
    p[ihl] = 0;
    p[ihl + 2..ihl + 4].copy_from_slice(&[0, 0]);
    let sum = checksum(&p[ihl..]);
    p[ihl + 2..ihl + 4].copy_from_slice(&sum.to_be_bytes());
    p[10..12].copy_from_slice(&[0, 0]);
    let sum = checksum(&p[..ihl]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    true
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

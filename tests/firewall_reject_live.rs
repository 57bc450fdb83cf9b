//! Reject replies against the real Linux stack: inside a private network namespace (owned by one
//! thread, gone when it ends) a TUN device stands in for the tunnel. A TCP connect to an address
//! behind it gets our RST and must fail with ECONNREFUSED at once; a UDP send gets our ICMP
//! admin-prohibited and the socket must report EHOSTUNREACH.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::process::Command;
use std::time::{Duration, Instant};

use meshd::firewall::reject::{build_reject, MAX_REJECT_LEN};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Opens a TUN device named `name` in the calling thread's network namespace.
fn open_tun(name: &str) -> std::fs::File {
    let path = c"/dev/net/tun";
    // SAFETY: plain open(2) of a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads/writes an ifreq-sized struct, which IfReq is (40 bytes).
    let rc = unsafe { libc::ioctl(fd, TUNSETIFF, &mut req as *mut IfReq) };
    assert!(rc == 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a valid, owned descriptor from open above.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Reads tun packets until one is IPv4 with protocol `proto`, with a bounded wait.
fn read_packet(tun: &mut std::fs::File, proto: u8) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no packet with protocol {proto} on the tun"
        );
        let mut pfd = libc::pollfd {
            fd: tun.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let ready = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
        if ready <= 0 {
            continue;
        }
        let n = tun.read(&mut buf).expect("read tun");
        if n >= 20 && buf[0] >> 4 == 4 && buf[9] == proto {
            return buf[..n].to_vec();
        }
    }
}

fn in_private_netns(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: unshare(CLONE_NEWNET) only moves this thread into a fresh network namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert!(rc == 0, "unshare: {}", std::io::Error::last_os_error());
        f();
    })
    .join()
    .expect("netns thread");
}

#[test]
fn linux_accepts_our_rst_and_icmp() {
    if !common::require_root("linux_accepts_our_rst_and_icmp")
        || !common::require_tool("linux_accepts_our_rst_and_icmp", "ip")
    {
        return;
    }
    in_private_netns(|| {
        let name = common::unique_name("fwrj");
        let mut tun = open_tun(&name);
        ip(&["link", "set", "lo", "up"]);
        ip(&["addr", "add", "10.99.0.1/24", "dev", &name]);
        ip(&["link", "set", &name, "up"]);
        let mut out = [0u8; MAX_REJECT_LEN];

        // TCP: connect blocks until our RST arrives.
        let target: SocketAddr = "10.99.0.2:4242".parse().expect("addr");
        let connector = std::thread::spawn(move || {
            let t = Instant::now();
            (
                TcpStream::connect_timeout(&target, Duration::from_secs(5)),
                t.elapsed(),
            )
        });
        // The connector thread was spawned from inside the namespace and shares it.
        let syn = read_packet(&mut tun, 6);
        let n = build_reject(&syn, &mut out).expect("rst for a syn");
        tun.write_all(&out[..n]).expect("write rst");
        let (result, took) = connector.join().expect("connector");
        let err = result.expect_err("connect must fail");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            took < Duration::from_secs(2),
            "refused at once, took {took:?}"
        );

        // UDP: the ICMP error surfaces on the connected socket.
        let sock = UdpSocket::bind("10.99.0.1:0").expect("bind");
        sock.connect("10.99.0.2:9").expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        sock.send(b"hello").expect("send");
        let dgram = read_packet(&mut tun, 17);
        let n = build_reject(&dgram, &mut out).expect("icmp for udp");
        tun.write_all(&out[..n]).expect("write icmp");
        let mut buf = [0u8; 16];
        let err = sock
            .recv(&mut buf)
            .expect_err("recv must report the ICMP error");
        assert_eq!(err.raw_os_error(), Some(libc::EHOSTUNREACH), "{err}");
    });
}

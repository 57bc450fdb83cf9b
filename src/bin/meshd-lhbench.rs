//! Lighthouse load generator (issue 19): admits N simulated hosts to a real lighthouse process
//! (`meshd`, and optionally nebula 1.6.1 in the same run) over loopback inside a network
//! namespace it creates, keeps their HostUpdateNotifications coming at `--interval`, then
//! measures HostQuery round trips with a window of outstanding queries and a back-to-back burst.
//!
//! Every simulated host is a real `meshd::node::Node` with its own certificate and key (signed
//! in-process with `meshd::cert`) and its own UDP socket at a distinct loopback address
//! (127.2.0.0/15 and up), so the lighthouse sees one addr:port per host. Root only (it creates
//! the namespace); the namespace and the lighthouse process are removed on exit, also on error.
//!
//! Printed per lighthouse: idle RSS, RSS per host over that baseline, lighthouse CPU per
//! admitted host (handshake + first HostUpdateNotification, from /proc/PID/stat), replies per
//! second and lighthouse CPU per reply, how many hosts answered a query, and the burst loss.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use meshd::cert::{
    CaPool, CaSigningKey, CertDetails, Ipv4Net, NebulaCertificate, X25519PrivateKey,
};
use meshd::node::{
    identity_from_cert, CaPoolVerifier, CertVerifier, Event, Node, NodeConfig, NodeRng, PeerCert,
    VpnIp,
};
use meshd::wire::{Header, MessageType, MetaType, NebulaMeta};
use rand::{Rng, SeedableRng};

const LH_VPN: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const LH_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 4242);
const HOST_PORT: u16 = 20000;

#[derive(Clone, Debug)]
struct Args {
    n: usize,
    meshd: Option<PathBuf>,
    nebula: Option<PathBuf>,
    interval: u64,
    window: usize,
    queriers: usize,
    query_secs: u64,
    burst: usize,
    admit_window: usize,
    read_buffer: Option<u64>,
    inner: bool,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        n: 1000,
        meshd: None,
        nebula: None,
        interval: 10,
        window: 512,
        queriers: 16,
        query_secs: 5,
        burst: 20_000,
        admit_window: 256,
        read_buffer: None,
        inner: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = val()?.parse()?,
            "--meshd" => a.meshd = Some(val()?.into()),
            "--nebula" => a.nebula = Some(val()?.into()),
            "--interval" => a.interval = val()?.parse()?,
            "--window" => a.window = val()?.parse()?,
            "--queriers" => a.queriers = val()?.parse()?,
            "--query-secs" => a.query_secs = val()?.parse()?,
            "--burst" => a.burst = val()?.parse()?,
            "--admit-window" => a.admit_window = val()?.parse()?,
            "--read-buffer" => a.read_buffer = Some(val()?.parse()?),
            "--inner" => a.inner = true,
            "-h" | "--help" => {
                println!(
                    "usage: meshd-lhbench [--n N] [--meshd PATH] [--nebula PATH] [--interval S] \
                     [--window W] [--queriers Q] [--query-secs S] [--burst B] \
                     [--admit-window A] [--read-buffer BYTES]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown flag {other}"),
        }
    }
    if a.meshd.is_none() && a.nebula.is_none() {
        a.meshd = Some(PathBuf::from("target/release/meshd"));
    }
    a.queriers = a.queriers.clamp(1, a.n.max(1));
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.inner {
        return inner(&args);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("meshd-lhbench needs root: it creates a network namespace");
    }
    let ns = Netns::create()?;
    let exe = std::env::current_exe().context("locating own executable")?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.0]).arg(exe);
    cmd.args(std::env::args().skip(1)).arg("--inner");
    let status = cmd
        .status()
        .context("running the generator inside the namespace")?;
    drop(ns);
    if !status.success() {
        bail!("generator failed: {status}");
    }
    Ok(())
}

/// A network namespace named uniquely for this run, deleted on drop.
struct Netns(String);

impl Netns {
    fn create() -> anyhow::Result<Netns> {
        let name = format!("lhbench-{}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        let ns = Netns(name);
        run("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
        Ok(ns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn run(prog: &str, args: &[&str]) -> anyhow::Result<()> {
    let st = Command::new(prog)
        .args(args)
        .status()
        .with_context(|| format!("running {prog}"))?;
    if !st.success() {
        bail!("{prog} {args:?}: {st}");
    }
    Ok(())
}

/// Inside the namespace: one measurement per lighthouse binary.
fn inner(args: &Args) -> anyhow::Result<()> {
    println!(
        "machine: {} cores, {}; N = {}, update interval {} s, window {}, {} queriers",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        args.n,
        args.interval,
        args.window,
        args.queriers
    );
    let mut results = Vec::new();
    if let Some(m) = &args.meshd {
        results.push(measure(args, Kind::Meshd, m)?);
    }
    if let Some(n) = &args.nebula {
        results.push(measure(args, Kind::Nebula, n)?);
    }
    println!();
    println!("| lighthouse | N | idle RSS | RSS/host | CPU/admitted host | replies/s | CPU/reply | reachable | burst loss |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &results {
        println!("{}", r.row(args.n));
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Meshd,
    Nebula,
}

struct Result_ {
    kind: Kind,
    idle_rss_kb: u64,
    rss_per_host_b: f64,
    cpu_per_host_us: f64,
    replies_per_s: f64,
    cpu_per_reply_us: f64,
    reachable: usize,
    burst_sent: usize,
    burst_got: usize,
}

impl Result_ {
    fn row(&self, n: usize) -> String {
        let loss = 100.0 * (1.0 - self.burst_got as f64 / self.burst_sent.max(1) as f64);
        format!(
            "| {:?} | {} | {:.1} MB | {:.0} B | {:.0} µs | {:.0} | {:.2} µs | {}/{} | {:.2} % ({}/{}) |",
            self.kind,
            n,
            self.idle_rss_kb as f64 / 1024.0,
            self.rss_per_host_b,
            self.cpu_per_host_us,
            self.replies_per_s,
            self.cpu_per_reply_us,
            self.reachable,
            n,
            loss,
            self.burst_got,
            self.burst_sent
        )
    }
}

/// The CA and lighthouse files of one run, in a temporary directory removed on drop.
struct Pki {
    dir: tempdir::Dir,
    ca: NebulaCertificate,
    ca_key: CaSigningKey,
    pool_pem: Vec<u8>,
    now: i64,
}

mod tempdir {
    use std::path::{Path, PathBuf};

    /// A directory under the system temp dir, removed with everything in it on drop.
    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(prefix: &str) -> std::io::Result<Dir> {
            let p = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p)?;
            Ok(Dir(p))
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Pki {
    fn new(rng: &mut impl Rng) -> anyhow::Result<Pki> {
        let now = unix_now();
        let ca_key = CaSigningKey::from_seed(rng.gen());
        let ca = CertDetails {
            name: "lhbench ca".into(),
            not_before: now - 3600,
            not_after: now + 86400,
            public_key: ca_key.public_key(),
            is_ca: true,
            ..CertDetails::default()
        }
        .sign(&ca_key);
        let pool_pem = ca.to_pem().into_bytes();
        let dir = tempdir::Dir::new("lhbench").context("creating temp dir")?;
        Ok(Pki {
            dir,
            ca,
            ca_key,
            pool_pem,
            now,
        })
    }

    fn sign(&self, name: &str, ip: Ipv4Addr, key: &X25519PrivateKey) -> NebulaCertificate {
        CertDetails {
            name: name.into(),
            ips: vec![Ipv4Net::new(ip, 8).expect("prefix 8")],
            not_before: self.now - 60,
            not_after: self.now + 86400,
            public_key: key.public_key(),
            issuer: Some(self.ca.fingerprint()),
            ..CertDetails::default()
        }
        .sign(&self.ca_key)
    }

    /// Writes ca.crt, lh.crt, lh.key and config.yaml for the lighthouse; returns the config.
    fn write_lighthouse(&self, rng: &mut impl Rng, args: &Args) -> anyhow::Result<PathBuf> {
        let key = X25519PrivateKey::from_bytes(rng.gen());
        let cert = self.sign("lighthouse", LH_VPN, &key);
        let d = self.dir.path();
        std::fs::write(d.join("ca.crt"), &self.pool_pem)?;
        std::fs::write(d.join("lh.crt"), cert.to_pem())?;
        std::fs::write(d.join("lh.key"), key.to_pem().as_bytes())?;
        let read_buffer = args
            .read_buffer
            .map(|b| format!("  read_buffer: {b}\n"))
            .unwrap_or_default();
        let cfg = format!(
            "pki:\n  ca: {d}/ca.crt\n  cert: {d}/lh.crt\n  key: {d}/lh.key\n\
             static_host_map: {{}}\n\
             lighthouse:\n  am_lighthouse: true\n  serve_dns: false\n\
             listen:\n  host: {ip}\n  port: {port}\n{read_buffer}\
             tun:\n  disabled: true\n  dev: lhb0\n\
             logging:\n  level: info\n\
             meshd:\n  max_hosts: {max}\n\
             firewall:\n  outbound: [{{port: any, proto: any, host: any}}]\n  \
             inbound: [{{port: any, proto: any, host: any}}]\n",
            d = d.display(),
            ip = LH_ADDR.ip(),
            port = LH_ADDR.port(),
            max = (args.n + 1000).max(100_000),
        );
        let path = d.join("config.yaml");
        std::fs::write(&path, cfg)?;
        Ok(path)
    }
}

/// Socket `s`: bound to every address at `HOST_PORT + s`, with IP_PKTINFO (which host a
/// datagram is for), a receive buffer that holds a whole burst of replies, in the epoll set.
fn shared_socket(epfd: i32, s: usize) -> anyhow::Result<UdpSocket> {
    let port = HOST_PORT + s as u16;
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .with_context(|| format!("binding port {port}"))?;
    sock.set_nonblocking(true)?;
    force_rcvbuf(&sock, 16 << 20)?;
    let one: i32 = 1;
    // SAFETY: one lives across the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            (&one as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()).context("IP_PKTINFO");
    }
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: s as u64,
    };
    // SAFETY: ev is valid for the call; the fd lives as long as the generator.
    if unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, sock.as_raw_fd(), &mut ev) } < 0 {
        return Err(io::Error::last_os_error()).context("epoll_ctl");
    }
    Ok(sock)
}

/// sendmsg from `src` (a local address) to `dst`.
fn send_from(sock: &UdpSocket, src: Ipv4Addr, dst: SocketAddr, bytes: &[u8]) {
    let SocketAddr::V4(dst) = dst else { return };
    let mut name = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: dst.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*dst.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut cbuf = [0u64; 8];
    // SAFETY: all pointers reference live locals of the sizes given; the cmsg fits cbuf.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen =
            libc::CMSG_SPACE(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IP;
        (*c).cmsg_type = libc::IP_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from(src).to_be(),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>(), info);
        libc::sendmsg(sock.as_raw_fd(), &msg, 0);
    }
}

/// recvmsg: (length, source, destination address).
fn recv_to(sock: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr, Ipv4Addr)> {
    let mut name: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cbuf = [0u64; 16];
    // SAFETY: all pointers reference live locals of the sizes given.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
        msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT);
        if n < 0 {
            return None;
        }
        let mut dst = None;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_PKTINFO {
                let info: libc::in_pktinfo =
                    std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::in_pktinfo>());
                dst = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let from = SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
            u16::from_be(name.sin_port),
        ));
        Some((n as usize, from, dst?))
    }
}

fn force_rcvbuf(sock: &UdpSocket, bytes: i32) -> anyhow::Result<()> {
    // SAFETY: bytes lives across the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error()).context("SO_RCVBUFFORCE on a querier socket");
    }
    Ok(())
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One verifier shared by every simulated host (they all trust the same CA).
struct Shared(std::rc::Rc<CaPoolVerifier>);

impl CertVerifier for Shared {
    fn verify(&self, cert: &[u8], key: &[u8; 32], unix_ns: u64) -> Result<PeerCert, String> {
        self.0.verify(cert, key, unix_ns)
    }
}

/// One simulated host: a meshd node with its own loopback source address on a shared socket.
struct Host {
    node: Node,
    /// Index into [`Gen::socks`].
    sock: usize,
    addr: SocketAddrV4,
    /// The deadline last pushed onto the timer heap for this host.
    armed: Option<Instant>,
    up: bool,
}

/// Sockets shared by the hosts: host `i` sends from port `HOST_PORT + i % SOCKETS` and address
/// `host_ip(i / SOCKETS)` (the hard fd limit here is far below one socket per host).
const SOCKETS: usize = 256;

fn host_ip(j: usize) -> Ipv4Addr {
    let (b, c, d) = (2 + j / 62_500, (j / 250) % 250, j % 250 + 1);
    Ipv4Addr::new(127, b as u8, c as u8, d as u8)
}

fn host_ip_index(ip: Ipv4Addr) -> Option<usize> {
    let [a, b, c, d] = ip.octets();
    (a == 127 && b >= 2 && (1..=250).contains(&d) && c < 250)
        .then(|| (b as usize - 2) * 62_500 + c as usize * 250 + d as usize - 1)
}

fn host_vpn(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 0)) + i as u32)
}

fn host_addr(i: usize) -> SocketAddrV4 {
    SocketAddrV4::new(host_ip(i / SOCKETS), HOST_PORT + (i % SOCKETS) as u16)
}

/// The whole generator state: hosts, their sockets in one epoll set, and the timer heap.
struct Gen {
    hosts: Vec<Host>,
    socks: Vec<UdpSocket>,
    epfd: i32,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    /// LightHouse-type datagrams from the lighthouse received by queriers.
    replies: u64,
    queriers: usize,
    buf: Vec<u8>,
}

impl Gen {
    fn new(args: &Args, pki: &Pki, rng: &mut impl Rng) -> anyhow::Result<Gen> {
        // SAFETY: plain syscall.
        let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if epfd < 0 {
            return Err(io::Error::last_os_error()).context("epoll_create1");
        }
        let pool = CaPool::from_pem(&pki.pool_pem, pki.now)
            .context("CA pool")?
            .pool;
        let verifier = std::rc::Rc::new(CaPoolVerifier { pool });
        let mut static_map = std::collections::BTreeMap::new();
        static_map.insert(VpnIp::from(LH_VPN), vec![SocketAddr::V4(LH_ADDR)]);
        let now = Instant::now();
        let unix_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
        let mut hosts = Vec::with_capacity(args.n);
        for i in 0..args.n {
            let key = X25519PrivateKey::from_bytes(rng.gen());
            let cert = pki.sign(&format!("host{i}"), host_vpn(i), &key);
            let identity = identity_from_cert(&cert, &key)?;
            let addr = host_addr(i);
            let config = NodeConfig {
                static_host_map: static_map.clone(),
                lighthouses: vec![VpnIp::from(LH_VPN)],
                lighthouse_interval: Duration::from_secs(args.interval),
                advertise_addrs: vec![SocketAddr::V4(addr)],
                listen_port: HOST_PORT,
                tun_disabled: true,
                max_hosts: args.n + 16,
                ..NodeConfig::default()
            };
            let node = Node::new(
                config,
                identity,
                Box::new(Shared(verifier.clone())),
                NodeRng::seeded_for_simulation(rng.gen()),
                now,
                unix_ns,
            );
            hosts.push(Host {
                node,
                sock: i % SOCKETS,
                addr,
                armed: None,
                up: false,
            });
        }
        let socks = (0..SOCKETS.min(args.n))
            .map(|s| shared_socket(epfd, s))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Gen {
            hosts,
            socks,
            epfd,
            timers: BinaryHeap::new(),
            replies: 0,
            queriers: args.queriers,
            buf: vec![0u8; 9000],
        })
    }

    /// Sends what host `i` queued and re-arms its timer.
    fn flush(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        while let Some(t) = h.node.poll_transmit() {
            send_from(&self.socks[h.sock], *h.addr.ip(), t.to, &t.bytes);
        }
        while let Some(e) = h.node.poll_event() {
            match e {
                Event::HandshakeComplete { .. } => h.up = true,
                Event::TunnelClosed { .. } => h.up = false,
                _ => {}
            }
        }
        if let Some(at) = h.node.poll_timeout() {
            if h.armed != Some(at) {
                h.armed = Some(at);
                self.timers.push(Reverse((at, i)));
            }
        }
    }

    /// Starts host `i` (its first timeout sends the HostUpdateNotification, which needs the
    /// tunnel, so the handshake goes first).
    fn start(&mut self, i: usize) {
        self.hosts[i].node.handle_timeout(Instant::now());
        self.flush(i);
    }

    /// One round: due timers, then whatever the sockets have (waiting at most `wait`).
    fn step(&mut self, wait: Duration) {
        let now = Instant::now();
        while let Some(&Reverse((at, i))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.hosts[i].armed == Some(at) {
                self.hosts[i].armed = None;
                self.hosts[i].node.handle_timeout(now);
                self.flush(i);
            }
        }
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 256];
        let ms = wait.as_millis().min(1000) as i32;
        // SAFETY: events is valid for 256 entries.
        let n = unsafe { libc::epoll_wait(self.epfd, events.as_mut_ptr(), 256, ms) };
        for ev in events.iter().take(n.max(0) as usize) {
            let i = ev.u64 as usize;
            self.drain(i);
        }
    }

    /// Reads socket `s`, handing each datagram to the host it is addressed to.
    fn drain(&mut self, s: usize) {
        let now = Instant::now();
        for _ in 0..64 {
            let Some((len, from, dst)) = recv_to(&self.socks[s], &mut self.buf) else {
                break;
            };
            let Some(i) = host_ip_index(dst).map(|j| j * SOCKETS + s) else {
                continue;
            };
            if i >= self.hosts.len() {
                continue;
            }
            let is_reply = i < self.queriers
                && len > 1
                && Header::parse(&self.buf[..len])
                    .is_ok_and(|h| h.message_type == MessageType::LightHouse);
            let out = self.hosts[i]
                .node
                .handle_datagram(now, from, &mut self.buf[..len]);
            if is_reply && out == meshd::node::DatagramOutcome::Handled {
                self.replies += 1;
            }
            self.flush(i);
        }
    }

    fn query(&mut self, querier: usize, target: usize) {
        let meta = NebulaMeta {
            r#type: MetaType::HostQuery as i32,
            details: Some(meshd::node::lighthouse_details(
                VpnIp::from(host_vpn(target)),
                &[],
                &[],
            )),
        };
        let now = Instant::now();
        self.hosts[querier]
            .node
            .send_lighthouse_message(now, VpnIp::from(LH_VPN), &meta);
        self.flush(querier);
    }

    fn up_count(&self) -> usize {
        self.hosts.iter().filter(|h| h.up).count()
    }
}

impl Drop for Gen {
    fn drop(&mut self) {
        // SAFETY: our own epoll fd.
        unsafe { libc::close(self.epfd) };
    }
}

/// The lighthouse process, killed by PID on drop.
struct Lighthouse {
    child: Child,
}

impl Lighthouse {
    fn spawn(kind: Kind, bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Lighthouse> {
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(bin)
            .arg("-config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .spawn()
            .with_context(|| format!("starting {kind:?} lighthouse {}", bin.display()))?;
        Ok(Lighthouse { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// utime + stime in microseconds.
    fn cpu_us(&self) -> anyhow::Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        let rest = stat.rsplit_once(')').context("stat format")?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(ticks as f64 * 1e6 / hz)
    }

    fn rss_kb(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Lighthouse {
    fn drop(&mut self) {
        // SAFETY: signalling the child we started, by its PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn measure(args: &Args, kind: Kind, bin: &Path) -> anyhow::Result<Result_> {
    println!("== {kind:?} lighthouse ({})", bin.display());
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let t = Instant::now();
    let pki = Pki::new(&mut rng)?;
    let config = pki.write_lighthouse(&mut rng, args)?;
    let mut gen = Gen::new(args, &pki, &mut rng)?;
    println!(
        "  {} hosts with certificates and sockets in {:.1} s",
        args.n,
        t.elapsed().as_secs_f64()
    );
    let log = pki.dir.path().join("lighthouse.log");
    let mut lh = Lighthouse::spawn(kind, bin, &config, &log)?;
    std::thread::sleep(Duration::from_millis(1500));
    if !lh.alive() {
        bail!(
            "lighthouse exited: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let idle_rss_kb = lh.rss_kb()?;
    let cpu0 = lh.cpu_us()?;
    let t = Instant::now();
    admit(&mut gen, args)?;
    let up = gen.up_count();
    // Let the lighthouse take the HostUpdateNotifications that followed the last handshakes.
    settle(&mut gen, Duration::from_millis(300));
    let cpu1 = lh.cpu_us()?;
    println!(
        "  admitted {up}/{} in {:.1} s; lighthouse CPU {:.2} s",
        args.n,
        t.elapsed().as_secs_f64(),
        (cpu1 - cpu0) / 1e6
    );
    let cpu_per_host_us = (cpu1 - cpu0) / up.max(1) as f64;
    // Memory once every host has sent a repeat update (the tunnels are proven and the
    // handshake retry window is over), as on a lighthouse in steady state.
    settle(&mut gen, Duration::from_secs(args.interval.max(6) + 1));
    let rss_kb = lh.rss_kb()?;
    let rss_per_host_b = (rss_kb.saturating_sub(idle_rss_kb) * 1024) as f64 / args.n as f64;
    let (replies_per_s, cpu_per_reply_us, reachable) = query_phase(&mut gen, args, &lh)?;
    let (burst_sent, burst_got) = burst(&mut gen, args);
    let grep = |k: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(k))
            .map(|l| l.chars().take(300).collect::<String>())
            .collect::<Vec<_>>()
    };
    for l in grep("buffer") {
        println!("  lighthouse log: {l}");
    }
    if !lh.alive() {
        bail!(
            "lighthouse died: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let r = Result_ {
        kind,
        idle_rss_kb,
        rss_per_host_b,
        cpu_per_host_us,
        replies_per_s,
        cpu_per_reply_us,
        reachable,
        burst_sent,
        burst_got,
    };
    println!("{}", r.row(args.n));
    Ok(r)
}

/// Handshakes all hosts, at most `admit_window` under way at once.
fn admit(gen: &mut Gen, args: &Args) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60 + args.n as u64 / 500);
    let mut next = 0;
    loop {
        let up = gen.up_count_fast(next);
        while next < args.n && next - up < args.admit_window {
            gen.start(next);
            next += 1;
        }
        if next == args.n && up == args.n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("admission timed out: {up}/{} up", args.n);
        }
        gen.step(Duration::from_millis(1));
    }
}

impl Gen {
    /// Hosts up among the first `started` (counting only those is enough for the window).
    fn up_count_fast(&mut self, started: usize) -> usize {
        self.hosts[..started].iter().filter(|h| h.up).count()
    }
}

fn settle(gen: &mut Gen, d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        gen.step(Duration::from_millis(5));
    }
}

/// Keeps `window` queries outstanding for `query_secs` (and until every non-querier host was
/// asked for once), each target's queries from querier `target % queriers`, so reachability
/// can be read from that querier's remote list; a querier counts as reachable when its tunnel
/// is up (it got its own replies).
fn query_phase(gen: &mut Gen, args: &Args, lh: &Lighthouse) -> anyhow::Result<(f64, f64, usize)> {
    let q = gen.queriers;
    let cpu0 = lh.cpu_us()?;
    let drops0 = rcvbuf_errors();
    let start = Instant::now();
    let r0 = gen.replies;
    let mut sent = 0u64;
    // Queriers are never targets: the punch notification a target gets is a lighthouse
    // message too, and would be counted as a reply at a querier.
    let mut target = q;
    let mut last_progress = (Instant::now(), gen.replies);
    let end = start + Duration::from_secs(args.query_secs);
    let mut covered = false;
    while Instant::now() < end || !covered {
        if Instant::now() > end + Duration::from_secs(30) {
            break;
        }
        let got = gen.replies - r0;
        // A lost query or reply would shrink the window for good: forgive after 200 ms idle.
        if last_progress.1 != gen.replies {
            last_progress = (Instant::now(), gen.replies);
        } else if last_progress.0.elapsed() > Duration::from_millis(200) {
            sent = got;
            last_progress.0 = Instant::now();
        }
        let mut n = 0;
        while sent - got < args.window as u64 && n < 64 {
            gen.query(querier_for(target, q), target);
            sent += 1;
            n += 1;
            target += 1;
            if target == args.n {
                covered = true;
                target = q;
            }
        }
        gen.step(Duration::ZERO);
    }
    settle(gen, Duration::from_millis(300));
    let secs = start.elapsed().as_secs_f64();
    let got = gen.replies - r0;
    let cpu = lh.cpu_us()? - cpu0;
    let queriers_up = gen.hosts[..q].iter().filter(|h| h.up).count();
    let reachable = queriers_up
        + (q..args.n)
            .filter(|t| {
                gen.hosts[querier_for(*t, q)]
                    .node
                    .remotes(VpnIp::from(host_vpn(*t)))
                    .is_some_and(|r| r.addrs().contains(&SocketAddr::V4(host_addr(*t))))
            })
            .count();
    println!(
        "  {} datagrams dropped by full receive buffers during the query phase",
        rcvbuf_errors() - drops0
    );
    println!(
        "  queries: {got} replies in {secs:.1} s = {:.0}/s; lighthouse CPU {:.2} s ({:.2} µs/reply); {reachable}/{} hosts answered with their address",
        got as f64 / secs,
        cpu / 1e6,
        cpu / got.max(1) as f64,
        args.n
    );
    Ok((got as f64 / secs, cpu / got.max(1) as f64, reachable))
}

/// Which querier asks for `target` (queriers are hosts `0..q`, never targets themselves).
fn querier_for(target: usize, q: usize) -> usize {
    target % q
}

/// UDP receive-buffer overflows in this namespace so far (`RcvbufErrors` of /proc/net/snmp).
fn rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return 0;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

/// `burst` queries back to back (spread over the queriers, no waiting), then counts replies.
fn burst(gen: &mut Gen, args: &Args) -> (usize, usize) {
    settle(gen, Duration::from_millis(500));
    let r0 = gen.replies;
    let drops0 = rcvbuf_errors();
    let q = gen.queriers;
    let mut per_querier: HashMap<usize, usize> = HashMap::new();
    for k in 0..args.burst {
        let target = q + (k * 7919) % (args.n - q).max(1);
        let querier = k % q;
        let meta = NebulaMeta {
            r#type: MetaType::HostQuery as i32,
            details: Some(meshd::node::lighthouse_details(
                VpnIp::from(host_vpn(target)),
                &[],
                &[],
            )),
        };
        gen.hosts[querier]
            .node
            .send_lighthouse_message(Instant::now(), VpnIp::from(LH_VPN), &meta);
        *per_querier.entry(querier).or_default() += 1;
        // Sends happen in `flush`; do them now so the burst is back to back on the wire.
        let h = &mut gen.hosts[querier];
        while let Some(t) = h.node.poll_transmit() {
            send_from(&gen.socks[h.sock], *h.addr.ip(), t.to, &t.bytes);
        }
    }
    for querier in per_querier.keys() {
        gen.flush(*querier);
    }
    settle(gen, Duration::from_secs(2));
    let got = (gen.replies - r0) as usize;
    println!(
        "  burst: {got}/{} replies; {} datagrams dropped by full receive buffers",
        args.burst,
        rcvbuf_errors() - drops0
    );
    (args.burst, got)
}

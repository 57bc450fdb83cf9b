//! Shared by the interop tests: Debian's nebula 1.6.1 started as a `tun.disabled` process on
//! loopback (certificates from nebula-cert, a YAML config, a guard that stops it by PID), and
//! meshd's sans-IO node loaded from the same certificates. It only ever addresses loopback;
//! driving the node over sockets stays with each test, whose shims differ.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshd::cert::CaPool;
use meshd::node::{identity_from_pem, CaPoolVerifier, Node, NodeConfig, NodeRng};

/// A nebula process, killed by PID when dropped; its log is printed if the test is failing.
pub struct Nebula {
    child: Child,
    log: PathBuf,
}

impl Nebula {
    /// What nebula has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, for tests that signal nebula themselves.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nebula {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} ----\n{}", self.log.display(), self.log());
        }
    }
}

/// True when nebula and nebula-cert are installed (see `super::require_tool`).
pub fn tools(test: &str) -> bool {
    super::require_tool(test, "nebula") && super::require_tool(test, "nebula-cert")
}

fn nebula_cert(args: &[&str]) {
    let out = Command::new("nebula-cert")
        .args(args)
        .output()
        .expect("run nebula-cert");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA named `ca_name` in `dir/ca.{crt,key}` and, for each host, `dir/<name>.{crt,key}` with
/// vpn ip `<ip>/24`.
pub fn make_certs(dir: &Path, ca_name: &str, hosts: &[(&str, Ipv4Addr)]) {
    let p = |f: &str| dir.join(f).display().to_string();
    nebula_cert(&[
        "ca",
        "-name",
        ca_name,
        "-out-crt",
        &p("ca.crt"),
        "-out-key",
        &p("ca.key"),
    ]);
    for (name, ip) in hosts {
        nebula_cert(&[
            "sign",
            "-name",
            name,
            "-ip",
            &format!("{ip}/24"),
            "-ca-crt",
            &p("ca.crt"),
            "-ca-key",
            &p("ca.key"),
            "-out-crt",
            &p(&format!("{name}.crt")),
            "-out-key",
            &p(&format!("{name}.key")),
        ]);
    }
}

/// A UDP port free on `host` a moment ago.
pub fn free_port(host: [u8; 4]) -> u16 {
    UdpSocket::bind(SocketAddr::from((host, 0)))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes `dir/<name>.yml` (certs from `make_certs`, listening on `listen`, tun disabled, debug
/// logs, firewall open; `extra` holds the static_host_map, lighthouse, relay... sections) and
/// starts nebula with it.
pub fn start(dir: &Path, name: &str, listen: SocketAddr, extra: &str) -> Nebula {
    let d = dir.display();
    let cfg = format!(
        "pki:\n  ca: {d}/ca.crt\n  cert: {d}/{name}.crt\n  key: {d}/{name}.key\n\
         {extra}\
         listen:\n  host: {}\n  port: {}\n\
         tun:\n  disabled: true\n  dev: nebula_{name}\n\
         logging:\n  level: debug\n\
         firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  \
         inbound:\n    - port: any\n      proto: any\n      host: any\n",
        listen.ip(),
        listen.port()
    );
    std::fs::write(dir.join(format!("{name}.yml")), cfg).unwrap();
    spawn(dir, name)
}

/// Starts (or restarts) nebula with the config already in `dir/<name>.yml`, logging to
/// `dir/<name>.log` and `dir/<name>.err`.
pub fn spawn(dir: &Path, name: &str) -> Nebula {
    let log = dir.join(format!("{name}.log"));
    let child = Command::new("nebula")
        .arg("-config")
        .arg(dir.join(format!("{name}.yml")))
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("{name}.err"))).unwrap(),
        ))
        .spawn()
        .expect("start nebula");
    Nebula { child, log }
}

pub fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A meshd node with the identity in `dir/<name>.{crt,key}`, trusting `dir/ca.crt`.
pub fn node(dir: &Path, name: &str, config: NodeConfig, seed: u64) -> Node {
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    let identity = identity_from_pem(&read(format!("{name}.crt")), &read(format!("{name}.key")))
        .expect("identity");
    let now_s = (unix_ns() / 1_000_000_000) as i64;
    let pool = CaPool::from_pem(&read("ca.crt".into()), now_s)
        .expect("ca")
        .pool;
    Node::new(
        config,
        identity,
        Box::new(CaPoolVerifier { pool }),
        NodeRng::seeded_for_simulation(seed),
        Instant::now(),
        unix_ns(),
    )
}

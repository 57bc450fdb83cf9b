//! RAII harness for end-to-end tests in network namespaces (needs root): namespaces, veth pairs,
//! an "internet" bridge, NAT routers, processes tied to a namespace, bounded waits, and Nebula
//! style certificates (via /usr/bin/nebula-cert) and configs.
//!
//! Every namespace and link name comes from `unique_name`, so parallel tests and runs never clash.
//! Every resource is released by `Drop`, also when a test panics: processes are stopped by their
//! own PID only, namespaces are deleted (which destroys the links inside them). Declare processes
//! after the namespaces they run in, so they are dropped first.
//!
//! Test code: failures to set up panic with the command and its output.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::unique_name;

/// A named network namespace, deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix><unique>` with loopback up. Keep `prefix` to 8 characters or fewer.
    pub fn new(prefix: &str) -> Netns {
        let name = unique_name(prefix);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// The namespace name (as listed by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs a command inside the namespace and returns its output, whatever the exit status.
    pub fn exec(&self, args: &[&str]) -> Output {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .output();
        out.unwrap_or_else(|e| panic!("ip netns exec {} {args:?}: {e}", self.name))
    }

    /// Runs a command inside the namespace, panicking unless it succeeds; returns stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        check(&format!("[{}] {}", self.name, args.join(" ")), &out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ip <args>` against this namespace (`ip -n NAME ...`), panicking on failure.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_ok(Command::new("ip").args(["-n", &self.name]).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Adds `cidr` (e.g. "192.0.2.1/24") to `ifname` and brings it up.
    pub fn add_addr(&self, ifname: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", ifname]);
        self.ip(&["link", "set", ifname, "up"]);
    }

    /// Sets the default route.
    pub fn default_route(&self, via: &str) {
        self.ip(&["route", "add", "default", "via", via]);
    }

    /// Starts a long-running command inside the namespace; stdout and stderr go to `log`. The
    /// process is stopped (by its PID) when the returned guard drops.
    pub fn spawn(&self, args: &[&str], log: &Path) -> NsProcess {
        let file =
            fs::File::create(log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = file.try_clone().expect("clone log handle");
        // `ip netns exec` execs the command in place, so the child's PID is the command's PID.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {args:?} in {}: {e}", self.name));
        NsProcess {
            child,
            what: format!("[{}] {}", self.name, args.join(" ")),
            log: log.to_path_buf(),
        }
    }

    /// Runs `f` on a fresh thread that has entered this namespace (the caller's threads stay
    /// where they are). Lets tests drive library code (TUN, routes, sockets) inside it.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = format!("/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                use std::os::fd::AsRawFd;
                // SAFETY: setns on a valid namespace fd affects only this thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// True when `ifname` exists in this namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        Command::new("ip")
            .args(["-n", &self.name, "link", "show", "dev", ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Bounded ping (`ping -c count -W 1 -i 0.2`); true when every echo was answered.
    pub fn ping(&self, dest: &str, count: u32) -> bool {
        let count = count.to_string();
        self.exec(&[
            "ping", "-n", "-q", "-c", &count, "-W", "1", "-i", "0.2", dest,
        ])
        .status
        .success()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("netns del {}: {e}", self.name),
        }
    }
}

/// Creates a veth pair between `a` and `b` (unique names), assigns the optional addresses and
/// brings both ends up. Returns the interface names (in `a`, in `b`).
pub fn veth(a: &Netns, a_cidr: Option<&str>, b: &Netns, b_cidr: Option<&str>) -> (String, String) {
    let (ia, ib) = (unique_name("va"), unique_name("vb"));
    run_ok(
        Command::new("ip")
            .args(["link", "add", &ia, "netns", a.name(), "type", "veth"])
            .args(["peer", "name", &ib, "netns", b.name()]),
    );
    for (ns, ifname, cidr) in [(a, &ia, a_cidr), (b, &ib, b_cidr)] {
        match cidr {
            Some(c) => ns.add_addr(ifname, c),
            None => {
                ns.ip(&["link", "set", ifname, "up"]);
            }
        }
    }
    (ia, ib)
}

/// A namespace holding one bridge: the shared "internet" segment.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
}

const BRIDGE: &str = "br0";

impl Switch {
    pub fn new(prefix: &str) -> Switch {
        let ns = Netns::new(prefix);
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"]);
        ns.ip(&["link", "set", BRIDGE, "up"]);
        Switch { ns }
    }

    /// Plugs `ns` into the bridge with address `cidr`; returns the interface name inside `ns`.
    pub fn attach(&self, ns: &Netns, cidr: &str) -> String {
        let (port, inside) = veth(&self.ns, None, ns, Some(cidr));
        self.ns.ip(&["link", "set", &port, "master", BRIDGE]);
        inside
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }
}

/// How the router maps and filters (Nebula's e2e router calls these cone / symmetric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// Masquerade keeping the source port when free; replies only from where we sent to.
    PortRestricted,
    /// A fresh random port per destination: hole punching through it is expected to fail.
    Symmetric,
}

/// A router namespace: WAN on a [`Switch`], a LAN bridge for hosts, masquerade out of the WAN,
/// and unsolicited inbound traffic (to itself or the LAN) dropped.
#[derive(Debug)]
pub struct NatRouter {
    ns: Netns,
    wan_ip: String,
    lan_ip: String,
}

const LAN: &str = "lan0";

impl NatRouter {
    /// `wan_cidr` on the switch (e.g. "198.51.100.11/24"), `lan_cidr` for the router's LAN side
    /// (e.g. "192.168.1.1/24").
    pub fn new(
        prefix: &str,
        internet: &Switch,
        wan_cidr: &str,
        lan_cidr: &str,
        kind: NatKind,
    ) -> NatRouter {
        let ns = Netns::new(prefix);
        let wan = internet.attach(&ns, wan_cidr);
        ns.ip(&["link", "add", LAN, "type", "bridge"]);
        ns.add_addr(LAN, lan_cidr);
        ns.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        load_nft(&ns, &nat_ruleset(&wan, kind));
        NatRouter {
            ns,
            wan_ip: addr_of(wan_cidr),
            lan_ip: addr_of(lan_cidr),
        }
    }

    /// Connects `host` to the LAN with `cidr` and routes its default traffic through the router.
    pub fn add_host(&self, host: &Netns, cidr: &str) -> String {
        let (port, inside) = veth(&self.ns, None, host, Some(cidr));
        self.ns.ip(&["link", "set", &port, "master", LAN]);
        host.default_route(&self.lan_ip);
        inside
    }

    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// The public address hosts are masqueraded to.
    pub fn wan_ip(&self) -> &str {
        &self.wan_ip
    }
}

fn nat_ruleset(wan: &str, kind: NatKind) -> String {
    let masq = match kind {
        NatKind::PortRestricted => "masquerade",
        NatKind::Symmetric => "masquerade random",
    };
    format!(
        "table ip meshdnat {{
  chain nat_out {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"{wan}\" {masq}
  }}
  chain filter_fwd {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname \"{LAN}\" oifname \"{wan}\" accept
  }}
  chain filter_in {{
    type filter hook input priority filter; policy accept;
    iifname \"{wan}\" ct state established,related accept
    iifname \"{wan}\" drop
  }}
}}
"
    )
}

fn load_nft(ns: &Netns, ruleset: &str) {
    let dir = super::tempdir();
    let file = dir.path().join("rules.nft");
    fs::write(&file, ruleset).expect("write nft rules");
    ns.run(&["nft", "-f", file.to_str().expect("utf-8 temp path")]);
}

fn addr_of(cidr: &str) -> String {
    cidr.split('/').next().unwrap_or(cidr).to_string()
}

/// A process running inside a namespace; SIGTERM then SIGKILL to its own PID on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    what: String,
    log: PathBuf,
}

impl NsProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The exit status once the process has exited (reaping it), else `None`.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What the process has written so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the process: SIGTERM, up to 5 s grace, then SIGKILL. Idempotent.
    pub fn stop(&mut self) {
        if !self.is_running() {
            return;
        }
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own, not yet reaped child by its PID.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let exited = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
            !self.is_running()
        });
        if !exited {
            eprintln!("{} ignored SIGTERM; killing", self.what);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `cond` every `every` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, every: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// True when a namespace called `name` is still registered.
pub fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// True when an interface called `name` exists in the root namespace.
pub fn root_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// True when `pid` names a live (or unreaped) process.
pub fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// A Nebula CA made by `nebula-cert ca` in `dir`.
#[derive(Debug, Clone)]
pub struct NebulaCa {
    dir: PathBuf,
    pub crt: PathBuf,
    pub key: PathBuf,
}

/// A node's certificate, key and the CA certificate, as files.
#[derive(Debug, Clone)]
pub struct NodePki {
    pub ca: PathBuf,
    pub crt: PathBuf,
    pub key: PathBuf,
}

impl NebulaCa {
    pub fn new(dir: &Path, name: &str) -> NebulaCa {
        let crt = dir.join("ca.crt");
        let key = dir.join("ca.key");
        run_ok(
            Command::new("nebula-cert")
                .args(["ca", "-name", name, "-duration", "2h"])
                .args([
                    "-out-crt".as_ref(),
                    crt.as_os_str(),
                    "-out-key".as_ref(),
                    key.as_os_str(),
                ]),
        );
        NebulaCa {
            dir: dir.to_path_buf(),
            crt,
            key,
        }
    }

    /// Signs a host certificate for `name` with VPN address `vpn_cidr` (e.g. "10.42.0.1/24").
    pub fn sign(&self, name: &str, vpn_cidr: &str, groups: &[&str]) -> NodePki {
        let crt = self.dir.join(format!("{name}.crt"));
        let key = self.dir.join(format!("{name}.key"));
        let mut cmd = Command::new("nebula-cert");
        cmd.args(["sign", "-name", name, "-ip", vpn_cidr]);
        cmd.arg("-ca-crt")
            .arg(&self.crt)
            .arg("-ca-key")
            .arg(&self.key);
        cmd.arg("-out-crt").arg(&crt).arg("-out-key").arg(&key);
        if !groups.is_empty() {
            cmd.args(["-groups", &groups.join(",")]);
        }
        run_ok(&mut cmd);
        NodePki {
            ca: self.crt.clone(),
            crt,
            key,
        }
    }
}

/// A Nebula 1.6.1 style node config; `to_yaml` renders it, `write` saves it.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub tun_dev: String,
    pub mtu: u32,
    pub listen_host: String,
    pub listen_port: u16,
    /// (vpn ip, ["underlay ip:port", ...])
    pub static_host_map: Vec<(String, Vec<String>)>,
    pub am_lighthouse: bool,
    /// VPN IPs of the lighthouses.
    pub lighthouses: Vec<String>,
    pub punchy: bool,
    pub cipher: String,
    pub log_level: String,
    /// Raw YAML for `firewall:`; `None` allows everything both ways.
    pub firewall: Option<String>,
    /// Appended verbatim (extra top-level keys).
    pub extra: String,
}

impl NodeConfig {
    /// Defaults: MTU 1300, listen 0.0.0.0:4242, aes, allow-all firewall, info logging.
    pub fn new(tun_dev: &str) -> NodeConfig {
        NodeConfig {
            tun_dev: tun_dev.to_string(),
            mtu: 1300,
            listen_host: "0.0.0.0".into(),
            listen_port: 4242,
            static_host_map: Vec::new(),
            am_lighthouse: false,
            lighthouses: Vec::new(),
            punchy: true,
            cipher: "aes".into(),
            log_level: "info".into(),
            firewall: None,
            extra: String::new(),
        }
    }

    pub fn to_yaml(&self, pki: &NodePki) -> String {
        let mut y = String::new();
        let _ = writeln!(
            y,
            "pki:\n  ca: {}\n  cert: {}\n  key: {}",
            pki.ca.display(),
            pki.crt.display(),
            pki.key.display()
        );
        y.push_str("static_host_map:\n");
        for (vpn, addrs) in &self.static_host_map {
            let list = addrs
                .iter()
                .map(|a| format!("\"{a}\""))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(y, "  \"{vpn}\": [{list}]");
        }
        let hosts = self
            .lighthouses
            .iter()
            .map(|h| format!("\"{h}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            y,
            "lighthouse:\n  am_lighthouse: {}\n  interval: 60\n  hosts: [{hosts}]",
            self.am_lighthouse
        );
        let _ = writeln!(
            y,
            "listen:\n  host: \"{}\"\n  port: {}",
            self.listen_host, self.listen_port
        );
        let _ = writeln!(
            y,
            "punchy:\n  punch: {}\n  respond: {}",
            self.punchy, self.punchy
        );
        let _ = writeln!(y, "cipher: {}", self.cipher);
        let _ = writeln!(
            y,
            "tun:\n  disabled: false\n  dev: {}\n  mtu: {}",
            self.tun_dev, self.mtu
        );
        let _ = writeln!(y, "logging:\n  level: {}\n  format: text", self.log_level);
        match &self.firewall {
            Some(fw) => {
                let _ = writeln!(y, "firewall:\n{fw}");
            }
            None => y.push_str(
                "firewall:\n  outbound:\n    - port: any\n      proto: any\n      host: any\n  \
                 inbound:\n    - port: any\n      proto: any\n      host: any\n",
            ),
        }
        y.push_str(&self.extra);
        y
    }

    /// Writes `<dir>/<file>` and returns its path.
    pub fn write(&self, dir: &Path, file: &str, pki: &NodePki) -> PathBuf {
        let path = dir.join(file);
        fs::write(&path, self.to_yaml(pki))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    check(&format!("{cmd:?}"), &out);
    out
}

fn check(what: &str, out: &Output) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! The daemon under systemd's eyes, in throw-away namespaces: a test NOTIFY_SOCKET sees READY
//! (with the TUN address already set), RELOADING/READY around each SIGHUP and STOPPING at the
//! end; reloads swap firewall rules without breaking an allowed TCP transfer in flight; broken
//! YAML, a bad rule and a missing certificate leave the old config running with the failure in
//! the log and STATUS=; a new host certificate reaches the nebula 1.6.1 peer; 100 reloads leak
//! no fds or threads; SIGTERM exits 0 with the device gone and nebula told.
//!
//! Traffic stays inside the namespaces the test creates; Drop guards remove them.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NodePki, NsProcess};
use sha2::{Digest, Sha256};

const VPN_A: &str = "10.43.0.1";
const VPN_B: &str = "10.43.0.2";
/// Allowed before and after the reload (the transfer runs on it).
const KEEP: u16 = 7101;
/// Allowed only after the reload.
const NEW: u16 = 7102;
/// Allowed only before the reload.
const OLD: u16 = 7103;

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
}

fn firewall(tcp_ports: &[u16]) -> String {
    let mut fw = String::from(
        "  outbound:\n    - {port: any, proto: any, host: any}\n  inbound:\n    \
         - {port: any, proto: icmp, host: any}\n",
    );
    for p in tcp_ports {
        fw.push_str(&format!("    - {{port: {p}, proto: tcp, host: any}}\n"));
    }
    fw
}

/// meshd (side a, with a notify socket) and nebula 1.6.1 (side b) on a veth.
struct Rig {
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
    ca: NebulaCa,
    dev_a: String,
    cfg_a: PathBuf,
    cfg_b: PathBuf,
    notify: UnixDatagram,
    notify_path: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = common::tempdir();
        let a = Netns::new("mra");
        let b = Netns::new("mrb");
        veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
        let ca = NebulaCa::new(dir.path(), "reload test ca");
        let dev_a = common::unique_name("mr");
        let dev_b = common::unique_name("mr");
        let pki_a = ca.sign("a", "10.43.0.1/24", &[]);
        let pki_b = ca.sign("b", "10.43.0.2/24", &[]);
        let cfg_a =
            a_config(&dev_a, Some(&firewall(&[KEEP, OLD]))).write(dir.path(), "a.yml", &pki_a);
        let mut cb = NodeConfig::new(&dev_b);
        cb.punchy = false;
        cb.static_host_map
            .push((VPN_A.into(), vec!["192.0.2.1:4242".into()]));
        let cfg_b = cb.write(dir.path(), "b.yml", &pki_b);
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        Rig {
            a,
            b,
            dir,
            ca,
            dev_a,
            cfg_a,
            cfg_b,
            notify,
            notify_path,
        }
    }

    fn start_meshd(&self) -> NsProcess {
        let bin = common::meshd_bin().to_string_lossy().into_owned();
        let env = format!("NOTIFY_SOCKET={}", self.notify_path.display());
        // `env` execs meshd in place: the guard's PID is meshd's.
        self.a.spawn(
            &["env", &env, &bin, "-config", self.cfg_a.to_str().unwrap()],
            &self.dir.path().join("a.log"),
        )
    }

    fn start_nebula(&self) -> NsProcess {
        self.b.spawn(
            &["nebula", "-config", self.cfg_b.to_str().unwrap()],
            &self.dir.path().join("b.log"),
        )
    }

    /// Rewrites a's config (same pki unless `pki` is given).
    fn write_a(&self, fw: &str, pki: &NodePki) {
        a_config(&self.dev_a, Some(fw)).write(self.dir.path(), "a.yml", pki);
    }

    fn pki_a(&self) -> NodePki {
        NodePki {
            ca: self.ca.crt.clone(),
            crt: self.dir.path().join("a.crt"),
            key: self.dir.path().join("a.key"),
        }
    }

    /// Reads notifications until one starts with `want`; everything skipped must be STATUS or
    /// WATCHDOG (so READY/RELOADING/STOPPING arrive in exactly the expected order). Returns the
    /// STATUS lines seen on the way.
    fn expect(&self, want: &str, log: &dyn Fn() -> String) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut statuses = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {want} notification\n{}", log());
            self.notify.set_read_timeout(Some(left)).unwrap();
            let n = match self.notify.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("waiting for {want}: {e}\n{}", log()),
            };
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            if msg.starts_with(want) {
                return statuses;
            }
            match msg.split('=').next() {
                Some("STATUS") => statuses.push(msg),
                Some("WATCHDOG") => {}
                _ => panic!("got {msg:?} while waiting for {want}\n{}", log()),
            }
        }
    }

    /// SIGHUP, then RELOADING and READY in that order; returns the STATUS lines that followed.
    fn reload(&self, p: &NsProcess) -> Vec<String> {
        signal(p, libc::SIGHUP);
        let log = || p.log();
        self.expect("RELOADING=1", &log);
        self.expect("READY=1", &log);
        // The reload's outcome is the STATUS sent right after READY.
        let mut buf = [0u8; 4096];
        self.notify
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let n = self.notify.recv(&mut buf).expect("STATUS after reload");
        vec![String::from_utf8_lossy(&buf[..n]).into_owned()]
    }
}

fn a_config(dev: &str, fw: Option<&str>) -> NodeConfig {
    let mut c = NodeConfig::new(dev);
    c.punchy = false;
    c.firewall = fw.map(str::to_string);
    c.static_host_map
        .push((VPN_B.into(), vec!["192.0.2.2:4242".into()]));
    c
}

fn signal(p: &NsProcess, sig: i32) {
    // SAFETY: kill on a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

fn ping_eventually(ns: &Netns, dest: &str) -> bool {
    (0..10).any(|_| ns.ping(dest, 1))
}

/// Can b open a TCP connection to a's `port` (a listener is bound there)?
fn connects(rig: &Rig, port: u16) -> bool {
    rig.b.enter(|| {
        let addr: SocketAddr = format!("{VPN_A}:{port}").parse().unwrap();
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok()
    })
}

fn count_dir(p: &Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn notify_order_and_firewall_reload_under_traffic() {
    if !ready("notify_order_and_firewall_reload_under_traffic") {
        return;
    }
    let rig = Rig::new();
    let na = rig.start_meshd();
    let log = || na.log();
    rig.expect("READY=1", &log);
    // READY only after the device carries its address.
    let addrs = rig.a.ip(&["-4", "addr", "show", "dev", &rig.dev_a]);
    assert!(addrs.contains("10.43.0.1/24"), "at READY: {addrs}");
    let nb = rig.start_nebula();
    assert!(
        ping_eventually(&rig.b, VPN_A),
        "no tunnel\n{}\n{}",
        na.log(),
        nb.log()
    );
    let listeners = rig
        .a
        .enter(|| [KEEP, NEW, OLD].map(|p| TcpListener::bind(("0.0.0.0", p)).expect("bind")));
    assert!(connects(&rig, OLD) && !connects(&rig, NEW), "initial rules");

    // A transfer on KEEP runs across the reload that swaps OLD for NEW.
    let data: Vec<u8> = (0..8u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want: [u8; 32] = Sha256::digest(&data).into();
    let keep = listeners[0].try_clone().unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let got = std::thread::scope(|s| {
        let server = s.spawn(move || {
            let (mut c, _) = keep.accept().expect("accept");
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match c.read(&mut buf).expect("read transfer") {
                    0 => break,
                    n => h.update(&buf[..n]),
                }
            }
            let out: [u8; 32] = h.finalize().into();
            out
        });
        let client = s.spawn(|| {
            rig.b.enter(|| {
                let addr: SocketAddr = format!("{VPN_A}:{KEEP}").parse().unwrap();
                let mut c =
                    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
                c.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                for (i, chunk) in data.chunks(64 << 10).enumerate() {
                    c.write_all(chunk).expect("write through the reload");
                    if i == 4 {
                        started_tx.send(()).unwrap();
                    }
                    // Paced so the transfer spans the reload (~2.5 s in all).
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        });
        started_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("transfer started");
        rig.write_a(&firewall(&[KEEP, NEW]), &rig.pki_a());
        let status = rig.reload(&na);
        assert!(status[0].contains("firewall"), "{status:?}");
        client.join().expect("client");
        server.join().expect("server")
    });
    assert_eq!(got, want, "content across the reload");
    assert!(connects(&rig, NEW), "newly allowed port\n{}", na.log());
    assert!(!connects(&rig, OLD), "newly denied port still open");

    // Bad reloads change nothing and say so.
    let good = std::fs::read_to_string(&rig.cfg_a).unwrap();
    let bad_rule = firewall(&[KEEP, NEW]).replace("proto: tcp", "proto: bogus");
    let missing = good.replace(
        rig.dir.path().join("a.crt").to_str().unwrap(),
        "/nonexistent/a.crt",
    );
    assert_ne!(missing, good);
    for (what, yaml) in [
        ("broken yaml", "pki: [unclosed\n".to_string()),
        ("bad rule", good.replace(&firewall(&[KEEP, NEW]), &bad_rule)),
        ("missing certificate", missing),
    ] {
        std::fs::write(&rig.cfg_a, &yaml).unwrap();
        let status = rig.reload(&na);
        assert!(status[0].contains("reload failed"), "{what}: {status:?}");
        assert!(ping_eventually(&rig.b, VPN_A), "{what}: traffic stopped");
        assert!(
            connects(&rig, NEW) && !connects(&rig, OLD),
            "{what}: rules changed"
        );
    }
    let fails = na.log().matches("reload failed").count();
    assert!(fails >= 3, "failures not logged:\n{}", na.log());
    assert!(
        na.log().contains("bogus"),
        "the bad rule is named:\n{}",
        na.log()
    );
    // A restart-only key is reported and left alone; the tunnel stays up.
    let mut moved = a_config(&rig.dev_a, Some(&firewall(&[KEEP, NEW])));
    moved.listen_port = 4343;
    moved.mtu = 1200;
    moved.write(rig.dir.path(), "a.yml", &rig.pki_a());
    let status = rig.reload(&na);
    assert!(
        status[0].contains("needs a restart, left unchanged")
            && status[0].contains("listen.host/port")
            && status[0].contains("tun"),
        "{status:?}"
    );
    let mtu = rig.a.ip(&["link", "show", "dev", &rig.dev_a]);
    assert!(mtu.contains("mtu 1300"), "device changed: {mtu}");
    assert!(
        ping_eventually(&rig.b, VPN_A),
        "tunnel after a restart-only change"
    );
    std::fs::write(&rig.cfg_a, &good).unwrap();
    drop(listeners);
    drop(nb);
}

#[test]
fn new_certificate_reloads_no_leaks_and_clean_stop() {
    if !ready("new_certificate_reloads_no_leaks_and_clean_stop") {
        return;
    }
    let rig = Rig::new();
    let mut na = rig.start_meshd();
    let log = || na.log();
    rig.expect("READY=1", &log);
    let nb = rig.start_nebula();
    assert!(
        ping_eventually(&rig.a, VPN_B),
        "no tunnel\n{}\n{}",
        na.log(),
        nb.log()
    );

    // New host certificate, same IP, new name and groups: nebula sees the new one.
    let v2 = rig.ca.sign("a-v2", "10.43.0.1/24", &["ops"]);
    rig.write_a(&firewall(&[KEEP, OLD]), &v2);
    let status = rig.reload(&na);
    assert!(status[0].contains("pki.cert"), "{status:?}");
    assert!(
        ping_eventually(&rig.a, VPN_B),
        "no tunnel after new cert\n{}",
        na.log()
    );
    let seen = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        nb.log().contains("a-v2")
    });
    assert!(seen, "nebula never saw the new certificate:\n{}", nb.log());

    // 100 reloads: fds and threads unchanged.
    let pid = na.pid();
    let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let task_dir = PathBuf::from(format!("/proc/{pid}/task"));
    let counts = || (count_dir(&fd_dir), count_dir(&task_dir));
    rig.reload(&na); // warm-up: anything opened lazily on the first reload
    std::thread::sleep(Duration::from_millis(200));
    let before = counts();
    for _ in 0..100 {
        rig.reload(&na);
    }
    // A notification socket may be open for an instant while a datagram goes out; a leak stays.
    let settled = wait_for(Duration::from_secs(2), Duration::from_millis(50), || {
        counts() == before
    });
    assert!(
        settled,
        "(fds, threads) {before:?} before, {:?} after 100 reloads",
        counts()
    );
    assert!(ping_eventually(&rig.a, VPN_B), "tunnel after 100 reloads");

    // SIGTERM: STOPPING, exit 0 within 5 s, device gone, nebula told.
    let started = Instant::now();
    signal(&na, libc::SIGTERM);
    rig.expect("STOPPING=1", &log);
    let status = loop {
        if let Some(s) = na.try_wait() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "still running\n{}",
            na.log()
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status}\n{}", na.log());
    assert!(!rig.a.has_link(&rig.dev_a), "tun device left behind");
    let closed = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        nb.log().contains("Close tunnel received")
    });
    assert!(closed, "nebula did not log the close:\n{}", nb.log());
}

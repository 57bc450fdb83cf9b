//! Reload never blocks traffic: a SIGHUP whose new `static_host_map` names a host the resolver
//! never answers for (a stub DNS server inside the test's namespace that takes every query and
//! replies to none; glibc gives up after 10 s) leaves an iperf3 transfer through another tunnel
//! running at full speed in every second, while the reload itself waits for the resolver.
//!
//! The stub listens on 127.0.0.1:53 of meshd's namespace; `ip netns exec` bind-mounts
//! /etc/netns/NAME/resolv.conf over /etc/resolv.conf for meshd only. Everything is removed on
//! drop.

mod common;

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NsProcess};

const VPN_A: &str = "10.44.0.1";
const VPN_B: &str = "10.44.0.2";
const SLOW_NAME: &str = "slow.meshd-test";

/// /etc/netns/NAME/resolv.conf for one namespace, removed on drop.
struct NsResolvConf {
    dir: PathBuf,
}

impl NsResolvConf {
    fn new(ns: &Netns, text: &str) -> NsResolvConf {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join("resolv.conf"), text).expect("write resolv.conf");
        NsResolvConf { dir }
    }
}

impl Drop for NsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A DNS server that reads queries and never answers, on a thread of its own.
struct HungDns {
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HungDns {
    fn start(ns: &Netns) -> HungDns {
        let sock = ns.enter(|| UdpSocket::bind("127.0.0.1:53").expect("bind stub DNS"));
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (queries, stop) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if sock.recv_from(&mut buf).is_ok() {
                    q.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        HungDns {
            queries,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for HungDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn a_config(dev: &str, slow: bool) -> NodeConfig {
    let mut c = NodeConfig::new(dev);
    c.punchy = false;
    c.static_host_map
        .push((VPN_B.into(), vec!["192.0.2.2:4242".into()]));
    if slow {
        c.static_host_map
            .push(("10.44.0.3".into(), vec![format!("{SLOW_NAME}:4242")]));
    }
    // Longer than the resolver's 10 s, so the reload really waits for it.
    c.extra = "static_map:\n  lookup_timeout: 15s\n".into();
    c
}

fn signal(p: &NsProcess, sig: i32) {
    // SAFETY: kill on a PID this test started and still owns.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

/// Bytes per one-second iperf3 interval, from its JSON report.
fn interval_bytes(json: &str) -> Vec<f64> {
    let start = json.find('{').expect("iperf3 printed JSON");
    // JSON is YAML; serde_yaml is already a dependency.
    let v: serde_yaml::Value = serde_yaml::from_str(&json[start..]).expect("iperf3 JSON");
    v["intervals"]
        .as_sequence()
        .expect("intervals")
        .iter()
        .map(|i| i["sum"]["bytes"].as_f64().unwrap_or(0.0))
        .collect()
}

#[test]
fn reload_with_hung_resolver_keeps_traffic_flowing() {
    let test = "reload_with_hung_resolver_keeps_traffic_flowing";
    if !(common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "iperf3"))
    {
        return;
    }
    let dir = common::tempdir();
    let a = Netns::new("mda");
    let b = Netns::new("mdb");
    veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
    let _resolv = NsResolvConf::new(&a, "nameserver 127.0.0.1\noptions timeout:10 attempts:1\n");
    let dns = HungDns::start(&a);
    let ca = NebulaCa::new(dir.path(), "reload dns ca");
    let (pki_a, pki_b) = (
        ca.sign("a", "10.44.0.1/24", &[]),
        ca.sign("b", "10.44.0.2/24", &[]),
    );
    let dev_a = common::unique_name("md");
    let cfg_a = a_config(&dev_a, false).write(dir.path(), "a.yml", &pki_a);
    let mut cb = NodeConfig::new(&common::unique_name("md"));
    cb.punchy = false;
    cb.static_host_map
        .push((VPN_A.into(), vec!["192.0.2.1:4242".into()]));
    let cfg_b = cb.write(dir.path(), "b.yml", &pki_b);

    let bin = common::meshd_bin().to_string_lossy().into_owned();
    let meshd = a.spawn(
        &[&bin, "-config", cfg_a.to_str().unwrap()],
        &dir.path().join("a.log"),
    );
    let _nebula = b.spawn(
        &["nebula", "-config", cfg_b.to_str().unwrap()],
        &dir.path().join("b.log"),
    );
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(200), || a
            .ping(VPN_B, 1)),
        "no tunnel\n{}",
        meshd.log()
    );
    let _server = b.spawn(
        &["iperf3", "-s", "-1", "-B", VPN_B],
        &dir.path().join("iperf-s.log"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let client_log = dir.path().join("iperf-c.log");
    let mut client = a.spawn(
        &["iperf3", "-c", VPN_B, "-t", "16", "-i", "1", "-J"],
        &client_log,
    );

    std::thread::sleep(Duration::from_secs(3));
    a_config(&dev_a, true).write(dir.path(), "a.yml", &pki_a);
    signal(&meshd, libc::SIGHUP);
    let hup = Instant::now();
    // The reload asks the stub, and is still waiting on it well after the ask.
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
            dns.queries.load(Ordering::Relaxed) > 0
        }),
        "meshd never asked the stub resolver (resolv.conf not in effect?)\n{}",
        meshd.log()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        !meshd.log().contains("reloaded ("),
        "the reload finished before the resolver gave up: the test does not exercise a hung resolver\n{}",
        meshd.log()
    );

    assert!(
        wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
            client.try_wait().is_some()
        }),
        "iperf3 did not finish"
    );
    let reloaded = wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        meshd.log().contains("reloaded (")
    });
    let waited = hup.elapsed();
    let log = meshd.log();
    assert!(reloaded, "the reload never completed\n{log}");
    assert!(
        log.contains(&format!("cannot resolve {SLOW_NAME}")),
        "the unanswered name was not reported\n{log}"
    );
    let json = std::fs::read_to_string(&client_log).unwrap();
    let bytes = interval_bytes(&json);
    assert!(bytes.len() >= 15, "{bytes:?}\n{json}");
    let mut sorted = bytes.clone();
    sorted.sort_by(|x, y| x.total_cmp(y));
    let median = sorted[sorted.len() / 2];
    eprintln!(
        "per-second bytes {:?} (median {median}); reload seen done {waited:?} after SIGHUP",
        bytes.iter().map(|b| *b as u64).collect::<Vec<_>>()
    );
    assert!(median > 0.0, "no traffic at all: {bytes:?}");
    // Every second of the transfer (the first, TCP's slow start, aside) moved at least a
    // quarter of the median: the ten seconds the reload waited on the resolver included.
    for (i, b) in bytes.iter().enumerate().skip(1) {
        assert!(
            *b >= median / 4.0,
            "second {i} moved {b} bytes against a median of {median}: traffic stalled during the reload: {bytes:?}"
        );
    }
}

//! `meshd status`, the control socket and the Prometheus exposition against a live meshd ↔
//! nebula 1.6.1 tunnel in network namespaces: byte counts after iperf3 transfers both ways,
//! close-tunnel followed by nebula's re-handshake, print-cert against `meshd cert print -json`,
//! the socket's permission layers and its answers to garbage while traffic keeps flowing, and a
//! real Prometheus server scraping meshd under Nebula's metric names.
//!
//! All traffic stays inside the namespaces the test creates; processes are stopped by PID and
//! namespaces deleted by Drop guards, also on failure.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NodePki, NsProcess};
use serde_json::Value;

const VPN_A: &str = "10.42.0.1";
const VPN_B: &str = "10.42.0.2";
const METRICS_PORT: u16 = 9464;
const PROM_PORT: u16 = 9090;

fn ready(test: &str) -> bool {
    common::require_root(test)
        && common::require_tool(test, "nebula")
        && common::require_tool(test, "nebula-cert")
        && common::require_tool(test, "ping")
        && common::require_tool(test, "iperf3")
}

/// meshd in `a` (192.0.2.1, VPN .1) and nebula in `b` (192.0.2.2, VPN .2) on a veth. The
/// control socket lives in `<dir>/pub/ctl/` where `<dir>/pub` is world-traversable, so the
/// permission test sees the socket's own protections and not the temp dir's.
struct Pair {
    a: Netns,
    b: Netns,
    dir: tempfile::TempDir,
    dev_a: String,
    dev_b: String,
    cfg_a: PathBuf,
    cfg_b: PathBuf,
    pki_a: NodePki,
    socket: PathBuf,
}

impl Pair {
    /// `firewall_a`: raw `firewall:` YAML for meshd (`None` allows everything); `extra_a`:
    /// more top-level YAML for meshd.
    fn new(firewall_a: Option<&str>, extra_a: &str) -> Pair {
        let dir = common::tempdir();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let public = dir.path().join("pub");
        std::fs::create_dir(&public).unwrap();
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = public.join("ctl").join("a.sock");
        let a = Netns::new("msa");
        let b = Netns::new("msb");
        veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
        let ca = NebulaCa::new(dir.path(), "status test ca");
        let (dev_a, dev_b) = (common::unique_name("ms"), common::unique_name("ms"));
        let pki_a = ca.sign("a", "10.42.0.1/24", &["ops"]);
        let pki_b = ca.sign("b", "10.42.0.2/24", &[]);
        let mut ca_cfg = NodeConfig::new(&dev_a);
        ca_cfg.punchy = false;
        ca_cfg.firewall = firewall_a.map(str::to_string);
        ca_cfg
            .static_host_map
            .push((VPN_B.into(), vec!["192.0.2.2:4242".into()]));
        ca_cfg.extra = format!("control:\n  socket: {}\n{extra_a}", socket.display());
        let cfg_a = ca_cfg.write(dir.path(), "a.yml", &pki_a);
        let mut cb = NodeConfig::new(&dev_b);
        cb.punchy = false;
        cb.static_host_map
            .push((VPN_A.into(), vec!["192.0.2.1:4242".into()]));
        let cfg_b = cb.write(dir.path(), "b.yml", &pki_b);
        Pair {
            a,
            b,
            dir,
            dev_a,
            dev_b,
            cfg_a,
            cfg_b,
            pki_a,
            socket,
        }
    }

    fn start(&self) -> (NsProcess, NsProcess) {
        let meshd = common::meshd_bin().to_string_lossy().into_owned();
        let na = start(
            &self.a,
            &meshd,
            &self.cfg_a,
            &self.dev_a,
            &self.log("a.log"),
        );
        let nb = start(
            &self.b,
            "nebula",
            &self.cfg_b,
            &self.dev_b,
            &self.log("b.log"),
        );
        assert!(
            wait_for(Duration::from_secs(5), Duration::from_millis(20), || self
                .socket
                .exists()),
            "no control socket at {}",
            self.socket.display()
        );
        (na, nb)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `meshd <cmd> <args> --json -socket S`, parsed; panics on failure.
    fn ctl(&self, args: &[&str]) -> Value {
        let out = self.ctl_raw(args, true);
        assert!(
            out.status.success(),
            "meshd {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("meshd {args:?}: not JSON ({e}): {:?}", out.stdout))
    }

    fn ctl_raw(&self, args: &[&str], json: bool) -> std::process::Output {
        let mut cmd = Command::new(common::meshd_bin());
        cmd.args(args).arg("-socket").arg(&self.socket);
        if json {
            cmd.arg("--json");
        }
        cmd.output().expect("run meshd client")
    }
}

fn start(ns: &Netns, bin: &str, config: &Path, dev: &str, log: &Path) -> NsProcess {
    let mut p = ns.spawn(&[bin, "-config", config.to_str().expect("utf-8")], log);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        ns.has_link(dev)
    });
    assert!(
        up && p.is_running(),
        "{bin} did not bring up {dev}:\n{}",
        p.log()
    );
    p
}

fn ping_eventually(ns: &Netns, dest: &str, tries: u32) -> bool {
    (0..tries).any(|_| ns.ping(dest, 1))
}

fn tunnel_to<'v>(status: &'v Value, vpn_ip: &str) -> Option<&'v Value> {
    status["tunnels"]
        .as_array()?
        .iter()
        .find(|t| t["vpn_ip"] == vpn_ip)
}

/// Runs a 4 s iperf3 client in `from` against the server at `VPN_B`; returns the bytes the
/// receiving side got and the bytes the sending side wrote (`end.sum_received`, `end.sum_sent`),
/// reverse mode included. What crossed the tunnel lies between the two: when iperf3 stops its
/// clock, data still in the socket buffers has been written but not yet read.
fn iperf(from: &Netns, reverse: bool) -> (u64, u64, u64) {
    let mut args = vec![
        "iperf3",
        "-c",
        VPN_B,
        "-t",
        "4",
        "-J",
        "--connect-timeout",
        "5000",
    ];
    if reverse {
        args.push("-R");
    }
    let out = from.exec(&args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "iperf3 output is not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "iperf3 failed: {v}");
    let bytes = |k: &str| v["end"][k]["bytes"].as_u64().expect("iperf3 end bytes");
    // TCP retransmissions cross the tunnel again without iperf3 writing them again: on a busy
    // host nebula's receiving socket overflows and the sender retransmits thousands of segments.
    let retransmits = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    (bytes("sum_received"), bytes("sum_sent"), retransmits)
}

/// No TCP segment through the tunnel carries more payload than the tunnel MTU allows.
const MAX_SEGMENT_PAYLOAD: u64 = 1300;

/// The tunnel counts plaintext (inner IP) bytes: each packet carries 52 bytes of IP and TCP
/// headers (with timestamps) besides iperf3's payload. Without them the count must lie between
/// what iperf3's receiver read and what its sender wrote, give or take 1 % (iperf3's control
/// connection and our pings cross the tunnel too), plus at most one segment per TCP
/// retransmission iperf3 reports.
fn assert_close(
    what: &str,
    bytes: u64,
    packets: u64,
    (received, sent, retransmits): (u64, u64, u64),
) {
    let payload = bytes.saturating_sub(52 * packets);
    eprintln!("{what}: {bytes} bytes, {packets} packets, ~{payload} payload; iperf3 {received} received of {sent} sent, {retransmits} retransmits");
    let resent = retransmits * MAX_SEGMENT_PAYLOAD;
    let (lo, hi) = (received as f64 * 0.99, (sent + resent) as f64 * 1.01);
    assert!(
        (lo..hi).contains(&(payload as f64)),
        "{what}: {bytes} bytes in {packets} packets (~{payload} payload), iperf3 moved \
         {received} (read) to {sent} (written) with {retransmits} retransmits"
    );
}

#[test]
fn status_counts_iperf_and_close_tunnel_rehandshakes() {
    if !ready("status_counts_iperf_and_close_tunnel_rehandshakes") {
        return;
    }
    let pair = Pair::new(None, "");
    let (na, nb) = pair.start();
    let logs = || format!("--- meshd:\n{}\n--- nebula:\n{}", na.log(), nb.log());
    assert!(ping_eventually(&pair.a, VPN_B, 10), "no tunnel\n{}", logs());
    let _server = pair.b.spawn(
        &["iperf3", "-s", "-B", VPN_B],
        &pair.log("iperf-server.log"),
    );
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
            pair.b.exec(&["ss", "-ltn", "sport = :5201"]).stdout.len() > 60
        }),
        "iperf3 server did not listen"
    );
    let before = pair.ctl(&["status"]);
    let t0 = tunnel_to(&before, VPN_B)
        .expect("tunnel before the transfer")
        .clone();
    let sent = iperf(&pair.a, false);
    let received = iperf(&pair.a, true);
    let after = pair.ctl(&["status"]);
    let t = tunnel_to(&after, VPN_B).unwrap_or_else(|| panic!("no tunnel in {after}"));
    assert_eq!(t["name"], "b", "{t}");
    assert_eq!(t["remote"], "192.0.2.2:4242", "{t}");
    assert_eq!(t["relay"], Value::Null);
    assert_eq!(t["cipher"], "aes");
    assert_eq!(
        t["local_index"], t0["local_index"],
        "the same tunnel throughout"
    );
    let delta = |k: &str| t[k].as_u64().unwrap() - t0[k].as_u64().unwrap();
    // Forward mode: our tx carries the data, our rx its ACKs; reverse mode the other way round.
    // The ACK-only packets are all header, so they drop out of the payload estimate.
    assert_close("tx", delta("tx_bytes"), delta("tx_packets"), sent);
    assert_close("rx", delta("rx_bytes"), delta("rx_packets"), received);
    assert!(t["last_rx_secs"].as_f64().unwrap() < 5.0, "{t}");
    assert_eq!(after["name"], "a");
    assert_eq!(after["vpn_ip"], VPN_A);
    assert_eq!(after["groups"], serde_json::json!(["ops"]));
    assert_eq!(
        after["cert"]["expiring_soon"], true,
        "a 2 h CA is within 30 days"
    );
    assert!(
        na.log()
            .contains("certificate expiry: host certificate \"a\" expires in 1h")
            && na
                .log()
                .contains("certificate expiry: CA \"status test ca\" expires in"),
        "no start-up expiry warning\n{}",
        na.log()
    );

    // The text form names the peer, its path and the transfer.
    let text = pair.ctl_raw(&["status"], false);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("peer 10.42.0.2 (b)") && text.contains("path: 192.0.2.2:4242"),
        "{text}"
    );

    // print-cert is `meshd cert print -json` of our certificate.
    let printed = pair.ctl_raw(&["print-cert"], true);
    let want = Command::new(common::meshd_bin())
        .args(["cert", "print", "-json", "-path"])
        .arg(&pair.pki_a.crt)
        .output()
        .unwrap();
    assert!(want.status.success());
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        String::from_utf8_lossy(&want.stdout).trim()
    );
    let peer = pair.ctl(&["print-cert", VPN_B]);
    assert_eq!(peer["details"]["name"], "b");

    // close-tunnel: gone at once; nebula re-handshakes when it next has traffic for us.
    let closed = pair.ctl(&["close-tunnel", VPN_B]);
    assert_eq!(closed["closed"], VPN_B);
    assert!(tunnel_to(&pair.ctl(&["status"]), VPN_B).is_none());
    let again = pair.ctl_raw(&["close-tunnel", VPN_B], true);
    assert!(!again.status.success(), "closing a closed tunnel must fail");
    assert!(
        ping_eventually(&pair.b, VPN_A, 10),
        "no new tunnel\n{}",
        logs()
    );
    let status = pair.ctl(&["status"]);
    let t2 = tunnel_to(&status, VPN_B).unwrap_or_else(|| panic!("no tunnel in {status}"));
    assert_eq!(
        t2["initiator"], false,
        "nebula initiated the new tunnel: {t2}"
    );
    assert_ne!(t2["local_index"], t0["local_index"]);
    assert!(
        nb.log().contains("Close tunnel received"),
        "nebula did not see closeTunnel\n{}",
        nb.log()
    );

    // create-tunnel on an existing tunnel is refused; list-hostmap agrees with status.
    assert!(!pair
        .ctl_raw(&["create-tunnel", VPN_B], true)
        .status
        .success());
    let hostmap = pair.ctl(&["list-hostmap"]);
    assert_eq!(hostmap.as_array().map(Vec::len), Some(1), "{hostmap}");
}

/// Sends raw bytes on a fresh connection, optionally half-closes, and reads one reply line.
fn raw_request(socket: &Path, bytes: &[u8], half_close: bool) -> Value {
    let mut s = UnixStream::connect(socket).expect("connect control socket");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).expect("write request");
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    read_line(&mut s)
}

fn read_line(s: &mut UnixStream) -> Value {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while s.read(&mut b).map(|n| n == 1).unwrap_or(false) && b[0] != b'\n' {
        line.push(b[0]);
    }
    serde_json::from_slice(&line).unwrap_or_else(|e| {
        panic!(
            "reply is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&line)
        )
    })
}

fn error_of(v: &Value) -> String {
    assert_eq!(v["ok"], false, "expected an error reply: {v}");
    v["error"].as_str().unwrap_or_default().to_string()
}

/// Runs a small Python client as `nobody`; returns the reply it read or `oserror <errno>` when
/// it could not connect. A refused client may see EPIPE on its write: the daemon answers and
/// hangs up at once, and the answer is still there to read.
fn as_nobody(socket: &Path) -> String {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect({:?})\n\
         except OSError as e:\n    print('oserror', e.errno)\n    raise SystemExit\ntry:\n    \
         s.sendall(b'{{\"cmd\":\"status\"}}\\n')\nexcept OSError:\n    pass\n\
         print(s.recv(4096).decode())\n",
        socket.to_str().unwrap()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            // Not a PATH lookup: a per-user python shim would not be nobody's to run.
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn control_socket_refuses_other_users_and_bad_requests_while_forwarding() {
    if !ready("control_socket_refuses_other_users_and_bad_requests_while_forwarding")
        || !common::require_tool("control_socket", "setpriv")
        || !common::require_tool("control_socket", "/usr/bin/python3")
    {
        return;
    }
    let pair = Pair::new(None, "");
    let (mut na, nb) = pair.start();
    let logs = || format!("--- meshd:\n{}\n--- nebula:\n{}", na.log(), nb.log());
    assert!(ping_eventually(&pair.b, VPN_A, 10), "no tunnel\n{}", logs());

    // Modes as documented: directory 0700, socket 0600, both root's (the daemon's user).
    let dir = pair.socket.parent().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir), 0o700);
    assert_eq!(mode(&pair.socket), 0o600);
    // Another user is stopped by the directory, then by the socket's mode, then, with both
    // opened up, by the daemon's own peer-credential check.
    assert_eq!(as_nobody(&pair.socket), "oserror 13", "directory 0700");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(as_nobody(&pair.socket), "oserror 13", "socket 0600");
    std::fs::set_permissions(&pair.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let refused = as_nobody(&pair.socket);
    assert!(
        refused.contains("permission denied") && refused.contains("\"ok\":false"),
        "peer-credential check: {refused}"
    );

    // Traffic while bad requests arrive: 400 echoes over 8 s from the nebula side.
    let ping = pair.b.spawn(
        &[
            "ping", "-n", "-q", "-c", "400", "-i", "0.02", "-W", "1", VPN_A,
        ],
        &pair.log("ping.log"),
    );
    let garbage = raw_request(&pair.socket, b"this is not json\n", false);
    assert!(error_of(&garbage).contains("malformed"), "{garbage}");
    // A bad line does not end the connection: the next request on it is answered.
    let mut s = UnixStream::connect(&pair.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"{\"cmd\":\"no-such-command\"}\n").unwrap();
    assert!(error_of(&read_line(&mut s)).contains("unknown command"));
    s.write_all(b"\xff\xfe{\n").unwrap();
    assert!(error_of(&read_line(&mut s)).contains("malformed"));
    s.write_all(b"{\"cmd\":\"print-tunnel\",\"args\":[\"not-an-ip\"]}\n")
        .unwrap();
    assert!(error_of(&read_line(&mut s)).contains("not an IPv4"));
    s.write_all(b"{\"cmd\":\"status\"}\n").unwrap();
    let ok = read_line(&mut s);
    assert_eq!(ok["ok"], true, "{ok}");
    let long = vec![b'x'; 200 * 1024];
    let over = raw_request(&pair.socket, &long, false);
    assert!(error_of(&over).contains("longer than"), "{over}");
    let half = raw_request(&pair.socket, b"{\"cmd\":\"sta", true);
    assert!(error_of(&half).contains("incomplete"), "{half}");
    // A client that stops mid-line is answered after the read timeout, not waited on forever.
    let started = std::time::Instant::now();
    let stalled = raw_request(&pair.socket, b"{\"cmd\":", false);
    assert!(error_of(&stalled).contains("no newline"), "{stalled}");
    assert!(started.elapsed() < Duration::from_secs(9));

    let mut ping = ping;
    assert!(
        wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
            !ping.is_running()
        }),
        "ping did not finish"
    );
    let summary = ping.log();
    let received: u32 = summary
        .split(',')
        .find_map(|p| p.trim().strip_suffix(" received")?.parse().ok())
        .unwrap_or_else(|| panic!("no ping summary: {summary}"));
    assert!(
        received >= 396,
        "lost echoes during bad requests: {summary}"
    );
    let alive = na.is_running();
    assert!(alive, "meshd died\n{}\n{}", na.log(), nb.log());

    // close-tunnel then create-tunnel: meshd itself handshakes again.
    pair.ctl(&["close-tunnel", VPN_B]);
    let created = pair.ctl(&["create-tunnel", VPN_B]);
    assert_eq!(created["handshaking"], VPN_B);
    let back = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let s = pair.ctl(&["status"]);
        tunnel_to(&s, VPN_B).is_some_and(|t| t["initiator"] == true)
    });
    assert!(
        back,
        "create-tunnel did not bring the tunnel back\n{}",
        na.log()
    );
    let outside = pair.ctl_raw(&["create-tunnel", "192.168.7.7"], true);
    assert!(
        !outside.status.success(),
        "a tunnel outside the VPN network was accepted"
    );

    // `reload` over the socket: a new control.socket is restart-only (reported, old socket
    // kept); a broken config is refused with the reason and changes nothing.
    let yaml = std::fs::read_to_string(&pair.cfg_a).unwrap();
    let moved = yaml.replace("ctl/a.sock", "ctl/elsewhere.sock");
    assert_ne!(moved, yaml);
    std::fs::write(&pair.cfg_a, moved).unwrap();
    let r = pair.ctl(&["reload"]);
    let line = r["reloaded"].as_str().unwrap_or_default();
    assert!(
        line.contains("needs a restart, left unchanged: control.socket"),
        "{r}"
    );
    assert!(pair.socket.exists(), "the running socket stays where it is");
    std::fs::write(&pair.cfg_a, format!("{yaml}\nlisten: {{port: 70000}}\n")).unwrap();
    let bad = pair.ctl_raw(&["reload"], true);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("reload failed"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(tunnel_to(&pair.ctl(&["status"]), VPN_B).is_some());
}

/// `promtool check metrics` may only complain about names Nebula itself exports that way.
fn check_lint(exposition: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("camelCase") && !l.contains("_count\" suffix"))
        .collect();
    assert!(problems.is_empty(), "promtool: {problems:?}");
    for name in ["hostmap_main_relayIndexes", "firewall_conntrack_count"] {
        assert!(
            text.contains(name),
            "expected Nebula's own lint for {name}: {text}"
        );
    }
}

/// Instant-queries Prometheus's HTTP API from inside `ns`; returns the first sample's value.
fn prom_query(ns: &Netns, query: &str) -> Option<f64> {
    let url = format!("http://192.0.2.1:{PROM_PORT}/api/v1/query");
    let out = ns.exec(&[
        "curl",
        "-sf",
        "--max-time",
        "3",
        "--data-urlencode",
        &format!("query={query}"),
        &url,
    ]);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_scrapes_meshd_under_nebula_names() {
    if !ready("prometheus_scrapes_meshd_under_nebula_names")
        || !common::require_tool("prometheus", "prometheus")
        || !common::require_tool("prometheus", "promtool")
        || !common::require_tool("prometheus", "curl")
    {
        return;
    }
    let stats = format!(
        "stats:\n  type: prometheus\n  listen: 192.0.2.1:{METRICS_PORT}\n  path: /metrics\n  \
         namespace: prometheusns\n  subsystem: nebula\n  interval: 1s\n  message_metrics: true\n  \
         lighthouse_metrics: true\n"
    );
    let firewall =
        "  outbound:\n    - port: any\n      proto: any\n      host: any\n  inbound:\n    \
                    - port: any\n      proto: icmp\n      host: any\n";
    let pair = Pair::new(Some(firewall), &stats);
    let (na, nb) = pair.start();
    let logs = || format!("--- meshd:\n{}\n--- nebula:\n{}", na.log(), nb.log());
    assert!(ping_eventually(&pair.a, VPN_B, 10), "no tunnel\n{}", logs());
    assert!(pair.b.ping(VPN_A, 3));
    // Three UDP packets the inbound rules (icmp only) refuse.
    for _ in 0..3 {
        pair.b
            .run(&["bash", "-c", "echo x > /dev/udp/10.42.0.1/9999"]);
    }

    let url = format!("http://192.0.2.1:{METRICS_PORT}/metrics");
    let expo = pair.a.run(&["curl", "-sf", "--max-time", "5", &url]);
    check_lint(&expo);
    let notfound = pair
        .a
        .exec(&["curl", "-sf", "--max-time", "5", &format!("{url}x")]);
    assert!(!notfound.status.success(), "only stats.path is served");

    let prom_dir = pair.dir.path().join("prometheus");
    std::fs::create_dir(&prom_dir).unwrap();
    let prom_cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - \
             job_name: meshd\n    static_configs:\n      - targets: ['192.0.2.1:{METRICS_PORT}']\n"
        ),
    )
    .unwrap();
    let prom = pair.a.spawn(
        &[
            "prometheus",
            &format!("--config.file={}", prom_cfg.display()),
            &format!("--storage.tsdb.path={}", prom_dir.join("data").display()),
            &format!("--web.listen-address=192.0.2.1:{PROM_PORT}"),
        ],
        &pair.log("prometheus.log"),
    );
    let hosts = "prometheusns_nebula_hostmap_main_hosts";
    let up = wait_for(Duration::from_secs(40), Duration::from_millis(500), || {
        prom_query(&pair.a, hosts) == Some(1.0)
    });
    assert!(up, "Prometheus never saw {hosts} = 1\n{}", prom.log());
    let q =
        |query: &str| prom_query(&pair.a, query).unwrap_or_else(|| panic!("no series for {query}"));
    assert_eq!(q("prometheusns_nebula_hostmap_pending_hosts"), 0.0);
    assert!(q("prometheusns_nebula_handshake_manager_initiated") >= 1.0);
    assert!(q("prometheusns_nebula_messages_tx_handshake_ixpsk0") >= 1.0);
    assert!(q("prometheusns_nebula_messages_rx_handshake_ixpsk0") >= 1.0);
    assert_eq!(
        q("prometheusns_nebula_firewall_incoming_dropped_no_rule"),
        3.0
    );
    assert_eq!(
        q("prometheusns_nebula_firewall_outgoing_dropped_no_rule"),
        0.0
    );
    assert!(q("prometheusns_nebula_firewall_conntrack_count") >= 1.0);
    assert_eq!(q("prometheusns_nebula_messages_rx_recv_error"), 0.0);
    assert!(q("prometheusns_nebula_hostinfo_cached_packets_sent") >= 1.0);
    assert_eq!(q("prometheusns_nebula_lighthouse_rx_HostQuery"), 0.0);
    assert_eq!(q("prometheusns_nebula_network_packets_lost"), 0.0);
    let tx = q("prometheusns_nebula_meshd_tunnel_tx_bytes_total{vpn_ip=\"10.42.0.2\",name=\"b\"}");
    assert!(tx > 0.0, "tunnel bytes: {tx}");
    assert_eq!(
        q("prometheusns_nebula_meshd_firewall_dropped_total{direction=\"inbound\",reason=\"no_rule\"}"),
        3.0
    );
    assert_eq!(
        q("prometheusns_nebula_meshd_reloads_total{outcome=\"failed\"}"),
        0.0
    );
}

//! The unit's `SystemCallFilter=` against what meshd really calls: two meshd nodes (a lighthouse
//! and a host) run under `strace -f` in throw-away namespaces through a handshake, pings, a
//! SIGHUP reload and a SIGTERM stop, plus a `-test` run; every syscall they made must be in the
//! set `systemd/meshd.service` allows (its allow list minus its `~` deny lists, expanded with
//! `systemd-analyze syscall-filter`). A syscall outside it would fail with EPERM under systemd.
//!
//! All traffic stays inside the namespaces the test creates; namespaces and processes are
//! removed by Drop guards, also on failure.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::netns::{veth, wait_for, NebulaCa, Netns, NodeConfig, NsProcess};

const UNIT: &str = include_str!("../systemd/meshd.service");

/// The syscalls in a `systemd-analyze syscall-filter` set, groups expanded.
fn expand(set: &str) -> BTreeSet<String> {
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", set])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(out.status.success(), "systemd-analyze syscall-filter {set}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut calls = BTreeSet::new();
    for line in text.lines().skip(1) {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with('@') {
            calls.extend(expand(t));
        } else {
            calls.insert(t.to_string());
        }
    }
    calls
}

/// What `SystemCallFilter=` lines allow: the allow lists' union minus the `~` lists' union.
fn allowed_by(unit: &str) -> BTreeSet<String> {
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    for value in unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
    {
        let (list, target) = match value.strip_prefix('~') {
            Some(rest) => (rest, &mut deny),
            None => (value, &mut allow),
        };
        for set in list.split_whitespace() {
            target.extend(expand(set));
        }
    }
    assert!(
        !allow.is_empty(),
        "the unit has no SystemCallFilter allow list"
    );
    allow.difference(&deny).cloned().collect()
}

/// Syscall names in an `strace -f` log (`PID name(...`).
fn traced(path: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|l| {
            let rest = l.split_once(' ')?.1.trim_start();
            let name = &rest[..rest.find('(')?];
            (!name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
            .then(|| name.to_string())
        })
        .collect()
}

/// The PID of the (only) child of `pid`: meshd under its strace.
fn child_of(pid: u32) -> Option<libc::pid_t> {
    let children = fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

fn signal(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill on the PID of a meshd this test started (a child of its own strace).
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

#[test]
fn every_syscall_meshd_makes_is_allowed_by_the_unit() {
    let test = "every_syscall_meshd_makes_is_allowed_by_the_unit";
    let tools = ["strace", "systemd-analyze", "nebula-cert", "ping"];
    if !common::require_root(test) || !tools.iter().all(|t| common::require_tool(test, t)) {
        return;
    }
    let allowed = allowed_by(UNIT);
    let dir = common::tempdir();
    let a = Netns::new("msa");
    let b = Netns::new("msb");
    veth(&a, Some("192.0.2.1/24"), &b, Some("192.0.2.2/24"));
    let ca = NebulaCa::new(dir.path(), "syscall test ca");
    let (dev_a, dev_b) = (common::unique_name("ms"), common::unique_name("ms"));
    let mut lighthouse = NodeConfig::new(&dev_a);
    lighthouse.am_lighthouse = true;
    let cfg_a = lighthouse.write(dir.path(), "a.yml", &ca.sign("a", "10.43.0.1/24", &[]));
    let mut host = NodeConfig::new(&dev_b);
    host.static_host_map
        .push(("10.43.0.1".into(), vec!["192.0.2.1:4242".into()]));
    host.lighthouses.push("10.43.0.1".into());
    let cfg_b = host.write(dir.path(), "b.yml", &ca.sign("b", "10.43.0.2/24", &[]));
    let meshd = common::meshd_bin();
    let meshd = meshd.to_str().unwrap();
    let trace = |n: &str| dir.path().join(format!("trace.{n}"));
    let strace = |ns: &Netns, n: &str, cfg: &Path| -> NsProcess {
        let out = trace(n);
        ns.spawn(
            &[
                "strace",
                "-f",
                "-qq",
                "-o",
                out.to_str().unwrap(),
                meshd,
                "-config",
                cfg.to_str().unwrap(),
            ],
            &dir.path().join(format!("{n}.log")),
        )
    };
    let check = b.exec(&[
        "strace",
        "-f",
        "-qq",
        "-o",
        trace("test").to_str().unwrap(),
        meshd,
        "-config",
        cfg_b.to_str().unwrap(),
        "-test",
    ]);
    assert!(check.status.success(), "-test: {check:?}");
    let mut pa = strace(&a, "a", &cfg_a);
    let mut pb = strace(&b, "b", &cfg_b);
    let up = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        a.has_link(&dev_a) && b.has_link(&dev_b)
    });
    assert!(up, "devices not up:\n{}\n{}", pa.log(), pb.log());
    assert!(
        b.ping("10.43.0.1", 3),
        "no tunnel:\n{}\n{}",
        pa.log(),
        pb.log()
    );
    let (ma, mb) = (
        child_of(pa.pid()).expect("meshd a"),
        child_of(pb.pid()).expect("meshd b"),
    );
    signal(mb, libc::SIGHUP);
    let reloaded = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        pb.log().contains("reload")
    });
    assert!(reloaded, "no reload logged:\n{}", pb.log());
    assert!(
        b.ping("10.43.0.1", 2),
        "no tunnel after reload:\n{}",
        pb.log()
    );
    signal(mb, libc::SIGTERM);
    signal(ma, libc::SIGTERM);
    let stopped = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        !pa.is_running() && !pb.is_running()
    });
    assert!(stopped, "meshd did not stop:\n{}\n{}", pa.log(), pb.log());

    let mut used = BTreeSet::new();
    for n in ["a", "b", "test"] {
        used.extend(traced(&trace(n)));
    }
    // The trace saw the data path, so an empty comparison cannot pass by accident.
    for must in ["ioctl", "sendmmsg", "recvmmsg", "epoll_wait"] {
        assert!(used.contains(must), "strace did not see {must}: {used:?}");
    }
    let outside: Vec<_> = used.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "meshd calls {outside:?}, which systemd/meshd.service's SystemCallFilter= refuses (EPERM)"
    );
    // And the comparison bites: without @network-io the same run would be refused.
    let narrower = allowed_by(&UNIT.replace(
        "SystemCallFilter=~@privileged @resources",
        "SystemCallFilter=~@privileged @resources @network-io",
    ));
    assert!(used.difference(&narrower).any(|s| s == "sendmmsg"));
}

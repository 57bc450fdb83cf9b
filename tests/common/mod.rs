//! Helpers shared by integration tests: locating the meshd and nebula binaries, deciding whether
//! a privileged test can run, and unique names for per-run resources.
#![allow(dead_code)]

pub mod nebula;
pub mod netns;
pub mod peer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

/// Path of the meshd binary built for this test run.
pub fn meshd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshd"))
}

/// True when running under CI, where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| !v.is_empty() && v != "false" && v != "0")
        .unwrap_or(false)
}

/// Returns true if `tool` is on PATH. When it is not: under CI the test fails, elsewhere the test
/// prints why it cannot run and the caller returns early.
pub fn require_tool(test: &str, tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        skip_or_fail(
            test,
            &format!("{tool} is not installed (bash .ci/deps installs it)"),
        );
    }
    found
}

/// Returns true if the test runs as root with /dev/net/tun; otherwise fails under CI or prints why
/// it cannot run.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        skip_or_fail(test, "needs root (network namespaces, TUN devices)");
        return false;
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        skip_or_fail(test, "needs /dev/net/tun");
        return false;
    }
    true
}

fn skip_or_fail(test: &str, why: &str) {
    if in_ci() {
        panic!("{test}: cannot run under CI: {why}");
    }
    eprintln!("SKIPPED {test}: {why}");
}

/// A short name unique to this test process and call, usable for namespaces and links
/// (at most 15 characters for interface names).
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid:05}{n:02}")
}

/// A fresh temporary directory removed when dropped.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

//! The Debian package (`bash .ci/deb`, i.e. `cargo deb`) unpacked into a throwaway root: the
//! files, modes, conffiles, control fields and maintainer scripts are what a Debian admin
//! expects, the units and config are the repository's, the packaged binary runs, its
//! `/etc/meshd/config.yaml` reports exactly the missing certificates under `-test` (and nothing
//! once they exist), and `systemd-analyze verify` accepts the installed units.
//!
//! Most checks read the package unpacked with `dpkg-deb -x`/`-e`, which runs nothing. One test
//! also installs, upgrades, removes and purges it with dpkg into a throwaway root with its own
//! admin dir (`dpkg --root=T --admindir=T/var/lib/dpkg --log=...`). dpkg would chroot the
//! maintainer scripts into T, where there is no shell, so they run with
//! `--force-script-chrootless` and DPKG_ROOT=T: the real deb-systemd-helper honours DPKG_ROOT
//! (symlinks and state inside T), and `systemctl`/`deb-systemd-invoke` are stubs placed first on
//! PATH that only record their arguments, so the host's systemd is never asked to do anything.
//! The temp dir goes when the test ends, pass or fail; the host's dpkg status for meshd and its
//! unit symlinks are checked unchanged.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// The package `.ci/deb` builds: `$MESHD_DEB`, else `target/debian/meshd_<version>-1_*.deb`.
fn find_deb(test: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var("MESHD_DEB") {
        return Some(PathBuf::from(p));
    }
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| format!("{REPO}/target"));
    let prefix = format!("meshd_{VERSION}-1_");
    let found = fs::read_dir(Path::new(&target).join("debian"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
        });
    if found.is_none() {
        let why = format!("no {target}/debian/{prefix}*.deb: build it with bash .ci/deb");
        assert!(!common::in_ci(), "{test}: cannot run under CI: {why}");
        eprintln!("SKIPPED {test}: {why}");
    }
    found
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The unpacked package: `root` holds the files, `control` the control archive.
struct Unpacked {
    _dir: tempfile::TempDir,
    root: PathBuf,
    control: PathBuf,
}

fn unpack(deb: &Path) -> Unpacked {
    let dir = common::tempdir();
    let (root, control) = (dir.path().join("root"), dir.path().join("control"));
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control));
    Unpacked {
        _dir: dir,
        root,
        control,
    }
}

impl Unpacked {
    fn file(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.file(path)).unwrap_or_else(|e| panic!("package lacks {path}: {e}"))
    }

    fn control_file(&self, name: &str) -> String {
        fs::read_to_string(self.control.join(name)).unwrap_or_else(|e| panic!("no {name}: {e}"))
    }

    fn meshd(&self, args: &[&str]) -> Output {
        Command::new(self.file("/usr/bin/meshd"))
            .args(args)
            .output()
            .expect("run the packaged meshd")
    }
}

fn repo_file(path: &str) -> String {
    fs::read_to_string(Path::new(REPO).join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn gunzip(path: &Path) -> String {
    text(&run(Command::new("gzip").arg("-dc").arg(path)))
}

#[test]
fn package_contents_as_dpkg_deb_lists_them() {
    let test = "package_contents_as_dpkg_deb_lists_them";
    if !common::require_tool(test, "dpkg-deb") {
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let listing = text(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)));
    // path → (mode, owner) as `dpkg-deb -c` shows them.
    let entry = |path: &str| -> (String, String) {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("dpkg-deb -c lacks {path}:\n{listing}"));
        let mut cols = line.split_whitespace();
        (
            cols.next().unwrap().to_string(),
            cols.next().unwrap().to_string(),
        )
    };
    assert_eq!(entry("/usr/bin/meshd"), ("-rwxr-xr-x".into(), "0/0".into()));
    for path in [
        "/usr/lib/systemd/system/meshd.service",
        "/usr/lib/systemd/system/meshd@.service",
        "/etc/meshd/config.yaml",
        "/usr/share/man/man8/meshd.8.gz",
        "/usr/share/doc/meshd/README.md",
        "/usr/share/doc/meshd/copyright",
        "/usr/share/doc/meshd/changelog.Debian.gz",
        "/usr/share/doc/meshd/examples/config.yaml",
        "/usr/share/doc/meshd/examples/host.yaml",
        "/usr/share/doc/meshd/examples/lighthouse.yaml",
        "/usr/share/lintian/overrides/meshd",
    ] {
        assert_eq!(entry(path), ("-rw-r--r--".into(), "0/0".into()), "{path}");
    }
    assert_eq!(entry("/etc/meshd/").0, "drwxr-xr-x");
    // Nothing under /usr/local, no key or certificate shipped.
    for line in listing.lines() {
        assert!(!line.contains("./usr/local"), "{line}");
        assert!(!line.ends_with(".key") && !line.ends_with(".crt"), "{line}");
    }
}

#[test]
fn control_conffiles_and_maintainer_scripts() {
    let test = "control_conffiles_and_maintainer_scripts";
    if !common::require_tool(test, "dpkg-deb") {
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let pkg = unpack(&deb);
    let control = pkg.control_file("control");
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("control lacks {name}:\n{control}"))
            .to_string()
    };
    assert_eq!(field("Package"), "meshd");
    assert_eq!(field("Version"), format!("{VERSION}-1"));
    assert_eq!(field("Section"), "net");
    assert!(field("Depends").contains("libc6"), "{control}");
    // The shipped changelog names the version being packaged.
    let changelog = gunzip(&pkg.file("/usr/share/doc/meshd/changelog.Debian.gz"));
    assert!(
        changelog.starts_with(&format!("meshd ({VERSION}-1) ")),
        "changelog.Debian is not for {VERSION}-1:\n{changelog}"
    );
    // Every file under /etc is a conffile, so dpkg never overwrites an admin's edits.
    let conffiles: Vec<String> = pkg
        .control_file("conffiles")
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(conffiles, ["/etc/meshd/config.yaml"]);

    // Enabled the Debian way on install, never started by it; an upgrade restarts only a
    // running meshd.service (try-restart); remove stops it, purge forgets the enablement.
    let postinst = pkg.control_file("postinst");
    assert!(
        postinst.contains("deb-systemd-helper enable meshd.service"),
        "{postinst}"
    );
    assert!(postinst.contains("try-restart meshd.service"), "{postinst}");
    assert!(
        !postinst.contains("_dh_action=start") && !postinst.contains("invoke start"),
        "postinst must not start meshd on install:\n{postinst}"
    );
    assert!(
        !postinst.contains("meshd@.service"),
        "templates are not enabled:\n{postinst}"
    );
    let prerm = pkg.control_file("prerm");
    assert!(
        prerm.contains("\"$1\" = remove") && prerm.contains("stop meshd.service"),
        "{prerm}"
    );
    let postrm = pkg.control_file("postrm");
    assert!(
        postrm.contains("deb-systemd-helper purge meshd.service"),
        "{postrm}"
    );
}

#[test]
fn installed_files_are_the_repositorys() {
    let test = "installed_files_are_the_repositorys";
    if !common::require_tool(test, "dpkg-deb") || !common::require_tool(test, "gzip") {
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let pkg = unpack(&deb);
    for (installed, source) in [
        (
            "/usr/lib/systemd/system/meshd.service",
            "systemd/meshd.service",
        ),
        (
            "/usr/lib/systemd/system/meshd@.service",
            "systemd/meshd@.service",
        ),
        ("/etc/meshd/config.yaml", "systemd/config.yaml"),
        ("/usr/share/doc/meshd/README.md", "README.md"),
        (
            "/usr/share/doc/meshd/examples/config.yaml",
            "examples/config.yaml",
        ),
    ] {
        assert_eq!(
            pkg.read(installed),
            repo_file(source),
            "{installed} differs from {source}: rebuild with bash .ci/deb"
        );
    }
    assert_eq!(
        gunzip(&pkg.file("/usr/share/man/man8/meshd.8.gz")),
        repo_file("src/cli/meshd.8")
    );
    let mode = fs::metadata(pkg.file("/usr/bin/meshd"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let out = pkg.meshd(&["-version"]);
    assert_eq!(text(&out), format!("Version: {VERSION}\n"));

    // The units run the packaged binary on the packaged config paths.
    let unit = pkg.read("/usr/lib/systemd/system/meshd.service");
    for line in [
        "ExecStartPre=/usr/bin/meshd -config /etc/meshd/config.yaml -test",
        "ExecStart=/usr/bin/meshd -config /etc/meshd/config.yaml",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "DeviceAllow=/dev/net/tun rw",
        "DevicePolicy=closed",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            unit.lines().any(|l| l == line),
            "meshd.service lacks {line}"
        );
    }
    let template = pkg.read("/usr/lib/systemd/system/meshd@.service");
    assert!(
        template
            .lines()
            .any(|l| l == "ExecStart=/usr/bin/meshd -config /etc/meshd/%i.yaml"),
        "{template}"
    );
    // The template is the same unit but for the config path and names.
    let generic = |s: &str| {
        s.lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("Description="))
            .map(|l| {
                l.replace("%i.yaml", "config.yaml")
                    .replace("meshd-%i", "meshd")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(generic(&template), generic(&unit));
}

#[test]
fn packaged_config_test_reports_only_the_certificates() {
    let test = "packaged_config_test_reports_only_the_certificates";
    if !common::require_tool(test, "dpkg-deb") {
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let pkg = unpack(&deb);
    // As a user runs it right after install (no certificate there yet). The config's
    // /etc/meshd paths are pointed into the root, so this machine's own /etc plays no part.
    let etc = pkg.file("/etc/meshd");
    let at = |name: &str| etc.join(name).display().to_string();
    let relocated = etc.join("relocated.yaml");
    fs::write(
        &relocated,
        pkg.read("/etc/meshd/config.yaml")
            .replace("/etc/meshd/", &format!("{}/", etc.display())),
    )
    .unwrap();
    let check = || pkg.meshd(&["-config", relocated.to_str().unwrap(), "-test"]);
    let out = check();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let mut lines: Vec<&str> = stderr.lines().collect();
    let summary = lines.pop().expect("a summary line");
    assert!(
        summary.ends_with("configuration is invalid (3 problem(s))"),
        "{stderr}"
    );
    lines.sort();
    let missing = |key: &str, file: &str| {
        format!(
            "error: pki.{key}: unable to read file {}: No such file or directory (os error 2)",
            at(file)
        )
    };
    assert_eq!(
        lines,
        [
            missing("ca", "ca.crt"),
            missing("cert", "host.crt"),
            missing("key", "host.key")
        ],
        "-test on the packaged config must name the three certificate files and nothing else"
    );

    // With the three files in place (made by the packaged `meshd cert`) nothing else is missing.
    let cert = |args: &[&str]| {
        let out = pkg.meshd(&[&["cert"], args].concat());
        assert!(out.status.success(), "meshd cert {args:?}: {out:?}");
    };
    cert(&[
        "ca",
        "-name",
        "test ca",
        "-out-crt",
        &at("ca.crt"),
        "-out-key",
        &at("ca.key"),
    ]);
    cert(&[
        "sign",
        "-ca-crt",
        &at("ca.crt"),
        "-ca-key",
        &at("ca.key"),
        "-name",
        "lighthouse1",
        "-ip",
        "10.10.10.1/24",
        "-out-crt",
        &at("host.crt"),
        "-out-key",
        &at("host.key"),
    ]);
    let out = check();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "no warning expected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_installed_units() {
    let test = "systemd_analyze_verify_accepts_the_installed_units";
    if !common::require_tool(test, "dpkg-deb") || !common::require_tool(test, "systemd-analyze") {
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let pkg = unpack(&deb);
    // `verify --root` resolves every path inside the root, as on the target system: the units
    // they order against (systemd's own, copied from this machine) and /bin/kill (ExecReload)
    // must be there too.
    let units = pkg.file("/usr/lib/systemd/system");
    for entry in fs::read_dir("/usr/lib/systemd/system").expect("systemd's unit directory") {
        let entry = entry.unwrap();
        let dest = units.join(entry.file_name());
        if dest.exists() {
            continue;
        }
        let ft = entry.file_type().unwrap();
        if ft.is_file() {
            fs::copy(entry.path(), dest).unwrap();
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path()).unwrap(), dest).unwrap();
        }
    }
    fs::create_dir_all(pkg.file("/bin")).unwrap();
    fs::copy("/bin/kill", pkg.file("/bin/kill")).unwrap();
    let verify = || {
        Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", pkg.root.display()))
            .args(["meshd.service", "meshd@net1.service"])
            // Documentation=man:meshd(8) is looked up with man(1): in the root's man pages.
            .env("MANPATH", pkg.file("/usr/share/man"))
            .output()
            .expect("run systemd-analyze")
    };
    let out = verify();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hardening does not regress: `systemd-analyze security` exposure at most 2.0 (it was
    // 4.5 before the review), i.e. --threshold=20 on its 0..100 scale.
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(format!("--root={}", pkg.root.display()))
        .args(["meshd.service", "meshd@net1.service"])
        .output()
        .expect("run systemd-analyze security");
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(
        security.status.success() && report.matches("Overall exposure level").count() == 2,
        "systemd-analyze security: exposure above 2.0?\n{report}{}",
        String::from_utf8_lossy(&security.stderr)
    );
    // Broken units are caught the same way (so the pass above means something): a binary
    // that is not in the root, and a man page that is not.
    let unit = pkg.file("/usr/lib/systemd/system/meshd.service");
    let good = fs::read_to_string(&unit).unwrap();
    for (from, to) in [
        ("/usr/bin/meshd ", "/usr/bin/meshdx "),
        ("meshd(8)", "meshdx(8)"),
    ] {
        fs::write(&unit, good.replace(from, to)).unwrap();
        let out = verify();
        assert!(
            !out.status.success(),
            "systemd-analyze verify accepted {to}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs `dpkg` on the throwaway root `t` with stubs first on PATH.
fn dpkg_in(t: &Path, args: &[&std::ffi::OsStr]) -> Output {
    let path = format!(
        "{}:{}",
        t.join("stub").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("dpkg")
        .arg(format!("--root={}", t.display()))
        .arg(format!("--admindir={}", t.join("var/lib/dpkg").display()))
        .arg(format!("--log={}", t.join("var/log/dpkg.log").display()))
        // Scripts run on the host with DPKG_ROOT=t; libc6 is not in t's (empty) database.
        .args(["--force-script-chrootless", "--force-depends"])
        .args(args)
        .env("PATH", path)
        .output()
        .expect("run dpkg");
    assert!(
        out.status.success(),
        "dpkg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What the host says about meshd, to compare before and after.
fn host_state() -> (String, bool, bool) {
    let status = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "meshd"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let wants = "/etc/systemd/system/multi-user.target.wants/meshd.service";
    let state = "/var/lib/systemd/deb-systemd-helper-enabled/meshd.service.dsh-also";
    (
        status,
        Path::new(wants).symlink_metadata().is_ok(),
        Path::new(state).exists(),
    )
}

#[test]
fn dpkg_install_upgrade_remove_purge_in_a_throwaway_root() {
    let test = "dpkg_install_upgrade_remove_purge_in_a_throwaway_root";
    if !common::require_tool(test, "dpkg") || !common::require_tool(test, "deb-systemd-helper") {
        return;
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(!common::in_ci(), "{test}: cannot run under CI: needs root");
        eprintln!("SKIPPED {test}: needs root (dpkg installs root-owned files)");
        return;
    }
    let Some(deb) = find_deb(test) else { return };
    let host_before = host_state();
    let dir = common::tempdir();
    let t = dir.path();
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/log",
        "stub",
    ] {
        fs::create_dir_all(t.join(d)).unwrap();
    }
    for f in ["var/lib/dpkg/status", "var/lib/dpkg/available"] {
        fs::write(t.join(f), "").unwrap();
    }
    let calls = t.join("stub/calls");
    for stub in ["systemctl", "deb-systemd-invoke"] {
        let p = t.join("stub").join(stub);
        fs::write(
            &p,
            format!("#!/bin/sh\necho \"{stub} $*\" >> '{}'\n", calls.display()),
        )
        .unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let install = || dpkg_in(t, &["-i".as_ref(), deb.as_os_str()]);
    let at = |p: &str| t.join(p.trim_start_matches('/'));
    let wants = at("/etc/systemd/system/multi-user.target.wants/meshd.service");
    let config = at("/etc/meshd/config.yaml");

    install();
    assert!(at("/usr/bin/meshd").is_file());
    // Enabled the Debian way: deb-systemd-helper's symlink and state, inside the root.
    assert_eq!(
        fs::read_link(&wants).expect("meshd.service enabled in multi-user.target.wants"),
        Path::new("/usr/lib/systemd/system/meshd.service")
    );
    assert!(at("/var/lib/systemd/deb-systemd-helper-enabled/meshd.service.dsh-also").exists());
    assert!(
        !at("/etc/systemd/system/multi-user.target.wants/meshd@.service").exists(),
        "the template is not enabled"
    );
    let conffiles = text(&run(Command::new("dpkg-query")
        .arg(format!("--admindir={}", t.join("var/lib/dpkg").display()))
        .args(["-W", "-f=${Conffiles}", "meshd"])));
    assert_eq!(
        conffiles.split_whitespace().next(),
        Some("/etc/meshd/config.yaml"),
        "{conffiles}"
    );

    // An upgrade (the same package again) keeps the admin's edit and the enablement.
    let edited = format!(
        "{}# edited by the admin\n",
        fs::read_to_string(&config).unwrap()
    );
    fs::write(&config, &edited).unwrap();
    install();
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(wants.symlink_metadata().is_ok());

    // Remove keeps the conffile; purge removes it and the enablement.
    dpkg_in(t, &["-r".as_ref(), "meshd".as_ref()]);
    assert!(!at("/usr/bin/meshd").exists());
    assert!(!at("/usr/lib/systemd/system/meshd.service").exists());
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    dpkg_in(t, &["-P".as_ref(), "meshd".as_ref()]);
    assert!(!config.exists() && !at("/etc/meshd").exists());
    assert!(
        wants.symlink_metadata().is_err(),
        "purge left the enablement"
    );
    assert!(!at("/var/lib/systemd/deb-systemd-helper-enabled/meshd.service.dsh-also").exists());

    // Where this machine runs systemd the scripts asked it (the stubs) for these and only these.
    let asked = fs::read_to_string(&calls).unwrap_or_default();
    for call in asked.lines() {
        assert!(
            [
                "systemctl --system daemon-reload",
                "deb-systemd-invoke try-restart meshd.service",
                "deb-systemd-invoke stop meshd.service",
            ]
            .contains(&call),
            "unexpected call from a maintainer script: {call}"
        );
    }
    assert_eq!(host_state(), host_before, "the host's meshd state changed");
}

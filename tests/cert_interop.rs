//! Interop between `meshd cert` and nebula-cert 1.6.1: each tool verifies the other's
//! certificates, prints them identically (text and JSON), agrees on fingerprints, signs the
//! other's public keys, handles CA bundles, and refuses bad requests with the same words.

mod common;

use std::path::Path;
use std::process::Command;

use meshd::cert::{CaPool, NebulaCertificate, X25519PrivateKey};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(tool: &str, dir: &Path, args: &[&str]) -> Run {
    let mut cmd = if tool == "meshd" {
        let mut c = Command::new(common::meshd_bin());
        c.arg("cert");
        c
    } else {
        Command::new("nebula-cert")
    };
    let out = cmd.args(args).current_dir(dir).output().expect("run tool");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(tool: &str, dir: &Path, args: &[&str]) -> String {
    let r = run(tool, dir, args);
    assert_eq!(r.code, 0, "{tool} {args:?} failed: {}", r.stderr);
    r.stdout
}

fn have_nebula(test: &str) -> bool {
    common::require_tool(test, "nebula-cert")
}

/// Makes a CA with constraints and a host with groups and subnets using `tool`.
fn make_pki(tool: &str, dir: &Path) {
    ok(
        tool,
        dir,
        &[
            "ca",
            "-name",
            "Interop CA",
            "-groups",
            "ops,dev, laptop",
            "-ips",
            "10.42.0.0/16,10.50.7.1/24",
            "-subnets",
            "192.168.0.0/16",
        ],
    );
    ok(
        tool,
        dir,
        &[
            "sign",
            "-name",
            "host1",
            "-ip",
            "10.42.1.5/16",
            "-groups",
            "ops,laptop",
            "-subnets",
            "192.168.10.0/24,192.168.99.7/32",
        ],
    );
    ok(
        tool,
        dir,
        &[
            "sign",
            "-name",
            "host2",
            "-ip",
            "10.50.7.9/24",
            "-duration",
            "1h30m",
        ],
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn assert_same_print(dir: &Path, file: &str) {
    let path = dir.join(file);
    let p = path.to_str().unwrap();
    assert_eq!(
        ok("meshd", dir, &["print", "-path", p]),
        ok("nebula-cert", dir, &["print", "-path", p]),
        "text of {file}"
    );
    let json = ok("nebula-cert", dir, &["print", "-json", "-path", p]);
    assert_eq!(
        ok("meshd", dir, &["print", "-json", "-path", p]),
        json,
        "json of {file}"
    );
    // fingerprints: nebula-cert's JSON vs the library's
    let certs = NebulaCertificate::bundle_from_pem(&std::fs::read(&path).unwrap()).unwrap();
    for (cert, line) in certs.iter().zip(json.lines()) {
        assert!(
            line.contains(&format!("\"fingerprint\":\"{}\"", cert.fingerprint())),
            "{line}"
        );
    }
}

fn cross_check(maker: &str, checker: &str) {
    let tmp = common::tempdir();
    let dir = tmp.path();
    make_pki(maker, dir);
    for host in ["host1.crt", "host2.crt"] {
        ok(checker, dir, &["verify", "-ca", "ca.crt", "-crt", host]);
        assert_same_print(dir, host);
    }
    assert_same_print(dir, "ca.crt");
    // the library agrees, and the private keys match their certificates
    let pool = CaPool::from_pem(&std::fs::read(dir.join("ca.crt")).unwrap(), now()).unwrap();
    let host = NebulaCertificate::from_pem(&std::fs::read(dir.join("host1.crt")).unwrap())
        .unwrap()
        .0;
    pool.pool.verify(&host, now()).unwrap();
    assert_eq!(host.groups(), &["ops", "laptop"]);
    assert_eq!(host.subnets().len(), 2);
    let key = X25519PrivateKey::from_pem(&std::fs::read(dir.join("host1.key")).unwrap())
        .unwrap()
        .0;
    host.verify_private_key(&key).unwrap();
}

#[test]
fn meshd_made_certs_pass_nebula_cert() {
    if !have_nebula("meshd_made_certs_pass_nebula_cert") {
        return;
    }
    cross_check("meshd", "nebula-cert");
}

#[test]
fn nebula_made_certs_pass_meshd() {
    if !have_nebula("nebula_made_certs_pass_meshd") {
        return;
    }
    cross_check("nebula-cert", "meshd");
}

#[test]
fn keys_from_one_tool_signed_by_the_other() {
    if !have_nebula("keys_from_one_tool_signed_by_the_other") {
        return;
    }
    for (keygen, signer) in [("meshd", "nebula-cert"), ("nebula-cert", "meshd")] {
        let tmp = common::tempdir();
        let dir = tmp.path();
        ok(signer, dir, &["ca", "-name", "CA"]);
        ok(
            keygen,
            dir,
            &["keygen", "-out-key", "h.key", "-out-pub", "h.pub"],
        );
        let key_before = std::fs::read(dir.join("h.key")).unwrap();
        ok(
            signer,
            dir,
            &[
                "sign",
                "-name",
                "h",
                "-ip",
                "10.1.1.1/24",
                "-in-pub",
                "h.pub",
            ],
        );
        assert_eq!(std::fs::read(dir.join("h.key")).unwrap(), key_before);
        for tool in ["meshd", "nebula-cert"] {
            ok(tool, dir, &["verify", "-ca", "ca.crt", "-crt", "h.crt"]);
        }
        let cert = NebulaCertificate::from_pem(&std::fs::read(dir.join("h.crt")).unwrap())
            .unwrap()
            .0;
        let key = X25519PrivateKey::from_pem(&std::fs::read(dir.join("h.key")).unwrap())
            .unwrap()
            .0;
        cert.verify_private_key(&key).unwrap();
    }
}

#[test]
fn ca_bundles_work_in_both_directions() {
    if !have_nebula("ca_bundles_work_in_both_directions") {
        return;
    }
    let tmp = common::tempdir();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    make_pki("meshd", &a);
    make_pki("nebula-cert", &b);
    let bundle = [
        std::fs::read(a.join("ca.crt")).unwrap(),
        std::fs::read(b.join("ca.crt")).unwrap(),
    ]
    .concat();
    std::fs::write(tmp.path().join("bundle.crt"), bundle).unwrap();
    let dir = tmp.path();
    for tool in ["meshd", "nebula-cert"] {
        ok(
            tool,
            dir,
            &["verify", "-ca", "bundle.crt", "-crt", "a/host1.crt"],
        );
        ok(
            tool,
            dir,
            &["verify", "-ca", "bundle.crt", "-crt", "b/host2.crt"],
        );
    }
    assert_same_print(dir, "bundle.crt");
    // a host from the other CA alone is refused the same way
    let m = run(
        "meshd",
        dir,
        &["verify", "-ca", "a/ca.crt", "-crt", "b/host1.crt"],
    );
    let n = run(
        "nebula-cert",
        dir,
        &["verify", "-ca", "a/ca.crt", "-crt", "b/host1.crt"],
    );
    assert_eq!((m.code, &m.stderr), (n.code, &n.stderr));
    assert_eq!(m.stderr, "Error: could not find ca for the certificate\n");
}

#[test]
fn refusals_match_nebula_cert() {
    if !have_nebula("refusals_match_nebula_cert") {
        return;
    }
    let tmp = common::tempdir();
    let (m, n) = (tmp.path().join("m"), tmp.path().join("n"));
    std::fs::create_dir_all(&m).unwrap();
    std::fs::create_dir_all(&n).unwrap();
    ok(
        "nebula-cert",
        &n,
        &[
            "ca",
            "-name",
            "CA",
            "-groups",
            "ops",
            "-ips",
            "10.42.0.0/16",
            "-subnets",
            "192.168.0.0/16",
            "-duration",
            "100h",
        ],
    );
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(n.join(f), m.join(f)).unwrap();
    }
    ok(
        "nebula-cert",
        &n,
        &["keygen", "-out-key", "x.key", "-out-pub", "x.pub"],
    );
    std::fs::copy(n.join("x.pub"), m.join("x.pub")).unwrap();
    std::fs::copy(n.join("x.key"), m.join("x.key")).unwrap();
    let cases: &[&[&str]] = &[
        &["sign", "-name", "h", "-ip", "10.43.1.1/16"],
        &["sign", "-name", "h", "-ip", "10.42.1.1/8"],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-groups",
            "ops,web",
        ],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-subnets",
            "172.16.0.0/12",
        ],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-duration",
            "200h",
        ],
        &["sign", "-name", "h", "-ip", "10.42.1.1"],
        &["sign", "-name", "h", "-ip", "fe80::1/64"],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-subnets",
            "bogus",
        ],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-in-pub",
            "x.pub",
            "-out-key",
            "y",
        ],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-ca-crt",
            "missing.crt",
        ],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-ca-key",
            "x.pub",
        ],
        &["sign", "-name", "h"],
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.42.1.1/24",
            "-duration",
            "1x",
        ],
        &["ca", "-name", "CA"],
        &["ca", "-name", "C2", "-out-key", "n.key", "-duration", "0s"],
        &[
            "ca",
            "-name",
            "C2",
            "-out-key",
            "n.key",
            "-ips",
            "10.0.0.0/33",
        ],
        &["verify", "-ca", "x.pub", "-crt", "ca.crt"],
        &["verify", "-ca", "ca.crt", "-crt", "ca.crt"],
        &["verify", "-ca", "ca.crt"],
        &["print", "-path", "missing.crt"],
        &["print", "-path", "x.key"],
        &["print", "-json=maybe", "-path", "ca.crt"],
        &["print", "-bogus"],
        &["keygen", "-out-pub", "p"],
        &["nonsense"],
        &[],
        &["-bogus"],
        &["-h", "sign"],
        &["ca", "-h"],
    ];
    for args in cases {
        let ours = run("meshd", &m, args);
        let theirs = run("nebula-cert", &n, args);
        let theirs_err = theirs.stderr.replace("nebula-cert", "meshd cert");
        // meshd adds which banner it found; the rest of the message is nebula-cert's
        let ours_err = strip_found(&ours.stderr);
        assert_eq!(
            (ours.code, ours_err, &ours.stdout),
            (theirs.code, theirs_err, &theirs.stdout),
            "args {args:?}"
        );
    }
    // nothing was written by the refused requests
    assert!(!m.join("h.crt").exists() && !m.join("n.key").exists());
}

fn strip_found(s: &str) -> String {
    s.lines()
        .map(|l| match l.find(" (found \"") {
            Some(i) if l.ends_with("\")") => &l[..i],
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

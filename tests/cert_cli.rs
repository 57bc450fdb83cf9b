//! `meshd cert` on its own: exit codes and messages for bad input (missing or malformed flags,
//! unreadable, truncated, garbled or wrong-banner files, tampered and expired certificates),
//! file modes, refusal to overwrite, and the unsupported `-out-qr`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn meshd(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(common::meshd_bin())
        .arg("cert")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run meshd");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn ok(dir: &Path, args: &[&str]) {
    let r = meshd(dir, args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
}

fn fails(dir: &Path, args: &[&str], first_line: &str) -> Run {
    let r = meshd(dir, args);
    assert_eq!(r.code, 1, "{args:?} should fail; stderr: {}", r.stderr);
    assert_eq!(r.stderr.lines().next(), Some(first_line), "{args:?}");
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

fn pki(dir: &Path) {
    ok(
        dir,
        &["ca", "-name", "CA", "-groups", "a,b", "-ips", "10.9.0.0/16"],
    );
    ok(
        dir,
        &["sign", "-name", "h", "-ip", "10.9.0.1/16", "-groups", "a"],
    );
}

#[test]
fn global_usage_version_and_modes() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    let v = meshd(dir, &["-version"]);
    assert_eq!((v.code, v.stdout.starts_with("Version: ")), (0, true));
    let r = fails(dir, &[], "Error: No mode was provided");
    assert!(r
        .stderr
        .contains("Usage of meshd cert <global flags> <mode>:"));
    let h = meshd(dir, &["-help"]);
    assert_eq!(h.code, 0);
    assert!(h.stderr.contains("verify <flags>: verifies a certificate"));
    fails(dir, &["frobnicate"], "Error: unknown mode: frobnicate");
    let r = meshd(dir, &["sign", "-h"]);
    assert_eq!(r.code, 0);
    assert!(r.stderr.starts_with(
        "Usage of meshd cert sign <flags>: create and sign a certificate\n  -ca-crt string\n"
    ));
    assert!(r.stderr.contains("(default \"ca.key\")"));
}

#[test]
fn missing_and_malformed_flags() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    let r = fails(dir, &["ca"], "Error: -name is required");
    assert!(r.stderr.contains("Usage of meshd cert ca <flags>"));
    fails(
        dir,
        &["keygen", "-out-key", "k"],
        "Error: -out-pub is required",
    );
    fails(dir, &["verify", "-crt", "x"], "Error: -ca is required");
    fails(dir, &["print"], "Error: -path is required");
    fails(dir, &["sign", "-name", "x"], "Error: -ip is required");
    fails(dir, &["ca", "-name"], "flag needs an argument: -name");
    fails(
        dir,
        &["ca", "-nmae", "x"],
        "flag provided but not defined: -nmae",
    );
    fails(
        dir,
        &["ca", "-name", "x", "-duration", "1y"],
        "invalid value \"1y\" for flag -duration: parse error",
    );
    fails(
        dir,
        &["ca", "-name", "x", "-duration", "-5m"],
        "Error: -duration must be greater than 0",
    );
    fails(
        dir,
        &["ca", "-name", "x", "-ips", "10.0.0.300/8"],
        "Error: invalid ip definition: invalid CIDR address: 10.0.0.300/8",
    );
    fails(
        dir,
        &["ca", "-name", "x", "-subnets", "::1/64"],
        "Error: invalid subnet definition: can only be ipv4, have ::1/64",
    );
    assert!(
        std::fs::read_dir(dir).unwrap().next().is_none(),
        "nothing written"
    );
}

#[test]
fn files_are_private_and_never_overwritten() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    pki(dir);
    ok(dir, &["keygen", "-out-key", "k.key", "-out-pub", "k.pub"]);
    for f in ["ca.key", "ca.crt", "h.key", "h.crt", "k.key", "k.pub"] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let ca_before = std::fs::read(dir.join("ca.crt")).unwrap();
    fails(
        dir,
        &["ca", "-name", "again"],
        "Error: refusing to overwrite existing CA key: ca.key",
    );
    fails(
        dir,
        &["ca", "-name", "again", "-out-key", "new.key"],
        "Error: refusing to overwrite existing CA cert: ca.crt",
    );
    fails(
        dir,
        &["sign", "-name", "h", "-ip", "10.9.0.2/16"],
        "Error: refusing to overwrite existing cert: h.crt",
    );
    fails(
        dir,
        &[
            "sign",
            "-name",
            "h",
            "-ip",
            "10.9.0.2/16",
            "-out-crt",
            "h2.crt",
        ],
        "Error: refusing to overwrite existing key: h.key",
    );
    fails(
        dir,
        &["keygen", "-out-key", "k.key", "-out-pub", "other.pub"],
        "Error: refusing to overwrite existing key: k.key",
    );
    assert_eq!(std::fs::read(dir.join("ca.crt")).unwrap(), ca_before);
    assert!(
        !dir.join("new.key").exists()
            && !dir.join("h2.crt").exists()
            && !dir.join("other.pub").exists()
    );
}

#[test]
fn unreadable_and_bad_files() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    pki(dir);
    fails(
        dir,
        &["print", "-path", "nope.crt"],
        "Error: unable to read cert; open nope.crt: no such file or directory",
    );
    fails(
        dir,
        &["print", "-path", "."],
        "Error: unable to read cert; read .: is a directory",
    );
    fails(
        dir,
        &["verify", "-ca", "nope", "-crt", "h.crt"],
        "Error: error while reading ca: open nope: no such file or directory",
    );
    fails(
        dir,
        &[
            "sign",
            "-name",
            "z",
            "-ip",
            "10.9.0.3/16",
            "-ca-key",
            "nope",
        ],
        "Error: error while reading ca-key: open nope: no such file or directory",
    );

    let pem = std::fs::read_to_string(dir.join("h.crt")).unwrap();
    std::fs::write(dir.join("trunc.crt"), &pem[..pem.len() / 2]).unwrap();
    fails(
        dir,
        &["print", "-path", "trunc.crt"],
        "Error: error while unmarshaling cert: input did not contain a valid PEM encoded block",
    );
    std::fs::write(dir.join("garbled.crt"), pem.replacen('A', "%", 3)).unwrap();
    fails(
        dir,
        &["verify", "-ca", "ca.crt", "-crt", "garbled.crt"],
        "Error: error while parsing crt: input did not contain a valid PEM encoded block",
    );
    std::fs::write(dir.join("empty.crt"), "").unwrap();
    fails(dir, &["verify", "-ca", "empty.crt", "-crt", "h.crt"], "Error: error while adding ca cert to pool: input did not contain a valid PEM encoded block");
    fails(dir, &["print", "-path", "h.key"], "Error: error while unmarshaling cert: bytes did not contain a proper nebula certificate banner (found \"NEBULA X25519 PRIVATE KEY\")");
    fails(
        dir,
        &["verify", "-ca", "h.crt", "-crt", "h.crt"],
        "Error: error while adding ca cert to pool: h: certificate is not a CA",
    );
    fails(dir, &["sign", "-name", "z", "-ip", "10.9.0.3/16", "-ca-key", "h.key"], "Error: error while parsing ca-key: bytes did not contain a proper nebula Ed25519 private key banner (found \"NEBULA X25519 PRIVATE KEY\")");
    // a valid PEM whose body is not a certificate
    std::fs::write(
        dir.join("junk.crt"),
        "-----BEGIN NEBULA CERTIFICATE-----\nAAECAwQ=\n-----END NEBULA CERTIFICATE-----\n",
    )
    .unwrap();
    fails(dir, &["print", "-path", "junk.crt"], "Error: error while unmarshaling cert: certificate protobuf is malformed: failed to decode Protobuf message: invalid tag value: 0");
    // well-formed protobuf without Details (field 2 only)
    std::fs::write(
        dir.join("nodetails.crt"),
        "-----BEGIN NEBULA CERTIFICATE-----\nEgA=\n-----END NEBULA CERTIFICATE-----\n",
    )
    .unwrap();
    fails(
        dir,
        &["print", "-path", "nodetails.crt"],
        "Error: error while unmarshaling cert: encoded Details was nil",
    );
}

#[test]
fn tampered_expired_and_foreign_certificates() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    pki(dir);
    // flip one bit of the signature (the last bytes of the PEM body)
    let cert = meshd::cert::NebulaCertificate::from_pem(&std::fs::read(dir.join("h.crt")).unwrap())
        .unwrap()
        .0;
    let mut sig = *cert.signature();
    sig[0] ^= 1;
    let forged = meshd::cert::NebulaCertificate::from_parts(cert.details().clone(), sig);
    std::fs::write(dir.join("forged.crt"), forged.to_pem()).unwrap();
    fails(
        dir,
        &["verify", "-ca", "ca.crt", "-crt", "forged.crt"],
        "Error: certificate signature did not match",
    );

    let other = dir.join("other");
    std::fs::create_dir(&other).unwrap();
    ok(&other, &["ca", "-name", "Other"]);
    fails(
        dir,
        &["verify", "-ca", "other/ca.crt", "-crt", "h.crt"],
        "Error: could not find ca for the certificate",
    );
    fails(
        dir,
        &[
            "sign",
            "-name",
            "z",
            "-ip",
            "10.9.0.3/16",
            "-ca-key",
            "other/ca.key",
        ],
        "Error: refusing to sign, root certificate does not match private key",
    );
    fails(dir, &["sign", "-name", "z", "-ip", "10.8.0.3/16"], "Error: refusing to sign, root certificate constraints violated: certificate contained an ip assignment outside the limitations of the signing ca: 10.8.0.3/16");

    ok(
        dir,
        &[
            "sign",
            "-name",
            "short",
            "-ip",
            "10.9.0.4/16",
            "-duration",
            "1s",
        ],
    );
    ok(dir, &["verify", "-ca", "ca.crt", "-crt", "short.crt"]);
    std::thread::sleep(std::time::Duration::from_millis(2100));
    fails(
        dir,
        &["verify", "-ca", "ca.crt", "-crt", "short.crt"],
        "Error: certificate is expired",
    );

    ok(
        &other,
        &[
            "ca",
            "-name",
            "Brief",
            "-duration",
            "1s",
            "-out-key",
            "b.key",
            "-out-crt",
            "b.crt",
        ],
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    fails(
        dir,
        &["verify", "-ca", "other/b.crt", "-crt", "h.crt"],
        "Error: error while adding ca cert to pool: Brief: certificate is expired",
    );
    fails(
        &other,
        &[
            "sign",
            "-name",
            "z",
            "-ip",
            "10.0.0.1/8",
            "-ca-key",
            "b.key",
            "-ca-crt",
            "b.crt",
        ],
        "Error: ca certificate is expired",
    );
}

#[test]
fn out_qr_is_refused_before_writing() {
    let tmp = common::tempdir();
    let dir = tmp.path();
    let r = meshd(dir, &["ca", "-name", "CA", "-out-qr", "ca.png"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("-out-qr is not supported"),
        "{}",
        r.stderr
    );
    assert!(!dir.join("ca.key").exists() && !dir.join("ca.png").exists());
}

//! Start-up checks that need files: the certificates (`cert.go` at v1.6.1): the CA pool from `pki.ca`,
//! the host certificate and key (each a path or inline PEM), their pairing, expiry and IPs, and the
//! VPN network the cross-section checks need; and the sshd host key (`ssh.go`). File reading and the clock are parameters, so this
//! stays pure; `-test` and the daemon pass real ones.

use std::net::IpAddr;
use std::path::Path;

use super::checks::check_network;
use super::model::{Config, PemSource};
use super::reader::{Problem, Warning};
use super::types::IpNet;
use crate::cert::{CaPool, Fingerprint, NebulaCertificate, X25519PrivateKey};

/// Everything `pki` yields for a node that can start.
#[derive(Clone)]
pub struct PkiState {
    pub ca_pool: CaPool,
    pub cert: NebulaCertificate,
    pub key: X25519PrivateKey,
    /// The network of the certificate's first IP (Nebula's `tunCidr`).
    pub vpn_net: IpNet,
}

impl std::fmt::Debug for PkiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("PkiState")
            .field("cert", &self.cert.name())
            .field("vpn_net", &self.vpn_net)
            .finish()
    }
}

/// The outcome of the full start-up check.
#[derive(Debug, Default)]
pub struct StartupReport {
    pub problems: Vec<Problem>,
    pub warnings: Vec<Warning>,
}

/// Reads PEM data for one pki key: inline text, or the named file through `read`.
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> std::io::Result<Vec<u8>>;

/// Runs every check start-up runs after loading: pki (in Nebula's order: CA, then host cert and
/// key), then the VPN-network checks. `now` is unix seconds.
pub fn check_startup(
    config: &Config,
    read: ReadFile<'_>,
    now: i64,
) -> (Option<PkiState>, StartupReport) {
    let mut report = StartupReport::default();
    let state = load_pki(config, read, now, &mut report);
    check_ssh_host_key(config, read, &mut report);
    if let Some(state) = &state {
        let (problems, warnings) = check_network(config, state.vpn_net);
        report.problems.extend(problems);
        report.warnings.extend(warnings);
    }
    (state, report)
}

/// `ssh.go`: with sshd enabled, the host key file must be readable and hold a private key.
fn check_ssh_host_key(config: &Config, read: ReadFile<'_>, report: &mut StartupReport) {
    let (true, Some(path)) = (config.sshd.enabled, &config.sshd.host_key) else {
        return;
    };
    match read(path) {
        Err(e) => problem(
            report,
            "sshd.host_key",
            format!("unable to read {}: {e}", path.display()),
        ),
        Ok(bytes) if !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY-----") => problem(
            report,
            "sshd.host_key",
            format!("{} does not contain a PEM private key", path.display()),
        ),
        Ok(_) => {}
    }
}

fn problem(report: &mut StartupReport, key: &str, message: impl Into<String>) {
    report.problems.push(Problem {
        key: key.into(),
        message: message.into(),
    });
}

fn warn(report: &mut StartupReport, key: &str, message: impl Into<String>) {
    report.warnings.push(Warning {
        key: key.into(),
        message: message.into(),
    });
}

fn read_pem(src: &PemSource, read: ReadFile<'_>) -> Result<Vec<u8>, String> {
    match src {
        PemSource::Inline(s) => Ok(s.as_bytes().to_vec()),
        PemSource::Path(p) => {
            read(p).map_err(|e| format!("unable to read file {}: {e}", p.display()))
        }
    }
}

fn describe_source(src: &PemSource) -> String {
    match src {
        PemSource::Inline(_) => "inline PEM".into(),
        PemSource::Path(p) => p.display().to_string(),
    }
}

fn load_pki(
    config: &Config,
    read: ReadFile<'_>,
    now: i64,
    report: &mut StartupReport,
) -> Option<PkiState> {
    let pool = load_ca_pool(config, read, now, report);
    let key = load_key(config, read, report);
    let cert = load_cert(config, read, now, report);
    let (pool, key, cert) = (pool?, key?, cert?);
    if let Err(e) = cert.verify_private_key(&key) {
        problem(
            report,
            "pki.key",
            format!("{e} (pki.key does not belong to pki.cert)"),
        );
        return None;
    }
    // Nebula 1.6.1 does not check its own certificate against pki.ca; peers will, so say so early.
    if let Err(e) = pool.verify(&cert, now) {
        warn(report, "pki.cert", format!("not accepted by the CAs in pki.ca ({e}); peers trusting only those CAs will refuse it"));
    }
    let first = cert.ips().first()?;
    let vpn_net = IpNet::new(IpAddr::V4(first.addr()), first.prefix())?;
    Some(PkiState {
        ca_pool: pool,
        cert,
        key,
        vpn_net,
    })
}

fn load_ca_pool(
    config: &Config,
    read: ReadFile<'_>,
    now: i64,
    report: &mut StartupReport,
) -> Option<CaPool> {
    let pem = read_pem(&config.pki.ca, read)
        .map_err(|e| problem(report, "pki.ca", e))
        .ok()?;
    let loaded = match CaPool::from_pem(&pem, now) {
        Ok(l) => l,
        Err(e) => {
            problem(
                report,
                "pki.ca",
                format!("{}: {e}", describe_source(&config.pki.ca)),
            );
            return None;
        }
    };
    for ca in &loaded.expired {
        warn(
            report,
            "pki.ca",
            format!("expired certificate present in CA pool: {}", ca.name()),
        );
    }
    let mut pool = loaded.pool;
    for (i, fp) in config.pki.blocklist.iter().enumerate() {
        match parse_fingerprint(fp) {
            Some(f) => pool.blocklist_fingerprint(f),
            // Nebula stores the string as is; a malformed one can never match anything.
            None => warn(
                report,
                &format!("pki.blocklist[{i}]"),
                format!("{fp:?} is not a 64-digit hex fingerprint; it can never match"),
            ),
        }
    }
    Some(pool)
}

fn parse_fingerprint(s: &str) -> Option<Fingerprint> {
    let bytes: [u8; 32] = hex::decode(s).ok()?.try_into().ok()?;
    Some(Fingerprint::from_bytes(bytes))
}

fn load_key(
    config: &Config,
    read: ReadFile<'_>,
    report: &mut StartupReport,
) -> Option<X25519PrivateKey> {
    let pem = read_pem(&config.pki.key, read)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| problem(report, "pki.key", e))
        .ok()?;
    match X25519PrivateKey::from_pem(&pem) {
        Ok((key, _)) => Some(key),
        Err(e) => {
            problem(
                report,
                "pki.key",
                format!("{}: {e}", describe_source(&config.pki.key)),
            );
            None
        }
    }
}

fn load_cert(
    config: &Config,
    read: ReadFile<'_>,
    now: i64,
    report: &mut StartupReport,
) -> Option<NebulaCertificate> {
    let pem = read_pem(&config.pki.cert, read)
        .map_err(|e| problem(report, "pki.cert", e))
        .ok()?;
    let cert = match NebulaCertificate::from_pem(&pem) {
        Ok((c, _)) => c,
        Err(e) => {
            problem(
                report,
                "pki.cert",
                format!("{}: {e}", describe_source(&config.pki.cert)),
            );
            return None;
        }
    };
    if cert.is_expired(now) {
        problem(
            report,
            "pki.cert",
            format!(
                "the certificate for this host ({}) is expired or not yet valid",
                cert.name()
            ),
        );
        return None;
    }
    if cert.ips().is_empty() {
        problem(
            report,
            "pki.cert",
            format!("no IPs encoded in the certificate of {}", cert.name()),
        );
        return None;
    }
    Some(cert)
}

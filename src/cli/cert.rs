//! `meshd cert <mode>`: a nebula-cert 1.6.1 compatible certificate tool (modes ca, keygen, sign,
//! print, verify; same flags, defaults, file names, messages and exit codes). This is the I/O
//! shell around `crate::cert`: it reads and writes files, reads the clock and the OS random
//! source; every certificate decision is made by the library.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;
use zeroize::Zeroizing;

use super::flags::{FlagError, FlagSet};
use crate::cert::{
    sign_host, x25519_public_key_from_pem, x25519_public_key_to_pem, CaPool, CaSigningKey,
    CertDetails, CertError, CidrError, Ipv4Net, NebulaCertificate, SignError, TimeZone,
    X25519PrivateKey, ZoneOffset,
};

const PROG: &str = "meshd cert";
const NS: i64 = 1_000_000_000;

/// Why a mode failed, deciding what `handle_error` prints.
enum ModeError {
    /// Print the message (if any) and the mode's help.
    Help(String),
    /// `-h`/`-help` inside a mode: help and exit 0.
    FlagHelp,
    /// Print the message only.
    Plain(String),
    /// A bad command line: Go's flag package prints the message itself, then the caller
    /// prints it again as an error.
    Flag(String),
}

type ModeResult = Result<(), ModeError>;

impl From<FlagError> for ModeError {
    fn from(e: FlagError) -> Self {
        match e {
            FlagError::Help => ModeError::FlagHelp,
            FlagError::Invalid(m) => ModeError::Flag(m),
        }
    }
}

fn plain(msg: impl Into<String>) -> ModeError {
    ModeError::Plain(msg.into())
}

/// Runs the certificate tool; returns the exit code.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut global = FlagSet::new()
        .bool("version", false, "Print version")
        .bool("help", false, "Print command line usage")
        .bool("h", false, "Print command line usage");
    let rest = match global.parse(args) {
        Ok(rest) => rest,
        Err(FlagError::Invalid(msg)) => {
            let _ = writeln!(err, "{msg}");
            global_help("", err);
            return 1;
        }
        Err(FlagError::Help) => return unreachable_help(err),
    };
    let wants_help = global.get_bool("h") || global.get_bool("help");
    if global.get_bool("version") {
        let _ = writeln!(out, "Version: {}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let Some(mode) = rest.first() else {
        if wants_help {
            global_help("", err);
            return 0;
        }
        global_help("No mode was provided", err);
        return 1;
    };
    if wants_help {
        return handle_error(mode, ModeError::Help(String::new()), err);
    }
    let mode_args = &rest[1..];
    let result = match mode.as_str() {
        "ca" => ca(mode_args),
        "keygen" => keygen(mode_args),
        "sign" => sign(mode_args),
        "print" => print(mode_args, out),
        "verify" => verify(mode_args),
        other => Err(plain(format!("unknown mode: {other}"))),
    };
    match result {
        Ok(()) => 0,
        Err(e) => handle_error(mode, e, err),
    }
}

/// `-h`/`-help` are defined globally, so the parser never reports them as unknown.
fn unreachable_help(err: &mut dyn Write) -> i32 {
    global_help("", err);
    0
}

fn handle_error(mode: &str, e: ModeError, err: &mut dyn Write) -> i32 {
    let (code, msg, help) = match e {
        ModeError::FlagHelp => (0, String::new(), true),
        ModeError::Help(m) => (1, m, true),
        ModeError::Plain(m) => (1, m, false),
        ModeError::Flag(m) => {
            let _ = writeln!(err, "{m}");
            (1, m, false)
        }
    };
    if !msg.is_empty() {
        let _ = writeln!(err, "Error: {msg}");
    }
    if help {
        mode_help(mode, err);
    }
    // A help request from the global flags (`-h ca`) exits 0 like nebula-cert.
    if help && msg.is_empty() {
        0
    } else {
        code
    }
}

fn global_help(msg: &str, err: &mut dyn Write) {
    if !msg.is_empty() {
        let _ = writeln!(err, "Error: {msg}\n");
    }
    let _ = writeln!(err, "Usage of {PROG} <global flags> <mode>:");
    let _ = writeln!(err, "  Global flags:");
    let _ = writeln!(err, "    -version: Prints the version");
    let _ = writeln!(err, "    -h, -help: Prints this help message");
    let _ = writeln!(err);
    let _ = writeln!(err, "  Modes:");
    for (_, summary, _) in MODES {
        let _ = writeln!(err, "    {summary}");
    }
}

type FlagsFn = fn() -> FlagSet;

const MODES: [(&str, &str, FlagsFn); 5] = [
    ("ca", "ca <flags>: create a self signed certificate authority", ca_flags),
    (
        "keygen",
        "keygen <flags>: create a public/private key pair. the public key can be passed to `meshd cert sign`",
        keygen_flags,
    ),
    ("sign", "sign <flags>: create and sign a certificate", sign_flags),
    ("print", "print <flags>: prints details about a certificate", print_flags),
    (
        "verify",
        "verify <flags>: verifies a certificate isn't expired and was signed by a trusted authority.",
        verify_flags,
    ),
];

fn mode_help(mode: &str, err: &mut dyn Write) {
    if let Some((_, summary, flags)) = MODES.iter().find(|(m, _, _)| *m == mode) {
        let _ = write!(
            err,
            "Usage of {PROG} {summary}\n{}",
            flags().defaults_text()
        );
    }
}

fn ca_flags() -> FlagSet {
    FlagSet::new()
        .string("name", "", "Required: name of the certificate authority")
        .duration("duration", 8760 * 3600 * NS, concat!("Optional: amount of time the certificate should be valid for. ", "Valid time units are seconds: \"s\", minutes: \"m\", hours: \"h\""))
        .string("out-key", "ca.key", "Optional: path to write the private key to")
        .string("out-crt", "ca.crt", "Optional: path to write the certificate to")
        .string("out-qr", "", "Optional: output a qr code image (png) of the certificate")
        .string("groups", "", "Optional: comma separated list of groups. This will limit which groups subordinate certs can use")
        .string("ips", "", "Optional: comma separated list of ipv4 address and network in CIDR notation. This will limit which ipv4 addresses and networks subordinate certs can use for ip addresses")
        .string("subnets", "", "Optional: comma separated list of ipv4 address and network in CIDR notation. This will limit which ipv4 addresses and networks subordinate certs can use in subnets")
}

fn keygen_flags() -> FlagSet {
    FlagSet::new()
        .string("out-pub", "", "Required: path to write the public key to")
        .string("out-key", "", "Required: path to write the private key to")
}

fn sign_flags() -> FlagSet {
    FlagSet::new()
        .string("ca-key", "ca.key", "Optional: path to the signing CA key")
        .string("ca-crt", "ca.crt", "Optional: path to the signing CA cert")
        .string("name", "", "Required: name of the cert, usually a hostname")
        .string("ip", "", "Required: ipv4 address and network in CIDR notation to assign the cert")
        .duration("duration", 0, concat!("Optional: how long the cert should be valid for. The default is 1 second before the signing cert expires. ", "Valid time units are seconds: \"s\", minutes: \"m\", hours: \"h\""))
        .string("in-pub", "", "Optional (if out-key not set): path to read a previously generated public key")
        .string("out-key", "", "Optional (if in-pub not set): path to write the private key to")
        .string("out-crt", "", "Optional: path to write the certificate to")
        .string("out-qr", "", "Optional: output a qr code image (png) of the certificate")
        .string("groups", "", "Optional: comma separated list of groups")
        .string("subnets", "", "Optional: comma separated list of ipv4 address and network in CIDR notation. Subnets this cert can serve for")
}

fn print_flags() -> FlagSet {
    FlagSet::new()
        .bool(
            "json",
            false,
            "Optional: outputs certificates in json format",
        )
        .string(
            "out-qr",
            "",
            "Optional: output a qr code image (png) of the certificate",
        )
        .string("path", "", "Required: path to the certificate")
}

fn verify_flags() -> FlagSet {
    FlagSet::new()
        .string(
            "ca",
            "",
            "Required: path to a file containing one or more ca certificates",
        )
        .string(
            "crt",
            "",
            "Required: path to a file containing a single certificate",
        )
}

fn ca(args: &[String]) -> ModeResult {
    let mut f = ca_flags();
    f.parse(args)?;
    require(&f, &["name", "out-key", "out-crt"])?;
    refuse_qr(&f)?;
    let duration = f.get_duration("duration");
    if duration <= 0 {
        return Err(ModeError::Help("-duration must be greater than 0".into()));
    }
    let groups = split_groups(f.get_str("groups"));
    let ips = split_nets(f.get_str("ips"), "ip", false)?;
    let subnets = split_nets(f.get_str("subnets"), "subnet", true)?;
    let key = CaSigningKey::from_seed(*random_32());
    let now = now_ns();
    let details = CertDetails {
        name: f.get_str("name").to_string(),
        ips,
        subnets,
        groups,
        not_before: now.div_euclid(NS),
        not_after: now.saturating_add(duration).div_euclid(NS),
        public_key: key.public_key(),
        is_ca: true,
        issuer: None,
    };
    let (key_path, crt_path) = (f.get_str("out-key"), f.get_str("out-crt"));
    if exists(key_path) {
        return Err(plain(format!(
            "refusing to overwrite existing CA key: {key_path}"
        )));
    }
    if exists(crt_path) {
        return Err(plain(format!(
            "refusing to overwrite existing CA cert: {crt_path}"
        )));
    }
    let cert = details.sign(&key);
    write_new(key_path, key.to_pem().as_bytes())
        .map_err(|e| plain(format!("error while writing out-key: {e}")))?;
    write_new(crt_path, cert.to_pem().as_bytes())
        .map_err(|e| plain(format!("error while writing out-crt: {e}")))
}

fn keygen(args: &[String]) -> ModeResult {
    let mut f = keygen_flags();
    f.parse(args)?;
    require(&f, &["out-key", "out-pub"])?;
    // nebula-cert 1.6.1 would overwrite both files; meshd refuses before writing either.
    for (flag, what) in [("out-key", "key"), ("out-pub", "public key")] {
        if exists(f.get_str(flag)) {
            let path = f.get_str(flag);
            return Err(plain(format!(
                "refusing to overwrite existing {what}: {path}"
            )));
        }
    }
    let key = X25519PrivateKey::from_bytes(*random_32());
    write_new(f.get_str("out-key"), key.to_pem().as_bytes())
        .map_err(|e| plain(format!("error while writing out-key: {e}")))?;
    write_new(
        f.get_str("out-pub"),
        x25519_public_key_to_pem(&key.public_key()).as_bytes(),
    )
    .map_err(|e| plain(format!("error while writing out-pub: {e}")))
}

fn sign(args: &[String]) -> ModeResult {
    let mut f = sign_flags();
    f.parse(args)?;
    require(&f, &["ca-key", "ca-crt", "name", "ip"])?;
    if !f.get_str("in-pub").is_empty() && !f.get_str("out-key").is_empty() {
        return Err(ModeError::Help(
            "cannot set both -in-pub and -out-key".into(),
        ));
    }
    refuse_qr(&f)?;
    let raw_key = Zeroizing::new(
        read(f.get_str("ca-key")).map_err(|e| plain(format!("error while reading ca-key: {e}")))?,
    );
    let ca_key = CaSigningKey::from_pem(&raw_key)
        .map_err(|e| plain(format!("error while parsing ca-key: {e}")))?
        .0;
    let raw_ca =
        read(f.get_str("ca-crt")).map_err(|e| plain(format!("error while reading ca-crt: {e}")))?;
    let ca = NebulaCertificate::from_pem(&raw_ca)
        .map_err(|e| plain(format!("error while parsing ca-crt: {e}")))?
        .0;
    if ca.verify_ca_key(&ca_key).is_err() {
        return Err(plain(SignError::KeyMismatch.to_string()));
    }
    let now = now_ns();
    if ca.is_expired(now.div_euclid(NS)) {
        return Err(plain(SignError::CaExpired.to_string()));
    }
    let duration = f.get_duration("duration");
    let not_after = if duration <= 0 {
        ca.not_after().saturating_sub(1)
    } else {
        now.saturating_add(duration).div_euclid(NS)
    };
    let ip = Ipv4Net::parse_cidr(f.get_str("ip")).map_err(|e| cidr_error("ip", &e))?;
    let groups = split_groups(f.get_str("groups"));
    let subnets = split_nets(f.get_str("subnets"), "subnet", true)?;
    let in_pub = f.get_str("in-pub");
    let (public_key, private_key) = if in_pub.is_empty() {
        let key = X25519PrivateKey::from_bytes(*random_32());
        (key.public_key(), Some(key))
    } else {
        let raw = read(in_pub).map_err(|e| plain(format!("error while reading in-pub: {e}")))?;
        let key = x25519_public_key_from_pem(&raw)
            .map_err(|e| plain(format!("error while parsing in-pub: {e}")))?;
        (key.0, None)
    };
    let name = f.get_str("name");
    let details = CertDetails {
        name: name.to_string(),
        ips: vec![ip],
        subnets,
        groups,
        not_before: now.div_euclid(NS),
        not_after,
        public_key,
        is_ca: false,
        issuer: None,
    };
    let cert =
        sign_host(details, &ca, &ca_key, now.div_euclid(NS)).map_err(|e| plain(e.to_string()))?;
    let key_path = non_empty_or(f.get_str("out-key"), format!("{name}.key"));
    let crt_path = non_empty_or(f.get_str("out-crt"), format!("{name}.crt"));
    if exists(&crt_path) {
        return Err(plain(format!(
            "refusing to overwrite existing cert: {crt_path}"
        )));
    }
    if let Some(key) = private_key {
        if exists(&key_path) {
            return Err(plain(format!(
                "refusing to overwrite existing key: {key_path}"
            )));
        }
        write_new(&key_path, key.to_pem().as_bytes())
            .map_err(|e| plain(format!("error while writing out-key: {e}")))?;
    }
    write_new(&crt_path, cert.to_pem().as_bytes())
        .map_err(|e| plain(format!("error while writing out-crt: {e}")))
}

fn print(args: &[String], out: &mut dyn Write) -> ModeResult {
    let mut f = print_flags();
    f.parse(args)?;
    require(&f, &["path"])?;
    refuse_qr(&f)?;
    let raw = read(f.get_str("path")).map_err(|e| plain(format!("unable to read cert; {e}")))?;
    let json = f.get_bool("json");
    let mut rest: &[u8] = &raw;
    loop {
        // Printed one by one, so a bad block after good ones still shows the good ones.
        let (cert, next) = NebulaCertificate::from_pem(rest)
            .map_err(|e| plain(format!("error while unmarshaling cert: {e}")))?;
        let text = if json {
            cert.to_json(&LocalZone)
        } else {
            cert.to_text(&LocalZone)
        };
        let _ = writeln!(out, "{text}");
        if crate::cert::pem::is_blank(next) {
            return Ok(());
        }
        rest = next;
    }
}

fn verify(args: &[String]) -> ModeResult {
    let mut f = verify_flags();
    f.parse(args)?;
    require(&f, &["ca", "crt"])?;
    let raw_ca =
        read(f.get_str("ca")).map_err(|e| plain(format!("error while reading ca: {e}")))?;
    let now = now_ns().div_euclid(NS);
    let mut pool = CaPool::new();
    let mut rest: &[u8] = &raw_ca;
    loop {
        let next = add_one_ca(&mut pool, rest, now)
            .map_err(|e| plain(format!("error while adding ca cert to pool: {e}")))?;
        if crate::cert::pem::is_blank(next) {
            break;
        }
        rest = next;
    }
    let raw_crt = read(f.get_str("crt")).map_err(|e| plain(format!("unable to read crt; {e}")))?;
    let cert = NebulaCertificate::from_pem(&raw_crt)
        .map_err(|e| plain(format!("error while parsing crt: {e}")))?
        .0;
    pool.verify(&cert, now).map_err(|e| plain(e.to_string()))
}

/// nebula-cert's verify treats an expired CA in the bundle as an error, unlike the daemon.
fn add_one_ca<'a>(pool: &mut CaPool, data: &'a [u8], now: i64) -> Result<&'a [u8], CertError> {
    let (ca, rest) = NebulaCertificate::from_pem(data)?;
    let name = ca.name().to_string();
    match pool.add_ca(ca, now)? {
        crate::cert::CaStatus::Valid => Ok(rest),
        crate::cert::CaStatus::Expired => Err(CertError::CaExpired { name }),
    }
}

fn require(f: &FlagSet, names: &[&str]) -> ModeResult {
    match names.iter().find(|n| f.get_str(n).is_empty()) {
        Some(n) => Err(ModeError::Help(format!("-{n} is required"))),
        None => Ok(()),
    }
}

fn refuse_qr(f: &FlagSet) -> ModeResult {
    if f.get_str("out-qr").is_empty() {
        return Ok(());
    }
    Err(plain(
        "-out-qr is not supported by meshd cert (no QR code encoder is built in); \
         run again without -out-qr",
    ))
}

fn split_groups(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
        .map(str::to_string)
        .collect()
}

/// Comma list of CIDRs; `ips` keep the address as written, `subnets` are masked.
fn split_nets(s: &str, what: &str, masked: bool) -> Result<Vec<Ipv4Net>, ModeError> {
    s.split(',')
        .map(|part| part.trim_matches(' '))
        .filter(|part| !part.is_empty())
        .map(|part| {
            let net = Ipv4Net::parse_cidr(part).map_err(|e| cidr_error(what, &e))?;
            Ok(if masked { net.network() } else { net })
        })
        .collect()
}

fn cidr_error(what: &str, e: &CidrError) -> ModeError {
    ModeError::Help(format!("invalid {what} definition: {e}"))
}

fn non_empty_or(s: &str, fallback: String) -> String {
    if s.is_empty() {
        fallback
    } else {
        s.to_string()
    }
}

/// 32 bytes from the OS CSPRNG for a new private key.
fn random_32() -> Zeroizing<[u8; 32]> {
    let mut b = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut b[..]);
    b
}

fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

fn exists(path: &str) -> bool {
    std::fs::symlink_metadata(path).is_ok() || Path::new(path).exists()
}

/// Reads a file, wording errors as Go does (`open PATH: no such file or directory`).
fn read(path: &str) -> Result<Vec<u8>, String> {
    let mut file = std::fs::File::open(path).map_err(|e| go_io_error("open", path, &e))?;
    // Sized up front so a key file is not left behind in reallocated buffers.
    let size = file.metadata().map(|m| m.len() as usize + 1).unwrap_or(0);
    let mut buf = Vec::with_capacity(size);
    std::io::Read::read_to_end(&mut file, &mut buf).map_err(|e| go_io_error("read", path, &e))?;
    Ok(buf)
}

/// Creates `path` with mode 0600; never replaces an existing file.
fn write_new(path: &str, data: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| go_io_error("open", path, &e))?;
    file.write_all(data)
        .map_err(|e| go_io_error("write", path, &e))
}

fn go_io_error(op: &str, path: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    let lowered = match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    };
    format!("{op} {path}: {lowered}")
}

/// The machine's local zone, as nebula-cert (Go) prints times in it.
pub(crate) struct LocalZone;

impl TimeZone for LocalZone {
    fn offset_at(&self, unix: i64) -> ZoneOffset {
        local_offset(unix).unwrap_or(ZoneOffset {
            seconds_east: 0,
            abbrev: "UTC".to_string(),
        })
    }
}

fn local_offset(unix: i64) -> Option<ZoneOffset> {
    // time_t is 32 bits on some targets.
    #[allow(clippy::useless_conversion)]
    let t: libc::time_t = unix.try_into().ok()?;
    // SAFETY: tm is plain data; localtime_r (which loads TZ / /etc/localtime itself) writes into
    // it and returns null on failure; tm_zone points into static storage owned by libc.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        let abbrev = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned()
        };
        Some(ZoneOffset {
            seconds_east: i32::try_from(tm.tm_gmtoff).ok()?,
            abbrev,
        })
    }
}

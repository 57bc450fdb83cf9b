//! The typed configuration model and Nebula 1.6.1's CODE defaults (not the example file's values),
//! all in `defaults` below. Plain data; building it from YAML lives in `build`.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::firewall::{Action, Rule};

use super::types::{Cipher, HostPort, IpNet, LogFormat, LogLevel, LookupNetwork, SendRecvError};

/// Every default in one place (values from the `c.Get*` calls of Nebula v1.6.1, plus the later
/// releases' keys meshd accepts).
pub mod defaults {
    use std::time::Duration;

    pub const LIGHTHOUSE_INTERVAL_SECS: i64 = 10;
    /// `meshd.*` bounds (meshd only): a lighthouse admits 100,000 hosts with room to spare.
    pub const MAX_HOSTS: usize = 131_072;
    pub const MAX_PENDING_HANDSHAKES: usize = 4_096;
    pub const MAX_RELAY_LEGS: usize = 65_536;
    pub const DNS_HOST: &str = "";
    pub const DNS_PORT: i64 = 53;
    pub const LISTEN_HOST: &str = "0.0.0.0";
    pub const LISTEN_PORT: i64 = 0;
    pub const LISTEN_BATCH: i64 = 64;
    pub const LISTEN_BUFFER: i64 = 0;
    pub const ROUTINES: i64 = 1;
    pub const PUNCHY_DELAY: Duration = Duration::from_secs(1);
    pub const PUNCHY_RESPOND_DELAY: Duration = Duration::from_secs(5);
    /// 1.6.1 always punches every address; Nebula 1.7+ defaults `target_all_remotes` to false.
    pub const PUNCHY_TARGET_ALL_REMOTES: bool = true;
    pub const CIPHER: &str = "aes";
    pub const USE_RELAYS: bool = true;
    pub const TUN_TX_QUEUE: i64 = 500;
    pub const TUN_MTU: i64 = 1300;
    /// Smallest MTU Nebula accepts on a tun route.
    pub const MIN_ROUTE_MTU: i64 = 500;
    pub const LOG_LEVEL: &str = "info";
    pub const LOG_FORMAT: &str = "text";
    pub const STATS_PREFIX: &str = "nebula";
    pub const STATS_PROTOCOL: &str = "tcp";
    /// Internal stats tick when no `stats.interval` is given.
    pub const STATS_INTERVAL: Duration = Duration::from_secs(10);
    pub const HANDSHAKE_TRY_INTERVAL: Duration = Duration::from_millis(100);
    pub const HANDSHAKE_RETRIES: i64 = 10;
    pub const HANDSHAKE_TRIGGER_BUFFER: i64 = 64;
    pub const HANDSHAKE_QUERY_BUFFER: i64 = 64;
    pub const CONNTRACK_TCP: Duration = Duration::from_secs(12 * 60);
    pub const CONNTRACK_UDP: Duration = Duration::from_secs(3 * 60);
    pub const CONNTRACK_DEFAULT: Duration = Duration::from_secs(10 * 60);
    /// `firewall.conntrack.routine_cache_timeout` when unset and routines > 1.
    pub const CONNTRACK_ROUTINE_CACHE_MULTI: Duration = Duration::from_secs(1);
    pub const CONNECTION_ALIVE_INTERVAL_SECS: i64 = 5;
    pub const PENDING_DELETION_INTERVAL_SECS: i64 = 10;
    pub const STATIC_MAP_CADENCE: Duration = Duration::from_secs(30);
    pub const STATIC_MAP_LOOKUP_TIMEOUT: Duration = Duration::from_millis(250);
    pub const TUNNELS_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(10 * 60);
    /// Fixed in 1.6.1 (`hostmap.go`); configurable since v1.9.0 as `counters.*` / `timers.*`.
    pub const TRY_PROMOTE_EVERY: i64 = 1000;
    pub const REQUERY_EVERY_PACKETS: i64 = 5000;
    pub const REQUERY_WAIT: Duration = Duration::from_secs(60);
    pub const CERT_EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
}

/// The whole configuration, after Nebula's lenient reading and the load-time checks.
#[derive(Debug, Clone)]
pub struct Config {
    pub pki: Pki,
    /// VPN IP → addresses, in file order.
    pub static_host_map: Vec<StaticHost>,
    pub static_map: StaticMap,
    pub lighthouse: Lighthouse,
    pub listen: Listen,
    pub punchy: Punchy,
    pub cipher: Cipher,
    /// `preferred_ranges` plus the deprecated `local_range`, deduplicated.
    pub preferred_ranges: Vec<IpNet>,
    /// Reader/writer thread pairs (`routines`, or the deprecated `tun.routines`/`listen.routines`).
    pub routines: usize,
    pub sshd: Sshd,
    pub relay: Relay,
    pub tun: Tun,
    pub logging: Logging,
    pub stats: Stats,
    pub handshakes: Handshakes,
    pub firewall: Firewall,
    pub timers: Timers,
    pub tunnels: Tunnels,
    pub counters: Counters,
    /// meshd-only: the local control socket and certificate-expiry warnings.
    pub control: Control,
    /// `meshd.*` (meshd only): bounds on the tables peers can grow.
    pub bounds: Bounds,
}

/// meshd-only `control:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    /// `control.socket`; `None`: `/run/meshd/<tun.dev>.sock`.
    pub socket: Option<PathBuf>,
    /// `control.cert_expiry_warning` (default 30 days): warn when the host certificate or a CA
    /// expires within this.
    pub cert_expiry_warning: Duration,
}

/// `meshd.*` (meshd only; nebula has no such bounds): how many tunnels, pending handshakes and
/// relay legs a node holds at most. Sized for a lighthouse of 100,000 hosts by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bounds {
    /// `meshd.max_hosts`: tunnels (and lighthouse entries, DNS names, remote lists).
    pub max_hosts: usize,
    /// `meshd.max_pending_handshakes`: our own handshakes under way.
    pub max_pending: usize,
    /// `meshd.max_relay_legs`: relay legs in total.
    pub max_relay_legs: usize,
}

/// Where PEM data comes from: Nebula treats any value containing `-----BEGIN` as inline PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PemSource {
    Inline(String),
    Path(PathBuf),
}

impl PemSource {
    pub fn from_config(s: &str) -> PemSource {
        if s.contains("-----BEGIN") {
            PemSource::Inline(s.to_string())
        } else {
            PemSource::Path(PathBuf::from(s))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pki {
    pub ca: PemSource,
    pub cert: PemSource,
    pub key: PemSource,
    /// Lowercase hex fingerprints never accepted (`blocklist` plus deprecated `blacklist`).
    pub blocklist: Vec<String>,
    pub disconnect_invalid: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticHost {
    pub vpn_ip: Ipv4Addr,
    pub addrs: Vec<HostPort>,
}

/// `static_map.*` (since v1.7.0): re-resolution of DNS names in `static_host_map`.
#[derive(Debug, Clone)]
pub struct StaticMap {
    pub cadence: Duration,
    pub network: LookupNetwork,
    pub lookup_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Lighthouse {
    pub am_lighthouse: bool,
    pub serve_dns: bool,
    pub dns: Dns,
    /// Seconds between updates to the lighthouses.
    pub interval: Duration,
    pub hosts: Vec<Ipv4Addr>,
    pub remote_allow_list: Option<AllowList>,
    /// VPN range → an extra remote allow list for peers in it.
    pub remote_allow_ranges: Vec<(IpNet, AllowList)>,
    pub local_allow_list: Option<LocalAllowList>,
    pub advertise_addrs: Vec<HostPort>,
    /// `calculated_remotes` (since v1.7.0): VPN range → remotes guessed from the VPN IP.
    pub calculated_remotes: Vec<(IpNet, Vec<CalculatedRemote>)>,
}

/// One `calculated_remotes` entry: the guessed address takes `mask`'s network bits and the VPN
/// IP's host bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalculatedRemote {
    pub mask: IpNet,
    pub port: u16,
}

#[derive(Debug, Clone)]
pub struct Dns {
    /// Empty = all addresses.
    pub host: String,
    pub port: u16,
}

/// CIDR → allow, complete with the implicit `0.0.0.0/0` and `::/0` defaults; the most specific
/// matching entry decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList {
    pub rules: Vec<(IpNet, bool)>,
}

impl AllowList {
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.rules
            .iter()
            .filter(|(net, _)| net.contains(ip))
            .max_by_key(|(net, _)| net.prefix())
            .map(|(_, allow)| *allow)
            .unwrap_or(true)
    }
}

#[derive(Debug, Clone)]
pub struct LocalAllowList {
    pub cidrs: AllowList,
    /// Interface-name regexes, anchored to the whole name; all share one allow value and a
    /// non-matching interface gets the opposite.
    pub interfaces: Vec<(regex::Regex, bool)>,
}

#[derive(Debug, Clone)]
pub struct Listen {
    pub host: IpAddr,
    /// 0 = pick a random port.
    pub port: u16,
    pub batch: usize,
    /// Socket buffer sizes; 0 = system default.
    pub read_buffer: u32,
    pub write_buffer: u32,
    pub send_recv_error: SendRecvError,
    /// `accept_recv_error` (since v1.10.1).
    pub accept_recv_error: SendRecvError,
    /// `so_mark` (since v1.10.0); 0 = unset.
    pub so_mark: u32,
    /// `udp_offloads` (Nebula master): UDP GSO sends and GRO receives.
    pub udp_offloads: bool,
}

#[derive(Debug, Clone)]
pub struct Punchy {
    pub punch: bool,
    pub respond: bool,
    pub delay: Duration,
    /// `respond_delay` (since v1.7.0).
    pub respond_delay: Duration,
    /// `target_all_remotes` (since v1.7.0).
    pub target_all_remotes: bool,
}

#[derive(Debug, Clone)]
pub struct Sshd {
    pub enabled: bool,
    /// Checked only when enabled: `host:port`, port not 22.
    pub listen: String,
    pub host_key: Option<PathBuf>,
    pub authorized_users: Vec<SshUser>,
    /// `trusted_cas`, `sandbox_dir` (newer releases), accepted and unused.
    pub trusted_cas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUser {
    pub user: String,
    pub keys: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Relay {
    pub relays: Vec<Ipv4Addr>,
    pub am_relay: bool,
    pub use_relays: bool,
}

#[derive(Debug, Clone)]
pub struct Tun {
    pub disabled: bool,
    pub dev: Option<String>,
    pub drop_local_broadcast: bool,
    pub drop_multicast: bool,
    pub tx_queue: usize,
    pub mtu: usize,
    pub routes: Vec<TunRoute>,
    pub unsafe_routes: Vec<UnsafeRoute>,
    /// `use_system_route_table` (since v1.7.0).
    pub use_system_route_table: bool,
    /// `use_offloads` (Nebula master): TSO/USO superpackets from the device, GRO writes to it.
    pub use_offloads: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunRoute {
    pub route: IpNet,
    pub mtu: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsafeRoute {
    pub route: IpNet,
    pub via: Ipv4Addr,
    /// `None` = the tun MTU.
    pub mtu: Option<usize>,
    pub metric: u32,
    /// `install` (since v1.7.0): false = only used for lookups, not put in the kernel table.
    pub install: bool,
}

#[derive(Debug, Clone)]
pub struct Logging {
    pub level: LogLevel,
    pub format: LogFormat,
    pub disable_timestamp: bool,
    /// Go time layout; empty = RFC 3339.
    pub timestamp_format: String,
}

#[derive(Debug, Clone)]
pub struct Stats {
    pub backend: StatsBackend,
    pub interval: Duration,
    pub message_metrics: bool,
    pub lighthouse_metrics: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsBackend {
    Off,
    Graphite {
        protocol: String,
        host: String,
        prefix: String,
    },
    Prometheus {
        listen: String,
        path: String,
        namespace: String,
        subsystem: String,
    },
}

#[derive(Debug, Clone)]
pub struct Handshakes {
    pub try_interval: Duration,
    pub retries: u32,
    pub trigger_buffer: usize,
    /// `query_buffer` (since v1.8.1).
    pub query_buffer: usize,
}

#[derive(Debug, Clone)]
pub struct Firewall {
    pub conntrack: Conntrack,
    /// Rules parsed by `firewall::rules::parse_rules`.
    pub outbound: Vec<Rule>,
    pub inbound: Vec<Rule>,
    /// `inbound_action` / `outbound_action` (since v1.7.0; 1.6.1 always drops).
    pub inbound_action: Action,
    pub outbound_action: Action,
    /// `default_local_cidr_any` (v1.9.0+); 1.6.1 behaves as `true`.
    pub default_local_cidr_any: bool,
}

#[derive(Debug, Clone)]
pub struct Conntrack {
    pub tcp_timeout: Duration,
    pub udp_timeout: Duration,
    pub default_timeout: Duration,
    /// Per-routine cache; zero = off.
    pub routine_cache_timeout: Duration,
    /// `max_connections` (meshd only; nebula has no bound): most flows conntrack tracks.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct Timers {
    pub connection_alive_interval: Duration,
    pub pending_deletion_interval: Duration,
    /// `requery_wait_duration` (newer releases): least time between lighthouse re-queries.
    pub requery_wait: Duration,
}

/// `counters.*` (newer releases; the same values are constants in 1.6.1).
#[derive(Debug, Clone)]
pub struct Counters {
    /// Outbound packets between attempts to move a tunnel to a preferred range.
    pub try_promote: u32,
    /// Outbound packets between lighthouse re-queries for a peer.
    pub requery_every_packets: u32,
}

/// `tunnels.*` (since v1.10.0).
#[derive(Debug, Clone)]
pub struct Tunnels {
    pub drop_inactive: bool,
    pub inactivity_timeout: Duration,
}

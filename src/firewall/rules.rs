//! Firewall rule syntax: the YAML lists under `firewall.inbound` / `firewall.outbound` become
//! typed [`Rule`]s, accepting and refusing what nebula 1.6.1 does (`firewall.go`
//! `AddFirewallRulesFromConfig`, `convertRule`, `parsePort`), plus master's `local_cidr`,
//! `cidr: any` and `inbound_action`/`outbound_action`. Owns parsing only: no matching, no
//! conntrack, no reading of other config keys.

use std::fmt;

use serde_yaml::Value;

use super::gofmt::{go_text, kind_name};
use super::net::{parse_cidr, Ipv4Net, ParsedCidr};
pub use super::port::parse_port;
pub use super::settings::{Action, ConntrackTimeouts};

/// Which way a packet crosses the firewall, seen from this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer through the tunnel towards our tun device.
    Inbound,
    /// From our tun device towards a peer.
    Outbound,
}

impl Direction {
    pub fn reverse(self) -> Direction {
        match self {
            Direction::Inbound => Direction::Outbound,
            Direction::Outbound => Direction::Inbound,
        }
    }

    /// The config key the rules for this direction live under.
    pub fn config_key(self) -> &'static str {
        match self {
            Direction::Inbound => "firewall.inbound",
            Direction::Outbound => "firewall.outbound",
        }
    }
}

/// A rule's `proto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    /// IP protocol number (0 stands for "any", as in Nebula).
    pub fn number(self) -> u8 {
        match self {
            Proto::Any => 0,
            Proto::Tcp => 6,
            Proto::Udp => 17,
            Proto::Icmp => 1,
        }
    }
}

/// A rule's `port` (or `code`): which destination ports it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// `any`, `0`, or a range starting at 0: every port and non-first fragments.
    Any,
    /// `fragment`: non-first IPv4 fragments only.
    Fragment,
    /// Inclusive range of ports, 1 <= start <= end <= 65535. Does not match fragments.
    Range { start: u16, end: u16 },
    /// Ports above 65535: nebula 1.6.1 accepts them and they never match.
    Never,
}

impl PortSpec {
    /// Does this spec cover a packet with destination `port` (ignored for fragments)?
    pub fn matches(self, port: u16, fragment: bool) -> bool {
        match self {
            PortSpec::Any => true,
            PortSpec::Fragment => fragment,
            PortSpec::Range { start, end } => !fragment && start <= port && port <= end,
            PortSpec::Never => false,
        }
    }
}

/// A `cidr` or `local_cidr` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CidrSpec {
    /// `any` (master syntax).
    Any,
    V4(Ipv4Net),
    /// An IPv6 prefix: accepted (as 1.6.1 does) but never matches, since the overlay is IPv4.
    V6Never,
}

/// One parsed firewall rule. Conditions combine as: proto AND port AND (no CA condition OR
/// ca_sha OR ca_name) AND (host OR groups OR cidr, or any peer) AND local_cidr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    pub direction: Direction,
    pub proto: Proto,
    pub port: PortSpec,
    /// `host`; `Some("any")` means any peer.
    pub host: Option<String>,
    /// `group` (one entry) or `groups` (all required). Empty = not given.
    pub groups: Vec<String>,
    pub cidr: Option<CidrSpec>,
    /// `None` = any local address we handle (1.6.1 behaviour).
    pub local_cidr: Option<CidrSpec>,
    pub ca_name: Option<String>,
    pub ca_sha: Option<String>,
}

impl Rule {
    /// True when the rule does not look at the peer's identity (Nebula's "any" collapse): no
    /// host/group/cidr, or host `any`, a group `any`, or a cidr containing 0.0.0.0.
    pub fn matches_any_peer(&self) -> bool {
        let no_selector = self.host.is_none() && self.groups.is_empty() && self.cidr.is_none();
        let cidr_any = match self.cidr {
            Some(CidrSpec::Any) => true,
            Some(CidrSpec::V4(n)) => n.contains(std::net::Ipv4Addr::UNSPECIFIED),
            _ => false,
        };
        no_selector
            || self.host.as_deref() == Some("any")
            || self.groups.iter().any(|g| g == "any")
            || cidr_any
    }
}

/// A rule that nebula would refuse, with the dotted path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RuleError {
    /// e.g. `firewall.inbound[2].proto`, or `firewall.inbound[2]` for whole-rule problems.
    pub path: String,
    pub message: String,
}

const KNOWN_KEYS: &[&str] = &[
    "port",
    "code",
    "proto",
    "host",
    "group",
    "groups",
    "cidr",
    "local_cidr",
    "ca_name",
    "ca_sha",
];

/// Parses the rule list of one direction. `v` is the value under `firewall.inbound` or
/// `firewall.outbound` (`Null` = no rules); `dotted_prefix` names it in messages. Returns the
/// rules and warnings, or every error found.
pub fn parse_rules(
    direction: Direction,
    v: &Value,
    dotted_prefix: &str,
) -> Result<(Vec<Rule>, Vec<String>), Vec<RuleError>> {
    let items = match v {
        Value::Null => return Ok((Vec::new(), Vec::new())),
        Value::Sequence(items) => items,
        Value::Tagged(t) => return parse_rules(direction, &t.value, dotted_prefix),
        other => {
            return Err(vec![RuleError {
                path: dotted_prefix.to_string(),
                message: format!("should be a list of rules, got {}", kind_name(other)),
            }])
        }
    };
    let mut rules = Vec::with_capacity(items.len());
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut ctx = RuleCtx {
            path: format!("{dotted_prefix}[{i}]"),
            warnings: &mut warnings,
            errors: Vec::new(),
        };
        let rule = ctx.parse_rule(direction, item);
        match rule {
            Some(r) if ctx.errors.is_empty() => rules.push(r),
            _ => errors.append(&mut ctx.errors),
        }
    }
    if errors.is_empty() {
        Ok((rules, warnings))
    } else {
        Err(errors)
    }
}

/// The raw text of each known key, as Nebula's `toString` would see it.
#[derive(Default)]
struct RawRule {
    port: Option<String>,
    code: Option<String>,
    proto: Option<String>,
    host: Option<String>,
    group: Option<String>,
    groups: Vec<String>,
    cidr: Option<String>,
    local_cidr: Option<String>,
    ca_name: Option<String>,
    ca_sha: Option<String>,
}

struct RuleCtx<'w> {
    path: String,
    warnings: &'w mut Vec<String>,
    errors: Vec<RuleError>,
}

impl RuleCtx<'_> {
    fn err(&mut self, field: Option<&str>, message: String) {
        let path = match field {
            Some(f) => format!("{}.{f}", self.path),
            None => self.path.clone(),
        };
        self.errors.push(RuleError { path, message });
    }

    fn warn(&mut self, field: &str, message: String) {
        self.warnings
            .push(format!("{}.{field}: {message}", self.path));
    }

    fn parse_rule(&mut self, direction: Direction, item: &Value) -> Option<Rule> {
        let map = match item {
            Value::Mapping(m) => m,
            Value::Tagged(t) => return self.parse_rule(direction, &t.value),
            other => {
                self.err(
                    None,
                    format!(
                        "a rule must be a map (port, proto, host, ...), got {}",
                        kind_name(other)
                    ),
                );
                return None;
            }
        };
        let raw = self.read_raw(map);
        self.build(direction, raw)
    }

    fn read_raw(&mut self, map: &serde_yaml::Mapping) -> RawRule {
        let mut raw = RawRule::default();
        for (k, v) in map {
            let key = match k {
                Value::String(s) => s.as_str(),
                other => {
                    let text = go_text(other);
                    self.warn(&text, "unknown key, ignored".to_string());
                    continue;
                }
            };
            match key {
                "port" => raw.port = self.scalar(key, v),
                "code" => raw.code = self.scalar(key, v),
                "proto" => raw.proto = self.scalar(key, v),
                "host" => raw.host = self.scalar(key, v),
                "cidr" => raw.cidr = self.scalar(key, v),
                "local_cidr" => raw.local_cidr = self.scalar(key, v),
                "ca_name" => raw.ca_name = self.scalar(key, v),
                "ca_sha" => raw.ca_sha = self.scalar(key, v),
                "group" => raw.group = self.group(v),
                "groups" => raw.groups = self.groups(v),
                _ => {
                    debug_assert!(!KNOWN_KEYS.contains(&key));
                    self.warn(key, "unknown key, ignored".to_string());
                }
            }
        }
        raw
    }

    /// Nebula's `toString`: Go `%v` text; an empty string counts as absent. Non-scalars are
    /// taken the same way (so they can only match a literal like `[a b]`), with a warning.
    fn scalar(&mut self, key: &str, v: &Value) -> Option<String> {
        let text = go_text(v);
        match v {
            Value::Sequence(_) | Value::Mapping(_) | Value::Null => self.warn(
                key,
                format!(
                    "expected a single value, got {}; read as the text {text:?}",
                    kind_name(v)
                ),
            ),
            _ => {}
        }
        (!text.is_empty()).then_some(text)
    }

    /// `group`: one name; a one-element list is tolerated with a warning, longer lists refused.
    fn group(&mut self, v: &Value) -> Option<String> {
        match v {
            Value::Sequence(items) => match items.as_slice() {
                [] => {
                    self.err(
                        Some("group"),
                        "an empty list (give one group name)".to_string(),
                    );
                    None
                }
                [one] => {
                    self.warn(
                        "group",
                        "a list with one value, converted to that value".to_string(),
                    );
                    self.scalar("group", one)
                }
                _ => {
                    self.err(
                        Some("group"),
                        "a list with more than one group; use `groups` for a list of groups that must all match"
                            .to_string(),
                    );
                    None
                }
            },
            other => self.scalar("group", other),
        }
    }

    /// `groups`: a list of names (all required) or a single value.
    fn groups(&mut self, v: &Value) -> Vec<String> {
        match v {
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        other => self.err(
                            Some(&format!("groups[{i}]")),
                            format!("group names must be strings, got {}", kind_name(other)),
                        ),
                    }
                }
                out
            }
            Value::Null => {
                self.err(
                    Some("groups"),
                    "empty (give a list of group names)".to_string(),
                );
                Vec::new()
            }
            Value::String(s) => vec![s.clone()],
            other => vec![go_text(other)],
        }
    }

    fn build(&mut self, direction: Direction, raw: RawRule) -> Option<Rule> {
        if raw.port.is_some() && raw.code.is_some() {
            self.err(None, "only one of port or code may be given".to_string());
        }
        let has_selector = raw.host.is_some()
            || raw.group.is_some()
            || !raw.groups.is_empty()
            || raw.cidr.is_some()
            || raw.local_cidr.is_some()
            || raw.ca_name.is_some()
            || raw.ca_sha.is_some();
        if !has_selector {
            self.err(
                None,
                "at least one of host, group, groups, cidr, local_cidr, ca_name or ca_sha is required"
                    .to_string(),
            );
        }
        let mut groups = raw.groups;
        if let Some(g) = raw.group {
            if !groups.is_empty() {
                self.err(None, "only one of group or groups may be given".to_string());
            }
            groups = vec![g];
        }
        let (port_key, port_text) = match (&raw.code, &raw.port) {
            (Some(c), _) => ("code", Some(c.as_str())),
            (None, p) => ("port", p.as_deref()),
        };
        let port = self.port(port_key, port_text);
        let proto = self.proto(raw.proto.as_deref());
        let cidr = raw.cidr.as_deref().and_then(|c| self.cidr("cidr", c));
        let local_cidr = raw
            .local_cidr
            .as_deref()
            .and_then(|c| self.cidr("local_cidr", c));
        if raw.code.is_some() {
            self.warn(
                "code",
                "treated exactly like port; ICMP packets have no ports, so only `any` matches them"
                    .to_string(),
            );
        }
        self.sanity_warnings(raw.host.as_deref(), &groups, raw.cidr.as_deref());
        if let (Some(Proto::Icmp), Some(PortSpec::Range { .. })) = (proto, port) {
            self.warn(
                port_key,
                "ICMP has no ports, so an icmp rule with a port number never matches (use any)"
                    .to_string(),
            );
        }
        Some(Rule {
            direction,
            proto: proto?,
            port: port?,
            host: raw.host,
            groups,
            cidr: if raw.cidr.is_some() {
                Some(cidr?)
            } else {
                None
            },
            local_cidr: if raw.local_cidr.is_some() {
                Some(local_cidr?)
            } else {
                None
            },
            ca_name: raw.ca_name,
            ca_sha: raw.ca_sha,
        })
    }

    /// Nebula master's `rule.sanity`: an `any` that silently overrides other selectors.
    fn sanity_warnings(&mut self, host: Option<&str>, groups: &[String], cidr: Option<&str>) {
        let groups_any = groups.iter().any(|g| g == "any");
        if groups_any && groups.len() > 1 {
            self.warn(
                "groups",
                "contains `any`, so the other groups are ignored".to_string(),
            );
        }
        if host == Some("any") && (!groups.is_empty() || cidr.is_some()) {
            self.warn(
                "host",
                "is `any`, so group/groups/cidr in this rule are ignored".to_string(),
            );
        }
        if groups_any && (host.is_some_and(|h| h != "any") || cidr.is_some()) {
            self.warn(
                "groups",
                "contain `any`, so host/cidr in this rule are ignored".to_string(),
            );
        }
    }

    fn proto(&mut self, text: Option<&str>) -> Option<Proto> {
        match text {
            Some("any") => Some(Proto::Any),
            Some("tcp") => Some(Proto::Tcp),
            Some("udp") => Some(Proto::Udp),
            Some("icmp") => Some(Proto::Icmp),
            Some(other) => {
                self.err(
                    Some("proto"),
                    format!("unknown protocol {other:?} (expected any, tcp, udp, icmp)"),
                );
                None
            }
            None => {
                self.err(
                    Some("proto"),
                    "missing (expected any, tcp, udp, icmp)".to_string(),
                );
                None
            }
        }
    }

    fn port(&mut self, key: &str, text: Option<&str>) -> Option<PortSpec> {
        let Some(text) = text else {
            self.err(
                Some("port"),
                "missing (a port number, a range a-b, any or fragment is required)".to_string(),
            );
            return None;
        };
        match parse_port(text) {
            Ok((spec, warning)) => {
                if let Some(w) = warning {
                    self.warn(key, w);
                }
                Some(spec)
            }
            Err(e) => {
                self.err(Some(key), e);
                None
            }
        }
    }

    fn cidr(&mut self, key: &str, text: &str) -> Option<CidrSpec> {
        if text == "any" {
            return Some(CidrSpec::Any);
        }
        match parse_cidr(text) {
            Ok(ParsedCidr::V4(n)) => Some(CidrSpec::V4(n)),
            Ok(ParsedCidr::V6) => {
                self.warn(
                    key,
                    format!("{text:?} is IPv6; the overlay is IPv4 only, so it never matches"),
                );
                Some(CidrSpec::V6Never)
            }
            Err(e) => {
                self.err(
                    Some(key),
                    format!("{text:?} is not a CIDR ({e}; expected a.b.c.d/n or any)"),
                );
                None
            }
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

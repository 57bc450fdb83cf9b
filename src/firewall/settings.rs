//! Firewall settings beside the rules: the reject/drop action of each direction and the conntrack
//! timeouts. Owns their types and the action key's parsing; durations are parsed by config.

use std::time::Duration;

use serde_yaml::Value;

use super::gofmt::go_text;

/// What to do with a packet the firewall refuses (`firewall.inbound_action` / `outbound_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Drop,
    /// Answer with a TCP RST or ICMP admin-prohibited (see `reject`).
    Reject,
}

impl Action {
    /// Parses an action key like Nebula master: `drop` / `reject`; a missing key is `drop`;
    /// anything else is `drop` with a warning.
    pub fn parse(v: Option<&Value>, dotted_key: &str) -> (Action, Option<String>) {
        let text = match v {
            None | Some(Value::Null) => return (Action::Drop, None),
            Some(v) => go_text(v),
        };
        match text.as_str() {
            "drop" => (Action::Drop, None),
            "reject" => (Action::Reject, None),
            other => (
                Action::Drop,
                Some(format!(
                    "{dotted_key}: unknown action {other:?} (expected drop or reject); using drop"
                )),
            ),
        }
    }
}

/// Conntrack entry lifetimes (`firewall.conntrack.*`), refreshed on every hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConntrackTimeouts {
    pub tcp: Duration,
    pub udp: Duration,
    /// ICMP and every other protocol.
    pub default: Duration,
}

impl Default for ConntrackTimeouts {
    fn default() -> Self {
        ConntrackTimeouts {
            tcp: Duration::from_secs(12 * 60),
            udp: Duration::from_secs(3 * 60),
            default: Duration::from_secs(10 * 60),
        }
    }
}

impl ConntrackTimeouts {
    /// Lifetime of an entry for IP protocol number `protocol`.
    pub fn for_protocol(&self, protocol: u8) -> Duration {
        match protocol {
            6 => self.tcp,
            17 => self.udp,
            _ => self.default,
        }
    }
}

//! Firewall: rules and conntrack with Nebula 1.6.1 semantics (plus master's reject actions and
//! `local_cidr`). Pure code: no sockets, files, clocks or tun; time is passed in by the caller.
//! Owns rule parsing, flow-key extraction from IPv4 packets, the compiled lookup tables, conntrack
//! and reject-packet construction. Must not touch certificates (peer identity comes in as a
//! borrowed [`Peer`]) or config files (the config module hands us YAML values).

mod gofmt;
pub mod net;
pub mod rules;

pub use net::Ipv4Net;
pub use rules::{
    parse_port, parse_rules, Action, CidrSpec, ConntrackTimeouts, Direction, PortSpec, Proto, Rule,
    RuleError,
};

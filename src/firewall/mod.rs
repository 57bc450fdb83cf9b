//! Firewall: rules and conntrack with Nebula semantics. Pure code.

//! NAT models for the simulated underlay: full-cone, port-restricted and symmetric mappings in
//! front of one node. Mappings never expire; only the translation and inbound filter are modelled.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatKind {
    FullCone,
    PortRestricted,
    Symmetric,
}

/// One NAT mapping: public port, the destination it was made for (symmetric only) and every
/// destination the inside host has sent to through it.
#[derive(Clone, Debug)]
struct Mapping {
    dst: Option<SocketAddr>,
    public_port: u16,
    sent_to: BTreeSet<SocketAddr>,
}

#[derive(Clone, Debug)]
pub struct Nat {
    pub kind: NatKind,
    pub public_ip: Ipv4Addr,
    next_port: u16,
    mappings: Vec<Mapping>,
}

impl Nat {
    pub(super) fn new(kind: NatKind, public_ip: Ipv4Addr) -> Nat {
        Nat {
            kind,
            public_ip,
            next_port: 30_000,
            mappings: Vec::new(),
        }
    }

    /// Outbound: the public source for a packet to `dst` (creating the mapping).
    pub(super) fn outbound(&mut self, dst: SocketAddr) -> SocketAddr {
        let key = (self.kind == NatKind::Symmetric).then_some(dst);
        let i = match self.mappings.iter().position(|m| m.dst == key) {
            Some(i) => i,
            None => {
                self.next_port += 1;
                self.mappings.push(Mapping {
                    dst: key,
                    public_port: self.next_port,
                    sent_to: BTreeSet::new(),
                });
                self.mappings.len() - 1
            }
        };
        self.mappings[i].sent_to.insert(dst);
        SocketAddr::from((self.public_ip, self.mappings[i].public_port))
    }

    /// Inbound to `public_port` from `src`: let through?
    pub(super) fn inbound(&self, public_port: u16, src: SocketAddr) -> bool {
        let Some(m) = self.mappings.iter().find(|m| m.public_port == public_port) else {
            return false;
        };
        match self.kind {
            NatKind::FullCone => true,
            NatKind::PortRestricted => m.sent_to.contains(&src),
            NatKind::Symmetric => m.dst == Some(src),
        }
    }

    /// Public address of the mapping towards `dst`, if one exists.
    pub fn mapped_for(&self, dst: SocketAddr) -> Option<SocketAddr> {
        self.mappings
            .iter()
            .find(|m| m.sent_to.contains(&dst))
            .map(|m| SocketAddr::from((self.public_ip, m.public_port)))
    }
}

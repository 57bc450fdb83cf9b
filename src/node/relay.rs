//! Relays (`relay_manager.go` and the relay parts of `inside.go`, `outside.go`,
//! `handshake_manager.go` in 1.6.1): the relay table, CreateRelayRequest/Response, relayed
//! packet framing, forwarding as a relay, sending through a relay, and dropping relay state
//! with the tunnels it rides on.
//!
//! A relay *leg* (table in `relay_table`) rides on one established tunnel (its `hop`) and reaches one far host (`peer`).
//! A → R → B has legs (R, B) at A, (A, B) and (B, A) at R, (R, A) at B. Leg indexes live in
//! their own table, separate from tunnel indexes. Everything peer-growable is bounded per hop
//! and in total. No sockets, clocks or randomness of its own: it works on [`Node`] state.

use std::net::SocketAddr;
use std::time::Instant;

use prost::Message;
use rand::RngCore;

use crate::wire::{
    ControlType, Header, MessageType, NebulaControl, RemoteIndex, Subtype, HEADER_LEN,
};

use super::relay_table::{RelayIndex, RelayLeg, RelayRole, RelayState, RelayTable};
use super::types::{DropReason, VpnIp};
use super::{CloseReason, DatagramOutcome, Event, Node, OVERHEAD};

/// The relay leg an inner packet arrived on, while it is being processed.
#[derive(Clone, Copy, Debug)]
pub(super) struct RelayCtx {
    pub hop: VpnIp,
    pub leg: RelayIndex,
    pub peer: VpnIp,
}

/// Stands in for the underlay source of a relayed inner packet; never a real UDP source, and
/// never sent to (`push_transmit` refuses unspecified addresses).
pub(super) const RELAYED_FROM: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

impl Node {
    /// The relay table (for inspection: `print-relays`, tests).
    pub fn relays(&self) -> &RelayTable {
        &self.relays
    }

    /// True while processing a packet that came through a relay.
    pub(super) fn relayed(&self) -> bool {
        self.relay_ctx.is_some()
    }

    /// Where a handshake from `from` goes: straight back, or through the leg it came in on.
    pub(super) fn reply_handshake(&mut self, now: Instant, from: SocketAddr, bytes: Vec<u8>) {
        match self.relay_ctx {
            None => self.push_transmit(from, bytes),
            Some(ctx) => {
                let remote = self.relays.leg(ctx.leg).and_then(|l| l.remote_index);
                match remote {
                    Some(ri) => self.send_via_relay(now, ctx.hop, ri, &bytes),
                    None => self.drops.count(DropReason::RelayNotEstablished),
                }
            }
        }
    }

    /// The relay packet path (type 1 / subtype 1): authenticate on the hop tunnel (replay
    /// window checked and updated, as newer Nebulas do), then forward or process the inner
    /// packet.
    pub(super) fn handle_relay_packet(
        &mut self,
        now: Instant,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        if self.relayed() {
            return DatagramOutcome::Dropped(DropReason::RelayNested);
        }
        let idx = RelayIndex(header.remote_index.0);
        let Some(leg) = self.relays.leg(idx).copied() else {
            return DatagramOutcome::Dropped(DropReason::RelayUnknownIndex);
        };
        let n = match self.open_relay_leg(leg.hop, header.counter, buf) {
            Ok(n) => n,
            Err(r) => return DatagramOutcome::Dropped(r),
        };
        self.mark_in(leg.hop);
        match leg.role {
            RelayRole::Forwarding => self.forward_relay(now, &leg, buf, n),
            RelayRole::Terminal => self.relay_terminal(now, &leg, buf, n),
        }
    }

    /// Authenticates a relay datagram on the hop tunnel; returns the inner length.
    fn open_relay_leg(
        &mut self,
        hop: VpnIp,
        counter: u64,
        buf: &[u8],
    ) -> Result<usize, DropReason> {
        let host = self
            .hostmap
            .host_mut(hop)
            .ok_or(DropReason::RelayUnknownIndex)?;
        if !host.window.check(counter) {
            return Err(DropReason::Replay);
        }
        let n = host
            .session
            .open_relay(counter, buf)
            .map_err(|_| DropReason::AuthFailed)?;
        if !host.window.update(counter) {
            return Err(DropReason::ReplayAfterDecrypt);
        }
        // Authenticated traffic on the hop tunnel, as in `open`.
        host.recv_errors = 0;
        Ok(n)
    }

    /// As the relay: re-frame the inner packet on the partner leg, same length, in place.
    fn forward_relay(
        &mut self,
        now: Instant,
        leg: &RelayLeg,
        buf: &mut [u8],
        n: usize,
    ) -> DatagramOutcome {
        let partner = self.relays.find(leg.peer, leg.hop).copied();
        let Some(RelayLeg {
            remote_index: Some(ri),
            state: RelayState::Established,
            ..
        }) = partner
        else {
            return DatagramOutcome::Dropped(DropReason::RelayNotEstablished);
        };
        match self.wrap_relay(now, leg.peer, ri, buf, n) {
            Ok((to, len)) => {
                self.push_transmit(to, buf[..len].to_vec());
                DatagramOutcome::Handled
            }
            Err(r) => DatagramOutcome::Dropped(r),
        }
    }

    /// As an end: process the inner packet as if it had arrived with no underlay address.
    fn relay_terminal(
        &mut self,
        now: Instant,
        leg: &RelayLeg,
        buf: &mut [u8],
        n: usize,
    ) -> DatagramOutcome {
        if leg.state != RelayState::Established {
            return DatagramOutcome::Dropped(DropReason::RelayNotEstablished);
        }
        self.relay_ctx = Some(RelayCtx {
            hop: leg.hop,
            leg: leg.local_index,
            peer: leg.peer,
        });
        let r = self.datagram(now, RELAYED_FROM, &mut buf[HEADER_LEN..HEADER_LEN + n]);
        self.relay_ctx = None;
        match r {
            DatagramOutcome::ToTun(range) => {
                DatagramOutcome::ToTun(range.start + HEADER_LEN..range.end + HEADER_LEN)
            }
            other => other,
        }
    }

    /// Writes the outer header (next counter of the `hop` tunnel, the hop's leg index) over
    /// `buf[..16]` and appends the tag over header ‖ inner (`buf[16..16 + inner_len]`).
    ///
    /// ```text
    ///  0      16               16+n       32+n
    ///  | outer | inner packet   | tag (16) |
    ///    type 1/subtype 1, index = hop's leg index, counter = hop tunnel counter
    /// ```
    pub(super) fn wrap_relay(
        &mut self,
        now: Instant,
        hop: VpnIp,
        remote_index: RemoteIndex,
        buf: &mut [u8],
        inner_len: usize,
    ) -> Result<(SocketAddr, usize), DropReason> {
        let host = self.hostmap.host_mut(hop).ok_or(DropReason::NoRemote)?;
        let to = host.remote.ok_or(DropReason::NoRemote)?;
        if buf.len() < inner_len + OVERHEAD {
            return Err(DropReason::BufferTooSmall);
        }
        let counter = host
            .counter
            .checked_add(1)
            .ok_or(DropReason::CounterExhausted)?;
        host.counter = counter;
        let h = Header::new(
            MessageType::Message,
            Subtype::MESSAGE_RELAY,
            remote_index,
            counter,
        );
        h.write_to(buf);
        let len = host
            .session
            .seal_relay(counter, buf, inner_len)
            .map_err(|_| DropReason::BufferTooSmall)?;
        self.track_out(now, hop);
        Ok((to, len))
    }

    /// Frames an owned inner packet (a handshake message) on a leg and queues it.
    pub(super) fn send_via_relay(
        &mut self,
        now: Instant,
        hop: VpnIp,
        remote_index: RemoteIndex,
        inner: &[u8],
    ) {
        let mut buf = vec![0u8; inner.len() + OVERHEAD];
        buf[HEADER_LEN..HEADER_LEN + inner.len()].copy_from_slice(inner);
        let sealed = self.wrap_relay(now, hop, remote_index, &mut buf, inner.len());
        self.push_sealed(buf, sealed);
    }

    /// The leg to send to `vpn_ip` on when its tunnel has no direct address: the relay it
    /// completed through, else any established one.
    fn relay_route(&self, vpn_ip: VpnIp) -> Option<(VpnIp, RemoteIndex)> {
        let usable = |l: &RelayLeg| match (l.role, l.state, l.remote_index) {
            (RelayRole::Terminal, RelayState::Established, Some(ri)) => Some((l.hop, ri)),
            _ => None,
        };
        let preferred = self.hostmap.host(vpn_ip).and_then(|h| h.relay);
        preferred
            .and_then(|hop| self.relays.find(hop, vpn_ip))
            .and_then(usable)
            .or_else(|| {
                self.relays
                    .legs()
                    .filter(|l| l.peer == vpn_ip)
                    .find_map(usable)
            })
    }

    /// Seals a packet end to end for `vpn_ip` at `out[16..]`, then frames it for the relay.
    /// `out` needs `payload.len() + 2 * OVERHEAD` bytes.
    pub(super) fn seal_relayed(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        t: MessageType,
        st: Subtype,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(SocketAddr, usize), DropReason> {
        let (hop, ri) = self.relay_route(vpn_ip).ok_or(DropReason::NoRemote)?;
        if out.len() < payload.len() + 2 * OVERHEAD {
            return Err(DropReason::BufferTooSmall);
        }
        let inner = self.seal_direct(now, vpn_ip, t, st, payload, &mut out[HEADER_LEN..])?;
        self.wrap_relay(now, hop, ri, out, inner)
    }

    /// One handshake attempt's relay work toward `vpn_ip` (§7.4): for each relay the
    /// lighthouses named, get a tunnel to it, request a leg, or send stage 1 through it.
    pub(super) fn relay_handshake_attempt(&mut self, now: Instant, vpn_ip: VpnIp, stage1: &[u8]) {
        if !self.config.use_relays || self.config.am_relay {
            return;
        }
        let relays = self
            .remotes
            .get(&vpn_ip)
            .map(|r| r.relays())
            .unwrap_or_default();
        let me = self.identity.vpn_ip;
        for hop in relays.into_iter().filter(|r| *r != vpn_ip && *r != me) {
            if self.hostmap.host(hop).is_none() {
                self.connect(now, hop);
                continue;
            }
            self.relay_attempt_via(now, hop, vpn_ip, stage1);
        }
    }

    fn relay_attempt_via(&mut self, now: Instant, hop: VpnIp, vpn_ip: VpnIp, stage1: &[u8]) {
        let leg = match self.relays.find(hop, vpn_ip).copied() {
            Some(l) => l,
            None => match self.new_terminal_leg(hop, vpn_ip) {
                Ok(l) => l,
                Err(r) => return self.drops.count(r),
            },
        };
        if let (RelayState::Established, Some(ri)) = (leg.state, leg.remote_index) {
            self.send_via_relay(now, hop, ri, stage1);
        }
        // Re-requesting an established leg is harmless (the relay answers at once) and
        // repairs a leg the relay forgot, e.g. after the far host restarted.
        let req = NebulaControl {
            r#type: ControlType::CreateRelayRequest as i32,
            initiator_relay_index: leg.local_index.0,
            responder_relay_index: 0,
            relay_to_ip: vpn_ip.0,
            relay_from_ip: self.identity.vpn_ip.0,
        };
        self.send_relay_control(now, hop, &req);
    }

    fn new_relay_index(&mut self) -> Result<RelayIndex, DropReason> {
        for _ in 0..32 {
            let idx = RelayIndex(self.rng.next_u32());
            if self.relays.free(idx) {
                return Ok(idx);
            }
        }
        Err(DropReason::IndexExhausted)
    }

    fn add_leg(
        &mut self,
        hop: VpnIp,
        peer: VpnIp,
        role: RelayRole,
        state: RelayState,
        remote_index: Option<RemoteIndex>,
    ) -> Result<RelayLeg, DropReason> {
        let leg = RelayLeg {
            local_index: self.new_relay_index()?,
            remote_index,
            hop,
            peer,
            state,
            role,
        };
        self.relays.insert(leg, self.config.max_relay_legs)?;
        Ok(leg)
    }

    fn new_terminal_leg(&mut self, hop: VpnIp, peer: VpnIp) -> Result<RelayLeg, DropReason> {
        self.add_leg(hop, peer, RelayRole::Terminal, RelayState::Requested, None)
    }

    fn send_relay_control(&mut self, now: Instant, hop: VpnIp, m: &NebulaControl) {
        let bytes = m.encode_to_vec();
        self.send_control(now, hop, MessageType::Control, Subtype::NONE, &bytes);
    }

    /// A control packet (type 6) on an established tunnel.
    pub(super) fn handle_control(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        // `roam` itself leaves relayed packets alone.
        let (sender, payload) = match self.open_established(now, from, header, buf) {
            Ok(v) => v,
            Err(r) => return DatagramOutcome::Dropped(r),
        };
        let Ok(m) = NebulaControl::decode(payload) else {
            return DatagramOutcome::Dropped(DropReason::ControlMalformed);
        };
        let r = match ControlType::try_from(m.r#type) {
            Ok(ControlType::CreateRelayRequest) => self.on_relay_request(now, sender, &m),
            Ok(ControlType::CreateRelayResponse) => self.on_relay_response(now, sender, &m),
            _ => Err(DropReason::ControlMalformed),
        };
        match r {
            Ok(()) => DatagramOutcome::Handled,
            Err(reason) => DatagramOutcome::Dropped(reason),
        }
    }

    fn on_relay_request(
        &mut self,
        now: Instant,
        sender: VpnIp,
        m: &NebulaControl,
    ) -> Result<(), DropReason> {
        if m.initiator_relay_index == 0 {
            return Err(DropReason::ControlMalformed);
        }
        if VpnIp(m.relay_to_ip) == self.identity.vpn_ip {
            return self.accept_relay(now, sender, m);
        }
        self.serve_relay(now, sender, m)
    }

    /// We are the far end (B): one established leg toward the requester (no am_relay check).
    fn accept_relay(
        &mut self,
        now: Instant,
        hop: VpnIp,
        m: &NebulaControl,
    ) -> Result<(), DropReason> {
        let from = VpnIp(m.relay_from_ip);
        if from == self.identity.vpn_ip || from == hop {
            return Err(DropReason::ControlMalformed);
        }
        let ri = RemoteIndex(m.initiator_relay_index);
        let leg = match self.relays.find(hop, from).copied() {
            Some(l) if l.remote_index == Some(ri) && l.role == RelayRole::Terminal => l,
            _ => self.add_leg(
                hop,
                from,
                RelayRole::Terminal,
                RelayState::Established,
                Some(ri),
            )?,
        };
        let resp = NebulaControl {
            r#type: ControlType::CreateRelayResponse as i32,
            initiator_relay_index: ri.0,
            responder_relay_index: leg.local_index.0,
            relay_to_ip: m.relay_to_ip,
            relay_from_ip: m.relay_from_ip,
        };
        self.send_relay_control(now, hop, &resp);
        Ok(())
    }

    /// We are asked to relay from `a` (the tunnel the request came on) to `relay_to_ip`.
    fn serve_relay(&mut self, now: Instant, a: VpnIp, m: &NebulaControl) -> Result<(), DropReason> {
        if !self.config.am_relay {
            return Err(DropReason::RelayNotServing);
        }
        let b = VpnIp(m.relay_to_ip);
        if b == a {
            return Err(DropReason::ControlMalformed);
        }
        if !self.relay_target_in_network(b) {
            // 1.6.1 would start a handshake to any address a requester names.
            return Err(DropReason::RelayOutsideNetwork);
        }
        let Some(b_remote) = self.hostmap.host(b).map(|h| h.remote) else {
            // Get a tunnel to B now; A's next retry finds it.
            self.handshake_for(now, a, b)?;
            return Err(DropReason::RelayNoTunnel);
        };
        if b_remote.is_none() {
            // Only relay to hosts we reach directly.
            return Err(DropReason::RelayNoTunnel);
        }
        let rb = match self.relays.find(b, a).copied() {
            Some(l) if l.role == RelayRole::Forwarding => l,
            _ => self.add_leg(b, a, RelayRole::Forwarding, RelayState::Requested, None)?,
        };
        let ri = RemoteIndex(m.initiator_relay_index);
        let ra = match self.relays.find(a, b).copied() {
            Some(l) if l.remote_index == Some(ri) && l.role == RelayRole::Forwarding => l,
            // New, or a stale leg from an earlier request of A: replace it.
            _ => self.add_leg(a, b, RelayRole::Forwarding, RelayState::Requested, Some(ri))?,
        };
        if rb.state == RelayState::Established {
            self.relays
                .update(ra.local_index, |l| l.state = RelayState::Established);
            self.answer_requester(now, a, b, ri, ra.local_index);
            return Ok(());
        }
        let req = NebulaControl {
            r#type: ControlType::CreateRelayRequest as i32,
            initiator_relay_index: rb.local_index.0,
            responder_relay_index: 0,
            relay_to_ip: b.0,
            relay_from_ip: a.0,
        };
        self.send_relay_control(now, b, &req);
        Ok(())
    }

    /// Relays serve only hosts of their own certificate's VPN network (not its broadcast).
    fn relay_target_in_network(&self, b: VpnIp) -> bool {
        let net = self.identity.vpn_net;
        net.contains(b.addr()) && b.addr() != net.broadcast()
    }

    /// Starts a handshake to `b` because `a` asked to be relayed there, unless one is under
    /// way already; at most [`super::MAX_HANDSHAKES_PER_REQUESTER`] at a time per requester.
    fn handshake_for(&mut self, now: Instant, a: VpnIp, b: VpnIp) -> Result<(), DropReason> {
        if self.hostmap.pending(b).is_some() {
            return Ok(());
        }
        let hostmap = &self.hostmap;
        if !self
            .relays
            .admit_handshake_for(a, |t| hostmap.pending(t).is_some())
        {
            return Err(DropReason::RelayRequesterBusy);
        }
        self.connect(now, b);
        if self.hostmap.pending(b).is_some() {
            self.relays.record_handshake_for(a, b);
        }
        Ok(())
    }

    fn answer_requester(
        &mut self,
        now: Instant,
        a: VpnIp,
        b: VpnIp,
        a_index: RemoteIndex,
        ra: RelayIndex,
    ) {
        let resp = NebulaControl {
            r#type: ControlType::CreateRelayResponse as i32,
            initiator_relay_index: a_index.0,
            responder_relay_index: ra.0,
            relay_to_ip: b.0,
            relay_from_ip: a.0,
        };
        self.send_relay_control(now, a, &resp);
    }

    fn on_relay_response(
        &mut self,
        now: Instant,
        sender: VpnIp,
        m: &NebulaControl,
    ) -> Result<(), DropReason> {
        let idx = RelayIndex(m.initiator_relay_index);
        let leg = self
            .relays
            .leg(idx)
            .copied()
            .filter(|l| l.hop == sender)
            .ok_or(DropReason::RelayUnknownIndex)?;
        if m.responder_relay_index == 0 {
            return Err(DropReason::ControlMalformed);
        }
        self.relays.update(idx, |l| {
            l.remote_index = Some(RemoteIndex(m.responder_relay_index));
            l.state = RelayState::Established;
        });
        match leg.role {
            RelayRole::Terminal => {
                self.relay_ready(now, leg.hop, leg.peer);
                Ok(())
            }
            RelayRole::Forwarding => self.partner_ready(now, &leg),
        }
    }

    /// As the relay: B answered, so A's leg is established and A learns our index for it.
    fn partner_ready(&mut self, now: Instant, b_leg: &RelayLeg) -> Result<(), DropReason> {
        let (a, b) = (b_leg.peer, b_leg.hop);
        let ra = self
            .relays
            .find(a, b)
            .copied()
            .ok_or(DropReason::RelayNotEstablished)?;
        let ri = ra.remote_index.ok_or(DropReason::RelayNotEstablished)?;
        self.relays
            .update(ra.local_index, |l| l.state = RelayState::Established);
        self.answer_requester(now, a, b, ri, ra.local_index);
        Ok(())
    }

    /// As A: a leg to `peer` became usable; a waiting handshake goes through it at once.
    fn relay_ready(&mut self, now: Instant, hop: VpnIp, peer: VpnIp) {
        let stage1 = self.hostmap.pending(peer).map(|p| p.stage1.clone());
        let ri = self.relays.find(hop, peer).and_then(|l| l.remote_index);
        if let (Some(s1), Some(ri)) = (stage1, ri) {
            self.send_via_relay(now, hop, ri, &s1);
        }
    }

    /// A tunnel went away: legs riding on it or reaching it go, and tunnels that only had a
    /// path through it are closed (they come back through a new handshake).
    pub(super) fn relay_tunnel_gone(&mut self, vpn_ip: VpnIp) {
        self.relays.forget_requester(vpn_ip);
        if self.relays.is_empty() {
            return;
        }
        let removed = self.relays.remove_host(vpn_ip);
        let stranded: Vec<VpnIp> = removed
            .iter()
            .filter(|l| l.hop == vpn_ip && l.role == RelayRole::Terminal)
            .map(|l| l.peer)
            .filter(|p| {
                self.hostmap
                    .host(*p)
                    .is_some_and(|h| h.remote.is_none() && self.relay_route_gone(*p))
            })
            .collect();
        for peer in stranded {
            if self.hostmap.remove_host(peer).is_some() {
                self.push_event(Event::TunnelClosed {
                    vpn_ip: peer,
                    reason: CloseReason::RelayLost,
                });
            }
        }
    }

    fn relay_route_gone(&self, peer: VpnIp) -> bool {
        self.relay_route(peer).is_none()
    }
}

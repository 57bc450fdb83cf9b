//! The data path (`inside.go`, `outside.go`): sealing TUN packets for a peer, receiving and
//! authenticating datagrams, recv_error, test packets, closeTunnel and roaming.
//!
//! Sealing and opening work in caller buffers; only control replies (rare) allocate. Every
//! refusal is a counted [`DropReason`], never a log line.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::{Header, HeaderError, MessageType, RemoteIndex, Subtype, HEADER_LEN};

use super::ipv4;
use super::types::{DropReason, LocalIndex, VpnIp};
use super::{
    CloseReason, DatagramOutcome, Direction, Event, FilterVerdict, Node, SendRecvError, TunOutcome,
    OVERHEAD,
};

/// A roam back to the address we just left is ignored for this long (`RoamingSuppressSeconds`).
const ROAMING_SUPPRESS: Duration = Duration::from_secs(2);
/// recv_errors ignored before the fourth one tears the tunnel down.
const MAX_RECV_ERRORS: u8 = 3;

impl Node {
    /// An IP packet read from TUN. On `Send`, `out[..len]` is the datagram; `out` needs
    /// `packet.len() + OVERHEAD` bytes (`2 * OVERHEAD` for peers reached through a relay;
    /// with less room such packets go to `poll_transmit` and the outcome is `Handled`).
    pub fn handle_tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> TunOutcome {
        let r = self.tun_packet(now, packet, out);
        if let TunOutcome::Dropped(reason) = r {
            self.drops.count(reason);
        }
        r
    }

    /// A UDP datagram from `from`, decrypted in place in `buf`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let r = self.datagram(now, from, buf);
        if let DatagramOutcome::Dropped(reason) = r {
            self.drops.count(reason);
        }
        r
    }

    fn tun_packet(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> TunOutcome {
        let info = match ipv4::parse(packet) {
            Ok(i) => i,
            Err(r) => return TunOutcome::Dropped(r),
        };
        let dst = info.dst;
        let net = self.identity.vpn_net;
        if VpnIp::from(dst) == self.identity.vpn_ip {
            return TunOutcome::Dropped(DropReason::ToSelf);
        }
        let broadcast = dst == net.broadcast() && self.config.drop_local_broadcast;
        if broadcast || (dst.is_multicast() && self.config.drop_multicast) {
            return TunOutcome::Dropped(DropReason::BroadcastOrMulticast);
        }
        let hop = match self.next_hop(dst) {
            Ok(h) => h,
            Err(r) => return TunOutcome::Dropped(r),
        };
        if packet.len() > usize::from(hop.mtu) {
            if let Some(reply) = ipv4::frag_needed(packet, dst, hop.mtu) {
                // Sourced from the unreachable destination, not our VPN IP: the kernel drops
                // packets arriving on TUN from one of its own addresses as martians.
                self.push_tun(reply);
                return TunOutcome::Dropped(DropReason::TooBig);
            }
            // No DF (or an ICMP error): sent anyway, the underlay fragments the datagram.
        }
        let vpn_ip = hop.vpn_ip;
        if let Some(h) = self.hostmap.host(vpn_ip) {
            let relayed = h.remote.is_none();
            self.try_promote_best(now, vpn_ip);
            if relayed && out.len() < packet.len() + 2 * OVERHEAD {
                // Relay framing needs more room than the caller's buffer: send it owned.
                self.send_queued(now, vpn_ip, packet);
                return TunOutcome::Handled;
            }
            return match self.seal_inside(now, vpn_ip, packet, out) {
                Ok((to, len)) => TunOutcome::Send { to, len },
                Err(r) => TunOutcome::Dropped(r),
            };
        }
        if self.hostmap.pending(vpn_ip).is_none() {
            if let Err(r) = self.start_handshake(now, vpn_ip) {
                return TunOutcome::Dropped(r);
            }
        }
        self.enqueue(vpn_ip, packet)
    }

    /// Holds a packet for a pending handshake (bounded).
    fn enqueue(&mut self, vpn_ip: VpnIp, packet: &[u8]) -> TunOutcome {
        let cap = self.config.handshake_queue_len;
        match self.hostmap.pending_mut(vpn_ip) {
            Some(p) if p.queue.len() < cap => {
                p.queue.push_back(packet.to_vec());
                TunOutcome::Queued
            }
            Some(_) => TunOutcome::Dropped(DropReason::HandshakeQueueFull),
            None => TunOutcome::Dropped(DropReason::PendingFull),
        }
    }

    /// Outbound firewall then seal as a message packet into `out`.
    fn seal_inside(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        packet: &[u8],
        out: &mut [u8],
    ) -> Result<(SocketAddr, usize), DropReason> {
        let host = self.hostmap.host(vpn_ip).ok_or(DropReason::NoRemote)?;
        match self
            .filter
            .check(now, Direction::Outbound, packet, &host.peer)
        {
            FilterVerdict::Allow => {}
            FilterVerdict::Drop => return Err(DropReason::FirewallOutbound),
            FilterVerdict::Reject(reply) => {
                self.push_tun(reply);
                return Err(DropReason::FirewallOutbound);
            }
        }
        self.seal_to_host(
            now,
            vpn_ip,
            MessageType::Message,
            Subtype::MESSAGE_NONE,
            packet,
            out,
        )
    }

    /// A packet released from a handshake queue or generated locally: filter, seal, queue.
    pub(super) fn send_queued(&mut self, now: Instant, vpn_ip: VpnIp, packet: &[u8]) {
        let mut out = vec![0u8; packet.len() + 2 * OVERHEAD];
        let sealed = self.seal_inside(now, vpn_ip, packet, &mut out);
        self.push_sealed(out, sealed);
    }

    /// Seals and queues a control packet (test, closeTunnel, lighthouse...) to a tunnel.
    pub(super) fn send_control(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        t: MessageType,
        st: Subtype,
        payload: &[u8],
    ) {
        if t == MessageType::LightHouse {
            self.msgs.count_lighthouse_tx(payload);
        }
        let mut out = vec![0u8; payload.len() + 2 * OVERHEAD];
        let sealed = self.seal_to_host(now, vpn_ip, t, st, payload, &mut out);
        self.push_sealed(out, sealed);
    }

    /// Seals a control packet on `vpn_ip`'s tunnel but sends it to `to` instead of the
    /// tunnel's remote (path promotion probes).
    pub(super) fn send_control_via(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        to: SocketAddr,
        t: MessageType,
        st: Subtype,
    ) {
        let mut out = vec![0u8; OVERHEAD];
        let sealed = self.seal_direct(now, vpn_ip, t, st, &[], &mut out);
        self.push_sealed(out, sealed.map(|len| (to, len)));
    }

    /// Queues the first `len` bytes of a sealed `out` for `to`, or counts why sealing failed.
    pub(super) fn push_sealed(
        &mut self,
        mut out: Vec<u8>,
        sealed: Result<(SocketAddr, usize), DropReason>,
    ) {
        match sealed {
            Ok((to, len)) => {
                out.truncate(len);
                self.push_transmit(to, out);
            }
            Err(r) => self.drops.count(r),
        }
    }

    /// Seals for `vpn_ip` and picks the path: its underlay address, or its relay (then `out`
    /// needs `payload.len() + 2 * OVERHEAD` bytes).
    fn seal_to_host(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        t: MessageType,
        st: Subtype,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<(SocketAddr, usize), DropReason> {
        let remote = self
            .hostmap
            .host(vpn_ip)
            .ok_or(DropReason::NoRemote)?
            .remote;
        match remote {
            Some(to) => Ok((to, self.seal_direct(now, vpn_ip, t, st, payload, out)?)),
            None => self.seal_relayed(now, vpn_ip, t, st, payload, out),
        }
    }

    /// Header with the next counter, payload copied in, sealed in `out`; returns the length.
    pub(super) fn seal_direct(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        t: MessageType,
        st: Subtype,
        payload: &[u8],
        out: &mut [u8],
    ) -> Result<usize, DropReason> {
        let host = self.hostmap.host_mut(vpn_ip).ok_or(DropReason::NoRemote)?;
        if out.len() < payload.len() + OVERHEAD {
            return Err(DropReason::BufferTooSmall);
        }
        let counter = host
            .counter
            .checked_add(1)
            .ok_or(DropReason::CounterExhausted)?;
        host.counter = counter;
        Header::new(t, st, host.remote_index, counter).write_to(out);
        out[HEADER_LEN..HEADER_LEN + payload.len()].copy_from_slice(payload);
        let len = host
            .session
            .seal_in_place(counter, out, payload.len())
            .map_err(|_| DropReason::BufferTooSmall)?;
        host.counters.tx(payload.len());
        self.track_out(now, vpn_ip);
        Ok(len)
    }

    /// Outbound traffic on a tunnel arms the connection manager's check.
    pub(super) fn track_out(&mut self, now: Instant, vpn_ip: VpnIp) {
        let alive = self.config.connection_alive_interval;
        let Some(host) = self.hostmap.host_mut(vpn_ip) else {
            return;
        };
        host.liveness.used = true;
        if !host.liveness.out_tracked {
            host.liveness.out_tracked = true;
            host.liveness.check_at = Some(now + alive);
            self.timers.push(Reverse((now + alive, vpn_ip)));
        }
    }

    pub(super) fn datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let header = match Header::parse(buf) {
            Ok(h) => h,
            Err(HeaderError::TooShort(_)) => {
                return DatagramOutcome::Dropped(DropReason::ShortDatagram)
            }
            Err(HeaderError::UnknownType(_)) => {
                return DatagramOutcome::Dropped(DropReason::UnknownMessageType)
            }
        };
        if let IpAddr::V4(ip) = canonical(from.ip()) {
            if self.identity.vpn_net.contains(ip) {
                return DatagramOutcome::Dropped(DropReason::FromVpnNetwork);
            }
        }
        self.msgs.count_rx(header.message_type, header.subtype.0);
        match header.message_type {
            MessageType::Handshake => self.handle_handshake(now, from, &header, buf),
            MessageType::Message => self.handle_message(now, from, &header, buf),
            MessageType::RecvError => self.handle_recv_error(now, from, &header),
            MessageType::Test => self.handle_test(now, from, &header, buf),
            MessageType::CloseTunnel => self.handle_close(now, from, &header, buf),
            MessageType::LightHouse => self.handle_lighthouse(now, from, &header, buf),
            MessageType::Control => self.handle_control(now, from, &header, buf),
        }
    }

    /// Index lookup (recv_error for an unknown index), replay check, authenticate, window update.
    /// Returns the peer and the plaintext length at `buf[16..]`.
    pub(super) fn open(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> Result<(VpnIp, usize), DropReason> {
        let idx = LocalIndex(header.remote_index.0);
        let grace = self.answer_grace();
        let Some(vpn_ip) = self.hostmap.host_by_index(idx) else {
            if let Some(r) = self.open_candidate(now, header, buf) {
                return r;
            }
            self.maybe_send_recv_error(from, header.remote_index);
            return Err(DropReason::UnknownIndex);
        };
        let host = self
            .hostmap
            .host_mut(vpn_ip)
            .ok_or(DropReason::UnknownIndex)?;
        if !host.window.check(header.counter) {
            // No recv_error here, unlike 1.6.1's handleEncrypted (newer Nebulas dropped it
            // too): the index is live, so the packet is a replay or a reordered straggler,
            // and answering it would let anyone who replays a captured packet with a forged
            // source make us hit a third party, or strike the peer's own recv_error count.
            return Err(DropReason::Replay);
        }
        let n = host
            .session
            .open_in_place(header.counter, buf)
            .map_err(|_| DropReason::AuthFailed)?;
        if !host.window.update(header.counter) {
            return Err(DropReason::ReplayAfterDecrypt);
        }
        // The peer demonstrably has this session: earlier recv_errors were stale or forged.
        host.recv_errors = 0;
        host.counters.rx(n, now);
        if let Some(at) = host.proven(now, grace) {
            self.arm_timer(at, vpn_ip);
        }
        Ok((vpn_ip, n))
    }

    /// `open` for a packet on an established tunnel, then the bookkeeping every such packet
    /// gets: roaming to `from` and liveness. Returns the sender and the plaintext.
    pub(super) fn open_established<'b>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &'b mut [u8],
    ) -> Result<(VpnIp, &'b [u8]), DropReason> {
        let (vpn_ip, n) = self.open(now, from, header, buf)?;
        self.roam(now, vpn_ip, from);
        self.mark_in(vpn_ip);
        Ok((vpn_ip, &buf[HEADER_LEN..HEADER_LEN + n]))
    }

    fn handle_message(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        if header.subtype == Subtype::MESSAGE_RELAY {
            return self.handle_relay_packet(now, header, buf);
        }
        if header.subtype != Subtype::MESSAGE_NONE {
            return DatagramOutcome::Dropped(DropReason::UnknownMessageType);
        }
        let (vpn_ip, n) = match self.open(now, from, header, buf) {
            Ok(v) => v,
            Err(r) => return DatagramOutcome::Dropped(r),
        };
        self.roam(now, vpn_ip, from);
        let range = HEADER_LEN..HEADER_LEN + n;
        if let Err(r) = self.check_inbound(now, vpn_ip, &buf[range.clone()]) {
            return DatagramOutcome::Dropped(r);
        }
        self.mark_in(vpn_ip);
        if self.config.tun_disabled {
            return self.disabled_tun_write(now, vpn_ip, &buf[range]);
        }
        DatagramOutcome::ToTun(range)
    }

    /// Inner packet must parse, come from the peer's cert IPs/subnets, and pass the firewall.
    fn check_inbound(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        let info = ipv4::parse(packet)?;
        let host = self.hostmap.host(vpn_ip).ok_or(DropReason::UnknownIndex)?;
        if !host.peer.allows_source(info.src) {
            return Err(DropReason::InnerSourceNotAllowed);
        }
        match self
            .filter
            .check(now, Direction::Inbound, packet, &host.peer)
        {
            FilterVerdict::Allow => Ok(()),
            FilterVerdict::Drop => Err(DropReason::FirewallInbound),
            FilterVerdict::Reject(reply) => {
                // The reject answers the peer directly; it does not pass the outbound rules.
                let (t, st) = (MessageType::Message, Subtype::MESSAGE_NONE);
                self.send_control(now, vpn_ip, t, st, &reply);
                Err(DropReason::FirewallInbound)
            }
        }
    }

    /// Without a TUN device only ICMP echo requests get an answer (`overlay/tun_disabled.go`).
    fn disabled_tun_write(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
        packet: &[u8],
    ) -> DatagramOutcome {
        match ipv4::echo_reply(packet) {
            Some(reply) => {
                self.send_queued(now, vpn_ip, &reply);
                DatagramOutcome::Handled
            }
            _ => DatagramOutcome::Dropped(DropReason::TunDisabled),
        }
    }

    fn handle_test(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        let (vpn_ip, payload) = match self.open_established(now, from, header, buf) {
            Ok(v) => v,
            Err(r) => return DatagramOutcome::Dropped(r),
        };
        if header.subtype == Subtype::TEST_REQUEST {
            // The reply's content is meaningless to 1.6.1; echo the request like newer Nebulas.
            let payload = payload.to_vec();
            self.send_control(
                now,
                vpn_ip,
                MessageType::Test,
                Subtype::TEST_REPLY,
                &payload,
            );
        }
        DatagramOutcome::Handled
    }

    /// closeTunnel is authenticated before acting (1.6.1 does not; newer Nebulas do).
    fn handle_close(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        buf: &mut [u8],
    ) -> DatagramOutcome {
        match self.open(now, from, header, buf) {
            Ok((vpn_ip, _)) => {
                self.hostmap.remove_host(vpn_ip);
                self.push_event(Event::TunnelClosed {
                    vpn_ip,
                    reason: CloseReason::PeerClosed,
                });
                DatagramOutcome::Handled
            }
            Err(r) => DatagramOutcome::Dropped(r),
        }
    }

    /// recv_error (unauthenticated by design): the fourth one that arrives on the tunnel's
    /// current path closes it locally (`handleRecvError`), so a restarted peer is re-handshaken
    /// quickly.
    ///
    /// Stricter than 1.6.1, which counts strikes from any source and, for a tunnel without a
    /// direct address, closes on one from anywhere: here a recv_error counts only when it comes
    /// from the tunnel's current remote, or, for a relay-only tunnel, through the relay leg to
    /// that peer, and the count restarts at every authenticated packet (`open`). A stranger
    /// can thus neither close a tunnel nor pre-load the count.
    fn handle_recv_error(
        &mut self,
        _now: Instant,
        from: SocketAddr,
        header: &Header,
    ) -> DatagramOutcome {
        if !recv_error_mode_allows(self.config.accept_recv_error, from) {
            return DatagramOutcome::Dropped(DropReason::RecvErrorNotAccepted);
        }
        let Some(vpn_ip) = self.hostmap.host_by_remote_index(header.remote_index) else {
            return DatagramOutcome::Dropped(DropReason::UnknownIndex);
        };
        let relay_peer = self.relay_ctx.map(|c| c.peer);
        let Some(host) = self.hostmap.host_mut(vpn_ip) else {
            return DatagramOutcome::Dropped(DropReason::UnknownIndex);
        };
        let on_path = match (host.remote, relay_peer) {
            (Some(remote), None) => remote == from,
            (None, Some(peer)) => peer == vpn_ip,
            _ => false,
        };
        if !on_path {
            return DatagramOutcome::Dropped(DropReason::RecvErrorWrongSource);
        }
        if host.recv_errors < MAX_RECV_ERRORS {
            host.recv_errors += 1;
            return DatagramOutcome::Handled;
        }
        self.hostmap.remove_host(vpn_ip);
        self.push_event(Event::TunnelClosed {
            vpn_ip,
            reason: CloseReason::RecvError,
        });
        DatagramOutcome::Handled
    }

    fn maybe_send_recv_error(&mut self, to: SocketAddr, index: RemoteIndex) {
        if self.relayed() {
            return;
        }
        if recv_error_mode_allows(self.config.send_recv_error, to) {
            let h = Header::new(MessageType::RecvError, Subtype::NONE, index, 0);
            self.push_transmit(to, h.encode().to_vec());
        }
    }

    /// Switches the tunnel to the address an authenticated packet came from (`handleHostRoaming`).
    pub(super) fn roam(&mut self, now: Instant, vpn_ip: VpnIp, from: SocketAddr) {
        if self.relayed() {
            // Relayed packets carry no address; only direct ones move a tunnel (off a relay).
            return;
        }
        let same = self.hostmap.host(vpn_ip).map(|h| h.remote == Some(from));
        if same != Some(false) || !self.remote_allowed(vpn_ip, from.ip()) {
            return;
        }
        let Some(host) = self.hostmap.host_mut(vpn_ip) else {
            return;
        };
        if let Some((at, prev)) = host.last_roam {
            if prev == Some(from) && now.saturating_duration_since(at) < ROAMING_SUPPRESS {
                return;
            }
        }
        let old = host.remote;
        host.last_roam = Some((now, old));
        host.remote = Some(from);
        self.push_event(Event::Roamed {
            vpn_ip,
            from: old,
            to: from,
        });
    }

    pub(super) fn mark_in(&mut self, vpn_ip: VpnIp) {
        if let Some(h) = self.hostmap.host_mut(vpn_ip) {
            h.liveness.saw_in = true;
            h.liveness.used = true;
        }
    }
}

/// `listen.send_recv_error` / `listen.accept_recv_error` for a peer address. A relayed
/// packet's stand-in source is not private, so `private` refuses those.
fn recv_error_mode_allows(mode: SendRecvError, addr: SocketAddr) -> bool {
    match mode {
        SendRecvError::Always => true,
        SendRecvError::Never => false,
        SendRecvError::Private => is_private(canonical(addr.ip())),
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (an AF_INET6 socket reports them that way).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Go's `IP.IsPrivate`: RFC 1918 and fc00::/7.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

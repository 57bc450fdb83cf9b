//! Handshake manager (`handshake_ix.go`, `handshake_manager.go` in 1.6.1): starting and retrying
//! our own handshakes, answering stage 1, completing on stage 2, and resolving conflicts with
//! existing tunnels and simultaneous attempts.
//!
//! Retries re-send the identical stage-1 datagram with linear back-off (attempt n waits
//! n × try_interval). A duplicate stage 1 gets the cached stage 2 (if its source passes the same
//! path rules); an altered copy of one we answered is dropped. A stage 1 whose Time is not
//! newer than the existing tunnel's is refused with a TestRequest over that tunnel. When both
//! sides initiate, the handshake started by the higher VPN IP wins.
//!
//! A stage 1 is unauthenticated, so a newer one for a peer we already have a tunnel with only
//! makes a *candidate* (see `hostmap`): the live tunnel keeps carrying traffic until a packet
//! authenticates on the candidate (then it replaces the tunnel), or the live tunnel dies on the
//! peer's side (recv_error, silence: the peer restarted), or the candidate expires after the
//! handshake timeout. An initiator with nothing queued sends a TestRequest at completion so
//! such a responder switches at once. A stage 2 whose certificate fails keeps the attempt.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message;

use crate::crypto::{NoiseHandshake, ReplayWindow, Session};
use crate::wire::{
    Header, MessageType, NebulaHandshake, NebulaHandshakeDetails, RemoteIndex, Subtype, HEADER_LEN,
};

use super::hostmap::{Answered, Candidate, HostInfo, Liveness, PendingHandshake};
use super::status::TunnelCounters;
use super::types::{DropReason, LocalIndex, PeerCert, VpnIp};
use super::{CloseReason, DatagramOutcome, Event, Node};

/// Handshake datagrams never legitimately get near this; bigger ones are not worth parsing.
const MAX_HANDSHAKE_LEN: usize = 8 * 1024;

/// What a successful stage-1/stage-2 read yields.
struct PeerHello {
    details: NebulaHandshakeDetails,
    peer: PeerCert,
}

impl Node {
    /// Creates a pending handshake (stage 0): builds the stage-1 datagram once and attempts at
    /// once if an address is known.
    pub(super) fn start_handshake(
        &mut self,
        now: Instant,
        vpn_ip: VpnIp,
    ) -> Result<(), DropReason> {
        if self.hostmap.pending_count() >= self.config.max_pending {
            return Err(DropReason::PendingFull);
        }
        let local_index = self.new_local_index()?;
        self.msgs.handshakes_initiated += 1;
        let seed = self.next_seed();
        let details = NebulaHandshakeDetails {
            cert: self.identity.cert_handshake_bytes.clone(),
            initiator_index: local_index.0,
            time: self.wall_ns(now),
            ..Default::default()
        };
        let payload = NebulaHandshake {
            details: Some(details),
            hmac: Vec::new(),
        }
        .encode_to_vec();
        let (noise, stage1) = self
            .stage1_message(seed.clone(), &payload)
            .map_err(|_| DropReason::HandshakeNoise)?;
        self.hostmap.insert_pending(PendingHandshake {
            vpn_ip,
            local_index,
            noise,
            noise_seed: seed,
            stage1_payload: payload,
            stage1,
            attempts: 0,
            next_attempt: now,
            started: now,
            queue: VecDeque::new(),
            blocked: Vec::new(),
        });
        // Every new attempt asks the lighthouses (as Nebula does since 1.7; 1.6.1 only asked
        // when nothing was cached, so one lost punch notification could block a pair for good).
        self.query_lighthouses(now, vpn_ip);
        // Known hosts get an immediate attempt; others wait one try_interval for a lighthouse
        // answer, which fires the attempt early (`lighthouse_triggered_attempt`).
        let calculated = self.add_calculated_remotes(vpn_ip);
        if !calculated && self.remotes_for(vpn_ip).is_empty() {
            let at = now + self.config.handshake_try_interval;
            if let Some(p) = self.hostmap.pending_mut(vpn_ip) {
                p.next_attempt = at;
            }
            self.arm_timer(at, vpn_ip);
        } else {
            self.handshake_attempt(now, vpn_ip);
        }
        Ok(())
    }

    /// Builds the initiator's Noise state and the stage-1 datagram (header counter 1, index 0).
    fn stage1_message(
        &self,
        seed: crate::crypto::NoiseSeed,
        payload: &[u8],
    ) -> Result<(NoiseHandshake, Vec<u8>), crate::crypto::HandshakeError> {
        let mut noise =
            NoiseHandshake::initiator(self.config.cipher, &self.identity.static_secret, seed)?;
        let header = Header::new(
            MessageType::Handshake,
            Subtype::HANDSHAKE_IX_PSK0,
            RemoteIndex(0),
            1,
        );
        let mut msg = header.encode().to_vec();
        noise.write_message(payload, &mut msg)?;
        Ok((noise, msg))
    }

    /// Runs the retry of `ip` if due (or expires it when out of retries).
    pub(super) fn handshake_timer(&mut self, now: Instant, ip: VpnIp) {
        let due = self
            .hostmap
            .pending(ip)
            .is_some_and(|p| p.next_attempt <= now);
        if due {
            self.handshake_attempt(now, ip);
        }
    }

    /// One attempt: send the stored stage 1 to every known address, then back off linearly.
    fn handshake_attempt(&mut self, now: Instant, vpn_ip: VpnIp) {
        let retries = self.config.handshake_retries;
        let Some(p) = self.hostmap.pending(vpn_ip) else {
            return;
        };
        if p.attempts >= retries {
            if let Some(p) = self.hostmap.remove_pending(vpn_ip) {
                let dropped_packets = p.queue.len();
                self.push_event(Event::HandshakeTimedOut {
                    vpn_ip,
                    dropped_packets,
                });
            }
            return;
        }
        let addrs: Vec<SocketAddr> = self
            .remotes_for(vpn_ip)
            .into_iter()
            .filter(|a| !p.blocked.contains(a))
            .collect();
        let msg = p.stage1.clone();
        if addrs.len() <= 1 {
            // Too few candidates (e.g. only a private address): ask again on every attempt.
            self.query_lighthouses(now, vpn_ip);
        }
        for to in addrs {
            self.push_transmit(to, msg.clone());
        }
        self.relay_handshake_attempt(now, vpn_ip, &msg);
        let interval = self.config.handshake_try_interval;
        if let Some(p) = self.hostmap.pending_mut(vpn_ip) {
            p.attempts += 1;
            let wait = interval.saturating_mul(p.attempts);
            // A silly config (huge retries) must not overflow the clock.
            p.next_attempt = now.checked_add(wait).unwrap_or(now + interval);
            let at = p.next_attempt;
            self.arm_timer(at, vpn_ip);
        }
    }

    /// Known underlay addresses of a peer, in handshake order: `preferred_ranges` first, then
    /// the [`super::RemoteList::addrs`] order (a stable sort keeps it within each group).
    fn remotes_for(&self, vpn_ip: VpnIp) -> Vec<SocketAddr> {
        let mut v = self
            .remotes
            .get(&vpn_ip)
            .map(|r| r.addrs())
            .unwrap_or_default();
        v.sort_by_key(|a| !self.preferred(a.ip()));
        v
    }

    /// A lighthouse answer arrived: attempt at once, but only before the first regular attempt
    /// (`handleOutbound` with lighthouseTriggered), keeping the regular schedule.
    pub(super) fn lighthouse_triggered_attempt(&mut self, now: Instant, vpn_ip: VpnIp) {
        let fresh = self
            .hostmap
            .pending(vpn_ip)
            .is_some_and(|p| p.attempts == 0);
        if fresh {
            self.handshake_attempt(now, vpn_ip);
        }
    }

    /// Dispatches a handshake packet by its header counter.
    pub(super) fn handle_handshake(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        packet: &[u8],
    ) -> DatagramOutcome {
        if packet.len() > MAX_HANDSHAKE_LEN {
            return DatagramOutcome::Dropped(DropReason::HandshakePayload);
        }
        let r = match header.counter {
            1 => self.handle_stage1(now, from, packet),
            2 => self.handle_stage2(now, from, header, packet),
            _ => Err(DropReason::UnexpectedHandshakeCounter),
        };
        match r {
            Ok(()) => DatagramOutcome::Handled,
            Err(reason) => DatagramOutcome::Dropped(reason),
        }
    }

    /// Responder side (`ixHandshakeStage1` + `CheckAndComplete`).
    fn handle_stage1(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        let noise_part = &packet[HEADER_LEN..];
        if let Some((vpn_ip, cached)) = self.duplicate_stage1(noise_part) {
            // A cached answer is still an answer to `from`: the same path rules apply.
            self.check_path(vpn_ip, from)?;
            self.reply_handshake(now, from, cached);
            return Ok(());
        }
        if self.hostmap.stage1_seen(noise_part).is_some() {
            // An initiator never reuses an ephemeral key: this is an altered copy of a stage 1
            // we already answered (e.g. with a bumped Time).
            return Err(DropReason::HandshakeReplayed);
        }
        let seed = self.next_seed();
        let mut noise =
            NoiseHandshake::responder(self.config.cipher, &self.identity.static_secret, seed)
                .map_err(|_| DropReason::HandshakeNoise)?;
        let payload = noise
            .read_message(noise_part)
            .map_err(|_| DropReason::HandshakeNoise)?;
        let hello = self.read_hello(&noise, &payload, now)?;
        let vpn_ip = hello.peer.vpn_ip;
        if vpn_ip == self.identity.vpn_ip {
            return Err(DropReason::HandshakeSelf);
        }
        self.check_path(vpn_ip, from)?;
        if let Some(existing) = self.hostmap.host(vpn_ip) {
            if existing.handshake_time >= hello.details.time {
                self.send_test_request(now, vpn_ip);
                return Err(DropReason::HandshakeTooOld);
            }
        }
        // Simultaneous initiation: the handshake started by the higher VPN IP wins (1.6.1).
        let overwrite = vpn_ip > self.identity.vpn_ip;
        if self.hostmap.pending(vpn_ip).is_some() && !overwrite {
            return Err(DropReason::HandshakeLostRace);
        }
        if self.hostmap.host(vpn_ip).is_none() && self.hostmap.host_count() >= self.config.max_hosts
        {
            return Err(DropReason::HostMapFull);
        }
        let local_index = self.new_local_index()?;
        let (stage2, session) = self.stage2_message(noise, &hello.details, local_index, now)?;
        let host = HostInfo {
            vpn_ip,
            local_index,
            remote_index: RemoteIndex(hello.details.initiator_index),
            remote: self.direct_from(from),
            relay: self.relay_ctx.map(|c| c.hop),
            session,
            window: ReplayWindow::new(),
            counter: 2,
            peer: hello.peer,
            handshake_time: hello.details.time,
            answered: Answered::new(noise_part, stage2.clone()),
            last_roam: None,
            recv_errors: 0,
            liveness: Liveness::default(),
            initiator: false,
            promote_counter: 0,
            counters: TunnelCounters::new(now),
        };
        self.reply_handshake(now, from, stage2);
        self.install_responder(now, host);
        Ok(())
    }

    /// With no tunnel to the peer the new session is the tunnel at once (as fast as 1.6.1).
    /// Beside a live tunnel it is only a candidate: anyone who saw a stage 1 can resend it,
    /// so the live tunnel keeps carrying traffic until the candidate is proven.
    fn install_responder(&mut self, now: Instant, host: HostInfo) {
        let vpn_ip = host.vpn_ip;
        if self.hostmap.host(vpn_ip).is_some() {
            // A replaced candidate was never proven; nothing rides on it.
            let expires = now + self.handshake_timeout();
            self.hostmap.insert_candidate(Candidate { host, expires });
            self.arm_timer(expires, vpn_ip);
            return;
        }
        let queue = self
            .hostmap
            .remove_pending(vpn_ip)
            .map(|p| p.queue)
            .unwrap_or_default();
        self.complete(now, host, queue);
    }

    /// How long an initiator keeps retrying (linear back-off over all retries): a candidate
    /// not proven by then is given up.
    fn handshake_timeout(&self) -> Duration {
        let n = self.config.handshake_retries;
        let steps = n.saturating_mul(n.saturating_add(1)) / 2;
        self.config
            .handshake_try_interval
            .saturating_mul(steps.max(1))
    }

    /// How long a cached stage 2 outlives the tunnel's proof: a few retry intervals, for a
    /// retransmitted stage 1 that was sent before our stage 2 arrived.
    pub(super) fn answer_grace(&self) -> Duration {
        self.config.handshake_try_interval.saturating_mul(5)
    }

    /// Drops the cached answer of `ip`'s tunnel once its grace is over.
    pub(super) fn answer_timer(&mut self, now: Instant, ip: VpnIp) {
        if let Some(h) = self.hostmap.host_mut(ip) {
            h.drop_answer_if_due(now);
        }
    }

    /// Drops the candidate of `ip` if it expired unproven.
    pub(super) fn candidate_timer(&mut self, now: Instant, ip: VpnIp) {
        let expired = self.hostmap.candidate(ip).is_some_and(|c| c.expires <= now);
        if expired {
            self.hostmap.remove_candidate(ip);
        }
    }

    /// `open` on an index that names no tunnel: if it is a candidate's and the packet
    /// authenticates and passes the candidate's replay window, the candidate is proven and
    /// becomes the tunnel. None if `idx` is not a candidate's.
    pub(super) fn open_candidate(
        &mut self,
        now: Instant,
        header: &Header,
        buf: &mut [u8],
    ) -> Option<Result<(VpnIp, usize), DropReason>> {
        let vpn_ip = self
            .hostmap
            .candidate_by_index(LocalIndex(header.remote_index.0))?;
        let grace = self.answer_grace();
        let c = self.hostmap.candidate_mut(vpn_ip)?;
        let host = &mut c.host;
        if !host.window.check(header.counter) {
            return Some(Err(DropReason::Replay));
        }
        let n = match host.session.open_in_place(header.counter, buf) {
            Ok(n) => n,
            Err(_) => return Some(Err(DropReason::AuthFailed)),
        };
        if !host.window.update(header.counter) {
            return Some(Err(DropReason::ReplayAfterDecrypt));
        }
        let drop_at = host.proven(now, grace);
        self.promote_candidate(vpn_ip);
        if let Some(at) = drop_at {
            self.arm_timer(at, vpn_ip);
        }
        Some(Ok((vpn_ip, n)))
    }

    /// The candidate of `vpn_ip` becomes its tunnel; the old session, if still there, is
    /// discarded (relay legs on it go with it: the peer dropped its side when it started the
    /// new handshake).
    pub(super) fn promote_candidate(&mut self, vpn_ip: VpnIp) {
        let Some(old) = self.hostmap.promote_candidate(vpn_ip) else {
            return;
        };
        if old.is_some() {
            self.push_event(Event::TunnelClosed {
                vpn_ip,
                reason: CloseReason::Replaced,
            });
        }
        let (remote, initiator) = self
            .hostmap
            .host(vpn_ip)
            .map(|h| (h.remote, h.initiator))
            .unwrap_or_default();
        self.push_event(Event::HandshakeComplete {
            vpn_ip,
            remote,
            initiator,
        });
        // No lighthouse outbox to flush (it only fills while there is no tunnel), but the
        // new session's certificate may carry a new name.
        if self.config.am_lighthouse && self.config.serve_dns {
            self.add_dns_record(vpn_ip);
        }
    }

    /// The tunnel to `vpn_ip` was just removed for `reason`: should its candidate, if any,
    /// take its place? Yes when the old session died on the peer's side (recv_error,
    /// silence): that is what a restarted peer looks like, and it then needs no new
    /// handshake. Closes we chose, or that the peer asked for, take the candidate with them
    /// (it is dropped here).
    pub(super) fn candidate_survives(&mut self, vpn_ip: VpnIp, reason: CloseReason) -> bool {
        if self.hostmap.host(vpn_ip).is_some() || self.hostmap.candidate(vpn_ip).is_none() {
            return false;
        }
        match reason {
            CloseReason::RecvError | CloseReason::Silent => true,
            CloseReason::PeerClosed
            | CloseReason::Replaced
            | CloseReason::Local
            | CloseReason::RelayLost => {
                self.hostmap.remove_candidate(vpn_ip);
                false
            }
        }
    }

    /// A direct handshake must pass remote_allow_list; a relayed one (no address, §7.3) must
    /// come from the host its relay leg was set up for.
    fn check_path(&self, vpn_ip: VpnIp, from: SocketAddr) -> Result<(), DropReason> {
        match self.relay_ctx {
            Some(ctx) if ctx.peer != vpn_ip => Err(DropReason::RelayWrongPeer),
            Some(_) => Ok(()),
            None if self.remote_allowed(vpn_ip, from.ip()) => Ok(()),
            None => Err(DropReason::RemoteNotAllowed),
        }
    }

    /// The underlay address to record for a new tunnel: none when it came through a relay.
    fn direct_from(&self, from: SocketAddr) -> Option<SocketAddr> {
        match self.relay_ctx {
            Some(_) => None,
            None => Some(from),
        }
    }

    /// The peer and our cached stage 2 if `noise_part` repeats the stage 1 that an existing
    /// tunnel or candidate answered.
    fn duplicate_stage1(&self, noise_part: &[u8]) -> Option<(VpnIp, Vec<u8>)> {
        // 1.6.1 finds the tunnel by VPN IP after verifying the cert; identical bytes imply the
        // same cert, so looking up by the ephemeral key first is equivalent and skips the DH.
        self.hostmap
            .host_by_stage1(noise_part)
            .map(|(h, stage2)| (h.vpn_ip, stage2.to_vec()))
    }

    /// Parses the handshake payload and verifies the recombined certificate.
    fn read_hello(
        &self,
        noise: &NoiseHandshake,
        payload: &[u8],
        now: Instant,
    ) -> Result<PeerHello, DropReason> {
        let hs = NebulaHandshake::decode(payload).map_err(|_| DropReason::HandshakePayload)?;
        let details = hs.details.ok_or(DropReason::HandshakePayload)?;
        let key = noise.remote_static().ok_or(DropReason::HandshakeNoise)?;
        let peer = self
            .verifier
            .verify(&details.cert, &key, self.wall_ns(now))
            .map_err(|_| DropReason::HandshakeCert)?;
        Ok(PeerHello { details, peer })
    }

    /// Writes our stage 2 (header: initiator's index, counter 2) and derives the session.
    fn stage2_message(
        &self,
        mut noise: NoiseHandshake,
        request: &NebulaHandshakeDetails,
        local_index: LocalIndex,
        now: Instant,
    ) -> Result<(Vec<u8>, Session), DropReason> {
        let details = NebulaHandshakeDetails {
            responder_index: local_index.0,
            cert: self.identity.cert_handshake_bytes.clone(),
            time: self.wall_ns(now),
            ..request.clone()
        };
        let payload = NebulaHandshake {
            details: Some(details),
            hmac: Vec::new(),
        }
        .encode_to_vec();
        let header = Header::new(
            MessageType::Handshake,
            Subtype::HANDSHAKE_IX_PSK0,
            RemoteIndex(request.initiator_index),
            2,
        );
        let mut msg = header.encode().to_vec();
        noise
            .write_message(&payload, &mut msg)
            .map_err(|_| DropReason::HandshakeNoise)?;
        let session = noise
            .into_session()
            .map_err(|_| DropReason::HandshakeNoise)?;
        Ok((msg, session))
    }

    /// Initiator side (`ixHandshakeStage2`).
    fn handle_stage2(
        &mut self,
        now: Instant,
        from: SocketAddr,
        header: &Header,
        packet: &[u8],
    ) -> Result<(), DropReason> {
        let idx = LocalIndex(header.remote_index.0);
        let Some(vpn_ip) = self.hostmap.pending_by_index(idx) else {
            return Err(match self.hostmap.host_by_index(idx) {
                Some(_) => DropReason::HandshakeAlreadyComplete,
                None => DropReason::HandshakeUnknownIndex,
            });
        };
        let read = self
            .hostmap
            .pending_mut(vpn_ip)
            .map(|p| p.noise.read_message(&packet[HEADER_LEN..]));
        let payload = match read {
            Some(Ok(p)) => p,
            _ => {
                // A spoofed or corrupt stage 2 must not kill the attempt: rebuild the state.
                self.rebuild_pending_noise(vpn_ip);
                return Err(DropReason::HandshakeNoise);
            }
        };
        let hello = match self.hostmap.pending(vpn_ip) {
            Some(p) => self.read_hello(&p.noise, &payload, now),
            None => Err(DropReason::HandshakeUnknownIndex),
        };
        let hello = match hello {
            Ok(h) => h,
            Err(reason) => {
                // Anyone who saw our stage 1 can answer it Noise-validly with a key of their
                // own; only the certificate tells, so a bad one must not end the attempt.
                self.rebuild_pending_noise(vpn_ip);
                return Err(reason);
            }
        };
        let Some(pending) = self.hostmap.remove_pending(vpn_ip) else {
            return Err(DropReason::HandshakeUnknownIndex);
        };
        if let Err(reason) = self.check_path(vpn_ip, from) {
            // Keep trying the other paths; this one is refused.
            self.retry_after_wrong_host(now, pending, from);
            return Err(reason);
        }
        if hello.peer.vpn_ip != vpn_ip {
            self.retry_after_wrong_host(now, pending, from);
            return Err(DropReason::HandshakeWrongHost);
        }
        let session = pending
            .noise
            .into_session()
            .map_err(|_| DropReason::HandshakeNoise)?;
        let host = HostInfo {
            vpn_ip,
            local_index: pending.local_index,
            remote_index: RemoteIndex(hello.details.responder_index),
            remote: self.direct_from(from),
            relay: self.relay_ctx.map(|c| c.hop),
            session,
            window: ReplayWindow::new(),
            counter: 2,
            peer: hello.peer,
            handshake_time: hello.details.time,
            answered: None,
            last_roam: None,
            recv_errors: 0,
            liveness: Liveness::default(),
            initiator: true,
            promote_counter: 0,
            counters: TunnelCounters::new(now),
        };
        self.complete(now, host, pending.queue);
        Ok(())
    }

    /// Restores the initiator state after a failed stage-2 read (the seed makes it identical).
    fn rebuild_pending_noise(&mut self, vpn_ip: VpnIp) {
        let Some(p) = self.hostmap.pending(vpn_ip) else {
            return;
        };
        let (seed, payload) = (p.noise_seed.clone(), p.stage1_payload.clone());
        if let Ok((noise, _)) = self.stage1_message(seed, &payload) {
            if let Some(p) = self.hostmap.pending_mut(vpn_ip) {
                p.noise = noise;
            }
        }
    }

    /// The wrong host answered: block that address and keep trying the others with a fresh
    /// Noise state for the same stage 1 (the queue is kept).
    fn retry_after_wrong_host(
        &mut self,
        now: Instant,
        mut pending: PendingHandshake,
        from: SocketAddr,
    ) {
        let Ok((noise, _)) =
            self.stage1_message(pending.noise_seed.clone(), &pending.stage1_payload)
        else {
            return;
        };
        pending.noise = noise;
        pending.blocked.push(from);
        pending.next_attempt = pending.next_attempt.max(now);
        let (at, ip) = (pending.next_attempt, pending.vpn_ip);
        self.hostmap.insert_pending(pending);
        self.arm_timer(at, ip);
    }

    /// Installs a finished tunnel, replacing any older one, and flushes queued packets.
    fn complete(&mut self, now: Instant, host: HostInfo, queue: VecDeque<Vec<u8>>) {
        let (vpn_ip, remote, initiator) = (host.vpn_ip, host.remote, host.initiator);
        if self.hostmap.insert_host(host).is_some() {
            self.push_event(Event::TunnelClosed {
                vpn_ip,
                reason: CloseReason::Replaced,
            });
        }
        self.push_event(Event::HandshakeComplete {
            vpn_ip,
            remote,
            initiator,
        });
        let nothing_queued = queue.is_empty();
        self.msgs.cached_sent += queue.len() as u64;
        for packet in queue {
            self.send_queued(now, vpn_ip, &packet);
        }
        if initiator && nothing_queued {
            // A responder that still holds an older tunnel to us only switches to this session
            // on an authenticated packet from us; give it one now rather than on our next send.
            self.send_test_request(now, vpn_ip);
        }
        self.lighthouse_tunnel_up(now, vpn_ip);
    }
}

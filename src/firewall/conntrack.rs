//! Conntrack: the flows the firewall already allowed, keyed by the locally oriented
//! [`FlowPacket`] so a reply matches the entry its request created (nebula 1.6.1 `firewall.go`
//! `inConns`/`addConn`/`evict`). Owns the table, its expiry and its bound; rule matching and the
//! version re-check decision belong to the caller.
//!
//! Expiry is lazy, like nebula's timer wheel: an entry is checked on every hit, and a FIFO of
//! deadlines per timeout class (tcp/udp/other) is swept a little on every packet. A popped
//! deadline whose entry was refreshed meanwhile is pushed again with the entry's real expiry, so
//! refreshing an entry on a hit costs nothing but a store. Deadlines within one class are pushed
//! in near-increasing order, so the sweep stops at the first deadline still in the future.
//!
//! The table is bounded: at `capacity`, a new flow first forces a full sweep of due deadlines;
//! if no room is freed the caller must refuse the flow (nebula has no limit).

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use super::packet::{FlowPacket, PROTO_TCP, PROTO_UDP};
use super::rules::{ConntrackTimeouts, Direction};

/// Default bound on tracked flows per node.
pub const DEFAULT_CONNTRACK_CAPACITY: usize = 100_000;

/// Deadlines swept per packet in the normal path, to keep per-packet work bounded.
const SWEEP_PER_PACKET: usize = 8;

/// One tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnEntry {
    pub expires: Instant,
    /// Direction of the packet that created the entry (its rules are re-checked on reload).
    pub direction: Direction,
    /// Rule-set version that allowed the flow.
    pub rules_version: u16,
    /// Identifies this insertion, so stale deadlines of a removed entry are ignored.
    id: u64,
}

#[derive(Debug, Clone, Copy)]
struct Deadline {
    at: Instant,
    key: FlowPacket,
    id: u64,
}

/// Result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Miss,
    Hit(ConnEntry),
}

/// Counters kept by the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub inserted: u64,
    pub expired: u64,
    /// Entries dropped because they no longer matched the rules after a reload.
    pub recheck_removed: u64,
    /// New flows refused because the table was full of live entries.
    pub full: u64,
}

#[derive(Debug)]
pub struct Conntrack {
    entries: HashMap<FlowPacket, ConnEntry>,
    /// Deadlines per class: 0 = tcp, 1 = udp, 2 = everything else.
    deadlines: [VecDeque<Deadline>; 3],
    capacity: usize,
    next_id: u64,
    stats: ConntrackStats,
}

impl Conntrack {
    /// A table holding at most `capacity` flows (at least 1).
    pub fn new(capacity: usize) -> Conntrack {
        let capacity = capacity.max(1);
        // Pre-size modestly; growth beyond is amortised and stops at `capacity`.
        let initial = capacity.min(4096);
        Conntrack {
            entries: HashMap::with_capacity(initial),
            deadlines: std::array::from_fn(|_| VecDeque::with_capacity(initial)),
            capacity,
            next_id: 0,
            stats: ConntrackStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Changes the bound. Entries above a lowered bound stay until they expire; no new flow is
    /// admitted until the table is below it.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub fn stats(&self) -> ConntrackStats {
        self.stats
    }

    /// Looks a flow up; an entry past its expiry is removed and reported as a miss.
    pub fn lookup(&mut self, key: &FlowPacket, now: Instant) -> Lookup {
        self.sweep(now, SWEEP_PER_PACKET);
        match self.entries.get(key) {
            Some(e) if e.expires > now => Lookup::Hit(*e),
            Some(_) => {
                self.entries.remove(key);
                self.stats.expired += 1;
                Lookup::Miss
            }
            None => Lookup::Miss,
        }
    }

    /// Refreshes a hit entry's expiry and records the rule version it now satisfies.
    pub fn refresh(
        &mut self,
        key: &FlowPacket,
        now: Instant,
        timeouts: &ConntrackTimeouts,
        version: u16,
    ) {
        if let Some(e) = self.entries.get_mut(key) {
            e.expires = now + timeouts.for_protocol(key.protocol);
            e.rules_version = version;
        }
    }

    /// Forgets an entry (it failed the re-check against new rules).
    pub fn remove_rechecked(&mut self, key: &FlowPacket) {
        if self.entries.remove(key).is_some() {
            self.stats.recheck_removed += 1;
        }
    }

    /// Tracks a newly allowed flow. Returns false (and counts it) when the table is full of
    /// live entries.
    pub fn insert(
        &mut self,
        key: FlowPacket,
        direction: Direction,
        version: u16,
        now: Instant,
        timeouts: &ConntrackTimeouts,
    ) -> bool {
        let timeout = timeouts.for_protocol(key.protocol);
        if let Some(e) = self.entries.get_mut(&key) {
            // Re-inserting an existing (e.g. just expired-on-lookup) flow keeps its deadline.
            e.expires = now + timeout;
            e.direction = direction;
            e.rules_version = version;
            return true;
        }
        if self.entries.len() >= self.capacity {
            self.sweep(now, usize::MAX);
            if self.entries.len() >= self.capacity {
                self.stats.full += 1;
                return false;
            }
        }
        self.compact_deadlines_if_bloated();
        let id = self.next_id;
        self.next_id += 1;
        let expires = now + timeout;
        self.entries.insert(
            key,
            ConnEntry {
                expires,
                direction,
                rules_version: version,
                id,
            },
        );
        self.deadlines[class(key.protocol)].push_back(Deadline {
            at: expires,
            key,
            id,
        });
        self.stats.inserted += 1;
        true
    }

    /// Drops every entry (rule version wrap-around).
    pub fn clear(&mut self) {
        self.entries.clear();
        for q in &mut self.deadlines {
            q.clear();
        }
    }

    /// Pops up to `budget` due deadlines: expired entries go, refreshed ones are re-queued.
    fn sweep(&mut self, now: Instant, budget: usize) {
        let mut left = budget;
        for q in 0..self.deadlines.len() {
            while left > 0 {
                let Some(front) = self.deadlines[q].front().copied() else {
                    break;
                };
                if front.at > now {
                    break;
                }
                self.deadlines[q].pop_front();
                left -= 1;
                self.settle(q, front, now);
            }
        }
    }

    fn settle(&mut self, q: usize, d: Deadline, now: Instant) {
        let Some(entry) = self.entries.get(&d.key) else {
            return;
        };
        if entry.id != d.id {
            return; // stale deadline of an entry removed and re-created since
        }
        if entry.expires <= now {
            self.entries.remove(&d.key);
            self.stats.expired += 1;
        } else {
            let at = entry.expires;
            self.deadlines[q].push_back(Deadline { at, ..d });
        }
    }

    /// Stale deadlines (entries removed by a re-check or on lookup) stay queued until due; if
    /// they ever outnumber live entries by far, drop them in one pass so memory stays bounded.
    fn compact_deadlines_if_bloated(&mut self) {
        let queued: usize = self.deadlines.iter().map(VecDeque::len).sum();
        if queued < 2 * self.capacity + 64 {
            return;
        }
        let entries = &self.entries;
        for q in &mut self.deadlines {
            q.retain(|d| entries.get(&d.key).is_some_and(|e| e.id == d.id));
        }
    }

    /// Time until the earliest queued deadline (for a driver that wants to sweep when idle).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .iter()
            .filter_map(|q| q.front().map(|d| d.at))
            .min()
    }

    /// Sweeps every due deadline (for an idle timer; per-packet sweeping is bounded).
    pub fn expire(&mut self, now: Instant) {
        self.sweep(now, usize::MAX);
    }

    /// The entry for a flow, if tracked (expired or not).
    pub fn get(&self, key: &FlowPacket) -> Option<&ConnEntry> {
        self.entries.get(key)
    }
}

fn class(protocol: u8) -> usize {
    match protocol {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use std::time::Duration;

    fn key(port: u16, protocol: u8) -> FlowPacket {
        FlowPacket {
            local_ip: Ipv4Addr::new(10, 0, 0, 1),
            remote_ip: Ipv4Addr::new(10, 0, 0, 2),
            local_port: port,
            remote_port: 80,
            protocol,
            fragment: false,
        }
    }

    fn timeouts() -> ConntrackTimeouts {
        ConntrackTimeouts {
            tcp: Duration::from_secs(10),
            udp: Duration::from_secs(5),
            default: Duration::from_secs(7),
        }
    }

    #[test]
    fn expiry_is_exact() {
        let mut ct = Conntrack::new(10);
        let t0 = Instant::now();
        assert!(ct.insert(key(1, PROTO_UDP), Direction::Outbound, 0, t0, &timeouts()));
        let just_before = t0 + Duration::from_secs(5) - Duration::from_nanos(1);
        assert!(matches!(
            ct.lookup(&key(1, PROTO_UDP), just_before),
            Lookup::Hit(_)
        ));
        assert_eq!(
            ct.lookup(&key(1, PROTO_UDP), t0 + Duration::from_secs(5)),
            Lookup::Miss
        );
        assert!(ct.is_empty());
    }

    #[test]
    fn refreshed_entries_survive_the_sweep() {
        let mut ct = Conntrack::new(10);
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        ct.insert(key(1, PROTO_TCP), Direction::Outbound, 0, s(0), &timeouts());
        ct.insert(key(2, PROTO_TCP), Direction::Outbound, 0, s(0), &timeouts());
        ct.refresh(&key(1, PROTO_TCP), s(8), &timeouts(), 0);
        ct.expire(s(12));
        assert_eq!(ct.len(), 1);
        assert!(ct.get(&key(1, PROTO_TCP)).is_some());
        ct.expire(s(18));
        assert!(ct.is_empty());
        assert_eq!(ct.stats().expired, 2);
    }

    #[test]
    fn stale_deadlines_do_not_pile_up() {
        let mut ct = Conntrack::new(4);
        let t0 = Instant::now();
        // Remove and re-create the same flow many times within one timeout.
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i);
            ct.insert(key(1, PROTO_TCP), Direction::Outbound, 0, now, &timeouts());
            ct.remove_rechecked(&key(1, PROTO_TCP));
        }
        let queued: usize = ct.deadlines.iter().map(VecDeque::len).sum();
        assert!(queued <= 2 * 4 + 64 + 1, "{queued} deadlines queued");
    }

    #[test]
    fn full_table_evicts_only_expired_entries() {
        let mut ct = Conntrack::new(2);
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        assert!(ct.insert(key(1, PROTO_UDP), Direction::Outbound, 0, s(0), &timeouts()));
        assert!(ct.insert(key(2, PROTO_TCP), Direction::Outbound, 0, s(0), &timeouts()));
        assert!(!ct.insert(key(3, PROTO_TCP), Direction::Outbound, 0, s(4), &timeouts()));
        // At 6s the udp entry (5s) is gone, the tcp one (10s) stays.
        assert!(ct.insert(key(3, PROTO_TCP), Direction::Outbound, 0, s(6), &timeouts()));
        assert!(ct.get(&key(2, PROTO_TCP)).is_some());
        assert!(ct.get(&key(1, PROTO_UDP)).is_none());
        assert_eq!(ct.stats().full, 1);
    }
}

//! Fuzz the replay window (`crypto::replay`, 1024 counters as in Nebula) against a naive model:
//! the set of accepted counters plus the window rule. For any sequence of counters the window
//! must accept exactly what the model accepts, whether a counter goes through the receive path
//! (`check`, then `update` after authentication), only `check` (authentication failed: no state
//! change), or `update` alone; and `check` may over-accept (1.6.1's quirk, settled by `update`)
//! but never refuse what the model accepts.
//!
//! Input: one byte choosing the start (odd: `ReplayWindow::empty`, even: `new`), then steps of
//! one op byte (`op & 3`: 0 receive path, 1 check only, 2 and 3 update only) and a counter:
//! `(op >> 2) & 3` = 0: model current + next byte; 1: current − next u16; 2: current + next
//! u16; 3: the next eight bytes as an absolute counter.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use meshd::crypto::{ReplayWindow, REPLAY_WINDOW};

/// Highest accepted counter, every accepted counter still inside the window, and whether 0 was
/// taken (it is acceptable once, while the window has not moved past its first 1024).
struct Model {
    current: u64,
    seen: BTreeSet<u64>,
    zero_seen: bool,
}

impl Model {
    fn accepts(&self, i: u64) -> bool {
        if i > self.current {
            return true;
        }
        if i == 0 && !self.zero_seen && self.current < REPLAY_WINDOW {
            return true;
        }
        let in_window = self.current < REPLAY_WINDOW || i > self.current - REPLAY_WINDOW;
        in_window && !self.seen.contains(&i)
    }

    fn record(&mut self, i: u64) {
        self.seen.insert(i);
        self.zero_seen |= i == 0;
        self.current = self.current.max(i);
        if self.current >= REPLAY_WINDOW {
            self.seen = self.seen.split_off(&(self.current - REPLAY_WINDOW + 1));
        }
    }
}

fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

fuzz_target!(|data: &[u8]| {
    let Some((&start, mut rest)) = data.split_first() else {
        return;
    };
    let (mut w, mut m) = if start & 1 == 1 {
        let m = Model {
            current: 0,
            seen: BTreeSet::new(),
            zero_seen: false,
        };
        (ReplayWindow::empty(), m)
    } else {
        let m = Model {
            current: 2,
            seen: BTreeSet::from([0, 1, 2]),
            zero_seen: true,
        };
        (ReplayWindow::new(), m)
    };
    while let Some([op]) = take::<1>(&mut rest) {
        let i = match (op >> 2) & 3 {
            0 => take::<1>(&mut rest).map(|[d]| m.current.saturating_add(u64::from(d))),
            1 => take::<2>(&mut rest)
                .map(|d| m.current.saturating_sub(u64::from(u16::from_be_bytes(d)))),
            2 => take::<2>(&mut rest)
                .map(|d| m.current.saturating_add(u64::from(u16::from_be_bytes(d)))),
            _ => take::<8>(&mut rest).map(u64::from_be_bytes),
        };
        let Some(i) = i else { break };
        let want = m.accepts(i);
        let checked = w.check(i);
        assert!(
            checked || !want,
            "check refused {i} at current {}",
            m.current
        );
        let got = match op & 3 {
            0 => checked && w.update(i),
            1 => {
                assert_eq!(w.check(i), checked, "check changes nothing");
                assert_eq!(w.current(), m.current);
                continue;
            }
            _ => w.update(i),
        };
        assert_eq!(got, want, "counter {i} at current {}", m.current);
        if got {
            m.record(i);
        }
        assert_eq!(w.current(), m.current, "after counter {i}");
    }
});

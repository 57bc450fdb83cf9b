//! Unix signals turned into daemon events: SIGHUP reloads, SIGTERM and SIGINT shut down (as in
//! Nebula's `main.go`/`cmd/nebula`).
//!
//! Owns the tokio signal streams. Must not act on the events; the event loop does.

use std::io;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// What a signal asks the daemon to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGHUP: re-read the config and apply what is reloadable.
    Reload,
    /// SIGTERM or SIGINT: close tunnels and exit 0.
    Shutdown,
}

/// The registered handlers. Once created, these signals no longer kill the process.
#[derive(Debug)]
pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers the handlers. Must be called inside a tokio runtime.
    pub fn new() -> io::Result<Signals> {
        Ok(Signals {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next signal.
    pub async fn recv(&mut self) -> SignalEvent {
        tokio::select! {
            got = self.hup.recv() => match got {
                Some(()) => SignalEvent::Reload,
                // The driver is gone: nothing can be received any more, so stop.
                None => SignalEvent::Shutdown,
            },
            _ = self.term.recv() => SignalEvent::Shutdown,
            _ = self.int.recv() => SignalEvent::Shutdown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn raise(sig: i32) {
        // SAFETY: kill on our own PID with a signal whose handler tokio has installed.
        assert_eq!(unsafe { libc::kill(libc::getpid(), sig) }, 0);
    }

    // One test for all three signals: they are process-wide, so parallel tests would race.
    #[tokio::test]
    async fn signals_map_to_events() {
        let mut s = Signals::new().unwrap();
        for (sig, want) in [
            (libc::SIGHUP, SignalEvent::Reload),
            (libc::SIGTERM, SignalEvent::Shutdown),
            (libc::SIGINT, SignalEvent::Shutdown),
        ] {
            raise(sig);
            let got = tokio::time::timeout(Duration::from_secs(5), s.recv()).await;
            assert_eq!(got.expect("signal delivered"), want);
        }
    }
}

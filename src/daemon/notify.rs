//! systemd readiness protocol (`sd_notify`): READY, RELOADING, STOPPING, STATUS and the watchdog
//! keep-alive, sent as datagrams to `$NOTIFY_SOCKET`.
//!
//! Owns the notification target read once from the environment. Does nothing at all when
//! `NOTIFY_SOCKET` is unset (plain `Type=simple` units, foreground runs, tests). Must not decide
//! when the daemon is ready; the event loop calls in at the right moments.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where notifications go: `$NOTIFY_SOCKET` (sent by the `sd-notify` crate, as systemd runs
/// us), or an explicit filesystem path or Linux abstract socket (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Env,
    Path(PathBuf),
    Abstract(Vec<u8>),
}

/// Sends service state to systemd; every method is a no-op without a target.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog only counts when
    /// the PID is ours or unset).
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET")
            .filter(|s| !s.is_empty())
            .map(|_| Target::Env);
        let pid_ok = std::env::var("WATCHDOG_PID")
            .map(|p| p.trim() == std::process::id().to_string())
            .unwrap_or(true);
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|&us| us > 0 && pid_ok)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// A notifier for an explicit socket (`@name` = abstract), e.g. in tests.
    pub fn with_socket(socket: &str, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            target: parse_target(socket),
            watchdog,
        }
    }

    /// A notifier that never sends anything.
    pub fn disabled() -> Notifier {
        Notifier::default()
    }

    /// True when notifications are actually sent.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Start-up finished: tun up, sockets bound, loops running.
    pub fn ready(&self) -> io::Result<()> {
        self.send("READY=1")
    }

    /// A reload (SIGHUP) started; systemd wants the monotonic time with it.
    pub fn reloading(&self) -> io::Result<()> {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()))
    }

    /// Shutdown started.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// Free-form status line shown by `systemctl status` (newlines become spaces).
    pub fn status(&self, text: &str) -> io::Result<()> {
        self.send(&format!("STATUS={}", text.replace('\n', " ")))
    }

    /// One watchdog keep-alive.
    pub fn watchdog(&self) -> io::Result<()> {
        self.send("WATCHDOG=1")
    }

    /// How often to send keep-alives: half of `WatchdogSec`, as systemd recommends.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    /// Spawns a task sending WATCHDOG=1 every [`watchdog_interval`](Self::watchdog_interval);
    /// `None` when no watchdog is configured. Abort the handle to stop it.
    pub fn spawn_watchdog(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        let every = self.watchdog_interval()?;
        let me = Arc::clone(self);
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = me.watchdog() {
                    tracing::warn!(error = %e, "systemd watchdog notification failed");
                }
            }
        }))
    }

    fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        if *target == Target::Env {
            return sd_notify::notify(&[sd_notify::NotifyState::Custom(message)]);
        }
        let sock = UnixDatagram::unbound()?;
        match target {
            Target::Env => Ok(()), // sent above
            Target::Path(path) => sock.send_to(message.as_bytes(), path).map(|_| ()),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr).map(|_| ())
            }
        }
    }
}

fn parse_target(s: &str) -> Option<Target> {
    match s.strip_prefix('@') {
        _ if s.is_empty() => None,
        Some(name) => Some(Target::Abstract(name.as_bytes().to_vec())),
        None => Some(Target::Path(PathBuf::from(s))),
    }
}

fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::with_socket(path.to_str().unwrap(), None);
        assert!(n.is_enabled());
        n.ready().unwrap();
        assert_eq!(recv(&server), "READY=1");
        n.status("2 tunnels\nup").unwrap();
        assert_eq!(recv(&server), "STATUS=2 tunnels up");
        n.reloading().unwrap();
        let msg = recv(&server);
        assert!(msg.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{msg}");
        assert!(msg.rsplit('=').next().unwrap().parse::<u64>().unwrap() > 0);
        n.stopping().unwrap();
        assert_eq!(recv(&server), "STOPPING=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("meshd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::with_socket(&format!("@{name}"), None)
            .watchdog()
            .unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn disabled_notifier_sends_nothing_and_succeeds() {
        let n = Notifier::disabled();
        assert!(!n.is_enabled());
        assert!(n.ready().is_ok() && n.stopping().is_ok() && n.watchdog().is_ok());
        assert_eq!(n.watchdog_interval(), None);
        assert_eq!(Notifier::with_socket("", None).target, None);
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_sec() {
        let n = Notifier::with_socket("/nonexistent", Some(Duration::from_secs(30)));
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(15)));
        // A watchdog without a socket to report to is no watchdog.
        let n = Notifier {
            target: None,
            watchdog: Some(Duration::from_secs(30)),
        };
        assert_eq!(n.watchdog_interval(), None);
    }

    #[tokio::test]
    async fn watchdog_task_keeps_pinging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wd");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Arc::new(Notifier::with_socket(
            path.to_str().unwrap(),
            Some(Duration::from_millis(100)),
        ));
        let task = n.spawn_watchdog().expect("watchdog configured");
        let got = tokio::task::spawn_blocking(move || [recv(&server), recv(&server)])
            .await
            .unwrap();
        task.abort();
        assert_eq!(got, ["WATCHDOG=1", "WATCHDOG=1"]);
    }

    #[test]
    fn abstract_and_path_targets_parse() {
        assert_eq!(parse_target("@x"), Some(Target::Abstract(b"x".to_vec())));
        assert_eq!(parse_target("/run/s"), Some(Target::Path("/run/s".into())));
    }
}

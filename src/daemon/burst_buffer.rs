//! Receive-buffer sizing for bursts (issue 19): a lighthouse gets bursts of HostQuery and
//! HostUpdateNotification from many hosts at once, which the kernel's 208 KiB default drops.
//! A lighthouse without `listen.read_buffer` asks for [`LIGHTHOUSE_READ_BUFFER`]; with it, the
//! configured size stands (already applied by `udp`). Either way the size the kernel actually
//! granted is read back and a cap is reported in the log.
//!
//! Owns only this decision and its log lines; the socket and its setters belong to `udp`.

use tracing::{info, warn};

use super::udp::UdpSocket;

/// What a lighthouse asks for when `listen.read_buffer` is unset: a 20,000-datagram burst of
/// small lighthouse messages (about 1 KiB of kernel memory each) fits with room to spare.
pub const LIGHTHOUSE_READ_BUFFER: usize = 32 << 20;

/// The receive buffer to ask for: the configured one, else [`LIGHTHOUSE_READ_BUFFER`] on a
/// lighthouse, else none (the system default stays).
pub fn wanted(am_lighthouse: bool, configured: usize) -> Option<usize> {
    match (configured, am_lighthouse) {
        (0, true) => Some(LIGHTHOUSE_READ_BUFFER),
        (0, false) => None,
        (n, _) => Some(n),
    }
}

/// Applies [`wanted`] to `udp` and logs what the kernel granted (Linux reports twice the
/// usable size; the usable half is compared), warning when it capped the request.
pub fn size_for_bursts(udp: &UdpSocket, am_lighthouse: bool, configured: usize) {
    let Some(want) = wanted(am_lighthouse, configured) else {
        return;
    };
    if configured == 0 {
        if let Err(e) = udp.set_buffers(want, 0) {
            warn!(error = %format!("{e:#}"), "could not raise the UDP receive buffer");
        }
    }
    let granted = match udp.buffer_sizes() {
        Ok((rcv, _)) => rcv / 2,
        Err(e) => {
            warn!(error = %e, "could not read the UDP receive buffer size");
            return;
        }
    };
    if granted < want {
        warn!(
            requested = want,
            granted,
            "the kernel capped the UDP receive buffer (raise net.core.rmem_max, or run with \
             CAP_NET_ADMIN so SO_RCVBUFFORCE applies); bursts beyond it are dropped"
        );
    } else {
        info!(bytes = granted, "UDP receive buffer sized for bursts");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lighthouses_ask_for_a_burst_buffer_and_the_config_wins() {
        assert_eq!(wanted(true, 0), Some(LIGHTHOUSE_READ_BUFFER));
        assert_eq!(wanted(false, 0), None, "hosts keep the system default");
        assert_eq!(
            wanted(true, 1 << 20),
            Some(1 << 20),
            "listen.read_buffer honoured"
        );
        assert_eq!(wanted(false, 1 << 20), Some(1 << 20));
    }

    #[tokio::test]
    async fn a_lighthouse_socket_gets_at_least_the_default_or_reports_the_cap() {
        let s = crate::daemon::udp::UdpSettings {
            host: std::net::Ipv4Addr::LOCALHOST.into(),
            port: 0,
            read_buffer: 0,
            write_buffer: 0,
            reuse_port: false,
            // Without offloads the socket starts at the kernel default, which this raises.
            offloads: false,
            so_mark: 0,
        };
        let sock = UdpSocket::bind(&s).unwrap();
        let before = sock.buffer_sizes().unwrap().0;
        size_for_bursts(&sock, true, 0);
        let after = sock.buffer_sizes().unwrap().0;
        // As root SO_RCVBUFFORCE grants the full size; otherwise rmem_max caps it (logged).
        assert!(after >= before, "{before} -> {after}");
        if unsafe { libc::geteuid() } == 0 {
            assert!(after / 2 >= LIGHTHOUSE_READ_BUFFER, "root: {after}");
        }
    }
}

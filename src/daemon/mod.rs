//! The async I/O shell: tokio loop, UDP, TUN, routes, signals, reload, systemd notify.

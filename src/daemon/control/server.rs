//! The control socket itself: a Unix stream socket (directory created 0700, socket 0600, peers
//! other than our own user or root refused by `SO_PEERCRED`), bounded reads (64 KiB per line,
//! 5 s to finish one, 8 clients at once), and the hand-off of each parsed command to the event
//! loop over a bounded channel. Owns no answers: the loop builds them between batches.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, warn};

use super::protocol::{parse_request, Command, Reply, Request};

/// Longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Time a client has to finish a request line.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients served at once; more wait for a slot.
const MAX_CLIENTS: usize = 8;
/// Requests waiting for the event loop.
const QUEUE: usize = 16;

/// The socket path when `control.socket` is not set.
pub fn default_socket(tun_dev: Option<&str>) -> PathBuf {
    let name = tun_dev.filter(|d| !d.is_empty()).unwrap_or("meshd");
    PathBuf::from(format!("/run/meshd/{name}.sock"))
}

/// The listening socket; removes its file when dropped.
pub struct ControlServer {
    path: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlServer {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Binds `path` (0600, its directory created 0700 when missing) and spawns the accept task.
/// A stale socket file is replaced; one a live daemon answers on is an error.
pub fn start(path: &Path, to_loop: mpsc::Sender<Request>) -> anyhow::Result<ControlServer> {
    prepare_dir(path)?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!(
                "control socket {} is in use by another process",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale control socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    tokio::spawn(accept_loop(listener, to_loop));
    Ok(ControlServer {
        path: path.to_path_buf(),
    })
}

fn prepare_dir(path: &Path) -> anyhow::Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", dir.display()))
}

async fn accept_loop(listener: UnixListener, to_loop: mpsc::Sender<Request>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let to_loop = to_loop.clone();
        tokio::spawn(async move {
            serve(stream, to_loop).await;
            drop(permit);
        });
    }
}

/// Only our own user (and root) may talk to the daemon, whatever the file mode says.
fn peer_allowed(stream: &UnixStream) -> bool {
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) => c.uid() == me || c.uid() == 0,
        Err(_) => false,
    }
}

async fn serve(stream: UnixStream, to_loop: mpsc::Sender<Request>) {
    let allowed = peer_allowed(&stream);
    let (rd, mut wr) = stream.into_split();
    if !allowed {
        let _ = write_reply(&mut wr, &Reply::Error("permission denied".into())).await;
        return;
    }
    let mut rd = BufReader::new(rd).take(0);
    loop {
        rd.set_limit(MAX_REQUEST as u64 + 1);
        let mut line = Vec::new();
        let read = tokio::time::timeout(READ_TIMEOUT, rd.read_until(b'\n', &mut line)).await;
        let reply = match read {
            Err(_) if line.is_empty() => return,
            Err(_) => Reply::Error("incomplete request: no newline within 5 s".into()),
            Ok(Err(e)) => {
                debug!(error = %e, "control read failed");
                return;
            }
            Ok(Ok(0)) => return,
            Ok(Ok(_)) if line.last() != Some(&b'\n') && line.len() > MAX_REQUEST => {
                Reply::Error(format!("request longer than {MAX_REQUEST} bytes"))
            }
            Ok(Ok(_)) if line.last() != Some(&b'\n') => {
                Reply::Error("incomplete request: connection closed before the newline".into())
            }
            Ok(Ok(_)) => handle_line(&line, &to_loop).await,
        };
        let done = !matches!(reply, Reply::Json(_)) && line.last() != Some(&b'\n');
        if write_reply(&mut wr, &reply).await.is_err() || done {
            return;
        }
    }
}

async fn handle_line(line: &[u8], to_loop: &mpsc::Sender<Request>) -> Reply {
    if line.trim_ascii().is_empty() {
        return Reply::Error("empty request".into());
    }
    let cmd = match parse_request(line) {
        Ok(c) => c,
        Err(e) => return Reply::Error(e),
    };
    if cmd == Command::Version {
        return Reply::Json(version());
    }
    ask_loop(to_loop, cmd).await
}

/// Hands `cmd` to the event loop and waits (bounded) for its answer.
pub async fn ask_loop(to_loop: &mpsc::Sender<Request>, cmd: Command) -> Reply {
    let (tx, rx) = oneshot::channel();
    if to_loop.try_send(Request { cmd, reply: tx }).is_err() {
        return Reply::Error("daemon busy, try again".into());
    }
    match tokio::time::timeout(READ_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        _ => Reply::Error("daemon did not answer".into()),
    }
}

async fn write_reply(wr: &mut tokio::net::unix::OwnedWriteHalf, r: &Reply) -> std::io::Result<()> {
    let v = match r {
        Reply::Json(v) => json!({"ok": true, "result": v}),
        Reply::Error(e) => json!({"ok": false, "error": e}),
        Reply::Metrics(_) => json!({"ok": false, "error": "not a client command"}),
    };
    let mut bytes = serde_json::to_vec(&v).unwrap_or_default();
    bytes.push(b'\n');
    wr.write_all(&bytes).await
}

/// A bounded queue from the control and metrics tasks to the loop.
pub fn channel() -> (mpsc::Sender<Request>, mpsc::Receiver<Request>) {
    mpsc::channel(QUEUE)
}

pub(super) fn version() -> Value {
    json!({"version": env!("CARGO_PKG_VERSION"), "name": "meshd"})
}

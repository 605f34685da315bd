//! The two systemd protocols [`crate::ops::serve`] speaks on Linux (so
//! `pipesvc serve` too), written against their documented environment
//! contract (sd_notify(3), sd_listen_fds(3)) with std's Unix sockets rather
//! than libsystemd:
//!
//! - readiness: when `NOTIFY_SOCKET` is set, a datagram `READY=1` once the
//!   endpoint accepts connections and `STOPPING=1` when a stop begins;
//! - socket activation: when `LISTEN_PID` is this process and `LISTEN_FDS`
//!   is at least 1, the listening socket at file descriptor 3 is served
//!   instead of binding one.
//!
//! Both do nothing when their variables are absent, so the same binary runs
//! from a terminal, a script or a unit.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// The first descriptor a service manager passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Sends `state` (newline-separated `KEY=VALUE` assignments, such as
/// `READY=1`) to the service manager when `NOTIFY_SOCKET` is set. Returns
/// whether it was sent; an error names the socket.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    send_state(&socket, state).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot notify the service manager (NOTIFY_SOCKET={}): {e}",
                socket.to_string_lossy()
            ),
        )
    })?;
    Ok(true)
}

/// One datagram to `socket`: an absolute path, or `@name` for Linux's
/// abstract namespace (as sd_notify accepts).
fn send_state(socket: &OsStr, state: &str) -> io::Result<()> {
    let sender = UnixDatagram::unbound()?;
    let sent = match socket.as_bytes() {
        [b'/', ..] => sender.send_to(state.as_bytes(), Path::new(socket))?,
        [b'@', name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sender.send_to_addr(state.as_bytes(), &address)?
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unsupported address: expected an absolute path or @abstract-name",
            ))
        }
    };
    if sent != state.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", state.len()),
        ));
    }
    Ok(())
}

/// The listening socket passed by the service manager (socket activation),
/// or `None` when there is none for this process: `LISTEN_PID` unset or
/// another process's, or `LISTEN_FDS` 0. Takes descriptor 3, the first
/// passed; more are ignored with a warning. Only the first call can take
/// it; later ones return `None`.
///
/// The variables are left in the environment (unsetting them is not
/// thread-safe, and the service starts no other program that could
/// mistake them for its own: `LISTEN_PID` names this process).
pub fn take_listener() -> io::Result<Option<UnixListener>> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    let Some(pid) = std::env::var_os("LISTEN_PID") else {
        return Ok(None);
    };
    let pid = parse_var("LISTEN_PID", &pid)?;
    if pid != std::process::id() {
        return Ok(None);
    }
    let count = match std::env::var_os("LISTEN_FDS") {
        Some(count) => parse_var("LISTEN_FDS", &count)?,
        None => 0,
    };
    if count == 0 || TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(None);
    }
    if count > 1 {
        tracing::warn!(
            passed = count,
            "socket activation: serving the first socket passed (descriptor 3), ignoring the others"
        );
    }
    check_listening_stream(LISTEN_FDS_START)?;
    // SAFETY: the service manager passed descriptor 3 to this process for
    // it to own (LISTEN_PID is our pid), check_listening_stream found it
    // open, and TAKEN makes sure it is wrapped only once.
    let fd = unsafe { OwnedFd::from_raw_fd(LISTEN_FDS_START) };
    // Like sd_listen_fds: do not leak it into programs we might start.
    // SAFETY: fcntl on a descriptor we own, with a plain int argument.
    if unsafe { libc::fcntl(LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let listener = UnixListener::from(fd);
    // Fails unless it is a Unix domain socket.
    listener.local_addr()?;
    Ok(Some(listener))
}

fn parse_var(name: &str, value: &OsStr) -> io::Result<u32> {
    value
        .to_str()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "socket activation: {name}={} is not a number",
                    value.to_string_lossy()
                ),
            )
        })
}

/// Checks that `fd` is open, a stream socket, and listening.
fn check_listening_stream(fd: RawFd) -> io::Result<()> {
    let option = |name: libc::c_int| -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `value`; a bad
        // descriptor makes it fail with EBADF/ENOTSOCK, nothing worse.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                name,
                (&mut value as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            Ok(value)
        } else {
            Err(io::Error::last_os_error())
        }
    };
    let not_usable = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket activation: descriptor {fd} {why}; pipesvc needs a listening Unix stream socket (ListenStream=/path in the .socket unit)"),
        )
    };
    let kind = option(libc::SO_TYPE).map_err(|e| not_usable(format!("is not a socket ({e})")))?;
    if kind != libc::SOCK_STREAM {
        return Err(not_usable("is not a stream socket".into()));
    }
    if option(libc::SO_ACCEPTCONN)? == 0 {
        return Err(not_usable("is not listening".into()));
    }
    Ok(())
}

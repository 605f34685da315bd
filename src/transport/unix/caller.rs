//! Unix: who the peer of a socket is. At accept: `SO_PEERCRED` (uid, gid,
//! pid, read by the listener) and `SO_PEERGROUPS` (Linux: the supplementary
//! groups), one cheap system call each; a pidfd (`SO_PEERPIDFD`) only when
//! the server's policy will read the executable. The executable
//! (`/proc/<pid>/exe`) and the user's name are read when first asked, so
//! the accept path pays nothing for them.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::super::caller::{Caller, Details};
use super::super::PeerInfo;

/// What the server reads at accept: the credentials (`peer`, from
/// `SO_PEERCRED`), the supplementary groups, and with `pin_process` a pidfd
/// of the process that connected.
pub(crate) fn capture(socket: &impl AsRawFd, peer: PeerInfo, pin_process: bool) -> Caller {
    let fd = socket.as_raw_fd();
    Caller::from_details(Details {
        peer,
        groups: peer_groups(fd),
        pidfd: if pin_process { peer_pidfd(fd) } else { None },
        ..Details::default()
    })
}

/// This process: effective uid and gid, supplementary groups, executable.
pub(crate) fn current() -> Details {
    // SAFETY: plain getters without preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let executable = std::sync::OnceLock::new();
    let _ = executable.set(std::env::current_exe().ok());
    Details {
        peer: PeerInfo::new()
            .with_pid(std::process::id())
            .with_uid(uid)
            .with_gid(gid),
        groups: current_groups().ok(),
        executable,
        is_current: true,
        ..Details::default()
    }
}

/// The supplementary groups of this process (`getgroups`).
fn current_groups() -> io::Result<Vec<u32>> {
    // SAFETY: a size query (no buffer).
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: the buffer holds `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

/// `SO_PEERGROUPS` (Linux 4.13 and later): the peer's supplementary
/// groups when it connected.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_groups(fd: RawFd) -> Option<Vec<u32>> {
    // Most users are in a few groups: one call with this room on the
    // stack, then a vector of the exact size.
    let mut first = [0u32; 32];
    let needed = match read_peer_groups(fd, &mut first) {
        Ok(n) => return Some(first[..n].to_vec()),
        // The kernel caps a process's groups at 65536 (NGROUPS_MAX).
        Err((e, needed))
            if e.raw_os_error() == Some(libc::ERANGE)
                && needed > first.len()
                && needed <= 65536 =>
        {
            needed
        }
        Err((e, _)) => {
            tracing::debug!(error = %e, "SO_PEERGROUPS failed");
            return None;
        }
    };
    let mut groups = vec![0u32; needed];
    match read_peer_groups(fd, &mut groups) {
        Ok(n) => {
            groups.truncate(n);
            Some(groups)
        }
        Err((e, _)) => {
            tracing::debug!(error = %e, "SO_PEERGROUPS failed");
            None
        }
    }
}

/// One `getsockopt(SO_PEERGROUPS)` into `buf`: how many groups it wrote,
/// or the error and how many the kernel says it has (on `ERANGE`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn read_peer_groups(fd: RawFd, buf: &mut [u32]) -> Result<usize, (io::Error, usize)> {
    let mut len = std::mem::size_of_val(buf) as libc::socklen_t;
    // SAFETY: `buf` has `len` writable bytes; on ERANGE the kernel writes
    // nothing and sets `len` to the size needed.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    let count = len as usize / std::mem::size_of::<u32>();
    if ok == 0 {
        Ok(count.min(buf.len()))
    } else {
        Err((io::Error::last_os_error(), count))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_groups(_fd: RawFd) -> Option<Vec<u32>> {
    None
}

/// Whether `SO_PEERPIDFD` failed as unknown (kernels before 6.5): then it is
/// not asked again.
static NO_PEER_PIDFD: AtomicBool = AtomicBool::new(false);

/// `SO_PEERPIDFD`: a pidfd of the process that connected, which keeps
/// naming that process (never a later one with the same pid).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn peer_pidfd(fd: RawFd) -> Option<OwnedFd> {
    if NO_PEER_PIDFD.load(Ordering::Relaxed) {
        return None;
    }
    let mut pidfd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `pidfd` has `len` writable bytes.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            std::ptr::from_mut(&mut pidfd).cast(),
            &mut len,
        )
    };
    if ok != 0 || pidfd < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOPROTOOPT) {
            NO_PEER_PIDFD.store(true, Ordering::Relaxed);
        }
        // The peer may have exited already (EINVAL, ESRCH): then its
        // executable is unknown, never a guess.
        tracing::debug!(error = %err, "SO_PEERPIDFD failed");
        return None;
    }
    // SAFETY: a new descriptor that we own from here on.
    Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn peer_pidfd(_fd: RawFd) -> Option<OwnedFd> {
    None
}

/// Runs `read` on the peer's `/proc/<pid>/exe` (Linux). With a pidfd, the
/// answer is kept only if the process that connected still lives after
/// the read: a live process holds its pid, so the file read was its own.
fn read_exe<T>(details: &Details, read: impl FnOnce(&Path) -> io::Result<T>) -> Option<T> {
    if !cfg!(any(target_os = "linux", target_os = "android")) {
        return None;
    }
    let pid = details.peer.pid?;
    let path = PathBuf::from(format!("/proc/{pid}/exe"));
    let value = match read(&path) {
        Ok(value) => value,
        Err(e) => {
            tracing::debug!(pid, error = %e, "cannot read the peer's executable");
            return None;
        }
    };
    match &details.pidfd {
        Some(pidfd) if !alive(pidfd) => {
            tracing::debug!(
                pid,
                "the peer process has exited: its executable is unknown"
            );
            None
        }
        _ => Some(value),
    }
}

/// Whether the process `pidfd` names still runs (`pidfd_send_signal` with
/// signal 0 checks without sending anything).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn alive(pidfd: &OwnedFd) -> bool {
    // SAFETY: a live pidfd, signal 0, no siginfo, no flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn alive(_pidfd: &OwnedFd) -> bool {
    false
}

/// The peer's executable (see [`read_exe`]).
pub(crate) fn executable(details: &Details) -> Option<PathBuf> {
    read_exe(details, |path| std::fs::read_link(path))
}

/// The device and inode of the peer's executable: the same file whatever
/// path reached it (and also once it was replaced or deleted on disk).
pub(crate) fn executable_id(details: &Details) -> Option<(u64, u64)> {
    if details.is_current {
        return own_executable_id().ok();
    }
    read_exe(details, file_id)
}

/// The device and inode of this process's executable.
pub(crate) fn own_executable_id() -> io::Result<(u64, u64)> {
    if cfg!(any(target_os = "linux", target_os = "android")) {
        file_id(Path::new("/proc/self/exe"))
    } else {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the executable of a socket's peer can be read on Linux only",
        ))
    }
}

fn file_id(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

/// The account name of `uid` (`getpwuid_r`).
pub(crate) fn user_name(uid: u32) -> Option<String> {
    lookup_entry(|pwd, buf, result| {
        // SAFETY: the buffers are valid for the sizes given.
        unsafe { libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|(name, _)| name)
}

/// The uid of the account `name` (`getpwnam_r`).
pub(crate) fn uid_of(name: &str) -> io::Result<Option<u32>> {
    let name = c_name(name)?;
    Ok(lookup_entry(|pwd, buf, result| {
        // SAFETY: `name` is NUL-terminated; the buffers are valid.
        unsafe { libc::getpwnam_r(name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), result) }
    })
    .map(|(_, uid)| uid))
}

/// The gid of the group `name` (`getgrnam_r`).
pub(crate) fn gid_of(name: &str) -> io::Result<Option<u32>> {
    let name = c_name(name)?;
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero `group` is a valid out-parameter.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `name` is NUL-terminated; `buf` holds `buf.len()` bytes.
        let r = unsafe {
            libc::getgrnam_r(
                name.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        match r {
            0 if result.is_null() => return Ok(None),
            0 => return Ok(Some(group.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            err => return Err(io::Error::from_raw_os_error(err)),
        }
    }
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the name contains a NUL character",
        )
    })
}

/// Runs a `getpw*_r` call (`call(entry, buffer, result)`) with a buffer
/// that grows until it fits; the entry's name and uid.
fn lookup_entry(
    mut call: impl FnMut(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> libc::c_int,
) -> Option<(String, u32)> {
    let mut buf = vec![0 as libc::c_char; 1024];
    loop {
        // SAFETY: an all-zero `passwd` is a valid out-parameter.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        match call(&mut pwd, &mut buf, &mut result) {
            0 if result.is_null() => return None,
            0 => {
                // SAFETY: on success `pw_name` points into `buf`, NUL-terminated.
                let name = unsafe { CStr::from_ptr(pwd.pw_name) };
                return Some((name.to_string_lossy().into_owned(), pwd.pw_uid));
            }
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_pair_reports_this_process() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let cred = PeerInfo::current();
        let caller = capture(&ours, cred, true);
        let me = Caller::current();
        assert_eq!(caller.uid(), me.uid());
        #[cfg(target_os = "linux")]
        {
            let mut groups = caller.groups().expect("SO_PEERGROUPS").to_vec();
            let mut own = me.groups().unwrap().to_vec();
            groups.sort_unstable();
            own.sort_unstable();
            assert_eq!(groups, own);
            assert_eq!(caller.executable(), me.executable());
            assert_eq!(
                executable_id(caller.details()).unwrap(),
                own_executable_id().unwrap()
            );
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(uid_of("root").unwrap(), Some(0));
        assert_eq!(gid_of("root").unwrap(), Some(0));
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(uid_of("no-such-user-pipesvc").unwrap(), None);
        assert!(uid_of("a\0b").is_err());
    }
}

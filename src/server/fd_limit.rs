//! The open-file limit (Unix): every connection holds a file descriptor,
//! and the common soft limit of 1024 is below what a server is often
//! configured for.
//!
//! At bind the server raises the process's soft `RLIMIT_NOFILE` to its
//! hard limit (as the Go runtime does at start), then warns if
//! `max_connections` cannot fit. The limit is process-wide, so a library
//! user gets it too: raising a soft limit never takes anything away, and
//! it is what a server holding many sockets needs. A client that arrives
//! when no descriptor is left is answered ERROR `overloaded` through the
//! listener's reserve descriptor.

use std::io;

/// Descriptors a server needs besides its connections: the listener, its
/// reserve, stdin/stdout/stderr, the runtime's (epoll, event and signal
/// descriptors), a log file, with room to spare.
pub(super) const OTHER_DESCRIPTORS: u64 = 16;

/// Raises the soft open-file limit toward the hard one and warns when
/// `max_connections`, each holding `per_connection` descriptors (two when
/// the access policy pins each client's process with a pidfd), does not
/// fit under it.
pub(super) fn raise_and_check(max_connections: usize, per_connection: u64) {
    let soft = match raise_soft_limit() {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
            match current() {
                Ok(limit) => limit.rlim_cur,
                Err(_) => return,
            }
        }
    };
    let needed = (max_connections as u64)
        .saturating_mul(per_connection)
        .saturating_add(OTHER_DESCRIPTORS);
    if soft < needed {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            "max_connections cannot be reached: each connection holds {per_connection} file \
             descriptor(s) and the open-file limit is {soft}; clients past about {} get ERROR \
             overloaded (raise the hard limit, e.g. LimitNOFILE= or ulimit -Hn, or lower \
             max_connections)",
            soft.saturating_sub(OTHER_DESCRIPTORS) / per_connection.max(1)
        );
    }
}

fn current() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

/// Sets the soft limit to the hard one; returns the soft limit now in force.
fn raise_soft_limit() -> io::Result<u64> {
    let mut limit = current()?;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads `limit`.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

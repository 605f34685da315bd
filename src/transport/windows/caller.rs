//! Windows: who the client of a pipe is, from its token.
//!
//! The server impersonates the client (`ImpersonateNamedPipeClient`), opens
//! the thread's token as itself (`OpenThreadToken` with `OpenAsSelf`), and
//! reverts at once, all on a blocking thread, so that a Tokio worker never
//! runs while impersonating. That works at the identification level
//! pipesvc clients connect with by default: the token can be read, not
//! used. Named pipes give the server the client's security context once it
//! has read from the pipe (for a client with dynamic tracking, the context
//! of the last message read), so the server reads it after the client's
//! HELLO. The token of a client that allowed impersonation is kept for
//! [`run_as`].

use std::io;
use std::os::windows::io::{AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::ptr;
use std::sync::OnceLock;

use tokio::net::windows::named_pipe::NamedPipeServer;
use windows_sys::Win32::Foundation::{ERROR_ACCESS_DENIED, HANDLE};
use windows_sys::Win32::Security::{
    GetSidSubAuthority, GetSidSubAuthorityCount, RevertToSelf, TokenElevation, TokenGroups,
    TokenImpersonationLevel, TokenIntegrityLevel, TokenSessionId, TokenStatistics, TOKEN_ELEVATION,
    TOKEN_GROUPS, TOKEN_IMPERSONATE, TOKEN_INFORMATION_CLASS, TOKEN_MANDATORY_LABEL, TOKEN_QUERY,
    TOKEN_STATISTICS, TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::ImpersonateNamedPipeClient;
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, GetCurrentThread, OpenProcess, OpenProcessToken, OpenThreadToken,
    QueryFullProcessImageNameW, SetThreadToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

use super::security::{account_of, sid_string, token_information};
use crate::error::{Error, Result};
use crate::transport::caller::{Caller, Details, ImpersonationLevel, Integrity};
use crate::transport::PeerInfo;

/// A group that grants access (`SE_GROUP_ENABLED`).
const SE_GROUP_ENABLED: u32 = 0x4;
/// A group that only denies (`SE_GROUP_USE_FOR_DENY_ONLY`): an unelevated
/// administrator's Administrators.
const SE_GROUP_USE_FOR_DENY_ONLY: u32 = 0x10;
/// The integrity label, listed among the groups (`SE_GROUP_INTEGRITY`).
const SE_GROUP_INTEGRITY: u32 = 0x20;

/// Reads the client's token on a blocking thread (see the module's
/// documentation); `peer` is what the listener knew (the pid).
pub(crate) async fn read_caller(pipe: &NamedPipeServer, peer: PeerInfo) -> io::Result<Caller> {
    // The blocking call gets its own duplicate of the handle, so it stays
    // valid even if this future is dropped while the call is running.
    // SAFETY: the raw handle is open, owned by `pipe`, for this borrow.
    let handle =
        unsafe { BorrowedHandle::borrow_raw(pipe.as_raw_handle()) }.try_clone_to_owned()?;
    let details = tokio::task::spawn_blocking(move || capture(handle, peer))
        .await
        .map_err(io::Error::other)??;
    Ok(Caller::from_details(details))
}

/// On a blocking thread: the client's token, read while impersonating it,
/// then everything else as ourselves.
fn capture(pipe: OwnedHandle, peer: PeerInfo) -> io::Result<Details> {
    let (token, can_impersonate) = {
        let _client = Impersonating::pipe_client(&pipe)?;
        open_thread_token()?
    };
    // Only the impersonation was needed: the connection keeps its own
    // handle, so this one is closed at once.
    drop(pipe);
    let mut details = token_details(&token)?;
    details.peer = peer;
    let _ = details.executable.set(peer.pid.and_then(image_path));
    let keep = can_impersonate
        && details
            .impersonation
            .is_some_and(|level| level >= ImpersonationLevel::Impersonation);
    if keep {
        details.token = Some(token);
    }
    Ok(details)
}

/// This process, from its process token.
pub(crate) fn current() -> Details {
    let read = || -> io::Result<Details> {
        let mut raw: HANDLE = ptr::null_mut();
        // SAFETY: the current process's pseudo-handle; `raw` receives a
        // token handle on success.
        if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut raw) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a token handle we now own.
        let token = unsafe { OwnedHandle::from_raw_handle(raw) };
        token_details(&token)
    };
    let mut details = read().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read this process's token");
        Details::default()
    });
    details.peer = PeerInfo::new().with_pid(std::process::id());
    let _ = details.executable.set(std::env::current_exe().ok());
    details.is_current = true;
    details
}

/// The executable of a caller whose token was not read (one built from a
/// [`PeerInfo`]): the image of its pid, best effort.
pub(crate) fn executable(details: &Details) -> Option<PathBuf> {
    details.peer.pid.and_then(image_path)
}

/// Everything [`Caller`] tells, from `token`.
fn token_details(token: &OwnedHandle) -> io::Result<Details> {
    let raw = token.as_raw_handle() as HANDLE;
    let buffer = token_information(raw, windows_sys::Win32::Security::TokenUser)?;
    // SAFETY: an initialised, aligned TOKEN_USER whose SID points into
    // `buffer`, alive to the end of this function.
    let user = unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User };
    let (user_sid, user_attributes) = (user.Sid, user.Attributes);
    let sid = sid_string(user_sid)?;
    let account = OnceLock::new();
    let _ = account.set(account_of(user_sid));
    Ok(Details {
        user_sid: Some(sid),
        user_deny_only: user_attributes & SE_GROUP_USE_FOR_DENY_ONLY != 0,
        account,
        group_sids: groups(raw)?,
        logon_session: logon_session(raw),
        session_id: fixed::<u32>(raw, TokenSessionId),
        integrity: integrity(raw),
        elevated: fixed::<TOKEN_ELEVATION>(raw, TokenElevation).map(|e| e.TokenIsElevated != 0),
        impersonation: fixed::<i32>(raw, TokenImpersonationLevel).and_then(level),
        ..Details::default()
    })
}

/// The SIDs of the token's groups that grant access.
fn groups(token: HANDLE) -> io::Result<Vec<String>> {
    let buffer = token_information(token, TokenGroups)?;
    // SAFETY: an initialised, aligned TOKEN_GROUPS: `GroupCount` entries
    // follow in the same buffer, their SIDs too.
    let groups = unsafe {
        let groups = &*buffer.as_ptr().cast::<TOKEN_GROUPS>();
        std::slice::from_raw_parts(groups.Groups.as_ptr(), groups.GroupCount as usize)
    };
    groups
        .iter()
        .filter(|group| {
            group.Attributes & SE_GROUP_ENABLED != 0
                && group.Attributes & (SE_GROUP_USE_FOR_DENY_ONLY | SE_GROUP_INTEGRITY) == 0
        })
        .map(|group| sid_string(group.Sid))
        .collect()
}

/// The logon session (`AuthenticationId`) as one number.
fn logon_session(token: HANDLE) -> Option<u64> {
    let stats = fixed::<TOKEN_STATISTICS>(token, TokenStatistics)?;
    let id = stats.AuthenticationId;
    Some((u64::from(id.HighPart as u32) << 32) | u64::from(id.LowPart))
}

/// The last sub-authority (RID) of the token's integrity label.
fn integrity(token: HANDLE) -> Option<Integrity> {
    let buffer = token_information(token, TokenIntegrityLevel).ok()?;
    // SAFETY: an initialised, aligned TOKEN_MANDATORY_LABEL whose SID points
    // into `buffer`; the sub-authority read is the last one it has.
    unsafe {
        let sid = (*buffer.as_ptr().cast::<TOKEN_MANDATORY_LABEL>()).Label.Sid;
        let count = *GetSidSubAuthorityCount(sid);
        if count == 0 {
            return None;
        }
        Some(Integrity(*GetSidSubAuthority(sid, u32::from(count) - 1)))
    }
}

/// A fixed-size token information class (`None` if the token has none,
/// such as the impersonation level of a primary token).
fn fixed<T: Copy>(token: HANDLE, class: TOKEN_INFORMATION_CLASS) -> Option<T> {
    let buffer = token_information(token, class).ok()?;
    if buffer.len() * 8 < std::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the buffer holds an initialised T, aligned (u64s).
    Some(unsafe { *buffer.as_ptr().cast::<T>() })
}

fn level(raw: i32) -> Option<ImpersonationLevel> {
    Some(match raw {
        0 => ImpersonationLevel::Anonymous,
        1 => ImpersonationLevel::Identification,
        2 => ImpersonationLevel::Impersonation,
        3 => ImpersonationLevel::Delegation,
        _ => return None,
    })
}

/// The image path of process `pid` (`QueryFullProcessImageNameW`).
fn image_path(pid: u32) -> Option<PathBuf> {
    // SAFETY: plain call; a null handle means failure.
    let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if raw.is_null() {
        return None;
    }
    // SAFETY: a process handle we own from here on.
    let process = unsafe { OwnedHandle::from_raw_handle(raw) };
    let mut buffer = vec![0u16; 32 * 1024];
    let mut len = buffer.len() as u32;
    // SAFETY: `buffer` holds `len` characters; `len` receives the length.
    let ok = unsafe {
        QueryFullProcessImageNameW(
            process.as_raw_handle() as HANDLE,
            0,
            buffer.as_mut_ptr(),
            &mut len,
        )
    };
    if ok == 0 {
        return None;
    }
    use std::os::windows::ffi::OsStringExt;
    Some(std::ffi::OsString::from_wide(&buffer[..len as usize]).into())
}

/// The token of this thread (impersonating), opened as ourselves: with
/// `TOKEN_IMPERSONATE` if we may (and whether we got it), else for
/// queries only.
fn open_thread_token() -> io::Result<(OwnedHandle, bool)> {
    let open = |access| {
        let mut raw: HANDLE = ptr::null_mut();
        // SAFETY: this thread's pseudo-handle; `raw` receives a token.
        if unsafe { OpenThreadToken(GetCurrentThread(), access, 1, &mut raw) } == 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a token handle we now own.
        Ok(unsafe { OwnedHandle::from_raw_handle(raw) })
    };
    match open(TOKEN_QUERY | TOKEN_IMPERSONATE) {
        Ok(token) => Ok((token, true)),
        Err(e) if e.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) => {
            Ok((open(TOKEN_QUERY)?, false))
        }
        Err(e) => Err(e),
    }
}

/// While alive, this thread acts as someone else; dropping it reverts.
/// If Windows ever failed to revert, the thread would go on as the client,
/// so the process is aborted instead: nothing may run as the client after
/// the guard is gone.
struct Impersonating(());

impl Impersonating {
    /// As the client of `pipe`.
    fn pipe_client(pipe: &OwnedHandle) -> io::Result<Impersonating> {
        // SAFETY: an open server handle of a named pipe.
        if unsafe { ImpersonateNamedPipeClient(pipe.as_raw_handle() as HANDLE) } == 0 {
            // Not impersonating: nothing to revert.
            return Err(io::Error::last_os_error());
        }
        Ok(Impersonating(()))
    }

    /// As the user of `token` (an impersonation token).
    fn token(token: &OwnedHandle) -> io::Result<Impersonating> {
        // SAFETY: a null thread is this thread; a token opened with
        // TOKEN_IMPERSONATE.
        if unsafe { SetThreadToken(ptr::null(), token.as_raw_handle() as HANDLE) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Impersonating(()))
    }
}

impl Drop for Impersonating {
    fn drop(&mut self) {
        // SAFETY: no preconditions; ends this thread's impersonation.
        if unsafe { RevertToSelf() } == 0 {
            let e = io::Error::last_os_error();
            tracing::error!(error = %e, "RevertToSelf failed: aborting rather than run on as the client");
            std::process::abort();
        }
    }
}

/// Runs `work` as `caller` on a blocking thread (see
/// `ConnectionContext::run_as_client`).
pub(crate) async fn run_as<T, F>(caller: &Caller, work: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if caller.details().token.is_none() {
        return Err(Error::Impersonation(match caller.impersonation_level() {
            Some(level) if level < ImpersonationLevel::Impersonation => format!(
                "the client connected at the {level} level, which lets the server learn who it \
                 is but not act as it; the client must allow impersonation \
                 (ClientOptions::allow_impersonation)"
            ),
            Some(_) => "the server may not keep the client's token (OpenThreadToken with \
                        TOKEN_IMPERSONATE was denied)"
                .to_owned(),
            None => "the client's token was not read (a connection handed over with \
                     serve_connection, or not a named pipe)"
                .to_owned(),
        }));
    }
    let caller = caller.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let token = caller.details().token.as_ref().expect("checked above");
        let _client = Impersonating::token(token)
            .map_err(|e| Error::Impersonation(format!("SetThreadToken failed: {e}")))?;
        // Windows lowers an impersonation it does not allow (no
        // SeImpersonatePrivilege) to identification: check what is in force.
        let granted = open_thread_token()
            .ok()
            .and_then(|(token, _)| {
                fixed::<i32>(token.as_raw_handle() as HANDLE, TokenImpersonationLevel)
            })
            .and_then(level);
        if granted.is_none_or(|granted| granted < ImpersonationLevel::Impersonation) {
            return Err(Error::Impersonation(format!(
                "Windows granted only the {} level (the service needs SeImpersonatePrivilege, \
                 which services have)",
                granted.map_or("unknown", ImpersonationLevel::name)
            )));
        }
        Ok(std::panic::catch_unwind(AssertUnwindSafe(work)))
        // `_client` reverts here, before the thread runs anything else.
    })
    .await
    .map_err(|e| Error::Impersonation(format!("the blocking task failed: {e}")))?;
    match ran? {
        Ok(value) => Ok(value),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_reads_its_own_token() {
        let me = Caller::current();
        assert_eq!(
            me.user_sid(),
            super::super::security::process_user(None).ok().as_deref()
        );
        assert!(me.integrity().is_some(), "{me:?}");
        assert!(me.session_id().is_some(), "{me:?}");
        assert!(me.logon_session().is_some(), "{me:?}");
        assert!(me.executable().is_some(), "{me:?}");
        // A primary token has no impersonation level.
        assert_eq!(me.impersonation_level(), None);
    }
}

//! Windows: the user the pipe server runs as.
//!
//! First choice: the server's process (`GetNamedPipeServerProcessId`), its
//! token (`OpenProcess` with `PROCESS_QUERY_LIMITED_INFORMATION`,
//! `OpenProcessToken`) and the token's user (`GetTokenInformation(TokenUser)`).
//! A process of another user, such as a service running as LocalSystem,
//! often cannot be opened by an ordinary user: then the pipe's owner, read
//! from the client's own handle (`GetSecurityInfo`, which needs only the
//! `READ_CONTROL` every open grants). Windows sets that owner from the
//! creating token and lets nobody name a SID they do not hold, so a squatter
//! cannot pass for the user or for SYSTEM. An elevated administrator's
//! objects are owned by the Administrators group, so that owner is admitted
//! too by the default rule (an administrator is as trusted as SYSTEM).

use std::io;
use std::os::windows::io::AsRawHandle;
use std::ptr;

use windows_sys::Win32::Foundation::{LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{GetSecurityInfo, SE_KERNEL_OBJECT};
use windows_sys::Win32::Security::{OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID};

use super::{Refusal, ServerIdentity};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{
    account_name, canonical_sid, process_user, sid_of_account, sid_string, ClientStream, PeerInfo,
};

/// LocalSystem, the account of most services.
const LOCAL_SYSTEM: &str = "S-1-5-18";
/// BUILTIN\Administrators, the owner of an elevated administrator's objects.
const ADMINISTRATORS: &str = "S-1-5-32-544";

pub(super) fn check(
    _endpoint: &Endpoint,
    wanted: &ServerIdentity,
    pipe: &ClientStream,
    server: &PeerInfo,
) -> Result<(), Refusal> {
    let (trusted, expected) = match wanted {
        ServerIdentity::Any => return Ok(()),
        ServerIdentity::SameUserOrAdmin => {
            let me = process_user(None).map_err(|e| Refusal::Mismatch {
                expected: "a server running as you or SYSTEM".into(),
                found: format!("no answer: this process's own user cannot be read ({e})"),
            })?;
            let expected = format!(
                "a server running as {} (you) or SYSTEM ({LOCAL_SYSTEM})",
                described(&me)
            );
            (vec![me, LOCAL_SYSTEM.to_owned()], expected)
        }
        ServerIdentity::Sid(sid) => {
            let sid = canonical_sid(sid).map_err(Refusal::Config)?;
            let expected = format!("a server running as {}", described(&sid));
            (vec![sid], expected)
        }
        ServerIdentity::Uid(uid) => {
            return Err(Refusal::Config(format!(
                "server identity uid {uid} is a Unix user id; on Windows expect a SID"
            )))
        }
    };
    let found = match server_user(pipe, server.pid) {
        Ok(ServerUser::Process(sid)) if trusted.contains(&sid) => return Ok(()),
        Ok(ServerUser::PipeOwner(sid))
            if trusted.contains(&sid)
                || (*wanted == ServerIdentity::SameUserOrAdmin && sid == ADMINISTRATORS) =>
        {
            return Ok(())
        }
        Ok(ServerUser::Process(sid)) => format!("a server running as {}", described(&sid)),
        Ok(ServerUser::PipeOwner(sid)) => format!("a pipe owned by {}", described(&sid)),
        Err(why) => format!("a server whose user cannot be read ({why})"),
    };
    let pid = server
        .pid
        .map_or_else(String::new, |pid| format!(" (pid {pid})"));
    Err(Refusal::Mismatch {
        expected,
        found: format!("{found}{pid}"),
    })
}

/// Who runs the server, and how we know.
enum ServerUser {
    /// The user of its process token.
    Process(String),
    /// The owner of the pipe (the process could not be opened).
    PipeOwner(String),
}

fn server_user(pipe: &ClientStream, pid: Option<u32>) -> Result<ServerUser, String> {
    let process = match pid {
        Some(pid) => process_user(Some(pid)),
        None => Err(io::Error::other("GetNamedPipeServerProcessId failed")),
    };
    let process_error = match process {
        Ok(sid) => return Ok(ServerUser::Process(sid)),
        Err(e) => e,
    };
    tracing::debug!(error = %process_error, "cannot read the server process's user; using the pipe's owner");
    pipe_owner(pipe)
        .map(ServerUser::PipeOwner)
        .map_err(|e| format!("its process: {process_error}; the pipe's owner: {e}"))
}

/// The owner of the pipe `pipe` is connected to.
fn pipe_owner(pipe: &ClientStream) -> io::Result<String> {
    let mut owner: PSID = ptr::null_mut();
    let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
    // SAFETY: the handle is open (owned by `pipe`); on success `owner`
    // points into `descriptor`, a LocalAlloc'd block we free below.
    let status = unsafe {
        GetSecurityInfo(
            pipe.as_raw_handle() as HANDLE,
            SE_KERNEL_OBJECT,
            OWNER_SECURITY_INFORMATION,
            &mut owner,
            ptr::null_mut(),
            ptr::null_mut(),
            ptr::null_mut(),
            &mut descriptor,
        )
    };
    if status != 0 {
        return Err(io::Error::from_raw_os_error(status as i32));
    }
    let text = if owner.is_null() {
        Err(io::Error::other("the pipe has no owner"))
    } else {
        sid_string(owner)
    };
    // SAFETY: allocated by GetSecurityInfo, released once, here.
    unsafe { LocalFree(descriptor) };
    text
}

/// `S-1-...` followed by its account name (`DOMAIN\user`) when Windows
/// knows it.
fn described(sid: &str) -> String {
    match account_name(sid) {
        Some(name) => format!("{sid} ({name})"),
        None => sid.to_owned(),
    }
}

/// A SID string as is, else the account `name` (`LookupAccountNameW`).
pub(super) fn identity_of_user(name: &str) -> Result<ServerIdentity> {
    let sid = if name.len() > 4 && name[..4].eq_ignore_ascii_case("S-1-") {
        canonical_sid(name)
    } else {
        sid_of_account(name)
    };
    sid.map(ServerIdentity::Sid)
        .map_err(|message| Error::config("server_identity", message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::windows::named_pipe::{ClientOptions, ServerOptions};

    // The fallback when the server's process cannot be opened: the pipe's
    // owner, read from the client's handle, is the user who created it.
    #[tokio::test]
    async fn the_pipe_owner_is_read_from_the_client_handle() {
        let name = format!(r"\\.\pipe\pipesvc-owner-{}", std::process::id());
        let server = ServerOptions::new()
            .first_pipe_instance(true)
            .create(&name)
            .unwrap();
        let client = ClientOptions::new().open(&name).unwrap();
        server.connect().await.unwrap();
        let me = process_user(None).unwrap();
        assert!(matches!(
            server_user(&client, Some(std::process::id())),
            Ok(ServerUser::Process(sid)) if sid == me
        ));
        let owner = match pipe_owner(&client) {
            Ok(owner) => owner,
            Err(e) if under_wine() => {
                // The format of tests/common's skip().
                eprintln!(
                    "pipesvc-skip: the_pipe_owner_is_read_from_the_client_handle: \
                     Wine gives a pipe no owner ({e})"
                );
                return;
            }
            Err(e) => panic!("reading the pipe's owner: {e}"),
        };
        assert!(owner == me || owner == ADMINISTRATORS, "{owner} vs {me}");
        match server_user(&client, None) {
            Ok(ServerUser::PipeOwner(sid)) => assert_eq!(sid, owner),
            Ok(ServerUser::Process(sid)) => panic!("no pid, yet a process user {sid}"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Wine's ntdll.dll exports `wine_get_version`; Windows' does not.
    fn under_wine() -> bool {
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
        // SAFETY: NUL-terminated names; ntdll.dll is mapped in every
        // process for its whole life, so the handle needs no release.
        unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
        }
    }

    #[test]
    fn sid_strings_are_validated_and_written_in_canonical_form() {
        assert_eq!(canonical_sid("s-1-5-18").unwrap(), LOCAL_SYSTEM);
        assert!(canonical_sid("S-1-x").unwrap_err().contains("S-1-x"));
    }
}

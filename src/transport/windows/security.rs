//! The security descriptor every pipe instance is created with.
//!
//! By default only the user running the server and SYSTEM get access:
//! `D:P(A;;GA;;;SY)(A;;GA;;;<user SID>)`, a protected DACL with nothing for
//! Everyone or anonymous logons. A custom SDDL string replaces it. The
//! descriptor is built once, at bind, and handed to every `CreateNamedPipeW`.

use std::ffi::{c_void, OsStr, OsString};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;

use windows_sys::core::{BOOL, PWSTR};
use windows_sys::Win32::Foundation::{LocalFree, ERROR_INSUFFICIENT_BUFFER, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW,
    ConvertStringSidToSidW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetSecurityDescriptorDacl, GetTokenInformation, LookupAccountNameW, LookupAccountSidW,
    TokenUser, ACL, PSECURITY_DESCRIPTOR, PSID, SECURITY_ATTRIBUTES, SID_NAME_USE,
    TOKEN_INFORMATION_CLASS, TOKEN_QUERY, TOKEN_USER,
};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
};

/// Why a security descriptor could not be built.
#[derive(Debug)]
pub(super) enum SecurityError {
    /// A custom SDDL string was refused; the message says why.
    InvalidSddl(String),
    /// The default descriptor could not be built (reading the process
    /// token failed).
    Default(io::Error),
}

/// The default SDDL: full access (GA) for SYSTEM and the process token's
/// user, a protected DACL (P: nothing inherited), nothing else.
pub(super) fn default_sddl() -> io::Result<String> {
    let user = current_user_sid()?;
    Ok(format!("D:P(A;;GA;;;SY)(A;;GA;;;{user})"))
}

/// What a client of the pipe gets: `FILE_GENERIC_READ | FILE_GENERIC_WRITE`
/// without `FILE_CREATE_PIPE_INSTANCE` (0x4, which for a file is
/// `FILE_APPEND_DATA`, part of `FILE_GENERIC_WRITE`): read, write and set
/// the read mode (`FILE_WRITE_ATTRIBUTES`), but not create instances of the
/// pipe, which would let a client pose as the server to other clients.
const CLIENT_ACCESS: &str = "0x12019b";

/// The descriptor of the interactive-users preset: network logons and
/// anonymous denied first, full access for SYSTEM (and the server's own
/// user when that is not SYSTEM), [`CLIENT_ACCESS`] for INTERACTIVE (every
/// console and remote desktop logon).
pub(crate) fn interactive_users_descriptor() -> io::Result<String> {
    let user = current_user_sid()?;
    let own = if user == "S-1-5-18" {
        String::new()
    } else {
        format!("(A;;GA;;;{user})")
    };
    Ok(format!(
        "D:P(D;;GA;;;NU)(D;;GA;;;AN)(A;;GA;;;SY){own}(A;;{CLIENT_ACCESS};;;IU)"
    ))
}

/// The SECURITY_ATTRIBUTES passed to every pipe instance, and the
/// descriptor they point at.
pub(super) struct PipeSecurity {
    sddl: String,
    // Declared before `descriptor`: it points into it.
    attributes: SECURITY_ATTRIBUTES,
    descriptor: LocalDescriptor,
}

// SAFETY: the raw pointers (`attributes.lpSecurityDescriptor`, and
// `descriptor.0`, the same allocation) point to a self-relative security
// descriptor owned by this value alone: LocalAlloc'd memory that is valid on
// any thread and freed exactly once, in `LocalDescriptor::drop`. Nothing
// writes to it after construction (CreateNamedPipeW only reads it), so
// moving the value to another thread or reading it from several is sound.
unsafe impl Send for PipeSecurity {}
// SAFETY: see `Send`: shared access is read-only.
unsafe impl Sync for PipeSecurity {}

impl std::fmt::Debug for PipeSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeSecurity")
            .field("sddl", &self.sddl)
            .finish_non_exhaustive()
    }
}

impl PipeSecurity {
    /// The custom descriptor `sddl`, or the default one for `None`.
    pub(super) fn new(sddl: Option<&str>) -> Result<PipeSecurity, SecurityError> {
        let sddl = match sddl {
            Some(custom) => custom.to_owned(),
            None => default_sddl().map_err(SecurityError::Default)?,
        };
        let descriptor = LocalDescriptor::from_sddl(&sddl).map_err(|e| {
            SecurityError::InvalidSddl(format!("invalid security descriptor (SDDL) {sddl:?}: {e}"))
        })?;
        if !descriptor.has_dacl() {
            // No DACL at all means no access check: everyone may connect.
            return Err(SecurityError::InvalidSddl(format!(
                "security descriptor (SDDL) {sddl:?} has no DACL (`D:...`), which would let \
                 everyone connect; write `D:NO_ACCESS_CONTROL` if that is really meant"
            )));
        }
        let attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: descriptor.0,
            bInheritHandle: 0,
        };
        Ok(PipeSecurity {
            sddl,
            attributes,
            descriptor,
        })
    }

    /// The SDDL the descriptor was built from.
    pub(super) fn sddl(&self) -> &str {
        &self.sddl
    }

    /// The pointer for `ServerOptions::create_with_security_attributes_raw`.
    /// It stays valid as long as `self` does; the callee only reads it.
    pub(super) fn as_raw(&self) -> *mut c_void {
        debug_assert_eq!(self.attributes.lpSecurityDescriptor, self.descriptor.0);
        ptr::from_ref(&self.attributes).cast_mut().cast()
    }
}

/// A security descriptor allocated by Windows; freed with `LocalFree`.
struct LocalDescriptor(PSECURITY_DESCRIPTOR);

impl LocalDescriptor {
    fn from_sddl(sddl: &str) -> io::Result<LocalDescriptor> {
        if sddl.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "it contains a NUL character",
            ));
        }
        let wide: Vec<u16> = OsStr::new(sddl).encode_wide().chain([0]).collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = ptr::null_mut();
        // SAFETY: `wide` is NUL-terminated and outlives the call; on success
        // `descriptor` receives a LocalAlloc'd descriptor that we own.
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                wide.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        if descriptor.is_null() {
            return Err(io::Error::other("Windows returned no descriptor"));
        }
        Ok(LocalDescriptor(descriptor))
    }

    /// Whether the descriptor has a DACL (possibly a NULL one, from
    /// `D:NO_ACCESS_CONTROL`, which grants everything on purpose).
    fn has_dacl(&self) -> bool {
        let (mut present, mut defaulted): (BOOL, BOOL) = (0, 0);
        let mut dacl: *mut ACL = ptr::null_mut();
        // SAFETY: `self.0` is a valid descriptor; the out-pointers are live.
        let ok =
            unsafe { GetSecurityDescriptorDacl(self.0, &mut present, &mut dacl, &mut defaulted) };
        ok != 0 && present != 0
    }
}

impl Drop for LocalDescriptor {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW,
        // which documents LocalFree as its release; freed only here.
        unsafe { LocalFree(self.0) };
    }
}

/// The user SID of this process's token, as a string (`S-1-5-21-...`).
fn current_user_sid() -> io::Result<String> {
    process_user(None)
}

/// The user SID of process `pid`'s token (`None`: this process).
pub(crate) fn process_user(pid: Option<u32>) -> io::Result<String> {
    let process = match pid {
        // SAFETY: plain call; a null handle means failure.
        Some(pid) => {
            let raw = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
            if raw.is_null() {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a process handle we own from here on.
            Some(unsafe { OwnedHandle::from_raw_handle(raw) })
        }
        None => None,
    };
    let process_handle = match &process {
        Some(handle) => handle.as_raw_handle() as HANDLE,
        // SAFETY: a pseudo-handle that needs no release.
        None => unsafe { GetCurrentProcess() },
    };
    let mut raw: HANDLE = ptr::null_mut();
    // SAFETY: `process_handle` is open for this call; `raw` receives a
    // token handle on success.
    if unsafe { OpenProcessToken(process_handle, TOKEN_QUERY, &mut raw) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a token handle we now own; OwnedHandle closes it.
    let token = unsafe { OwnedHandle::from_raw_handle(raw) };
    token_user(token.as_raw_handle() as HANDLE)
}

/// The user SID of `token`, as a string.
pub(crate) fn token_user(token: HANDLE) -> io::Result<String> {
    let buffer = token_information(token, TokenUser)?;
    // SAFETY: the buffer starts with an initialised, aligned TOKEN_USER
    // whose SID points into the same buffer, alive below.
    let sid = unsafe { (*buffer.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    sid_string(sid)
}

/// `GetTokenInformation(token, class)`: the structure in a buffer of
/// `u64`s, so that it is aligned (pointers in it point into the buffer).
pub(crate) fn token_information(
    token: HANDLE,
    class: TOKEN_INFORMATION_CLASS,
) -> io::Result<Vec<u64>> {
    let mut len = 0u32;
    // SAFETY: a size query with no buffer; `len` receives the size needed.
    let ok = unsafe { GetTokenInformation(token, class, ptr::null_mut(), 0, &mut len) };
    let err = io::Error::last_os_error();
    if ok != 0 || err.raw_os_error() != Some(ERROR_INSUFFICIENT_BUFFER as i32) || len == 0 {
        return Err(if ok != 0 {
            io::Error::other(format!("GetTokenInformation({class}) reported no size"))
        } else {
            err
        });
    }
    let mut buffer = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buffer` holds at least `len` writable bytes.
    let ok =
        unsafe { GetTokenInformation(token, class, buffer.as_mut_ptr().cast(), len, &mut len) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(buffer)
}

/// `S-1-...` for a valid SID.
pub(crate) fn sid_string(sid: PSID) -> io::Result<String> {
    let mut string: PWSTR = ptr::null_mut();
    // SAFETY: `sid` is a valid SID (callers' contract); `string` receives a
    // LocalAlloc'd, NUL-terminated string that we free below.
    if unsafe { ConvertSidToStringSidW(sid, &mut string) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `string` is NUL-terminated (see above).
    let text = unsafe {
        let len = (0..).take_while(|&i| *string.add(i) != 0).count();
        OsString::from_wide(std::slice::from_raw_parts(string, len))
    };
    // SAFETY: allocated by ConvertSidToStringSidW, released once, here.
    unsafe { LocalFree(string.cast()) };
    text.into_string()
        .map_err(|_| io::Error::other("the SID is not valid Unicode"))
}

pub(crate) fn wide(text: &str) -> Vec<u16> {
    OsStr::new(text).encode_wide().chain([0]).collect()
}

/// A SID string as Windows writes it (validated, upper case).
pub(crate) fn canonical_sid(text: &str) -> Result<String, String> {
    let invalid = |e: &dyn std::fmt::Display| format!("invalid SID {text:?}: {e}");
    if text.contains('\0') {
        return Err(invalid(&"it contains a NUL character"));
    }
    let mut sid: PSID = ptr::null_mut();
    // SAFETY: the string is NUL-terminated and outlives the call; on
    // success `sid` is LocalAlloc'd, freed below.
    if unsafe { ConvertStringSidToSidW(wide(text).as_ptr(), &mut sid) } == 0 {
        return Err(invalid(&io::Error::last_os_error()));
    }
    let canonical = sid_string(sid).map_err(|e| invalid(&e));
    // SAFETY: allocated by ConvertStringSidToSidW, released once, here.
    unsafe { LocalFree(sid) };
    canonical
}

/// `LookupAccountSidW`: the account (`DOMAIN\\user`) a SID string names.
pub(crate) fn account_name(sid_text: &str) -> Option<String> {
    let mut sid: PSID = ptr::null_mut();
    // SAFETY: the string is NUL-terminated and outlives the call; on
    // success `sid` is LocalAlloc'd, freed below.
    if unsafe { ConvertStringSidToSidW(wide(sid_text).as_ptr(), &mut sid) } == 0 {
        return None;
    }
    let name = account_of(sid);
    // SAFETY: allocated by ConvertStringSidToSidW, released once, here.
    unsafe { LocalFree(sid) };
    name
}

/// `LookupAccountSidW`: the account (`DOMAIN\\user`) a valid SID names.
pub(crate) fn account_of(sid: PSID) -> Option<String> {
    let (mut name_len, mut domain_len) = (256u32, 256u32);
    let mut name = vec![0u16; name_len as usize];
    let mut domain = vec![0u16; domain_len as usize];
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `sid` is valid; the buffers hold the lengths passed (in
    // characters), which the call updates to the lengths written.
    let ok = unsafe {
        LookupAccountSidW(
            ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return None;
    }
    let text = |buffer: &[u16], len: u32| {
        String::from_utf16_lossy(&buffer[..(len as usize).min(buffer.len())])
    };
    let (name, domain) = (text(&name, name_len), text(&domain, domain_len));
    Some(if domain.is_empty() {
        name
    } else {
        format!("{domain}\\{name}")
    })
}

/// The SID of the account `name` (`LookupAccountNameW`), as a string.
pub(crate) fn sid_of_account(name: &str) -> Result<String, String> {
    let unknown = |e: &dyn std::fmt::Display| format!("unknown account {name:?}: {e}");
    if name.contains('\0') {
        return Err(unknown(&"it contains a NUL character"));
    }
    let account = wide(name);
    let (mut sid_len, mut domain_len) = (0u32, 0u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: a size query: null buffers with zero sizes.
    unsafe {
        LookupAccountNameW(
            ptr::null(),
            account.as_ptr(),
            ptr::null_mut(),
            &mut sid_len,
            ptr::null_mut(),
            &mut domain_len,
            &mut kind,
        )
    };
    if sid_len == 0 {
        return Err(unknown(&io::Error::last_os_error()));
    }
    // u64s so that the SID is aligned.
    let mut sid = vec![0u64; (sid_len as usize).div_ceil(8)];
    let mut domain = vec![0u16; domain_len.max(1) as usize];
    // SAFETY: the buffers hold the sizes passed.
    let ok = unsafe {
        LookupAccountNameW(
            ptr::null(),
            account.as_ptr(),
            sid.as_mut_ptr().cast(),
            &mut sid_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    if ok == 0 {
        return Err(unknown(&io::Error::last_os_error()));
    }
    sid_string(sid.as_mut_ptr().cast()).map_err(|e| unknown(&e))
}

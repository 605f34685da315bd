//! Windows tokens for tests that act as someone else.

use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;

use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::Security::{CreateRestrictedToken, PSID, SID_AND_ATTRIBUTES};

/// A copy of `token` in which `sid` is deny-only: the same user, without
/// what `sid` grants (the user's own SID: "another user"; Administrators:
/// not elevated). `token` needs `TOKEN_DUPLICATE`.
pub fn deny_only(token: &OwnedHandle, sid: PSID) -> io::Result<OwnedHandle> {
    let disable = SID_AND_ATTRIBUTES {
        Sid: sid,
        Attributes: 0,
    };
    let mut restricted: HANDLE = ptr::null_mut();
    // SAFETY: a live token handle; `disable` and the SID it points to live
    // across the call; `restricted` receives a new token.
    let ok = unsafe {
        CreateRestrictedToken(
            token.as_raw_handle() as HANDLE,
            0,
            1,
            &disable,
            0,
            ptr::null(),
            0,
            ptr::null(),
            &mut restricted,
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a token handle we now own.
    Ok(unsafe { OwnedHandle::from_raw_handle(restricted) })
}

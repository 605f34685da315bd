//! Whether this process runs under Wine (shared with benches/compare/).

/// The Wine version (for example `8.0`) when this process runs under Wine,
/// else `None`. Wine's ntdll.dll exports `wine_get_version`; Windows' does
/// not. Always `None` off Windows.
///
/// For tests of a rule Wine does not implement: call `skip` and return.
pub fn wine_version() -> Option<String> {
    #[cfg(windows)]
    {
        use std::ffi::{c_char, CStr};
        use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};

        // SAFETY: both names are NUL-terminated; ntdll.dll is mapped in
        // every process for its whole life, so the handle needs no release.
        let symbol = unsafe {
            let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
            if ntdll.is_null() {
                return None;
            }
            GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast())?
        };
        // SAFETY: Wine declares it `const char * CDECL wine_get_version(void)`,
        // returning a static NUL-terminated string.
        let version = unsafe {
            let get: unsafe extern "C" fn() -> *const c_char = std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                unsafe extern "C" fn() -> *const c_char,
            >(symbol);
            let version = get();
            if version.is_null() {
                return Some(String::new());
            }
            CStr::from_ptr(version).to_string_lossy().into_owned()
        };
        Some(version)
    }
    #[cfg(not(windows))]
    {
        None
    }
}

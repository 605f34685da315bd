//! Endpoint names: where a server listens and a client connects.
//!
//! One name works on every platform. A *bare* name such as `my_pipe` becomes
//! `\\.\pipe\my_pipe` on Windows and a socket file in a private per-user
//! directory on Unix; full platform addresses are taken as they are.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The prefix of every local Windows pipe name.
pub const WINDOWS_PIPE_PREFIX: &str = r"\\.\pipe\";

/// Windows limits a pipe name (prefix included) to 256 characters.
#[cfg_attr(not(windows), allow(dead_code))]
const WINDOWS_MAX_NAME_LEN: usize = 256;

/// `sun_path` holds 108 bytes on Linux, one of which is the terminating NUL.
#[cfg_attr(not(unix), allow(dead_code))]
const UNIX_MAX_PATH_LEN: usize = 107;

/// A parsed, validated endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    address: PathBuf,
    private_dir: Option<PathBuf>,
}

impl Endpoint {
    /// Parses a name for the current platform.
    ///
    /// Windows: a bare name `N` means `\\.\pipe\N`; a name starting with
    /// `\\.\pipe\` is taken as is. Unix: a bare name `N` means `N.sock` in
    /// `$XDG_RUNTIME_DIR/pipesvc/` (else `/tmp/pipesvc-<uid>/`), a directory
    /// the server creates with mode 0700, and a bare name that already ends
    /// in `.sock` is the file's name as given (`svc.sock` and `svc` are the
    /// same endpoint, not `svc.sock.sock`); a name containing `/` is a socket
    /// path taken as is.
    pub fn new(name: &str) -> Result<Endpoint> {
        #[cfg(windows)]
        let endpoint = windows_endpoint(name);
        #[cfg(unix)]
        let endpoint = unix_endpoint(name, &default_private_dir());
        endpoint.map_err(|reason| Error::InvalidEndpoint {
            name: name.to_owned(),
            reason,
        })
    }

    /// A bare name in a private directory of your choosing (Unix): the
    /// socket is `dir/NAME.sock`, and the server creates `dir` with mode
    /// 0700, or refuses to start if it exists with looser permissions or
    /// another owner. For services that keep their socket under, say,
    /// `/run/myservice`.
    #[cfg(unix)]
    pub fn in_private_dir(name: &str, dir: impl AsRef<Path>) -> Result<Endpoint> {
        let dir = dir.as_ref();
        let endpoint = if dir.is_absolute() {
            unix_endpoint(name, dir)
        } else {
            Err(format!(
                "the private directory {} is not absolute",
                dir.display()
            ))
        };
        endpoint.map_err(|reason| Error::InvalidEndpoint {
            name: name.to_owned(),
            reason,
        })
    }

    /// The platform address: the full pipe name on Windows, the socket
    /// path on Unix.
    pub fn address(&self) -> &Path {
        &self.address
    }

    /// The private directory the socket lives in, when the endpoint was
    /// given as a bare name on Unix (the server creates it).
    pub fn private_dir(&self) -> Option<&Path> {
        self.private_dir.as_deref()
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(name: &str) -> Result<Endpoint> {
        Endpoint::new(name)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address.display())
    }
}

fn check_bare_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.contains('\\') {
        return Err(format!(
            r"a bare name cannot contain a backslash (a full pipe name starts with {WINDOWS_PIPE_PREFIX})"
        ));
    }
    if name.contains('\0') {
        return Err("the name contains a NUL character".into());
    }
    Ok(())
}

/// Windows rules, compiled everywhere so that they are tested everywhere.
#[cfg_attr(not(windows), allow(dead_code))]
fn windows_endpoint(name: &str) -> std::result::Result<Endpoint, String> {
    let full = match strip_prefix_ignore_case(name, WINDOWS_PIPE_PREFIX) {
        Some(rest) => {
            check_bare_name(rest).map_err(|e| format!("after {WINDOWS_PIPE_PREFIX}: {e}"))?;
            name.to_owned()
        }
        None => {
            check_bare_name(name)?;
            format!("{WINDOWS_PIPE_PREFIX}{name}")
        }
    };
    let len = full.encode_utf16().count();
    if len > WINDOWS_MAX_NAME_LEN {
        return Err(format!(
            "the pipe name is {len} characters long; Windows allows {WINDOWS_MAX_NAME_LEN}"
        ));
    }
    Ok(Endpoint {
        address: PathBuf::from(full),
        private_dir: None,
    })
}

#[cfg_attr(not(windows), allow(dead_code))]
fn strip_prefix_ignore_case<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let head = name.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &name[prefix.len()..])
}

/// Unix rules, compiled everywhere so that they are tested everywhere.
#[cfg_attr(not(unix), allow(dead_code))]
fn unix_endpoint(name: &str, private_dir: &Path) -> std::result::Result<Endpoint, String> {
    let (address, private_dir) = if name.contains('/') {
        if name.contains('\0') {
            return Err("the path contains a NUL character".into());
        }
        (PathBuf::from(name), None)
    } else {
        check_bare_name(name)?;
        if name == "." || name == ".." {
            return Err("`.` and `..` are not names".into());
        }
        (
            private_dir.join(socket_file_name(name)),
            Some(private_dir.to_owned()),
        )
    };
    let len = address.as_os_str().len();
    if len > UNIX_MAX_PATH_LEN {
        return Err(format!(
            "the socket path {} is {len} bytes long; Unix sockets allow {UNIX_MAX_PATH_LEN}",
            address.display()
        ));
    }
    Ok(Endpoint {
        address,
        private_dir,
    })
}

/// The socket file of a bare name: `NAME.sock`, unless the name already
/// says `.sock` (users write `--name svc.sock` expecting the file
/// `svc.sock`). A name that is only `.sock` keeps its suffix added.
#[cfg_attr(not(unix), allow(dead_code))]
fn socket_file_name(name: &str) -> String {
    match name.strip_suffix(".sock") {
        Some(stem) if !stem.is_empty() => name.to_owned(),
        _ => format!("{name}.sock"),
    }
}

/// `$XDG_RUNTIME_DIR/pipesvc`, else `/tmp/pipesvc-<uid>`.
#[cfg(unix)]
fn default_private_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => Path::new(&dir).join("pipesvc"),
        // SAFETY: getuid has no preconditions and cannot fail.
        _ => PathBuf::from(format!("/tmp/pipesvc-{}", unsafe { libc::getuid() })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_bare_name_gets_the_pipe_prefix() {
        let ep = windows_endpoint("my_pipe").unwrap();
        assert_eq!(ep.address(), Path::new(r"\\.\pipe\my_pipe"));
    }

    #[test]
    fn windows_full_name_is_taken_as_is_in_any_case() {
        let ep = windows_endpoint(r"\\.\PIPE\svc").unwrap();
        assert_eq!(ep.address(), Path::new(r"\\.\PIPE\svc"));
    }

    #[test]
    fn windows_rejects_bad_names() {
        for (name, expect) in [
            ("", "empty"),
            (r"a\b", "backslash"),
            (r"\\server\pipe\x", "backslash"),
            (r"\\.\pipe\", "empty"),
            (r"\\.\pipe\a\b", "backslash"),
        ] {
            let err = windows_endpoint(name).unwrap_err();
            assert!(err.contains(expect), "{name:?}: {err}");
        }
        let long = "x".repeat(WINDOWS_MAX_NAME_LEN);
        assert!(windows_endpoint(&long).unwrap_err().contains("256"));
        let fits = "x".repeat(WINDOWS_MAX_NAME_LEN - WINDOWS_PIPE_PREFIX.len());
        assert!(windows_endpoint(&fits).is_ok());
    }

    #[test]
    fn unix_bare_name_lives_in_the_private_dir() {
        let ep = unix_endpoint("svc", Path::new("/run/user/1000/pipesvc")).unwrap();
        assert_eq!(ep.address(), Path::new("/run/user/1000/pipesvc/svc.sock"));
        assert_eq!(ep.private_dir(), Some(Path::new("/run/user/1000/pipesvc")));
    }

    #[test]
    fn a_bare_name_ending_in_sock_is_not_given_a_second_suffix() {
        let dir = Path::new("/run/user/1000/pipesvc");
        let with = unix_endpoint("svc.sock", dir).unwrap();
        assert_eq!(with.address(), Path::new("/run/user/1000/pipesvc/svc.sock"));
        assert_eq!(with, unix_endpoint("svc", dir).unwrap());
        assert_eq!(with.private_dir(), Some(dir));
        // Only the exact suffix counts; `.sock` alone is a name like any other.
        let other = unix_endpoint("svc.socket", dir).unwrap();
        assert_eq!(other.address(), dir.join("svc.socket.sock"));
        let bare = unix_endpoint(".sock", dir).unwrap();
        assert_eq!(bare.address(), dir.join(".sock.sock"));
        // A pipe name keeps its `.sock`: Windows adds no suffix at all.
        let pipe = windows_endpoint("svc.sock").unwrap();
        assert_eq!(pipe.address(), Path::new(r"\\.\pipe\svc.sock"));
    }

    #[test]
    fn unix_path_is_taken_as_is() {
        let ep = unix_endpoint("/tmp/x/svc.sock", Path::new("/unused")).unwrap();
        assert_eq!(ep.address(), Path::new("/tmp/x/svc.sock"));
        assert_eq!(ep.private_dir(), None);
        assert!(unix_endpoint("./rel.sock", Path::new("/unused")).is_ok());
    }

    #[test]
    fn unix_rejects_bad_names() {
        let dir = Path::new("/tmp/pipesvc-0");
        assert!(unix_endpoint("", dir).unwrap_err().contains("empty"));
        assert!(unix_endpoint(r"a\b", dir)
            .unwrap_err()
            .contains("backslash"));
        assert!(unix_endpoint("..", dir).is_err());
        let long = format!("/{}", "x".repeat(UNIX_MAX_PATH_LEN));
        assert!(unix_endpoint(&long, dir).unwrap_err().contains("107"));
    }

    #[test]
    fn errors_name_the_endpoint() {
        let err = Endpoint::new("").unwrap_err().to_string();
        assert!(err.contains("invalid endpoint name \"\""), "{err}");
    }
}

//! Unix: the server's uid (`SO_PEERCRED`) and the directories on the way to
//! its socket.
//!
//! The uid is the real proof: the kernel records who called `listen`, and
//! nobody can listen as another user. The directories matter because
//! whoever controls one on the path decides which socket the next client
//! reaches (and the server itself refuses to start in a private directory
//! that is not its own). So, like the server, the client refuses a private
//! directory that is a symbolic link, belongs to another user or is
//! writable by others; and on the whole path it refuses a directory of
//! another user, or one others may write to without the sticky bit. In a
//! sticky shared directory such as `/tmp` others cannot remove our entries,
//! so there the entry itself (our private directory, or an explicit socket)
//! must belong to a trusted user.

use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path};

use super::{Refusal, ServerIdentity};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{ClientStream, PeerInfo};

/// Write permission for the group or others.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// Only an entry's owner may remove or rename it.
const STICKY: u32 = 0o1000;

/// The users who may own the way to the server, and the one it must run as.
struct Trust {
    me: u32,
    /// The uid of `ServerIdentity::Uid`, also trusted for directories.
    wanted: Option<u32>,
}

impl Trust {
    fn server_ok(&self, uid: u32) -> bool {
        match self.wanted {
            Some(wanted) => uid == wanted,
            None => uid == self.me || uid == 0,
        }
    }

    fn owner_ok(&self, uid: u32) -> bool {
        uid == self.me || uid == 0 || Some(uid) == self.wanted
    }

    /// Who the server must run as, in words.
    fn expected_server(&self) -> String {
        match self.wanted {
            Some(uid) => format!("a server running as uid {uid}"),
            None => format!("a server running as {}", self.trusted_users()),
        }
    }

    fn trusted_users(&self) -> String {
        let me = self.me;
        let base = if me == 0 {
            "root (uid 0, you)".to_owned()
        } else {
            format!("uid {me} (you) or root")
        };
        match self.wanted {
            Some(uid) if uid != me && uid != 0 => format!("uid {uid}, {base}"),
            _ => base,
        }
    }

    fn expected_path(&self) -> String {
        format!(
            "a socket behind directories only {} can change",
            self.trusted_users()
        )
    }
}

pub(super) fn check(
    endpoint: &Endpoint,
    wanted: &ServerIdentity,
    _stream: &ClientStream,
    server: &PeerInfo,
) -> Result<(), Refusal> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let me = unsafe { libc::getuid() };
    let trust = match wanted {
        ServerIdentity::Any => return Ok(()),
        ServerIdentity::SameUserOrAdmin => Trust { me, wanted: None },
        ServerIdentity::Uid(uid) => Trust {
            me,
            wanted: Some(*uid),
        },
        ServerIdentity::Sid(sid) => {
            return Err(Refusal::Config(format!(
                "server identity {sid:?} is a Windows SID; on Unix expect a uid"
            )))
        }
    };
    check_server(&trust, server).map_err(|found| Refusal::Mismatch {
        expected: trust.expected_server(),
        found,
    })?;
    check_path(&trust, endpoint).map_err(|found| Refusal::Mismatch {
        expected: trust.expected_path(),
        found,
    })
}

/// The uid the kernel gave for the listening process.
fn check_server(trust: &Trust, server: &PeerInfo) -> Result<(), String> {
    match server.uid {
        Some(uid) if trust.server_ok(uid) => Ok(()),
        Some(uid) => {
            let pid = server
                .pid
                .map_or_else(String::new, |pid| format!(" (pid {pid})"));
            Err(format!("a server running as uid {uid}{pid}"))
        }
        None => Err("a server whose uid the system did not report (SO_PEERCRED failed)".into()),
    }
}

/// The private directory, or the directory of an explicit socket path, and
/// every directory above it.
fn check_path(trust: &Trust, endpoint: &Endpoint) -> Result<(), String> {
    let socket = endpoint.address();
    if let Some(private) = endpoint.private_dir() {
        check_private_dir(trust, private)?;
        return match private.parent() {
            Some(parent) => check_entry_in(trust, parent, private),
            None => Ok(()),
        };
    }
    let parent = match socket.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    check_entry_in(trust, parent, socket)
}

/// Like the server's own check: a real directory, of a trusted user, that
/// nobody else may write to.
fn check_private_dir(trust: &Trust, dir: &Path) -> Result<(), String> {
    let meta = inspect(dir)?;
    let mode = meta.mode() & 0o7777;
    if meta.file_type().is_symlink() {
        return Err(format!(
            "the private directory {} is a symbolic link",
            dir.display()
        ));
    }
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if !trust.owner_ok(meta.uid()) {
        return Err(format!(
            "the private directory {} owned by uid {}, who chooses the server there",
            dir.display(),
            meta.uid()
        ));
    }
    if mode & WRITABLE_BY_OTHERS != 0 {
        return Err(format!(
            "the private directory {} writable by others (mode {mode:o}), who can swap the socket",
            dir.display()
        ));
    }
    Ok(())
}

/// Checks every directory from `/` down to `dir`, as written and with its
/// symbolic links resolved, then `entry` (in `dir`) if `dir` is shared.
fn check_entry_in(trust: &Trust, dir: &Path, entry: &Path) -> Result<(), String> {
    let cannot = |e: std::io::Error| format!("{} cannot be inspected ({e})", dir.display());
    let written = std::path::absolute(dir).map_err(cannot)?;
    // Each directory is inspected once (`lstat`), as written first.
    // Compared as strings (`Path`'s `==` parses both into components):
    // the same string is the same inspection.
    let mut checked: Vec<&OsStr> = Vec::new();
    let mut dir_mode = None;
    let mut linked = written
        .components()
        .any(|part| matches!(part, Component::CurDir | Component::ParentDir));
    for ancestor in written.ancestors() {
        let meta = check_ancestor(trust, ancestor)?;
        linked |= meta.file_type().is_symlink();
        dir_mode.get_or_insert(meta.mode());
        checked.push(ancestor.as_os_str());
    }
    // With no link and no `.` or `..` on the way, `dir` resolves to the
    // path as written, every directory of it already checked: resolving
    // it again (a `readlink` per component, at every connect), or walking
    // its ancestors again (Path parses each from its components: 2,000
    // instructions a connect), would find the same directories.
    let canonical;
    let (resolved, resolved_mode) = match linked {
        false => (written.as_path(), dir_mode),
        true => {
            canonical = fs::canonicalize(dir).map_err(cannot)?;
            let mode = check_rest_of(trust, &canonical, &checked)?;
            (canonical.as_path(), mode)
        }
    };
    let mode = match resolved_mode {
        Some(mode) => mode,
        None => inspect(resolved)?.mode(),
    };
    let shared = mode & WRITABLE_BY_OTHERS != 0;
    if shared {
        // Sticky (checked above): only the entry's owner can replace it.
        let meta = inspect(entry)?;
        if !trust.owner_ok(meta.uid()) {
            return Err(format!(
                "{} owned by uid {} in the shared directory {}",
                entry.display(),
                meta.uid(),
                resolved.display()
            ));
        }
    }
    Ok(())
}

/// The directories on the resolved way down to `resolved` that the written
/// way did not pass (`checked`: they share most of them), checked as those
/// were; the mode of `resolved` itself if it is one of them.
fn check_rest_of(
    trust: &Trust,
    resolved: &Path,
    checked: &[&OsStr],
) -> Result<Option<u32>, String> {
    let mut resolved_mode = None;
    for ancestor in resolved.ancestors() {
        let name = ancestor.as_os_str();
        if checked.contains(&name) {
            continue;
        }
        let mode = check_ancestor(trust, ancestor)?.mode();
        if name == resolved.as_os_str() {
            resolved_mode = Some(mode);
        }
    }
    Ok(resolved_mode)
}

/// A directory above the socket (or a symbolic link to one): its owner
/// and, unless it is sticky, anyone who may write to it can swap what is
/// below. What it is, when it passes.
fn check_ancestor(trust: &Trust, path: &Path) -> Result<fs::Metadata, String> {
    let meta = inspect(path)?;
    if !trust.owner_ok(meta.uid()) {
        return Err(format!(
            "{} owned by uid {}, who could swap the socket",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if meta.is_dir() && mode & WRITABLE_BY_OTHERS != 0 && mode & STICKY == 0 {
        return Err(format!(
            "{} writable by others (mode {mode:o}, not sticky), so anyone could swap the socket",
            path.display()
        ));
    }
    Ok(meta)
}

fn inspect(path: &Path) -> Result<fs::Metadata, String> {
    fs::symlink_metadata(path).map_err(|e| format!("{} cannot be inspected ({e})", path.display()))
}

/// `getpwnam` (reentrant form): the uid of user `name`.
pub(super) fn identity_of_user(name: &str) -> Result<ServerIdentity> {
    let unknown =
        |why: &str| Error::config("server_identity", format!("unknown user {name:?}: {why}"));
    let c_name = CString::new(name).map_err(|_| unknown("it contains a NUL character"))?;
    let mut entry: libc::passwd = zeroed_passwd();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let mut buffer = vec![0u8; 4096];
    loop {
        // SAFETY: every pointer is valid for the call; `buffer` is writable
        // for its whole length, and `entry`'s strings point into it.
        let err = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut entry,
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                &mut found,
            )
        };
        match err {
            0 if found.is_null() => return Err(unknown("no such user")),
            0 => return Ok(ServerIdentity::Uid(entry.pw_uid)),
            libc::ERANGE if buffer.len() < 1 << 20 => buffer.resize(buffer.len() * 2, 0),
            err => return Err(unknown(&std::io::Error::from_raw_os_error(err).to_string())),
        }
    }
}

fn zeroed_passwd() -> libc::passwd {
    // SAFETY: passwd is plain data (integers and pointers); all-zero is a
    // valid value, overwritten by getpwnam_r before it is read.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_to_uid_0_and_an_unknown_user_is_named() {
        assert_eq!(identity_of_user("root").unwrap(), ServerIdentity::Uid(0));
        let err = identity_of_user("no-such-user-pipesvc").unwrap_err();
        assert!(err.to_string().contains("no-such-user-pipesvc"), "{err}");
    }

    #[test]
    fn the_expected_identity_names_the_client_and_root() {
        let trust = Trust {
            me: 1000,
            wanted: None,
        };
        assert_eq!(
            trust.expected_server(),
            "a server running as uid 1000 (you) or root"
        );
        assert!(trust.server_ok(0) && trust.server_ok(1000) && !trust.server_ok(65534));
        let exact = Trust {
            me: 1000,
            wanted: Some(65534),
        };
        assert!(exact.server_ok(65534) && !exact.server_ok(0) && !exact.server_ok(1000));
        assert!(exact.owner_ok(65534) && exact.owner_ok(0) && exact.owner_ok(1000));
    }
}

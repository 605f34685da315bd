//! [`Caller`]: who is on the other end of a server's connection, as the
//! operating system reports it. Read once per connection (at accept on
//! Unix, from the client's token after its HELLO on Windows), then shared:
//! reading it costs nothing per request.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::PeerInfo;

/// Who the client of a connection is: its user, groups and process, as the
/// operating system reports them. Cheap to clone (shared).
///
/// What each platform tells:
///
/// | | Unix (`SO_PEERCRED`, `SO_PEERGROUPS`) | Windows (the client's token) |
/// |---|---|---|
/// | user | [`uid`](Self::uid) | [`user_sid`](Self::user_sid), [`account`](Self::account) (`DOMAIN\user`) |
/// | groups | [`gid`](Self::gid), [`groups`](Self::groups) (supplementary) | [`group_sids`](Self::group_sids) (enabled groups) |
/// | logon | | [`logon_session`](Self::logon_session), [`session_id`](Self::session_id) (terminal session) |
/// | token | | [`integrity`](Self::integrity), [`elevated`](Self::elevated), [`impersonation_level`](Self::impersonation_level) |
/// | process | [`pid`](Self::pid), [`executable`](Self::executable) | [`pid`](Self::pid), [`executable`](Self::executable) (image path) |
///
/// A field the platform does not tell is `None` (or empty). The user and
/// groups are the process's credentials when it connected, which the kernel
/// keeps with the connection: nothing the client sends changes them.
///
/// **The process** (pid, executable) is best effort. A pid names the
/// process that connected only while that process lives: once it exits,
/// the number can be given to another process. On Linux with
/// `SO_PEERPIDFD` (kernel 6.5 and later), when the server's
/// [`AccessPolicy`](crate::server::AccessPolicy) has a rule that needs the
/// executable, the server keeps a pidfd of the process that connected and
/// reports its executable only while that very process lives (never a
/// recycled pid's). Otherwise the executable is read from the pid when
/// first asked. Either way it is the file the process runs *now*: a process
/// can `exec` another program after connecting, and can hand its connection
/// to another process. Treat the executable as a hint about a process of a
/// user you already trust, not as a boundary between users.
#[derive(Clone)]
pub struct Caller(Arc<Details>);

/// What a [`Caller`] holds.
#[derive(Default)]
pub(crate) struct Details {
    pub(crate) peer: PeerInfo,
    /// Supplementary groups (Unix), `None` when the platform does not tell.
    pub(crate) groups: Option<Vec<u32>>,
    pub(crate) user_sid: Option<String>,
    /// The token's user SID is deny-only (a restricted token): it grants
    /// nothing, so rules do not take the caller for that user.
    pub(crate) user_deny_only: bool,
    /// `DOMAIN\user` (Windows, read with the token); the user's name
    /// (Unix, looked up when first asked).
    pub(crate) account: OnceLock<Option<String>>,
    pub(crate) group_sids: Vec<String>,
    pub(crate) logon_session: Option<u64>,
    pub(crate) session_id: Option<u32>,
    pub(crate) integrity: Option<Integrity>,
    pub(crate) elevated: Option<bool>,
    pub(crate) impersonation: Option<ImpersonationLevel>,
    /// Read when first asked (Unix), or with the token (Windows).
    pub(crate) executable: OnceLock<Option<PathBuf>>,
    /// The executable's file as a device and inode (Unix), for the
    /// same-executable rule; read when first asked.
    #[cfg(unix)]
    pub(crate) executable_id: OnceLock<Option<(u64, u64)>>,
    /// The process that connected, as the kernel pinned it
    /// (`SO_PEERPIDFD`): its files are read only while it lives.
    #[cfg(unix)]
    pub(crate) pidfd: Option<std::os::fd::OwnedFd>,
    /// The client's token, kept only when the client allowed impersonation
    /// (for [`ConnectionContext::run_as_client`](crate::server::ConnectionContext::run_as_client)).
    #[cfg(windows)]
    pub(crate) token: Option<std::os::windows::io::OwnedHandle>,
    /// This is the server's own process (`Caller::current`).
    pub(crate) is_current: bool,
}

impl Caller {
    pub(crate) fn from_details(details: Details) -> Caller {
        Caller(Arc::new(details))
    }

    pub(crate) fn details(&self) -> &Details {
        &self.0
    }

    /// This process, as a client of itself would be seen: what the
    /// in-memory transport's ends are, since both are in this process.
    /// Unix: its effective uid and gid, supplementary groups and
    /// executable; Windows: its process token.
    pub fn current() -> Caller {
        Caller(Arc::new(super::platform_caller::current()))
    }

    /// The process id of the client, when known (see the type's
    /// documentation on reusing pids).
    pub fn pid(&self) -> Option<u32> {
        self.0.peer.pid
    }

    /// Its user id (Unix).
    pub fn uid(&self) -> Option<u32> {
        self.0.peer.uid
    }

    /// Its primary group id (Unix).
    pub fn gid(&self) -> Option<u32> {
        self.0.peer.gid
    }

    /// Its supplementary groups (Unix: `SO_PEERGROUPS` on Linux), as the
    /// kernel lists them; `None` where the platform does not tell (then
    /// group rules see the primary group only).
    pub fn groups(&self) -> Option<&[u32]> {
        self.0.groups.as_deref()
    }

    /// Whether `gid` is its primary group or one of its supplementary
    /// groups (Unix).
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid() == Some(gid) || self.groups().is_some_and(|groups| groups.contains(&gid))
    }

    /// Its user SID, such as `S-1-5-21-...-1001` (Windows).
    pub fn user_sid(&self) -> Option<&str> {
        self.0.user_sid.as_deref()
    }

    /// The user SID that grants access: [`user_sid`](Self::user_sid),
    /// unless the token has it deny-only (a restricted token, which may
    /// not use its user's rights). What rules on the user compare.
    pub fn effective_user_sid(&self) -> Option<&str> {
        self.0
            .user_sid
            .as_deref()
            .filter(|_| !self.0.user_deny_only)
    }

    /// Its user's name: `DOMAIN\user` on Windows (read with the token),
    /// the account name of its uid on Unix (`getpwuid_r`, looked up when
    /// first asked: it may consult a directory service, so ask off a
    /// latency-sensitive path). `None` when there is no name.
    pub fn account(&self) -> Option<&str> {
        self.0
            .account
            .get_or_init(|| {
                #[cfg(unix)]
                return self.uid().and_then(super::platform_caller::user_name);
                #[cfg(not(unix))]
                None
            })
            .as_deref()
    }

    /// The SIDs of the groups in its token that grant access (Windows):
    /// enabled, not deny-only (an administrator's unelevated token carries
    /// Administrators deny-only, so it is not listed), without the
    /// integrity label. Empty elsewhere.
    pub fn group_sids(&self) -> &[String] {
        &self.0.group_sids
    }

    /// Whether `sid` is one of [`group_sids`](Self::group_sids) (Windows;
    /// SIDs compare without regard to case).
    pub fn has_group_sid(&self, sid: &str) -> bool {
        self.0
            .group_sids
            .iter()
            .any(|group| group.eq_ignore_ascii_case(sid))
    }

    /// The logon session of its token (Windows: `AuthenticationId`, a
    /// LUID, as one number): the same for every process of one logon.
    pub fn logon_session(&self) -> Option<u64> {
        self.0.logon_session
    }

    /// Its terminal services session id (Windows: 0 for services, 1 and up
    /// for desktop sessions).
    pub fn session_id(&self) -> Option<u32> {
        self.0.session_id
    }

    /// Its token's mandatory integrity level (Windows).
    pub fn integrity(&self) -> Option<Integrity> {
        self.0.integrity
    }

    /// Whether its token is elevated (Windows: `TokenElevation`).
    pub fn elevated(&self) -> Option<bool> {
        self.0.elevated
    }

    /// The level at which the client lets the server act as it (Windows):
    /// [`Identification`](ImpersonationLevel::Identification) for pipesvc
    /// clients by default, [`Impersonation`](ImpersonationLevel::Impersonation)
    /// for those that opted in
    /// ([`ClientOptions::allow_impersonation`](crate::ClientOptions::allow_impersonation)).
    pub fn impersonation_level(&self) -> Option<ImpersonationLevel> {
        self.0.impersonation
    }

    /// The executable the client process runs (Unix: `/proc/<pid>/exe` on
    /// Linux, read when first asked; Windows: the image path, read with the
    /// token). Best effort: see the type's documentation.
    pub fn executable(&self) -> Option<&Path> {
        self.0
            .executable
            .get_or_init(|| super::platform_caller::executable(&self.0))
            .as_deref()
    }

    /// A key that tells users apart, stable across connections: the uid on
    /// Unix, the user SID on Windows; for per-user limits and bookkeeping.
    pub fn user_key(&self) -> Option<UserKey> {
        match (&self.0.user_sid, self.0.peer.uid) {
            (Some(sid), _) => Some(UserKey::Sid(Arc::from(sid.to_ascii_uppercase()))),
            (None, Some(uid)) => Some(UserKey::Uid(uid)),
            (None, None) => None,
        }
    }

    /// The pid, uid and gid, as [`PeerInfo`].
    pub fn peer(&self) -> &PeerInfo {
        &self.0.peer
    }
}

impl From<PeerInfo> for Caller {
    /// A caller known only by what `peer` says (for
    /// [`ServerHandle::serve_connection`](crate::server::ServerHandle::serve_connection)
    /// and tests): no groups beyond the primary one, no token.
    fn from(peer: PeerInfo) -> Caller {
        Caller(Arc::new(Details {
            peer,
            ..Details::default()
        }))
    }
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        let mut s = f.debug_struct("Caller");
        s.field("pid", &d.peer.pid);
        if d.peer.uid.is_some() {
            s.field("uid", &d.peer.uid)
                .field("gid", &d.peer.gid)
                .field("groups", &d.groups);
        }
        if d.user_sid.is_some() {
            s.field("user_sid", &d.user_sid)
                .field("account", &d.account.get())
                .field("group_sids", &d.group_sids)
                .field("logon_session", &d.logon_session)
                .field("session_id", &d.session_id)
                .field("integrity", &d.integrity)
                .field("elevated", &d.elevated)
                .field("impersonation", &d.impersonation);
        }
        s.field("executable", &d.executable.get()).finish()
    }
}

/// `uid 1000 (gid 1000, pid 4242)` or `VM\alice (S-1-5-21-..., pid 42)`:
/// for log lines.
impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.0;
        let pid = |f: &mut fmt::Formatter<'_>| match d.peer.pid {
            Some(pid) => write!(f, "pid {pid}"),
            None => f.write_str("pid unknown"),
        };
        if let Some(sid) = &d.user_sid {
            match d.account.get().and_then(Option::as_deref) {
                Some(account) => write!(f, "{account} ({sid}, ")?,
                None => write!(f, "{sid} (")?,
            }
        } else if let Some(uid) = d.peer.uid {
            write!(f, "uid {uid} (")?;
            if let Some(gid) = d.peer.gid {
                write!(f, "gid {gid}, ")?;
            }
        } else {
            f.write_str("an unknown user (")?;
        }
        pid(f)?;
        f.write_str(")")
    }
}

/// A user, as [`Caller::user_key`] tells users apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UserKey {
    /// A Unix user id.
    Uid(u32),
    /// A Windows user SID, in upper case.
    Sid(Arc<str>),
}

impl fmt::Display for UserKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserKey::Uid(uid) => write!(f, "uid {uid}"),
            UserKey::Sid(sid) => f.write_str(sid),
        }
    }
}

/// A Windows token's mandatory integrity level: the last part (RID) of its
/// label SID (`S-1-16-8192` is medium). Ordered: `HIGH > MEDIUM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Integrity(pub u32);

impl Integrity {
    /// Untrusted (0).
    pub const UNTRUSTED: Integrity = Integrity(0);
    /// Low (0x1000): sandboxed processes.
    pub const LOW: Integrity = Integrity(0x1000);
    /// Medium (0x2000): a user's ordinary processes.
    pub const MEDIUM: Integrity = Integrity(0x2000);
    /// Medium plus (0x2100).
    pub const MEDIUM_PLUS: Integrity = Integrity(0x2100);
    /// High (0x3000): elevated processes.
    pub const HIGH: Integrity = Integrity(0x3000);
    /// System (0x4000): services.
    pub const SYSTEM: Integrity = Integrity(0x4000);
    /// Protected process (0x5000).
    pub const PROTECTED: Integrity = Integrity(0x5000);

    /// `untrusted`, `low`, `medium`, `medium-plus`, `high`, `system`,
    /// `protected`, or `other` between them.
    pub fn name(self) -> &'static str {
        match self {
            Integrity::UNTRUSTED => "untrusted",
            Integrity::LOW => "low",
            Integrity::MEDIUM => "medium",
            Integrity::MEDIUM_PLUS => "medium-plus",
            Integrity::HIGH => "high",
            Integrity::SYSTEM => "system",
            Integrity::PROTECTED => "protected",
            _ => "other",
        }
    }
}

impl fmt::Display for Integrity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:x})", self.name(), self.0)
    }
}

/// How far a Windows client lets the server act as it (the
/// `SECURITY_IMPERSONATION_LEVEL` of its token as the server gets it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ImpersonationLevel {
    /// The server learns nothing about the client.
    Anonymous,
    /// The server may learn who the client is, not act as it (pipesvc's
    /// default).
    Identification,
    /// The server may act as the client on this machine.
    Impersonation,
    /// The server may act as the client on other machines too.
    Delegation,
}

impl ImpersonationLevel {
    /// `anonymous`, `identification`, `impersonation` or `delegation`.
    pub fn name(self) -> &'static str {
        match self {
            ImpersonationLevel::Anonymous => "anonymous",
            ImpersonationLevel::Identification => "identification",
            ImpersonationLevel::Impersonation => "impersonation",
            ImpersonationLevel::Delegation => "delegation",
        }
    }
}

impl fmt::Display for ImpersonationLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// For unit tests of rules: a caller with these credentials.
#[cfg(test)]
pub(crate) fn caller_details(
    peer: PeerInfo,
    groups: Option<Vec<u32>>,
    user_sid: Option<String>,
    group_sids: &[String],
) -> Details {
    Details {
        peer,
        groups,
        user_sid,
        group_sids: group_sids.to_vec(),
        ..Details::default()
    }
}

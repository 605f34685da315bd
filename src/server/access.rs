//! [`AccessPolicy`]: which connected peers may use the service.
//!
//! This check runs after the operating system has let a client connect and
//! before the handshake: a refused client gets ERROR `not allowed` and is
//! disconnected without reaching the handler. On Unix it is the main line
//! of defence (with the socket's 0600 mode); on Windows the pipe's security
//! descriptor already keeps other users out, and peers carry no uid, so
//! only a custom check applies there.

use std::fmt;
use std::sync::Arc;

use crate::transport::PeerInfo;

type Check = Arc<dyn Fn(&PeerInfo) -> bool + Send + Sync>;

/// Who may connect. The default, [`AccessPolicy::same_user`], admits the
/// server's own user and root.
#[derive(Clone)]
pub struct AccessPolicy {
    anyone: bool,
    uids: Vec<u32>,
    gids: Vec<u32>,
    check: Option<Check>,
}

impl AccessPolicy {
    /// The server's own user and root (uid 0) only. The default.
    pub fn same_user() -> AccessPolicy {
        AccessPolicy {
            anyone: false,
            uids: vec![current_uid(), 0],
            gids: Vec::new(),
            check: None,
        }
    }

    /// Every peer the operating system lets connect. Use with a looser
    /// socket mode or security descriptor only when that is the intent.
    pub fn anyone() -> AccessPolicy {
        AccessPolicy {
            anyone: true,
            ..AccessPolicy::same_user()
        }
    }

    /// Also admits processes running as `uid`.
    pub fn allow_uid(mut self, uid: u32) -> AccessPolicy {
        self.uids.push(uid);
        self
    }

    /// Also admits processes whose primary group is `gid`.
    pub fn allow_gid(mut self, gid: u32) -> AccessPolicy {
        self.gids.push(gid);
        self
    }

    /// Replaces the uid/gid lists with `check`: a peer is admitted when it
    /// returns `true`.
    pub fn custom(check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> AccessPolicy {
        AccessPolicy {
            anyone: false,
            uids: Vec::new(),
            gids: Vec::new(),
            check: Some(Arc::new(check)),
        }
    }

    /// Whether `peer` may use the service.
    pub fn permits(&self, peer: &PeerInfo) -> bool {
        if self.anyone {
            return true;
        }
        if let Some(check) = &self.check {
            return check(peer);
        }
        match (peer.uid, peer.gid) {
            (Some(uid), gid) => {
                self.uids.contains(&uid) || gid.is_some_and(|gid| self.gids.contains(&gid))
            }
            // No credentials (Windows): the pipe's security descriptor has
            // already decided.
            (None, _) => cfg!(windows),
        }
    }
}

impl Default for AccessPolicy {
    fn default() -> Self {
        AccessPolicy::same_user()
    }
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("anyone", &self.anyone)
            .field("uids", &self.uids)
            .field("gids", &self.gids)
            .field("custom_check", &self.check.is_some())
            .finish()
    }
}

#[cfg(unix)]
fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

#[cfg(not(unix))]
fn current_uid() -> u32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerInfo {
        PeerInfo {
            pid: Some(1),
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    #[test]
    fn same_user_admits_self_and_root_only() {
        let policy = AccessPolicy::same_user();
        assert!(policy.permits(&peer(current_uid(), 12345)));
        assert!(policy.permits(&peer(0, 0)));
        assert!(!policy.permits(&peer(current_uid() + 4242, 4242)));
    }

    #[test]
    fn allow_lists_extend_the_default() {
        let policy = AccessPolicy::same_user().allow_uid(1001).allow_gid(50);
        assert!(policy.permits(&peer(1001, 1)));
        assert!(policy.permits(&peer(7777, 50)));
        assert!(!policy.permits(&peer(7777, 51)));
    }

    #[test]
    fn custom_and_anyone() {
        let even = AccessPolicy::custom(|p| p.uid.is_some_and(|u| u % 2 == 0));
        assert!(even.permits(&peer(2, 0)));
        assert!(!even.permits(&peer(3, 0)));
        assert!(AccessPolicy::anyone().permits(&peer(99999, 99999)));
    }

    #[test]
    fn missing_credentials_are_refused_on_unix() {
        let unknown = PeerInfo::default();
        assert_eq!(AccessPolicy::same_user().permits(&unknown), cfg!(windows));
    }
}

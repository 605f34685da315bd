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

/// Who may connect: a set of rules, and a peer is admitted when **any**
/// rule admits it. Every constructor and method adds rules; none replaces
/// or drops one, so `AccessPolicy::custom(check).allow_uid(1001)` admits
/// uid 1001 and whoever `check` admits.
///
/// The rules:
/// - [`same_user`](Self::same_user) (the default): the server's own user
///   and root. A peer the OS gives no credentials for (every peer on
///   Windows, where the pipe's security descriptor has already decided
///   who may connect) is admitted on Windows and refused on Unix.
/// - [`allow_uid`](Self::allow_uid), [`allow_gid`](Self::allow_gid): that
///   user, or that primary group (Unix: peers on Windows carry neither).
/// - [`custom`](Self::custom), [`allow_if`](Self::allow_if): whoever the
///   check returns `true` for.
/// - [`anyone`](Self::anyone): every peer the OS lets connect.
///
/// ```
/// use pipesvc::server::AccessPolicy;
///
/// // The server's user, root, and the members of group 50:
/// let policy = AccessPolicy::same_user().allow_gid(50);
/// // Only uid 1001, and peers with an even pid:
/// let custom = AccessPolicy::custom(|peer| peer.pid.is_some_and(|p| p % 2 == 0)).allow_uid(1001);
/// # let _ = (policy, custom);
/// ```
#[derive(Clone)]
pub struct AccessPolicy {
    anyone: bool,
    /// The `same_user` rule, whose uids are these (own and root).
    same_user: Option<[u32; 2]>,
    uids: Vec<u32>,
    gids: Vec<u32>,
    checks: Vec<Check>,
}

impl AccessPolicy {
    /// The server's own user and root (uid 0). The default.
    pub fn same_user() -> AccessPolicy {
        AccessPolicy {
            same_user: Some([current_uid(), 0]),
            ..AccessPolicy::nobody()
        }
    }

    /// Every peer the operating system lets connect. Use with a looser
    /// socket mode or security descriptor only when that is the intent.
    pub fn anyone() -> AccessPolicy {
        AccessPolicy {
            anyone: true,
            ..AccessPolicy::nobody()
        }
    }

    /// Admits the peers `check` returns `true` for, and no one else until
    /// more rules are added ([`allow_uid`](Self::allow_uid) and the rest).
    pub fn custom(check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> AccessPolicy {
        AccessPolicy::nobody().allow_if(check)
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

    /// Also admits the peers `check` returns `true` for: for instance
    /// `AccessPolicy::same_user().allow_if(..)` keeps the default rule and
    /// adds one.
    pub fn allow_if(mut self, check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Whether `peer` may use the service: whether any rule admits it.
    pub fn permits(&self, peer: &PeerInfo) -> bool {
        self.anyone
            || self
                .same_user
                .is_some_and(|own| same_user_admits(own, peer))
            || peer.uid.is_some_and(|uid| self.uids.contains(&uid))
            || peer.gid.is_some_and(|gid| self.gids.contains(&gid))
            || self.checks.iter().any(|check| check(peer))
    }

    /// No rule: the base the constructors add theirs to.
    fn nobody() -> AccessPolicy {
        AccessPolicy {
            anyone: false,
            same_user: None,
            uids: Vec::new(),
            gids: Vec::new(),
            checks: Vec::new(),
        }
    }
}

/// The `same_user` rule for `peer`.
fn same_user_admits(own: [u32; 2], peer: &PeerInfo) -> bool {
    match peer.uid {
        Some(uid) => own.contains(&uid),
        // No credentials (Windows): the pipe's security descriptor has
        // already decided.
        None => cfg!(windows),
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
            .field("same_user", &self.same_user)
            .field("uids", &self.uids)
            .field("gids", &self.gids)
            .field("custom_checks", &self.checks.len())
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
        // A custom check replaces the default: the server's own user is
        // not admitted unless the check admits it.
        let odd_me = current_uid() | 1;
        let none = AccessPolicy::custom(|_| false);
        assert!(!none.permits(&peer(odd_me, 1)));
        assert!(AccessPolicy::anyone().permits(&peer(99999, 99999)));
    }

    #[test]
    fn rules_added_to_a_custom_check_are_kept() {
        // Before, `custom(..).allow_uid(..)` dropped the uid.
        let policy = AccessPolicy::custom(|p| p.pid == Some(7))
            .allow_uid(1001)
            .allow_gid(50);
        assert!(policy.permits(&peer(1001, 1)), "the uid rule");
        assert!(policy.permits(&peer(7777, 50)), "the gid rule");
        let by_pid = PeerInfo {
            pid: Some(7),
            ..peer(7777, 1)
        };
        assert!(policy.permits(&by_pid), "the check");
        assert!(!policy.permits(&peer(7777, 1)), "no rule admits it");
    }

    #[test]
    fn allow_if_extends_the_default() {
        let policy = AccessPolicy::same_user().allow_if(|p| p.uid == Some(4242));
        assert!(policy.permits(&peer(current_uid(), 1)));
        assert!(policy.permits(&peer(0, 0)));
        assert!(policy.permits(&peer(4242, 1)));
        assert!(!policy.permits(&peer(current_uid() + 4243, 1)));
        let two = AccessPolicy::custom(|p| p.uid == Some(1)).allow_if(|p| p.uid == Some(2));
        assert!(two.permits(&peer(1, 9)) && two.permits(&peer(2, 9)));
        assert!(!two.permits(&peer(3, 9)));
    }

    #[test]
    fn peers_without_credentials_meet_only_the_default_rule_and_checks() {
        let unknown = PeerInfo::default();
        // Lists cannot admit a peer without a uid or gid, on any platform.
        let lists = AccessPolicy::custom(|_| false).allow_uid(0).allow_gid(0);
        assert!(!lists.permits(&unknown));
        let check = AccessPolicy::custom(|p| p.uid.is_none());
        assert!(check.permits(&unknown));
    }

    #[test]
    fn missing_credentials_are_refused_on_unix() {
        let unknown = PeerInfo::default();
        assert_eq!(AccessPolicy::same_user().permits(&unknown), cfg!(windows));
    }
}

//! [`Rule`]: one condition on the caller, with the name a refusal gives.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::str::FromStr;
use std::sync::Arc;

use crate::transport::Caller;

/// LocalSystem's SID.
const LOCAL_SYSTEM: &str = "S-1-5-18";
/// BUILTIN\Administrators.
const ADMINISTRATORS: &str = "S-1-5-32-544";
/// INTERACTIVE: every interactive logon (console and remote desktop).
const INTERACTIVE: &str = "S-1-5-4";
/// NETWORK: every network logon.
const NETWORK: &str = "S-1-5-2";

type Check = Arc<dyn Fn(&Caller) -> bool + Send + Sync>;

/// A condition on the [`Caller`] of a connection, as data: an
/// [`AccessPolicy`](super::AccessPolicy) admits a connection, or a call of
/// a method, when one of its rules for it admits the caller.
///
/// Every rule has a name, which a refusal gives (`not allowed: method
/// "jobs.cancel" needs rule "admin"`) and the server logs with the caller's
/// identity; it is the rule's text form (below) unless set with
/// [`named`](Self::named), and never more of the policy than that.
///
/// | rule | text | admits | Unix | Windows |
/// |---|---|---|---|---|
/// | [`anyone`](Self::anyone) | `anyone` | every caller the operating system let connect | yes | yes |
/// | [`same_user`](Self::same_user) | `same-user` | the user the server runs as | its effective uid | its token's user SID |
/// | [`admin`](Self::admin) | `admin` | administrators | root (uid 0) | LocalSystem, or a token with Administrators enabled (elevated; an unelevated administrator's token has it deny-only) |
/// | [`user`](Self::user) | `user:NAME`, `user:UID`, `user:SID` | that user | a name (`getpwnam`) or uid | a name (`LookupAccountName`) or SID |
/// | [`group`](Self::group) | `group:NAME`, `group:GID`, `group:SID` | members of that group | primary or supplementary group (`SO_PEERGROUPS`) | an enabled group of the token |
/// | [`interactive`](Self::interactive) | `interactive` | users logged on at this machine (console or remote desktop), not network logons, services or anonymous | no: an error at bind | INTERACTIVE in the token and not NETWORK |
/// | [`same_executable`](Self::same_executable) | `same-executable` | processes running the server's own executable file | Linux: the same file (device and inode) as `/proc/<pid>/exe`, pinned by a pidfd where the kernel has one | the same image path (case-insensitive) |
/// | [`custom`](Self::custom) | | whatever the check returns `true` for | yes | yes |
///
/// Names of users and groups are resolved when the server binds; a name
/// that does not exist, or a rule this platform cannot evaluate (a uid on
/// Windows, a SID on Unix, `interactive` on Unix, `same-executable` off
/// Linux), makes [`bind`](crate::server::ServerBuilder::bind) fail with
/// [`Error::Config`](crate::Error::Config) naming the rule.
///
/// ```
/// use pipesvc::server::Rule;
///
/// let staff: Rule = "group:staff".parse().unwrap();
/// let admins_or_staff = Rule::admin().or(staff).named("operators");
/// assert_eq!(admins_or_staff.name(), "operators");
/// ```
#[derive(Clone)]
pub struct Rule {
    name: Arc<str>,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Anyone,
    /// The Windows default: the pipe's security descriptor has decided.
    Descriptor,
    SameUser(Option<Account>),
    Admin,
    User(Account),
    Group(Account),
    Interactive,
    SameExecutable(Option<OwnExecutable>),
    Check(Check),
    AnyOf(Vec<Rule>),
}

/// A user or group as a rule names it; names become ids or SIDs at bind.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Account {
    Name(String),
    Id(u32),
    Sid(String),
}

/// The server's own executable, as the same-executable rule compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum OwnExecutable {
    /// Device and inode (Unix).
    #[cfg(unix)]
    File(u64, u64),
    /// The image path, in lower case (Windows).
    #[cfg(windows)]
    Path(String),
}

impl Rule {
    fn new(kind: Kind) -> Rule {
        let name = kind.default_name();
        Rule {
            name: name.into(),
            kind,
        }
    }

    /// Every caller the operating system let connect.
    pub fn anyone() -> Rule {
        Rule::new(Kind::Anyone)
    }

    /// The Windows default: whoever the pipe's security descriptor let in.
    pub(crate) fn descriptor() -> Rule {
        Rule::new(Kind::Descriptor)
    }

    /// The user the server runs as.
    pub fn same_user() -> Rule {
        Rule::new(Kind::SameUser(None))
    }

    /// Administrators: root on Unix; on Windows LocalSystem or a token
    /// with the Administrators group enabled (an elevated one).
    pub fn admin() -> Rule {
        Rule::new(Kind::Admin)
    }

    /// The user `name`: an account name, a uid (Unix, digits only) or a SID
    /// (Windows, `S-1-...`), as in the text form `user:NAME`.
    pub fn user(name: impl Into<String>) -> Rule {
        Rule::new(Kind::User(Account::parse(name.into())))
    }

    /// The user with uid `uid` (Unix).
    pub fn uid(uid: u32) -> Rule {
        Rule::new(Kind::User(Account::Id(uid)))
    }

    /// Members of the group `name`: a group name, a gid (Unix) or a SID
    /// (Windows), as in the text form `group:NAME`.
    pub fn group(name: impl Into<String>) -> Rule {
        Rule::new(Kind::Group(Account::parse(name.into())))
    }

    /// Members of group `gid`, primary or supplementary (Unix).
    pub fn gid(gid: u32) -> Rule {
        Rule::new(Kind::Group(Account::Id(gid)))
    }

    /// Users logged on at this machine, at its console or through remote
    /// desktop (Windows: INTERACTIVE in the token, NETWORK not): not
    /// network logons, services, batch jobs or anonymous callers. Unix has
    /// no such mark on a socket's peer: there it is an error at bind.
    pub fn interactive() -> Rule {
        Rule::new(Kind::Interactive)
    }

    /// Processes running the server's own executable file (see
    /// [`Caller::executable`] for what that is worth).
    pub fn same_executable() -> Rule {
        Rule::new(Kind::SameExecutable(None))
    }

    /// Whoever `check` returns `true` for; `name` is what a refusal says.
    /// The check runs on the runtime's threads, once per connection (or per
    /// call of a method it guards): it must not block. A check that panics
    /// refuses.
    pub fn custom(
        name: impl Into<String>,
        check: impl Fn(&Caller) -> bool + Send + Sync + 'static,
    ) -> Rule {
        Rule {
            name: name.into().into(),
            kind: Kind::Check(Arc::new(check)),
        }
    }

    /// This rule or `other`: named `A or B` unless [`named`](Self::named).
    pub fn or(self, other: Rule) -> Rule {
        Rule::any_of([self, other])
    }

    /// Any of `rules` (none: no one), named `A or B or ...`.
    pub fn any_of(rules: impl IntoIterator<Item = Rule>) -> Rule {
        let rules: Vec<Rule> = rules.into_iter().collect();
        Rule {
            name: joined_name(&rules).into(),
            kind: Kind::AnyOf(rules),
        }
    }

    /// The same rule, with the name a refusal gives.
    pub fn named(mut self, name: impl Into<String>) -> Rule {
        self.name = name.into().into();
        self
    }

    /// The name a refusal gives.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the rule admits `caller`. Names of users and groups are
    /// resolved when the server binds; before that (on a rule of your own)
    /// a rule naming one by name, `same-user` and `same-executable` admit
    /// no one: use [`AccessPolicy::check`](super::AccessPolicy::check) on a
    /// server's policy, or [`ConnectionContext::require`](crate::server::ConnectionContext::require).
    pub fn admits(&self, caller: &Caller) -> bool {
        match &self.kind {
            Kind::Anyone | Kind::Descriptor => true,
            Kind::SameUser(own) => own.as_ref().is_some_and(|own| is_user(caller, own)),
            Kind::Admin => {
                caller.uid() == Some(0)
                    || caller
                        .effective_user_sid()
                        .is_some_and(|sid| sid.eq_ignore_ascii_case(LOCAL_SYSTEM))
                    || caller.has_group_sid(ADMINISTRATORS)
            }
            Kind::User(account) => is_user(caller, account),
            Kind::Group(Account::Id(gid)) => caller.in_group(*gid),
            Kind::Group(Account::Sid(sid)) => caller.has_group_sid(sid),
            Kind::Group(Account::Name(_)) => false,
            Kind::Interactive => {
                caller.has_group_sid(INTERACTIVE) && !caller.has_group_sid(NETWORK)
            }
            Kind::SameExecutable(own) => own.as_ref().is_some_and(|own| runs(caller, own)),
            Kind::Check(check) => {
                match std::panic::catch_unwind(AssertUnwindSafe(|| check(caller))) {
                    Ok(admitted) => admitted,
                    Err(_) => {
                        crate::log_limit::limited!(
                            error,
                            rule = %self.name,
                            "an access rule's check panicked: refusing"
                        );
                        false
                    }
                }
            }
            Kind::AnyOf(rules) => rules.iter().any(|rule| rule.admits(caller)),
        }
    }

    /// The rule with names resolved to ids or SIDs and the server's own
    /// user and executable filled in; a message naming the rule if it
    /// cannot be evaluated here.
    pub(crate) fn resolve(&self) -> Result<Rule, String> {
        let kind = match &self.kind {
            Kind::SameUser(_) => Kind::SameUser(Some(own_user().map_err(|e| self.cannot(e))?)),
            Kind::User(account) => {
                Kind::User(resolve_account(account, false).map_err(|e| self.cannot(e))?)
            }
            Kind::Group(account) => {
                Kind::Group(resolve_account(account, true).map_err(|e| self.cannot(e))?)
            }
            Kind::Interactive if !cfg!(windows) => {
                return Err(self.cannot(
                    "Unix does not tell how a socket's peer logged on; admit a group of local \
                     users instead (group:NAME, with the socket's group and mode to match: see \
                     SECURITY.md)",
                ))
            }
            Kind::Descriptor if !cfg!(windows) => {
                return Err(self.cannot("a Unix socket has no security descriptor"))
            }
            Kind::SameExecutable(_) => {
                Kind::SameExecutable(Some(own_executable().map_err(|e| self.cannot(e))?))
            }
            Kind::AnyOf(rules) => {
                Kind::AnyOf(rules.iter().map(Rule::resolve).collect::<Result<_, _>>()?)
            }
            other => other.clone(),
        };
        Ok(Rule {
            name: self.name.clone(),
            kind,
        })
    }

    /// Whether evaluating the rule reads the caller's executable.
    pub(crate) fn reads_executable(&self) -> bool {
        match &self.kind {
            Kind::SameExecutable(_) => true,
            Kind::AnyOf(rules) => rules.iter().any(Rule::reads_executable),
            _ => false,
        }
    }

    /// Whether the rule can admit a caller other than SYSTEM and the
    /// server's own user (Windows: whom the default descriptor lets in).
    pub(crate) fn admits_others(&self) -> bool {
        match &self.kind {
            Kind::Admin | Kind::User(_) | Kind::Group(_) | Kind::Interactive => true,
            Kind::AnyOf(rules) => rules.iter().any(Rule::admits_others),
            _ => false,
        }
    }

    fn cannot(&self, why: impl fmt::Display) -> String {
        format!("rule {:?}: {why}", &*self.name)
    }
}

fn joined_name(rules: &[Rule]) -> String {
    match rules {
        [] => "no one".to_owned(),
        rules => rules
            .iter()
            .map(Rule::name)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

impl Kind {
    fn default_name(&self) -> String {
        match self {
            Kind::Anyone => "anyone".into(),
            Kind::Descriptor => "descriptor".into(),
            Kind::SameUser(_) => "same-user".into(),
            Kind::Admin => "admin".into(),
            Kind::User(account) => format!("user:{account}"),
            Kind::Group(account) => format!("group:{account}"),
            Kind::Interactive => "interactive".into(),
            Kind::SameExecutable(_) => "same-executable".into(),
            Kind::Check(_) => "custom".into(),
            Kind::AnyOf(rules) => joined_name(rules),
        }
    }
}

impl Account {
    fn parse(text: String) -> Account {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(id) = text.parse() {
                return Account::Id(id);
            }
        }
        if text.len() > 4 && text[..4].eq_ignore_ascii_case("S-1-") {
            return Account::Sid(text);
        }
        Account::Name(text)
    }
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Name(name) => f.write_str(name),
            Account::Id(id) => write!(f, "{id}"),
            Account::Sid(sid) => f.write_str(sid),
        }
    }
}

fn is_user(caller: &Caller, account: &Account) -> bool {
    match account {
        Account::Id(uid) => caller.uid() == Some(*uid),
        Account::Sid(sid) => caller
            .effective_user_sid()
            .is_some_and(|own| own.eq_ignore_ascii_case(sid)),
        Account::Name(_) => false,
    }
}

fn runs(caller: &Caller, own: &OwnExecutable) -> bool {
    match own {
        #[cfg(unix)]
        OwnExecutable::File(dev, ino) => caller
            .details()
            .executable_id
            .get_or_init(|| crate::transport::platform_executable_id(caller.details()))
            .is_some_and(|id| id == (*dev, *ino)),
        #[cfg(windows)]
        OwnExecutable::Path(path) => caller
            .executable()
            .and_then(|exe| exe.to_str())
            .is_some_and(|exe| exe.to_lowercase() == *path),
    }
}

/// The server's own user, as a rule compares it.
fn own_user() -> std::io::Result<Account> {
    #[cfg(unix)]
    // SAFETY: geteuid has no preconditions and cannot fail.
    return Ok(Account::Id(unsafe { libc::geteuid() }));
    #[cfg(windows)]
    return crate::transport::process_user(None).map(Account::Sid);
}

/// A name as an id (Unix) or SID (Windows); an id or SID checked for this
/// platform.
fn resolve_account(account: &Account, group: bool) -> Result<Account, String> {
    let what = if group { "group" } else { "user" };
    match account {
        #[cfg(unix)]
        Account::Id(_) => Ok(account.clone()),
        #[cfg(unix)]
        Account::Sid(sid) => Err(format!(
            "{sid} is a Windows SID; on Unix name the {what} or its {}",
            if group { "gid" } else { "uid" }
        )),
        #[cfg(unix)]
        Account::Name(name) => {
            let found = if group {
                crate::transport::gid_of(name)
            } else {
                crate::transport::uid_of(name)
            };
            match found {
                Ok(Some(id)) => Ok(Account::Id(id)),
                Ok(None) => Err(format!("no {what} named {name:?}")),
                Err(e) => Err(format!("cannot look up the {what} {name:?}: {e}")),
            }
        }
        #[cfg(windows)]
        Account::Id(id) => Err(format!(
            "{id} is a Unix {}; on Windows name the {what} or its SID",
            if group { "gid" } else { "uid" }
        )),
        #[cfg(windows)]
        Account::Sid(sid) => crate::transport::canonical_sid(sid).map(Account::Sid),
        #[cfg(windows)]
        Account::Name(name) => crate::transport::sid_of_account(name).map(Account::Sid),
    }
}

fn own_executable() -> Result<OwnExecutable, String> {
    #[cfg(unix)]
    return crate::transport::own_executable_id()
        .map(|(dev, ino)| OwnExecutable::File(dev, ino))
        .map_err(|e| format!("cannot read this process's executable: {e}"));
    #[cfg(windows)]
    return std::env::current_exe()
        .map_err(|e| format!("cannot read this process's executable: {e}"))
        .and_then(|path| {
            path.to_str()
                .map(|path| OwnExecutable::Path(path.to_lowercase()))
                .ok_or_else(|| "this process's executable path is not valid Unicode".to_owned())
        });
}

impl fmt::Debug for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Rule").field(&self.name).finish()
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// The text forms of the rule table (`same-user`, `group:staff`, ...):
/// what `pipesvc serve --allow` and the `allow` setting take.
impl FromStr for Rule {
    type Err = String;

    fn from_str(text: &str) -> Result<Rule, String> {
        let text = text.trim();
        let account = |kind: &str, value: &str| {
            if value.is_empty() {
                Err(format!(
                    "{kind}: needs a name, an id or a SID after the colon"
                ))
            } else {
                Ok(Account::parse(value.to_owned()))
            }
        };
        let kind = match text.split_once(':') {
            Some(("user", value)) => Kind::User(account("user", value)?),
            Some(("group", value)) => Kind::Group(account("group", value)?),
            _ => match text {
                "anyone" => Kind::Anyone,
                "same-user" => Kind::SameUser(None),
                "admin" => Kind::Admin,
                "interactive" => Kind::Interactive,
                "same-executable" => Kind::SameExecutable(None),
                _ => {
                    return Err(format!(
                        "unknown rule {text:?}: expected anyone, same-user, admin, interactive, \
                         same-executable, user:NAME|UID|SID or group:NAME|GID|SID"
                    ))
                }
            },
        };
        Ok(Rule::new(kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Caller, PeerInfo};

    fn unix_caller(uid: u32, gid: u32, groups: &[u32]) -> Caller {
        Caller::from_details(crate::transport::caller_details(
            PeerInfo::new().with_pid(1).with_uid(uid).with_gid(gid),
            Some(groups.to_vec()),
            None,
            &[],
        ))
    }

    fn windows_caller(sid: &str, groups: &[&str]) -> Caller {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        Caller::from_details(crate::transport::caller_details(
            PeerInfo::new().with_pid(1),
            None,
            Some(sid.to_owned()),
            &groups,
        ))
    }

    #[test]
    fn text_forms_parse_and_name_themselves() {
        for text in [
            "anyone",
            "same-user",
            "admin",
            "interactive",
            "same-executable",
            "user:alice",
            "user:1001",
            "user:S-1-5-18",
            "group:staff",
            "group:50",
            "group:S-1-5-32-545",
        ] {
            let rule: Rule = text.parse().unwrap();
            assert_eq!(rule.name(), text);
        }
        let err = "nobody".parse::<Rule>().unwrap_err();
        assert!(err.contains("unknown rule \"nobody\""), "{err}");
        let err = "user:".parse::<Rule>().unwrap_err();
        assert!(err.contains("needs a name"), "{err}");
        assert_eq!(Rule::admin().or(Rule::gid(10)).name(), "admin or group:10");
        assert_eq!(Rule::any_of([]).name(), "no one");
    }

    #[test]
    fn unix_rules() {
        let nobody = unix_caller(65534, 65534, &[65534, 100]);
        assert!(Rule::uid(65534).admits(&nobody));
        assert!(!Rule::uid(65533).admits(&nobody));
        assert!(Rule::gid(65534).admits(&nobody), "the primary group");
        assert!(Rule::gid(100).admits(&nobody), "a supplementary group");
        assert!(!Rule::gid(0).admits(&nobody));
        assert!(!Rule::admin().admits(&nobody));
        assert!(Rule::admin().admits(&unix_caller(0, 0, &[])));
        assert!(!Rule::interactive().admits(&nobody));
        assert!(Rule::anyone().admits(&nobody));
        // Unresolved names admit no one.
        assert!(!Rule::user("nobody").admits(&nobody));
        #[cfg(unix)]
        {
            let resolved = Rule::user("root").resolve().unwrap();
            assert!(resolved.admits(&unix_caller(0, 0, &[])));
            assert_eq!(resolved.name(), "user:root");
            let err = Rule::user("no-such-user-pipesvc").resolve().unwrap_err();
            assert!(err.contains("no user named"), "{err}");
            let err = Rule::interactive().resolve().unwrap_err();
            assert!(err.contains("rule \"interactive\""), "{err}");
            let err = Rule::user("S-1-5-18").resolve().unwrap_err();
            assert!(err.contains("Windows SID"), "{err}");
            // SAFETY: geteuid has no preconditions.
            let me = unsafe { libc::geteuid() };
            let same = Rule::same_user().resolve().unwrap();
            assert!(same.admits(&unix_caller(me, 1, &[])));
            assert!(!same.admits(&unix_caller(me + 1, 1, &[])));
        }
    }

    #[test]
    fn windows_rules() {
        let user = windows_caller("S-1-5-21-1-2-3-1001", &["S-1-1-0", INTERACTIVE]);
        assert!(Rule::interactive().admits(&user));
        assert!(!Rule::admin().admits(&user));
        assert!(Rule::user("s-1-5-21-1-2-3-1001").admits(&user));
        assert!(Rule::group("S-1-1-0").admits(&user));
        let network = windows_caller("S-1-5-21-1-2-3-1001", &[INTERACTIVE, NETWORK]);
        assert!(!Rule::interactive().admits(&network));
        let elevated = windows_caller("S-1-5-21-1-2-3-500", &[ADMINISTRATORS]);
        assert!(Rule::admin().admits(&elevated));
        assert!(Rule::admin().admits(&windows_caller(LOCAL_SYSTEM, &[])));
    }

    #[test]
    fn a_panicking_check_refuses() {
        let rule = Rule::custom("boom", |_| panic!("a bug in the check"));
        assert!(!rule.admits(&Caller::current()));
        assert!(Rule::custom("yes", |_| true).admits(&Caller::current()));
    }
}

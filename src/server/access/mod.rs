//! [`AccessPolicy`]: who may connect, and who may call what.
//!
//! Authorization is data: [`Rule`]s for the whole connection (checked once,
//! when the caller's identity is known) and per method (checked for each
//! CALL of that method before it starts). A refusal is ERROR `not allowed`
//! naming the rule, logged with the caller's identity. The operating
//! system's own checks come first: the socket's mode, the pipe's security
//! descriptor.

mod rule;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use rule::Rule;

use crate::error::{Error, Result};
use crate::transport::{Caller, PeerInfo};

/// Who may connect, and who may call which method: rules, as data.
///
/// **The connection.** A caller is admitted when **any** of the policy's
/// connection rules admits it; every constructor and method adds rules
/// and none replaces or drops one, so `AccessPolicy::custom(check).allow_uid(1001)`
/// admits uid 1001 and whoever `check` admits. A refused client gets ERROR
/// `not allowed` (id 0) naming the rule, and is disconnected before any
/// handler runs.
///
/// **Methods** (or any named operation): [`method`](Self::method) adds a
/// rule for one method, or for every method whose name starts with a prefix
/// (`"admin.*"`). A CALL of a method with rules runs only if one of them
/// admits the caller (the most specific entry decides: the exact name,
/// else the longest prefix); otherwise it is answered ERROR `not allowed`
/// naming the rule, and the connection carries on. Methods without rules
/// are open to every admitted caller. A handler checks other operations
/// (a topic, an object's owner) with [`ConnectionContext::authorize`] and
/// [`ConnectionContext::require`].
///
/// The defaults: on Unix the server's own user and root
/// ([`same_user`](Self::same_user)); on Windows whoever the pipe's
/// security descriptor let in (by default SYSTEM and the server's user),
/// since the descriptor is the first gate there and may admit more.
///
/// ```
/// use pipesvc::server::{AccessPolicy, Rule};
///
/// // The server's user, root, and the members of group 50; only
/// // administrators may call `jobs.cancel` or any `admin.` method:
/// let policy = AccessPolicy::same_user()
///     .allow_gid(50)
///     .method("jobs.cancel", Rule::admin())
///     .method("admin.*", Rule::admin());
/// // Only uid 1001, and peers with an even pid:
/// let custom = AccessPolicy::custom(|peer| peer.pid.is_some_and(|p| p % 2 == 0)).allow_uid(1001);
/// # let _ = (policy, custom);
/// ```
///
/// [`ConnectionContext::authorize`]: crate::server::ConnectionContext::authorize
/// [`ConnectionContext::require`]: crate::server::ConnectionContext::require
#[derive(Clone)]
pub struct AccessPolicy {
    /// Any of these admits a connection.
    connection: Vec<Rule>,
    /// Rules per exact operation name; any of them admits.
    exact: HashMap<String, Vec<Rule>>,
    /// Rules per name prefix (`"admin."` for `"admin.*"`), longest first.
    prefixes: Vec<(String, Vec<Rule>)>,
    preset: Option<Preset>,
}

/// A deployment the policy stands for, which also sets the pipe's security
/// descriptor so that the two agree (Windows). SECURITY.md lists each with
/// its SDDL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Preset {
    /// A service (typically LocalSystem) for the interactive users of this
    /// machine: [`AccessPolicy::interactive_users`].
    InteractiveUsers,
}

impl Preset {
    /// `interactive-users`.
    pub fn name(self) -> &'static str {
        match self {
            Preset::InteractiveUsers => "interactive-users",
        }
    }

    /// The security descriptor (SDDL) the preset gives every pipe instance,
    /// for this process's user (Windows; on Unix an `Unsupported` error).
    pub fn security_descriptor(self) -> std::io::Result<String> {
        #[cfg(windows)]
        return match self {
            Preset::InteractiveUsers => crate::transport::interactive_users_descriptor(),
        };
        #[cfg(not(windows))]
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            format!("the {} preset is for Windows", self.name()),
        ))
    }
}

impl AccessPolicy {
    /// No rule: admits no one until one is added (the base the
    /// constructors add to).
    fn nobody() -> AccessPolicy {
        AccessPolicy {
            connection: Vec::new(),
            exact: HashMap::new(),
            prefixes: Vec::new(),
            preset: None,
        }
    }

    /// Connections admitted by `rule` alone; add more with
    /// [`allow`](Self::allow).
    pub fn only(rule: Rule) -> AccessPolicy {
        AccessPolicy::nobody().allow(rule)
    }

    /// The server's own user and administrators (root; on Windows
    /// LocalSystem and elevated administrators): rules `same-user` and
    /// `admin`. The default on Unix.
    pub fn same_user() -> AccessPolicy {
        AccessPolicy::only(Rule::same_user()).allow(Rule::admin())
    }

    /// Every peer the operating system lets connect. Use with a looser
    /// socket mode or security descriptor only when that is the intent.
    pub fn anyone() -> AccessPolicy {
        AccessPolicy::only(Rule::anyone())
    }

    /// The preset for a service (as LocalSystem) reachable by the
    /// interactive users of this machine, at its console or through remote
    /// desktop, and not by network logons or anonymous callers (Windows).
    /// The connection rule is `same-user or interactive` (named
    /// `interactive-users`), and every pipe instance gets the descriptor
    /// `D:P(D;;GA;;;NU)(D;;GA;;;AN)(A;;GA;;;SY)(A;;0x12019b;;;IU)` (plus the
    /// server's own user when it is not SYSTEM): the same callers, and
    /// clients may read and write but not create instances of the pipe.
    /// Methods may get rules of their own; more connection rules, or a
    /// security descriptor of your own, make `bind` fail (they would no
    /// longer agree). On Unix, `bind` fails: SECURITY.md shows the
    /// equivalent there (a group, the socket's mode, `group:NAME`).
    pub fn interactive_users() -> AccessPolicy {
        let rule = Rule::same_user()
            .or(Rule::interactive())
            .named(Preset::InteractiveUsers.name());
        AccessPolicy {
            preset: Some(Preset::InteractiveUsers),
            ..AccessPolicy::only(rule)
        }
    }

    /// Admits the peers `check` returns `true` for, and no one else until
    /// more rules are added ([`allow_uid`](Self::allow_uid) and the rest).
    /// For the whole identity, see [`Rule::custom`].
    pub fn custom(check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> AccessPolicy {
        AccessPolicy::nobody().allow_if(check)
    }

    /// Also admits connections `rule` admits.
    pub fn allow(mut self, rule: Rule) -> AccessPolicy {
        self.connection.push(rule);
        self
    }

    /// Also admits processes running as `uid` (Unix; rule `user:UID`).
    pub fn allow_uid(self, uid: u32) -> AccessPolicy {
        self.allow(Rule::uid(uid))
    }

    /// Also admits members of group `gid`, primary or supplementary (Unix;
    /// rule `group:GID`).
    pub fn allow_gid(self, gid: u32) -> AccessPolicy {
        self.allow(Rule::gid(gid))
    }

    /// Also admits the peers `check` returns `true` for: for instance
    /// `AccessPolicy::same_user().allow_if(..)` keeps the default rule and
    /// adds one (named `custom` in refusals).
    pub fn allow_if(self, check: impl Fn(&PeerInfo) -> bool + Send + Sync + 'static) -> Self {
        self.allow(Rule::custom("custom", move |caller| check(caller.peer())))
    }

    /// Calls of `method` run only for callers `rule` admits (or another
    /// rule added for the same name). A name ending in `*` is a prefix:
    /// `"admin.*"` covers every method starting with `admin.`; the exact
    /// name, else the longest prefix, decides. The same table holds any
    /// named operation a handler checks with
    /// [`ConnectionContext::authorize`](crate::server::ConnectionContext::authorize).
    pub fn method(mut self, method: impl Into<String>, rule: Rule) -> AccessPolicy {
        let method = method.into();
        match method.strip_suffix('*') {
            Some(prefix) => {
                match self.prefixes.iter_mut().find(|(p, _)| p == prefix) {
                    Some((_, rules)) => rules.push(rule),
                    None => self.prefixes.push((prefix.to_owned(), vec![rule])),
                }
                // Longest first: the most specific prefix is found first.
                self.prefixes
                    .sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
            }
            None => self.exact.entry(method).or_default().push(rule),
        }
        self
    }

    /// The preset this policy stands for, if any.
    pub fn preset(&self) -> Option<Preset> {
        self.preset
    }

    /// Whether a connection from `caller` is admitted; the refusal names
    /// the rule. The policy should be the one a server bound with (whose
    /// names are resolved): see [`Rule::admits`].
    pub fn check(&self, caller: &Caller) -> std::result::Result<(), Refusal> {
        if self.connection.iter().any(|rule| rule.admits(caller)) {
            return Ok(());
        }
        Err(Refusal::new(&self.connection, None, caller))
    }

    /// Whether `caller` may perform `operation` (call the method of that
    /// name): `Ok` when no rule names it. Does not check the connection
    /// rules, which admitted the caller already.
    pub fn check_operation(
        &self,
        operation: &str,
        caller: &Caller,
    ) -> std::result::Result<(), Refusal> {
        match self.rules_for(operation) {
            Some(rules) if !rules.iter().any(|rule| rule.admits(caller)) => {
                Err(Refusal::new(rules, Some(operation), caller))
            }
            _ => Ok(()),
        }
    }

    /// Whether any method has rules (the server skips the per-call check
    /// otherwise).
    pub(crate) fn has_operation_rules(&self) -> bool {
        !self.exact.is_empty() || !self.prefixes.is_empty()
    }

    fn rules_for(&self, operation: &str) -> Option<&[Rule]> {
        if let Some(rules) = self.exact.get(operation) {
            return Some(rules);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| operation.starts_with(prefix.as_str()))
            .map(|(_, rules)| rules.as_slice())
    }

    /// Whether `peer` may use the service: whether any connection rule
    /// admits a caller known only by `peer` (names resolved on the way, a
    /// name that does not resolve admitting no one).
    pub fn permits(&self, peer: &PeerInfo) -> bool {
        let caller = Caller::from(*peer);
        let admits = |rule: &Rule| rule.resolve().is_ok_and(|rule| rule.admits(&caller));
        self.connection.iter().any(admits)
    }

    /// The policy with every name resolved and every rule checked for this
    /// platform ([`ServerBuilder::bind`](super::ServerBuilder::bind) does
    /// this): [`Error::Config`] naming the rule otherwise.
    pub(crate) fn resolve(&self) -> Result<AccessPolicy> {
        let fail = |message: String| Error::config("access", message);
        if let Some(preset) = self.preset {
            if cfg!(not(windows)) {
                return Err(fail(format!(
                    "the {} preset is for Windows (it sets the pipe's security descriptor); on \
                     Unix admit a group of local users (group:NAME) with the socket's group and \
                     mode to match (see SECURITY.md)",
                    preset.name()
                )));
            }
            if self.connection.len() != 1 {
                return Err(fail(format!(
                    "the {} preset decides who may connect, in agreement with the pipe's \
                     descriptor; add rules per method only",
                    preset.name()
                )));
            }
        }
        let rules = |rules: &[Rule]| {
            rules
                .iter()
                .map(Rule::resolve)
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        let mut resolved = AccessPolicy {
            connection: rules(&self.connection).map_err(fail)?,
            ..AccessPolicy::nobody()
        };
        resolved.preset = self.preset;
        for (name, list) in &self.exact {
            resolved
                .exact
                .insert(name.clone(), rules(list).map_err(fail)?);
        }
        for (prefix, list) in &self.prefixes {
            resolved
                .prefixes
                .push((prefix.clone(), rules(list).map_err(fail)?));
        }
        Ok(resolved)
    }

    /// Whether any rule reads the caller's executable (then the server
    /// pins each client's process at accept, where it can).
    pub(crate) fn reads_executable(&self) -> bool {
        let any = |rules: &[Rule]| rules.iter().any(Rule::reads_executable);
        any(&self.connection)
            || self.exact.values().any(|rules| any(rules))
            || self.prefixes.iter().any(|(_, rules)| any(rules))
    }

    /// Whether a connection rule admits callers beyond SYSTEM and the
    /// server's own user: on Windows the default descriptor keeps those
    /// out, which is worth a warning.
    pub(crate) fn admits_others(&self) -> bool {
        self.connection.iter().any(Rule::admits_others)
    }
}

impl Default for AccessPolicy {
    /// Unix: [`same_user`](Self::same_user). Windows: whoever the pipe's
    /// security descriptor let in.
    fn default() -> Self {
        if cfg!(windows) {
            AccessPolicy::only(Rule::descriptor())
        } else {
            AccessPolicy::same_user()
        }
    }
}

impl fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<(String, &Vec<Rule>)> = self
            .exact
            .iter()
            .map(|(name, rules)| (name.clone(), rules))
            .collect();
        methods.extend(
            self.prefixes
                .iter()
                .map(|(prefix, rules)| (format!("{prefix}*"), rules)),
        );
        methods.sort_by(|a, b| a.0.cmp(&b.0));
        f.debug_struct("AccessPolicy")
            .field("connection", &self.connection)
            .field("methods", &methods)
            .field("preset", &self.preset)
            .finish()
    }
}

/// Why the access policy refused a caller: the rule (or rules) that did not
/// admit it, and the operation, if the refusal is for one. Its `Display` is
/// the message the client gets with ERROR `not allowed`: the rule's name
/// and who the server took the client for (its own ids), nothing more of
/// the server or its policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    rule: Arc<str>,
    operation: Option<String>,
    /// ` (uid 1001, gid 1001, pid 4242)`, or empty.
    client: String,
}

impl Refusal {
    fn new(rules: &[Rule], operation: Option<&str>, caller: &Caller) -> Refusal {
        let rule = match rules {
            [one] => one.name().into(),
            rules => rule::Rule::any_of(rules.iter().cloned()).name().into(),
        };
        Refusal {
            rule,
            operation: operation.map(str::to_owned),
            client: taken_for(caller),
        }
    }

    /// A refusal by `rule` (for a handler's own checks).
    pub(crate) fn by(rule: &Rule, operation: Option<&str>, caller: &Caller) -> Refusal {
        Refusal::new(std::slice::from_ref(rule), operation, caller)
    }

    /// The name of the rule that refused.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The operation (method) refused, if the refusal is for one.
    pub fn operation(&self) -> Option<&str> {
        self.operation.as_deref()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (rule, client) = (&*self.rule, &self.client);
        match &self.operation {
            Some(operation) => write!(
                f,
                "{operation:?} needs rule {rule:?}, which does not admit this client{client}"
            ),
            None => write!(
                f,
                "the service's access policy (rule {rule:?}) does not admit this client{client}"
            ),
        }
    }
}

/// Who the server took a refused client for, as it can see to change the
/// policy or run as someone else: ` (VM\alice, S-1-5-21-..., pid 42)` or
/// ` (uid 1001, gid 1001, pid 4242)`.
fn taken_for(caller: &Caller) -> String {
    let mut parts = Vec::new();
    if let Some(sid) = caller.user_sid() {
        // Windows: the account was read with the token (no lookup here).
        parts.extend(caller.account().map(str::to_owned));
        parts.push(sid.to_owned());
    }
    let ids = [
        ("uid", caller.uid()),
        ("gid", caller.gid()),
        ("pid", caller.pid()),
    ];
    parts.extend(
        ids.iter()
            .filter_map(|(what, id)| id.map(|id| format!("{what} {id}"))),
    );
    match parts.is_empty() {
        true => String::new(),
        false => format!(" ({})", parts.join(", ")),
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerInfo {
        PeerInfo::new().with_pid(1).with_uid(uid).with_gid(gid)
    }

    #[cfg(unix)]
    fn current_uid() -> u32 {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }
    }

    #[cfg(unix)]
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
        if cfg!(unix) {
            assert!(policy.permits(&peer(1001, 1)));
            assert!(policy.permits(&peer(7777, 50)));
        }
        assert!(!policy.permits(&peer(7777, 51)));
    }

    #[test]
    fn custom_and_anyone() {
        let even = AccessPolicy::custom(|p| p.uid.is_some_and(|u| u % 2 == 0));
        assert!(even.permits(&peer(2, 0)));
        assert!(!even.permits(&peer(3, 0)));
        let none = AccessPolicy::custom(|_| false);
        assert!(!none.permits(&peer(1, 1)));
        assert!(AccessPolicy::anyone().permits(&peer(99999, 99999)));
    }

    #[cfg(unix)]
    #[test]
    fn rules_added_to_a_custom_check_are_kept() {
        // Before, `custom(..).allow_uid(..)` dropped the uid.
        let policy = AccessPolicy::custom(|p| p.pid == Some(7))
            .allow_uid(1001)
            .allow_gid(50);
        assert!(policy.permits(&peer(1001, 1)), "the uid rule");
        assert!(policy.permits(&peer(7777, 50)), "the gid rule");
        assert!(policy.permits(&peer(7777, 1).with_pid(7)), "the check");
        assert!(!policy.permits(&peer(7777, 1)), "no rule admits it");
    }

    #[test]
    fn peers_without_credentials_meet_only_the_default_rule_and_checks() {
        let unknown = PeerInfo::default();
        // Lists cannot admit a peer without a uid or gid, on any platform.
        let lists = AccessPolicy::custom(|_| false).allow_uid(0).allow_gid(0);
        assert!(!lists.permits(&unknown));
        let check = AccessPolicy::custom(|p| p.uid.is_none());
        assert!(check.permits(&unknown));
        // Unix refuses a peer without credentials; on Windows the default
        // leaves the decision to the pipe's security descriptor.
        assert_eq!(AccessPolicy::default().permits(&unknown), cfg!(windows));
        assert!(!AccessPolicy::same_user().permits(&unknown));
    }

    #[cfg(unix)]
    #[test]
    fn method_rules_pick_the_most_specific_entry_and_name_it() {
        let policy = AccessPolicy::anyone()
            .method("jobs.cancel", Rule::uid(1001))
            .method("jobs.cancel", Rule::admin())
            .method("jobs.*", Rule::gid(50))
            .method("*", Rule::uid(7))
            .resolve()
            .unwrap();
        let caller = |uid, gid| Caller::from(peer(uid, gid));
        assert!(policy
            .check_operation("jobs.cancel", &caller(1001, 1))
            .is_ok());
        assert!(policy.check_operation("jobs.cancel", &caller(0, 0)).is_ok());
        let refusal = policy
            .check_operation("jobs.cancel", &caller(5, 50))
            .unwrap_err();
        assert_eq!(refusal.rule(), "user:1001 or admin");
        assert_eq!(
            refusal.to_string(),
            "\"jobs.cancel\" needs rule \"user:1001 or admin\", which does not admit this \
             client (uid 5, gid 50, pid 1)"
        );
        let refused = AccessPolicy::only(Rule::uid(1))
            .check(&caller(5, 50))
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "the service's access policy (rule \"user:1\") does not admit this client (uid \
             5, gid 50, pid 1)"
        );
        assert!(policy.check_operation("jobs.list", &caller(5, 50)).is_ok());
        let refusal = policy
            .check_operation("jobs.list", &caller(7, 1))
            .unwrap_err();
        assert_eq!(refusal.rule(), "group:50");
        assert!(policy.check_operation("echo", &caller(7, 1)).is_ok());
        assert_eq!(
            policy
                .check_operation("echo", &caller(8, 1))
                .unwrap_err()
                .rule(),
            "user:7"
        );
        assert!(AccessPolicy::anyone()
            .check_operation("x", &caller(8, 1))
            .is_ok());
        assert!(!AccessPolicy::anyone().has_operation_rules());
    }

    #[test]
    fn the_preset_is_windows_only_and_takes_no_more_connection_rules() {
        let err = AccessPolicy::interactive_users()
            .allow(Rule::anyone())
            .resolve()
            .unwrap_err()
            .to_string();
        if cfg!(windows) {
            assert!(err.contains("add rules per method only"), "{err}");
            let policy = AccessPolicy::interactive_users()
                .method("x", Rule::admin())
                .resolve()
                .unwrap();
            assert_eq!(policy.preset(), Some(Preset::InteractiveUsers));
        } else {
            assert!(err.contains("preset is for Windows"), "{err}");
        }
    }
}

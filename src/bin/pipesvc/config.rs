//! The service's settings: a TOML file (`serve --config FILE`), `PIPESVC_*`
//! environment variables and command-line flags, one key each for every
//! option of the server builder. CONFIG.md documents every key; the
//! [`settings!`] list below is the one place that defines them.
//!
//! Precedence, highest first: flags, environment, file, defaults. Each
//! source is checked on its own before they are merged, so an error names
//! its source: the file and line, the variable, or the flag.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use pipesvc::server::{AccessPolicy, Server, ServerBuilder};
use pipesvc::transport::PipeMode;
use pipesvc::Endpoint;
use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};
use toml::de::{DeTable, ValueDeserializer};

/// The prefix of every setting's environment variable.
pub const ENV_PREFIX: &str = "PIPESVC_";

/// The endpoint served when no source names one.
pub const DEFAULT_NAME: &str = "pipesvc";

/// Other `PIPESVC_*` variables pipesvc reads, which are not settings (no
/// "unknown variable" warning for them).
const OTHER_ENV_VARS: &[&str] = &["PIPESVC_LOG_FORMAT", "PIPESVC_SOAK_SECS"];

/// The platforms a setting applies to. A setting for another platform is
/// refused, so that a security knob is never silently ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// Every platform.
    Any,
    /// Unix only (Unix domain sockets).
    Unix,
    /// Windows only (named pipes).
    Windows,
}

impl Platform {
    /// Whether the setting applies where this program runs.
    fn is_here(self) -> bool {
        match self {
            Platform::Any => true,
            Platform::Unix => cfg!(unix),
            Platform::Windows => cfg!(windows),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Any => "any platform",
            Platform::Unix => "Unix",
            Platform::Windows => "Windows",
        })
    }
}

/// Defines [`Settings`]: one `Option` field per key (also its `--flag`),
/// with the list of keys and the code that fills the fields from TOML and
/// from text.
macro_rules! settings {
    ($( $(#[$attr:meta])* $key:ident: $ty:ty, $platform:ident; )*) => {
        /// Every server setting, each `None` until a source sets it. Its
        /// fields are also `pipesvc serve`'s flags.
        #[derive(clap::Args, Clone, Debug, Default, PartialEq)]
        pub struct Settings {
            $(
                $(#[$attr])*
                #[arg(long)]
                pub $key: Option<$ty>,
            )*
        }

        impl Settings {
            /// Every key as written in the file, with its platform.
            pub const KEYS: &[(&str, Platform)] = &[$((stringify!($key), Platform::$platform)),*];

            /// Sets `key` (one of [`Settings::KEYS`]) from a TOML value.
            fn set_toml(&mut self, key: &str, value: ValueDeserializer<'_>) -> Result<(), String> {
                match key {
                    $(stringify!($key) => {
                        self.$key = Some(<$ty>::deserialize(value).map_err(|e| e.message().to_owned())?);
                    })*
                    _ => unreachable!("`{key}` was checked against Settings::KEYS"),
                }
                Ok(())
            }

            /// Sets `key` (one of [`Settings::KEYS`]) from text, as in an
            /// environment variable.
            fn set_text(&mut self, key: &str, text: &str) -> Result<(), String> {
                match key {
                    $(stringify!($key) => {
                        self.$key = Some(text.parse::<$ty>().map_err(|e| e.to_string())?);
                    })*
                    _ => unreachable!("`{key}` was checked against Settings::KEYS"),
                }
                Ok(())
            }

            /// The keys this source sets.
            fn keys_set(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$key.is_some() { keys.push(stringify!($key)); })*
                keys
            }

            /// Each setting from `self`, or else from `lower`.
            pub fn or(self, lower: Settings) -> Settings {
                Settings { $($key: self.$key.or(lower.$key),)* }
            }
        }
    };
}

settings! {
    /// Endpoint: a bare name (`\\.\pipe\NAME` on Windows, a socket in a
    /// private per-user directory on Unix) or a full pipe name / socket
    /// path [default: pipesvc]
    #[arg(short = 'n', value_name = "NAME")]
    name: Name, Any;
    /// The server name sent to clients in HELLO [default: pipesvc]
    #[arg(value_name = "TEXT")]
    server_name: String, Any;
    /// Connections served at once; clients over the limit are refused
    /// [default: 1024]
    #[arg(value_name = "N")]
    max_connections: Count, Any;
    /// Largest frame accepted and sent, in bytes (header included)
    /// [default: 8388608]
    #[arg(value_name = "BYTES")]
    max_frame_len: FrameLen, Any;
    /// Requests handled at once per connection [default: 64]
    #[arg(value_name = "N")]
    max_in_flight: Count, Any;
    /// Seconds a client has to answer HELLO [default: 10]
    #[arg(value_name = "SECS")]
    handshake_timeout: Seconds, Any;
    /// Seconds in-flight requests get to finish at shutdown [default: 5]
    #[arg(value_name = "SECS")]
    shutdown_timeout: Seconds, Any;
    /// Seconds a quiet connection is kept, or `off` [default: off]
    #[arg(value_name = "SECS|off")]
    idle_timeout: IdleTimeout, Any;
    /// Seconds a client may leave frames unread before it is dropped
    /// [default: 30]
    #[arg(value_name = "SECS")]
    write_timeout: Seconds, Any;
    /// Bytes of notifications one connection may hold unwritten; a client
    /// with no room for a broadcast is disconnected [default: 4194304]
    #[arg(value_name = "BYTES")]
    max_output_bytes: OutputBytes, Any;
    /// Seconds a client has to finish a frame it has started sending
    /// [default: 30]
    #[arg(value_name = "SECS")]
    frame_timeout: Seconds, Any;
    /// Bytes all connections' unfinished frames may hold at once; a client
    /// past it gets `overloaded` [default: 268435456]
    #[arg(value_name = "BYTES")]
    input_budget: Budget, Any;
    /// Pipe instances listening at once (Windows only) [default: 4]
    #[arg(value_name = "N")]
    backlog: Instances, Windows;
    /// Upper bound on pipe instances (Windows only) [default: unlimited]
    #[arg(value_name = "N")]
    max_instances: Instances, Windows;
    /// `byte` or `message` (Windows only) [default: byte]
    #[arg(value_name = "MODE")]
    pipe_mode: PipeModeSetting, Windows;
    /// Security descriptor of the pipe, in SDDL (Windows only) [default:
    /// full access for the service's user and SYSTEM only]
    #[arg(value_name = "SDDL")]
    security_descriptor: String, Windows;
    /// Refuse clients on other machines (Windows only) [default: true]
    #[arg(value_name = "BOOL")]
    reject_remote_clients: Switch, Windows;
    /// Permission bits of the socket file, in octal (Unix only)
    /// [default: 0600]
    #[arg(value_name = "OCTAL")]
    socket_mode: SocketMode, Unix;
    /// Let every client the operating system lets connect use the service,
    /// not only the service's own user and root [default: false]
    #[arg(value_name = "BOOL")]
    allow_anyone: Switch, Any;
    /// Also admit these user ids, comma-separated (Unix only) [default:
    /// none]
    #[arg(value_name = "UIDS")]
    allow_uids: IdList, Unix;
    /// Also admit processes whose primary group is one of these ids,
    /// comma-separated (Unix only) [default: none]
    #[arg(value_name = "GIDS")]
    allow_gids: IdList, Unix;
}

impl Settings {
    /// The settings to serve with: `flags` over the environment over the
    /// file at `config` (if any) over the defaults. Every source is
    /// checked first; the error names the source and the key.
    pub fn resolve(
        flags: &Settings,
        config: Option<&Path>,
        env: &BTreeMap<OsString, OsString>,
    ) -> Result<Settings, pipesvc::Error> {
        for key in flags.keys_set() {
            check_platform(key).map_err(|why| config_error(format!("--{}: {why}", flag(key))))?;
        }
        let from_env = Settings::from_env(env).map_err(config_error)?;
        let from_file = match config {
            Some(path) => Settings::from_file(path).map_err(config_error)?,
            None => Settings::default(),
        };
        Ok(flags.clone().or(from_env).or(from_file))
    }

    /// Reads and checks a config file.
    pub fn from_file(path: &Path) -> Result<Settings, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Settings::from_toml(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses and checks the text of a config file.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        let table = DeTable::parse(text)
            .map_err(|e| e.to_string().trim_end().to_owned())?
            .into_inner();
        // Report the first problem in the file's order, not the keys' order.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut settings = Settings::default();
        for (key, value) in entries {
            let line = line_of(text, key.span().start);
            let key = key.into_inner();
            let Some(known) = known_key(&key) else {
                return Err(format!("line {line}: unknown key `{key}`{}", suggest(&key)));
            };
            settings
                .set_toml(known, ValueDeserializer::from(value))
                .and_then(|()| check_platform(known))
                .map_err(|why| format!("line {line}: `{known}`: {why}"))?;
        }
        Ok(settings)
    }

    /// The settings in `PIPESVC_<KEY>` variables. An empty variable counts
    /// as unset. Unknown `PIPESVC_*` variables are reported as warnings.
    pub fn from_env(env: &BTreeMap<OsString, OsString>) -> Result<Settings, String> {
        let mut settings = Settings::default();
        for &(key, _) in Settings::KEYS {
            let var = env_var(key);
            let Some(value) = env.get(OsString::from(&var).as_os_str()) else {
                continue;
            };
            let text = value
                .to_str()
                .ok_or_else(|| format!("environment variable {var}: not valid UTF-8"))?;
            if text.is_empty() {
                continue;
            }
            settings
                .set_text(key, text)
                .and_then(|()| check_platform(key))
                .map_err(|why| format!("environment variable {var}: {why}"))?;
        }
        for name in env.keys().filter_map(|name| name.to_str()) {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if known_key(&key).is_none() && !OTHER_ENV_VARS.contains(&name) {
                tracing::warn!(
                    "ignoring unknown environment variable {name}{}",
                    suggest_with(&key, env_var)
                );
            }
        }
        Ok(settings)
    }

    /// The endpoint to serve: the `name` setting, or the default.
    pub fn endpoint(&self) -> pipesvc::Result<Endpoint> {
        match &self.name {
            Some(name) => Ok(name.0.clone()),
            None => DEFAULT_NAME.parse(),
        }
    }

    /// A server builder for `endpoint` with every setting applied.
    pub fn builder(&self, endpoint: Endpoint) -> ServerBuilder {
        let mut builder = Server::builder(endpoint);
        if let Some(name) = &self.server_name {
            builder = builder.name(name.clone());
        }
        if let Some(n) = self.max_connections {
            builder = builder.max_connections(n.get());
        }
        if let Some(n) = self.max_frame_len {
            builder = builder.max_frame_len(n.get());
        }
        if let Some(n) = self.max_in_flight {
            builder = builder.max_in_flight(n.get());
        }
        if let Some(Seconds(timeout)) = self.handshake_timeout {
            builder = builder.handshake_timeout(timeout);
        }
        if let Some(Seconds(timeout)) = self.shutdown_timeout {
            builder = builder.shutdown_timeout(timeout);
        }
        if let Some(IdleTimeout(Some(timeout))) = self.idle_timeout {
            builder = builder.idle_timeout(timeout);
        }
        if let Some(Seconds(timeout)) = self.write_timeout {
            builder = builder.write_timeout(timeout);
        }
        if let Some(n) = self.max_output_bytes {
            builder = builder.max_output_bytes(n.get());
        }
        if let Some(Seconds(timeout)) = self.frame_timeout {
            builder = builder.frame_timeout(timeout);
        }
        if let Some(n) = self.input_budget {
            builder = builder.input_budget(n.get());
        }
        if let Some(n) = self.backlog {
            builder = builder.backlog(n.get());
        }
        if let Some(n) = self.max_instances {
            builder = builder.max_instances(n.get());
        }
        if let Some(PipeModeSetting(mode)) = self.pipe_mode {
            builder = builder.pipe_mode(mode);
        }
        if let Some(sddl) = &self.security_descriptor {
            builder = builder.security_descriptor(sddl.clone());
        }
        if let Some(Switch(reject)) = self.reject_remote_clients {
            builder = builder.reject_remote_clients(reject);
        }
        if let Some(SocketMode(mode)) = self.socket_mode {
            builder = builder.socket_mode(mode);
        }
        builder.access(self.access_policy())
    }

    /// `allow_anyone`, else the service's own user and root plus
    /// `allow_uids` and `allow_gids`.
    fn access_policy(&self) -> AccessPolicy {
        if self.allow_anyone == Some(Switch(true)) {
            if self.allow_uids.is_some() || self.allow_gids.is_some() {
                tracing::warn!("allow_uids and allow_gids have no effect with allow_anyone");
            }
            return AccessPolicy::anyone();
        }
        let uids = self.allow_uids.iter().flat_map(|list| &list.0);
        let gids = self.allow_gids.iter().flat_map(|list| &list.0);
        let policy = uids.fold(AccessPolicy::same_user(), |p, &uid| p.allow_uid(uid));
        gids.fold(policy, |p, &gid| p.allow_gid(gid))
    }
}

/// The `PIPESVC_*` variable of `key`.
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

/// The `--flag` of `key`, without the dashes.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

fn config_error(message: String) -> pipesvc::Error {
    pipesvc::Error::Config(message)
}

fn known_key(key: &str) -> Option<&'static str> {
    Settings::KEYS
        .iter()
        .find(|(known, _)| *known == key)
        .map(|(known, _)| *known)
}

/// Refuses a setting that does not apply on this platform.
fn check_platform(key: &str) -> Result<(), String> {
    let platform = Settings::KEYS
        .iter()
        .find(|(known, _)| *known == key)
        .map_or(Platform::Any, |(_, platform)| *platform);
    if platform.is_here() {
        Ok(())
    } else {
        Err(format!(
            "a {platform}-only setting, which cannot apply here; remove it"
        ))
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// ` (did you mean `KEY`?)` for the known key closest to `unknown`, if one
/// is close; else nothing.
fn suggest(unknown: &str) -> String {
    suggest_with(unknown, |key| format!("`{key}`"))
}

fn suggest_with(unknown: &str, show: impl Fn(&str) -> String) -> String {
    let unknown = unknown.replace('-', "_");
    let closest = Settings::KEYS
        .iter()
        .map(|(key, _)| (edit_distance(&unknown, key), *key))
        .min();
    match closest {
        Some((distance, key)) if distance <= 2.max(key.len() / 4) => {
            format!(" (did you mean {}?)", show(key))
        }
        _ => String::new(),
    }
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

// ---------------------------------------------------------------------------
// The kinds of value. Each reads from TOML (serde) and from text (`FromStr`,
// for variables and flags), with the same checks and messages.

/// An endpoint name, checked as the server will use it.
#[derive(Clone, Debug, PartialEq)]
pub struct Name(pub Endpoint);

impl FromStr for Name {
    type Err = String;

    fn from_str(text: &str) -> Result<Name, String> {
        Endpoint::new(text).map(Name).map_err(|e| e.to_string())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Name, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(de::Error::custom)
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Number<const MIN: u64, const MAX: u64>(u64);

/// A count of connections or requests.
pub type Count = Number<1, 1_000_000>;
/// A frame length: at least a HELLO's fixed part with its header.
pub type FrameLen = Number<16, { u32::MAX as u64 }>;
/// A connection's limit of unwritten notification bytes (1 KiB to 512 MiB,
/// tokio's bound on a semaphore's permits being 2^29 on 32-bit hosts).
pub type OutputBytes = Number<1024, { 512 * 1024 * 1024 }>;
/// A number of bytes for the input budget.
pub type Budget = Number<1, { u32::MAX as u64 }>;
/// A number of Windows pipe instances.
pub type Instances = Number<1, 254>;

impl<const MIN: u64, const MAX: u64> Number<MIN, MAX> {
    /// The number, as the type the builder takes; `MAX` makes it fit.
    pub fn get<T: TryFrom<u64>>(self) -> T {
        T::try_from(self.0)
            .ok()
            .expect("the range of every Number fits its target type")
    }

    fn check(n: u64) -> Option<Self> {
        (MIN..=MAX).contains(&n).then_some(Number(n))
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Number<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The expectation of a [`Number`], for messages.
struct NumberVisitor<const MIN: u64, const MAX: u64>;

impl<const MIN: u64, const MAX: u64> Visitor<'_> for NumberVisitor<MIN, MAX> {
    type Value = Number<MIN, MAX>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from {MIN} to {MAX}")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Self::Value, E> {
        Number::check(n).ok_or_else(|| E::invalid_value(Unexpected::Unsigned(n), &self))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Self::Value, E> {
        u64::try_from(n)
            .ok()
            .and_then(Number::check)
            .ok_or_else(|| E::invalid_value(Unexpected::Signed(n), &self))
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Number<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NumberVisitor)
    }
}

impl<const MIN: u64, const MAX: u64> FromStr for Number<MIN, MAX> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .ok()
            .and_then(Number::check)
            .ok_or_else(|| expected(&NumberVisitor::<MIN, MAX>, text))
    }
}

/// "expected X, got "text"", for text that `visitor` would refuse.
fn expected(visitor: &dyn de::Expected, text: &str) -> String {
    format!("expected {visitor}, got {text:?}")
}

/// The longest timeout accepted: one day.
const MAX_SECONDS: f64 = 86_400.0;

/// A duration, written as a number of seconds (`2.5`, `30`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub Duration);

impl Seconds {
    fn check(secs: f64) -> Option<Seconds> {
        (secs.is_finite() && secs > 0.0 && secs <= MAX_SECONDS)
            .then(|| Seconds(Duration::from_secs_f64(secs)))
    }
}

struct SecondsVisitor;

impl Visitor<'_> for SecondsVisitor {
    type Value = Seconds;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a number of seconds above 0 and at most {MAX_SECONDS}, such as 2.5"
        )
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<Seconds, E> {
        Seconds::check(secs).ok_or_else(|| E::invalid_value(Unexpected::Float(secs), &self))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Seconds, E> {
        Seconds::check(secs as f64).ok_or_else(|| E::invalid_value(Unexpected::Signed(secs), &self))
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<Seconds, E> {
        Seconds::check(secs as f64)
            .ok_or_else(|| E::invalid_value(Unexpected::Unsigned(secs), &self))
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        deserializer.deserialize_any(SecondsVisitor)
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        text.trim()
            .parse()
            .ok()
            .and_then(Seconds::check)
            .ok_or_else(|| expected(&SecondsVisitor, text))
    }
}

/// The idle timeout: seconds, or `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IdleTimeout(pub Option<Duration>);

struct IdleTimeoutVisitor;

impl Visitor<'_> for IdleTimeoutVisitor {
    type Value = IdleTimeout;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SecondsVisitor.expecting(f)?;
        f.write_str(", or \"off\"")
    }

    fn visit_f64<E: de::Error>(self, secs: f64) -> Result<IdleTimeout, E> {
        let Seconds(timeout) = SecondsVisitor
            .visit_f64(secs)
            .map_err(|_: E| E::invalid_value(Unexpected::Float(secs), &self))?;
        Ok(IdleTimeout(Some(timeout)))
    }

    fn visit_i64<E: de::Error>(self, secs: i64) -> Result<IdleTimeout, E> {
        let Seconds(timeout) = SecondsVisitor
            .visit_i64(secs)
            .map_err(|_: E| E::invalid_value(Unexpected::Signed(secs), &self))?;
        Ok(IdleTimeout(Some(timeout)))
    }

    fn visit_u64<E: de::Error>(self, secs: u64) -> Result<IdleTimeout, E> {
        let Seconds(timeout) = SecondsVisitor
            .visit_u64(secs)
            .map_err(|_: E| E::invalid_value(Unexpected::Unsigned(secs), &self))?;
        Ok(IdleTimeout(Some(timeout)))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<IdleTimeout, E> {
        match text {
            "off" => Ok(IdleTimeout(None)),
            _ => Err(E::invalid_value(Unexpected::Str(text), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for IdleTimeout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IdleTimeout, D::Error> {
        deserializer.deserialize_any(IdleTimeoutVisitor)
    }
}

impl FromStr for IdleTimeout {
    type Err = String;

    fn from_str(text: &str) -> Result<IdleTimeout, String> {
        if text.trim() == "off" {
            return Ok(IdleTimeout(None));
        }
        let secs: Seconds = text
            .parse()
            .map_err(|_| expected(&IdleTimeoutVisitor, text))?;
        Ok(IdleTimeout(Some(secs.0)))
    }
}

/// `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Switch(pub bool);

impl<'de> Deserialize<'de> for Switch {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Switch, D::Error> {
        bool::deserialize(deserializer).map(Switch)
    }
}

impl FromStr for Switch {
    type Err = String;

    fn from_str(text: &str) -> Result<Switch, String> {
        match text.trim() {
            "true" => Ok(Switch(true)),
            "false" => Ok(Switch(false)),
            _ => Err(expected(&"true or false", text)),
        }
    }
}

/// `byte` or `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeModeSetting(pub PipeMode);

struct PipeModeVisitor;

impl Visitor<'_> for PipeModeVisitor {
    type Value = PipeModeSetting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"byte\" or \"message\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<PipeModeSetting, E> {
        match text {
            "byte" => Ok(PipeModeSetting(PipeMode::Byte)),
            "message" => Ok(PipeModeSetting(PipeMode::Message)),
            _ => Err(E::invalid_value(Unexpected::Str(text), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for PipeModeSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PipeModeSetting, D::Error> {
        deserializer.deserialize_any(PipeModeVisitor)
    }
}

impl FromStr for PipeModeSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<PipeModeSetting, String> {
        PipeModeVisitor
            .visit_str::<de::value::Error>(text.trim())
            .map_err(|_| expected(&PipeModeVisitor, text))
    }
}

/// Permission bits, written in octal in a string (`"0660"`): a bare TOML
/// number would be read as decimal, so numbers are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocketMode(pub u32);

struct SocketModeVisitor;

impl Visitor<'_> for SocketModeVisitor {
    type Value = SocketMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("octal permission bits up to 0777 in a string, such as \"0660\"")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<SocketMode, E> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(SocketMode(mode)),
            _ => Err(E::invalid_value(Unexpected::Str(text), &self)),
        }
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SocketMode, D::Error> {
        deserializer.deserialize_any(SocketModeVisitor)
    }
}

impl FromStr for SocketMode {
    type Err = String;

    fn from_str(text: &str) -> Result<SocketMode, String> {
        SocketModeVisitor
            .visit_str::<de::value::Error>(text.trim())
            .map_err(|_| expected(&"octal permission bits up to 0777, such as 0660", text))
    }
}

/// A list of user or group ids: a TOML array, or comma-separated text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList(pub Vec<u32>);

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IdList, D::Error> {
        Vec::<u32>::deserialize(deserializer).map(IdList)
    }
}

impl FromStr for IdList {
    type Err = String;

    fn from_str(text: &str) -> Result<IdList, String> {
        text.split(',')
            .map(|id| id.trim().parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map(IdList)
            .map_err(|_| expected(&"comma-separated numeric ids, such as 1001,1002", text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> BTreeMap<OsString, OsString> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn file_error(text: &str) -> String {
        Settings::from_toml(text).expect_err("the file is refused")
    }

    /// The example is for the Linux unit (it sets the Unix-only
    /// `socket_mode`).
    #[cfg(unix)]
    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../contrib/pipesvc.toml");
        let settings = Settings::from_toml(text).expect("contrib/pipesvc.toml is valid");
        // Every key of the example is one the unit's setup relies on.
        assert_eq!(
            settings.endpoint().unwrap().address(),
            Path::new("/run/pipesvc/pipesvc.sock")
        );
        assert_eq!(settings.max_connections, Some(Number(1024)));
        assert_eq!(settings.socket_mode, Some(SocketMode(0o600)));
        // The builder takes them all.
        let builder = settings.builder(settings.endpoint().unwrap());
        assert!(format!("{builder:?}").contains("max_connections: 1024"));
    }

    #[test]
    fn every_key_reads_from_toml() {
        let common = r#"
            name = "config-test"
            server_name = "svc"
            max_connections = 10
            max_frame_len = 65536
            max_in_flight = 8
            handshake_timeout = 2.5
            shutdown_timeout = 1
            idle_timeout = "off"
            write_timeout = 30
            max_output_bytes = 1048576
            frame_timeout = 5
            input_budget = 1048576
            allow_anyone = false
        "#;
        let settings = Settings::from_toml(common).unwrap();
        assert_eq!(settings.server_name.as_deref(), Some("svc"));
        assert_eq!(settings.max_connections, Some(Number(10)));
        assert_eq!(settings.max_frame_len, Some(Number(65536)));
        assert_eq!(settings.max_in_flight, Some(Number(8)));
        assert_eq!(settings.max_output_bytes, Some(Number(1048576)));
        assert_eq!(
            settings.handshake_timeout,
            Some(Seconds(Duration::from_millis(2500)))
        );
        assert_eq!(
            settings.shutdown_timeout,
            Some(Seconds(Duration::from_secs(1)))
        );
        assert_eq!(settings.idle_timeout, Some(IdleTimeout(None)));
        assert_eq!(
            settings.frame_timeout,
            Some(Seconds(Duration::from_secs(5)))
        );
        assert_eq!(settings.input_budget, Some(Number(1048576)));
        assert_eq!(settings.allow_anyone, Some(Switch(false)));
        #[cfg(unix)]
        {
            let unix = "socket_mode = \"0o660\"\nallow_uids = [1001, 1002]\nallow_gids = []";
            let settings = Settings::from_toml(unix).unwrap();
            assert_eq!(settings.socket_mode, Some(SocketMode(0o660)));
            assert_eq!(settings.allow_uids, Some(IdList(vec![1001, 1002])));
            assert_eq!(settings.allow_gids, Some(IdList(vec![])));
        }
        #[cfg(windows)]
        {
            let windows = "backlog = 8\nmax_instances = 254\npipe_mode = \"message\"\n\
                           security_descriptor = \"D:P(A;;GA;;;SY)\"\nreject_remote_clients = false";
            let settings = Settings::from_toml(windows).unwrap();
            assert_eq!(settings.backlog, Some(Number(8)));
            assert_eq!(settings.pipe_mode, Some(PipeModeSetting(PipeMode::Message)));
            assert_eq!(settings.reject_remote_clients, Some(Switch(false)));
        }
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line_and_a_suggestion() {
        let err = file_error("max_connections = 5\n\nmax_conection = 5\n");
        assert_eq!(
            err,
            "line 3: unknown key `max_conection` (did you mean `max_connections`?)"
        );
        let err = file_error("max-in-flight = 5\n");
        assert!(err.contains("(did you mean `max_in_flight`?)"), "{err}");
        let err = file_error("colour = \"blue\"\n");
        assert_eq!(err, "line 1: unknown key `colour`");
        let err = file_error("[server]\nmax_connections = 5\n");
        assert_eq!(err, "line 1: unknown key `server`");
    }

    #[test]
    fn a_bad_value_names_the_key_and_what_is_expected() {
        let err = file_error("max_connections = \"lots\"");
        assert_eq!(
            err,
            "line 1: `max_connections`: invalid type: string \"lots\", \
             expected a whole number from 1 to 1000000"
        );
        let err = file_error("max_in_flight = 0");
        assert!(
            err.contains("invalid value: integer `0`, expected a whole number from 1"),
            "{err}"
        );
        let err = file_error("handshake_timeout = -1");
        assert!(
            err.contains(
                "`handshake_timeout`: invalid value: integer `-1`, expected a number of seconds"
            ),
            "{err}"
        );
        let err = file_error("idle_timeout = \"never\"");
        assert!(err.contains("or \"off\""), "{err}");
        let err = file_error("name = \"\"");
        assert!(err.contains("`name`: invalid endpoint name"), "{err}");
        let err = file_error("allow_anyone = \"yes\"");
        assert!(
            err.contains("`allow_anyone`: invalid type: string \"yes\", expected a boolean"),
            "{err}"
        );
        let err = file_error("max_frame_len = 1");
        assert!(err.contains("from 16 to 4294967295"), "{err}");
    }

    #[test]
    fn syntax_errors_point_at_the_line() {
        let err = file_error("max_connections = 5\nmax_in_flight = \n");
        assert!(err.contains("line 2"), "{err}");
        let err = file_error("max_connections = 5\nmax_connections = 6\n");
        assert!(err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn settings_of_another_platform_are_refused() {
        let (foreign, line) = if cfg!(windows) {
            ("socket_mode = \"0600\"", "a Unix-only setting")
        } else {
            (
                "security_descriptor = \"D:P(A;;GA;;;SY)\"",
                "a Windows-only setting",
            )
        };
        let err = file_error(foreign);
        assert!(err.contains(line) && err.contains("remove it"), "{err}");
        let var = if cfg!(windows) {
            "PIPESVC_ALLOW_UIDS"
        } else {
            "PIPESVC_BACKLOG"
        };
        let err = Settings::from_env(&env(&[(var, "5")])).unwrap_err();
        assert!(
            err.starts_with(&format!("environment variable {var}: a ")),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn socket_modes_are_octal_strings() {
        assert_eq!("0660".parse(), Ok(SocketMode(0o660)));
        assert_eq!("600".parse(), Ok(SocketMode(0o600)));
        let err = file_error("socket_mode = 660");
        assert!(
            err.contains("invalid type: integer `660`, expected octal permission bits"),
            "{err}"
        );
        assert!(file_error("socket_mode = \"0888\"").contains("invalid value"));
        assert!(file_error("socket_mode = \"01777\"").contains("invalid value"));
        assert_eq!(
            "888".parse::<SocketMode>(),
            Err("expected octal permission bits up to 0777, such as 0660, got \"888\"".to_owned())
        );
        assert!("".parse::<SocketMode>().is_err());
    }

    #[test]
    fn text_values_parse_like_toml_values() {
        assert_eq!("42".parse(), Ok(Count::check(42).unwrap()));
        assert_eq!(
            "0".parse::<Count>(),
            Err("expected a whole number from 1 to 1000000, got \"0\"".to_owned())
        );
        assert_eq!("0.25".parse(), Ok(Seconds(Duration::from_millis(250))));
        assert!("0".parse::<Seconds>().is_err());
        assert!("NaN".parse::<Seconds>().is_err());
        assert!("86401".parse::<Seconds>().is_err());
        assert_eq!("off".parse(), Ok(IdleTimeout(None)));
        assert_eq!("60".parse(), Ok(IdleTimeout(Some(Duration::from_secs(60)))));
        assert_eq!("true".parse(), Ok(Switch(true)));
        assert!("yes".parse::<Switch>().is_err());
        assert_eq!("message".parse(), Ok(PipeModeSetting(PipeMode::Message)));
        assert_eq!("1001, 1002".parse(), Ok(IdList(vec![1001, 1002])));
        assert!("1001,bob".parse::<IdList>().is_err());
    }

    #[test]
    fn environment_variables_are_read_and_checked() {
        let settings = Settings::from_env(&env(&[
            ("PIPESVC_MAX_CONNECTIONS", "7"),
            ("PIPESVC_IDLE_TIMEOUT", "90"),
            ("PIPESVC_SERVER_NAME", ""),     // empty: unset
            ("PIPESVC_MAX_CONECTIONS", "8"), // unknown: a warning only
        ]))
        .unwrap();
        assert_eq!(settings.max_connections, Some(Number(7)));
        assert_eq!(
            settings.idle_timeout,
            Some(IdleTimeout(Some(Duration::from_secs(90))))
        );
        assert_eq!(settings.server_name, None);
        let err = Settings::from_env(&env(&[("PIPESVC_MAX_IN_FLIGHT", "many")])).unwrap_err();
        assert_eq!(
            err,
            "environment variable PIPESVC_MAX_IN_FLIGHT: \
             expected a whole number from 1 to 1000000, got \"many\""
        );
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let dir = std::env::temp_dir().join(format!("pipesvc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("precedence.toml");
        std::fs::write(
            &file,
            "max_connections = 1\nmax_in_flight = 1\nmax_frame_len = 100\n",
        )
        .unwrap();
        let vars = env(&[
            ("PIPESVC_MAX_CONNECTIONS", "2"),
            ("PIPESVC_MAX_IN_FLIGHT", "2"),
        ]);
        let flags = Settings {
            max_connections: Some(Number(3)),
            ..Settings::default()
        };
        let settings = Settings::resolve(&flags, Some(&file), &vars).unwrap();
        assert_eq!(settings.max_connections, Some(Number(3)), "flag");
        assert_eq!(settings.max_in_flight, Some(Number(2)), "environment");
        assert_eq!(settings.max_frame_len, Some(Number(100)), "file");
        assert_eq!(settings.write_timeout, None, "default");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("/nonexistent/pipesvc.toml");
        let err = Settings::resolve(&Settings::default(), Some(missing), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read config file /nonexistent/pipesvc.toml"),
            "{err}"
        );
    }

    #[test]
    fn access_policy_from_settings() {
        let peer = |uid| {
            pipesvc::transport::PeerInfo::new()
                .with_pid(1)
                .with_uid(uid)
                .with_gid(99_999)
        };
        let settings = Settings {
            allow_uids: Some(IdList(vec![4242])),
            ..Settings::default()
        };
        assert!(settings.access_policy().permits(&peer(4242)));
        assert!(!settings.access_policy().permits(&peer(4243)));
        let anyone = Settings {
            allow_anyone: Some(Switch(true)),
            ..Settings::default()
        };
        assert!(anyone.access_policy().permits(&peer(4243)));
    }

    #[test]
    fn suggestions_only_for_close_keys() {
        assert_eq!(suggest("write_timout"), " (did you mean `write_timeout`?)");
        assert_eq!(suggest("socketmode"), " (did you mean `socket_mode`?)");
        assert_eq!(suggest("banana"), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

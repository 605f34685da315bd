//! A service's settings: a TOML file (`serve --config FILE`), `PREFIX_*`
//! environment variables and command-line flags, one key each for every
//! option of the server builder, plus a product's own keys in the file.
//! CONFIG.md documents every key for `pipesvc`; the `settings!` list
//! below is the one place that defines them.
//!
//! Precedence, highest first: flags, environment, file, defaults. Each
//! source is checked on its own before they are merged, so an error names
//! its source: the file and line, the variable, or the flag; an unknown key
//! gets the nearest known one as a suggestion.
//!
//! A product's own keys: any type `E` that serde can deserialize (such as a
//! `#[derive(Deserialize)]` struct of `Option`s) takes the keys of the file
//! that are its fields; [`ServeArgs::load`] returns it next to the
//! [`Settings`], which [`Settings::builder`] applies to a server builder.
//! `()` means no keys of one's own.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, DeserializeOwned, Expected, IgnoredAny, Unexpected};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::ops::Product;
use crate::server::{AccessPolicy, Rule, Server, ServerBuilder};
use crate::transport::PipeMode;
use crate::Endpoint;

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
                        self.$key = Some(<$ty as FromVariable>::from_variable(text)?);
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
    /// path [default: the program's name]
    #[arg(short = 'n', value_name = "NAME")]
    name: Name, Any;
    /// The server name sent to clients in HELLO [default: the program's name]
    #[arg(value_name = "TEXT")]
    server_name: String, Any;
    /// Connections served at once; clients over the limit are refused
    /// [default: 1024]
    #[arg(value_name = "N")]
    max_connections: Count, Any;
    /// Largest frame accepted and sent, in bytes (header included); at
    /// least 74, more for a long server name [default: 8388608]
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
    /// Bytes all clients' frames may make the server hold at once (frames
    /// arriving, requests waiting and running); past it a request gets
    /// `overloaded` [default: 268435456]
    #[arg(value_name = "BYTES")]
    input_budget: Budget, Any;
    /// Bytes one connection's requests may make the server hold before it
    /// stops reading that connection [default: 33554432]
    #[arg(value_name = "BYTES")]
    max_input_bytes: Budget, Any;
    /// Seconds a request without a deadline of its own may run before it
    /// is answered `timed out`, or `off` [default: 300]
    #[arg(value_name = "SECS|off")]
    request_timeout: RequestTimeout, Any;
    /// Connections one user may hold at once (the service's own user and
    /// root are not limited) [default: max_connections / 8]
    #[arg(value_name = "N")]
    max_connections_per_user: Count, Any;
    /// Frames that get no answer (CANCEL of a request not in flight,
    /// NOTIFY) one connection may send per second, or `off`
    /// [default: 10000]
    #[arg(value_name = "N|off")]
    unanswered_frame_rate: FrameRate, Any;
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
    /// Also admit members of these groups (primary or supplementary), by
    /// id, comma-separated (Unix only) [default: none]
    #[arg(value_name = "GIDS")]
    allow_gids: IdList, Unix;
    /// Who may connect and call what (repeatable): a rule (anyone,
    /// same-user, admin, interactive, same-executable, user:NAME|ID|SID,
    /// group:NAME|ID|SID), any of which admits a connection and which
    /// together replace the default; METHOD=RULE for calls of a method
    /// (METHOD may end in `*`); or the preset `interactive-users`
    /// (Windows: sets the pipe's descriptor too). See SECURITY.md
    /// [default: same-user and admin on Unix; whoever the pipe's
    /// descriptor admits on Windows]
    #[arg(value_name = "RULE")]
    allow: Vec<AllowEntry>, Any;
}

/// `serve`'s arguments: a config file and a flag for every setting
/// (CONFIG.md). Flatten it into a product's own clap command.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// A TOML file of settings (keys as the flags below, with `_` for
    /// `-`). Environment variables named after the keys with the program's
    /// prefix (`PREFIX_<KEY>`) override it, and flags override both.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The settings given as flags.
    #[command(flatten)]
    pub settings: Settings,
}

/// The settings from every source, and the product's own keys.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Loaded<E> {
    /// The server's settings.
    pub settings: Settings,
    /// The product's own keys from the config file (`()` for none).
    pub extra: E,
}

impl ServeArgs {
    /// The settings to serve with, from the flags, the process's
    /// environment (`product`'s prefix) and the config file, and the
    /// product's own keys of type `E` from the file (see the module's
    /// documentation). Logs which file it reads.
    pub fn load<E: DeserializeOwned>(&self, product: &Product) -> crate::Result<Loaded<E>> {
        if let Some(path) = &self.config {
            tracing::info!(config = %path.display(), "reading settings");
        }
        let env = std::env::vars_os().collect();
        Settings::resolve(product, &self.settings, self.config.as_deref(), &env)
    }

    /// The settings the flags and the config file give, without the
    /// environment (for an installer, whose environment is not the
    /// service's).
    pub fn given<E: DeserializeOwned>(&self, product: &Product) -> crate::Result<Settings> {
        let none = BTreeMap::new();
        Settings::resolve::<E>(product, &self.settings, self.config.as_deref(), &none)
            .map(|loaded| loaded.settings)
    }
}

impl Settings {
    /// The settings to serve with: `flags` over the environment over the
    /// file at `config` (if any) over the defaults, with the product's own
    /// keys from the file. Every source is checked first; the error names
    /// the source and the key.
    pub fn resolve<E: DeserializeOwned>(
        product: &Product,
        flags: &Settings,
        config: Option<&Path>,
        env: &BTreeMap<OsString, OsString>,
    ) -> crate::Result<Loaded<E>> {
        for key in flags.keys_set() {
            check_platform(key).map_err(|why| config_error(format!("--{}: {why}", flag(key))))?;
        }
        let from_env = Settings::from_env(product, env).map_err(config_error)?;
        let from_file = match config {
            Some(path) => Settings::from_file(path).map_err(config_error)?,
            None => Settings::from_toml_with("").map_err(config_error)?,
        };
        Ok(Loaded {
            settings: flags.clone().or(from_env).or(from_file.settings),
            extra: from_file.extra,
        })
    }

    /// Reads and checks a config file, with the product's keys `E`.
    pub fn from_file<E: DeserializeOwned>(path: &Path) -> Result<Loaded<E>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
        Settings::from_toml_with(&text).map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Parses and checks the text of a config file that has only server
    /// settings.
    pub fn from_toml(text: &str) -> Result<Settings, String> {
        Settings::from_toml_with::<()>(text).map(|loaded| loaded.settings)
    }

    /// Parses and checks the text of a config file: server settings, and
    /// the keys that are fields of `E`.
    pub fn from_toml_with<E: DeserializeOwned>(text: &str) -> Result<Loaded<E>, String> {
        let table = DeTable::parse(text)
            .map_err(|e| e.to_string().trim_end().to_owned())?
            .into_inner();
        let extra_keys = field_names::<E>();
        // Report the first problem in the file's order, not the keys' order.
        let mut entries: Vec<_> = table.into_iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        let mut settings = Settings::default();
        let mut extra = DeTable::new();
        for (key, value) in entries {
            let line = line_of(text, key.span().start);
            if extra_keys.contains(&key.get_ref().as_ref()) {
                extra.insert(key, value);
                continue;
            }
            let key = key.into_inner();
            let Some(known) = known_key(&key) else {
                let suggestion = suggest_with(&key, extra_keys, |key| format!("`{key}`"));
                return Err(format!("line {line}: unknown key `{key}`{suggestion}"));
            };
            settings
                .set_toml(known, ValueDeserializer::from(value))
                .and_then(|()| check_platform(known))
                .map_err(|why| format!("line {line}: `{known}`: {why}"))?;
        }
        let extra = deserialize_extra(text, extra, extra_keys.is_empty())?;
        Ok(Loaded { settings, extra })
    }

    /// The settings in `PREFIX_<KEY>` variables (`product`'s prefix). An
    /// empty variable counts as unset. Unknown variables with the prefix are
    /// reported as warnings.
    pub fn from_env(
        product: &Product,
        env: &BTreeMap<OsString, OsString>,
    ) -> Result<Settings, String> {
        let prefix = product.env_prefix();
        let mut settings = Settings::default();
        for &(key, _) in Settings::KEYS {
            let var = env_var(prefix, key);
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
            let Some(key) = name.strip_prefix(prefix) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let other = key == "log_format" || product.other_env_vars().contains(&name);
            if known_key(&key).is_none() && !other {
                tracing::warn!(
                    "ignoring unknown environment variable {name}{}",
                    suggest_with(&key, &[], |key| env_var(prefix, key))
                );
            }
        }
        Ok(settings)
    }

    /// The endpoint to serve: the `name` setting, or the product's name.
    pub fn endpoint(&self, product: &Product) -> crate::Result<Endpoint> {
        match &self.name {
            Some(name) => Ok(name.0.clone()),
            None => product.name().parse(),
        }
    }

    /// The server builder `product` serves with: its endpoint
    /// ([`Settings::endpoint`]), its name in HELLO (`server_name`, else
    /// the product's name) and every other setting.
    pub fn server_builder(&self, product: &Product) -> crate::Result<ServerBuilder> {
        let builder = self.builder(self.endpoint(product)?);
        Ok(match self.server_name {
            Some(_) => builder,
            None => builder.name(product.name()),
        })
    }

    /// A server builder for `endpoint` with every setting applied (the
    /// server name too, if set).
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
        if let Some(n) = self.max_input_bytes {
            builder = builder.max_input_bytes(n.get());
        }
        if let Some(IdleTimeout(timeout)) = self.request_timeout {
            builder = builder.request_timeout(timeout);
        }
        if let Some(n) = self.max_connections_per_user {
            builder = builder.max_connections_per_user(n.get());
        }
        if let Some(FrameRate(rate)) = self.unanswered_frame_rate {
            builder = builder.unanswered_frame_rate(rate);
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

    /// Connections: `allow_anyone`, else the `allow` rules (or its
    /// preset, or the platform's default) plus `allow_uids` and
    /// `allow_gids`. Methods: the `METHOD=RULE` entries of `allow`.
    fn access_policy(&self) -> AccessPolicy {
        let mut rules = Vec::new();
        let mut methods = Vec::new();
        let mut preset = false;
        for entry in self.allow.iter().flatten() {
            match entry.parse() {
                Allow::Rule(rule) => rules.push(rule),
                Allow::Method(method, rule) => methods.push((method, rule)),
                Allow::InteractiveUsers => preset = true,
            }
        }
        let lists = self.allow_uids.is_some() || self.allow_gids.is_some();
        let policy = if self.allow_anyone == Some(Switch(true)) {
            if lists || preset || !rules.is_empty() {
                tracing::warn!(
                    "allow_uids, allow_gids and the connection rules of allow have no effect \
                     with allow_anyone"
                );
            }
            AccessPolicy::anyone()
        } else {
            let base = if preset {
                AccessPolicy::interactive_users()
            } else {
                let mut rules = std::mem::take(&mut rules).into_iter();
                match rules.next() {
                    Some(first) => rules.fold(AccessPolicy::only(first), AccessPolicy::allow),
                    None => AccessPolicy::default(),
                }
            };
            // With the preset, any of these makes `bind` fail, saying why.
            let policy = rules.into_iter().fold(base, AccessPolicy::allow);
            let uids = self.allow_uids.iter().flat_map(|list| &list.0);
            let gids = self.allow_gids.iter().flat_map(|list| &list.0);
            let policy = uids.fold(policy, |p, &uid| p.allow_uid(uid));
            gids.fold(policy, |p, &gid| p.allow_gid(gid))
        };
        methods
            .into_iter()
            .fold(policy, |p, (method, rule)| p.method(method, rule))
    }
}

/// The variable of `key` with `prefix` (`PIPESVC_` gives `PIPESVC_KEY`).
pub fn env_var(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", key.to_ascii_uppercase())
}

/// The `--flag` of `key`, without the dashes.
fn flag(key: &str) -> String {
    key.replace('_', "-")
}

/// Messages here start with what they are about (`--flag: why`, `config
/// file F: line N: why`): that part is the setting, so that the text users
/// see (and CONFIG.md shows) stays as it was.
fn config_error(message: String) -> crate::Error {
    match message.split_once(": ") {
        Some((setting, why)) => crate::Error::config(setting, why),
        None => crate::Error::config("configuration", message),
    }
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

/// ` (did you mean `KEY`?)` for the known key (a setting or one of
/// `extra`) closest to `unknown`, if one is close, shown by `show`; else
/// nothing.
fn suggest_with(unknown: &str, extra: &[&str], show: impl Fn(&str) -> String) -> String {
    let unknown = unknown.replace('-', "_");
    let keys = Settings::KEYS.iter().map(|(key, _)| *key);
    let closest = keys
        .chain(extra.iter().copied())
        .map(|key| (edit_distance(&unknown, key), key))
        .min();
    match closest {
        Some((distance, key)) if distance <= 2.max(key.len() / 4) => {
            format!(" (did you mean {}?)", show(key))
        }
        _ => String::new(),
    }
}

/// The product's keys in `table` (from `text`) as an `E`; with no keys of
/// its own (`no_fields`), `E` is read from nothing, as `()` is.
fn deserialize_extra<E: DeserializeOwned>(
    text: &str,
    table: DeTable<'_>,
    no_fields: bool,
) -> Result<E, String> {
    if no_fields {
        return E::deserialize(de::value::UnitDeserializer::<de::value::Error>::new())
            .map_err(|e| e.to_string());
    }
    // Where each key is, for errors whose value has no position of its
    // own (a table where a list belongs).
    let key_lines: BTreeMap<String, usize> = table
        .iter()
        .map(|(key, _)| (key.get_ref().to_string(), line_of(text, key.span().start)))
        .collect();
    let span = 0..text.len();
    let value = DeValue::Table(table);
    let deserializer = ValueDeserializer::from(toml::Spanned::new(span, value));
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        // The path names the key (and the element within it) that failed.
        let key = match e.path().iter().next() {
            Some(serde_path_to_error::Segment::Map { key }) => Some(key.clone()),
            _ => None,
        };
        let path = e.path().to_string();
        let error = e.into_inner();
        let line = match error.span() {
            Some(span) if span.start > 0 => Some(line_of(text, span.start)),
            _ => key.and_then(|key| key_lines.get(&key).copied()),
        };
        match (line, path.as_str()) {
            (_, ".") => error.message().to_owned(),
            (Some(line), path) => format!("line {line}: `{path}`: {}", error.message()),
            (None, path) => format!("`{path}`: {}", error.message()),
        }
    })
}

/// The field names of struct `E` (none for any other type), as its
/// `Deserialize` implementation declares them.
fn field_names<E: DeserializeOwned>() -> &'static [&'static str] {
    /// A deserializer that only records the fields it is asked for.
    struct Fields<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Fields<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only the fields are wanted"))
        }

        fn deserialize_struct<V: de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the fields are wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    // Always an error: the fields are all it is for.
    let _ = E::deserialize(Fields(&mut fields));
    fields
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
// The kinds of value. Each is a newtype that serde's derive reads through
// `Raw` (any TOML value) and `TryFrom<Raw>`, which checks it; text (for
// variables and flags) goes through the same checks (`FromStr`), so a value
// means the same and is refused for the same reason wherever it is written.

/// Any TOML value, as read before a setting's checks.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Raw {
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number with a fraction or exponent.
    Float(f64),
    /// A string.
    Text(String),
    /// An array.
    List(Vec<IgnoredAny>),
    /// A table.
    Table(BTreeMap<String, IgnoredAny>),
}

impl Raw {
    /// Text as in a variable or flag: a number if it reads as one.
    fn from_text(text: &str) -> Raw {
        let text = text.trim();
        if let Ok(n) = text.parse() {
            Raw::Int(n)
        } else if let Ok(x) = text.parse() {
            Raw::Float(x)
        } else {
            Raw::Text(text.to_owned())
        }
    }

    /// The value as serde's messages show it.
    fn unexpected(&self) -> Unexpected<'_> {
        match self {
            Raw::Bool(b) => Unexpected::Bool(*b),
            Raw::Int(n) => Unexpected::Signed(*n),
            Raw::Float(x) => Unexpected::Float(*x),
            Raw::Text(text) => Unexpected::Str(text),
            Raw::List(_) => Unexpected::Seq,
            Raw::Table(_) => Unexpected::Map,
        }
    }

    /// serde's "invalid value" (a value of the right type) or "invalid
    /// type" message for this value, which `expected` would not take.
    fn refused(&self, right_type: bool, expected: &str) -> String {
        use serde::de::Error as _;
        let expected: &dyn Expected = &expected;
        let error = if right_type {
            de::value::Error::invalid_value(self.unexpected(), expected)
        } else {
            de::value::Error::invalid_type(self.unexpected(), expected)
        };
        error.to_string()
    }
}

/// What a kind of value accepts, in words, for its messages.
trait Kind: TryFrom<Raw, Error = String> {
    /// Such as "a whole number from 1 to 10".
    fn expecting() -> String;

    /// `text` (a variable or flag) read as `raw` reads it.
    fn from_text(text: &str) -> Result<Self, String> {
        Self::try_from(Raw::from_text(text))
            .map_err(|_| format!("expected {}, got {text:?}", Self::expecting()))
    }
}

/// Implements `FromStr` through [`Kind::from_text`].
macro_rules! from_text {
    ($($ty:ty),*) => {$(
        impl FromStr for $ty {
            type Err = String;

            fn from_str(text: &str) -> Result<Self, String> {
                <Self as Kind>::from_text(text)
            }
        }
    )*};
}

/// An endpoint name, checked as the server will use it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(pub Endpoint);

impl TryFrom<String> for Name {
    type Error = String;

    fn try_from(text: String) -> Result<Name, String> {
        text.parse()
    }
}

impl FromStr for Name {
    type Err = String;

    fn from_str(text: &str) -> Result<Name, String> {
        Endpoint::new(text).map(Name).map_err(|e| e.to_string())
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct Number<const MIN: u64, const MAX: u64>(u64);

/// A count of connections or requests.
pub type Count = Number<1, 1_000_000>;
/// A frame length. Its smallest depends on other settings (the server's
/// name, its encodings), so the one rule for it is the server's, checked
/// when it binds ([`crate::server::MIN_MAX_FRAME_LEN`] and up).
pub type FrameLen = Number<0, { u32::MAX as u64 }>;
/// A connection's limit of unwritten notification bytes (1 KiB to
/// [`MAX_OUTPUT_BYTES`](crate::server::MAX_OUTPUT_BYTES), what the server
/// accepts).
pub type OutputBytes = Number<1024, { crate::server::MAX_OUTPUT_BYTES as u64 }>;
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

    #[cfg(test)]
    fn check(n: u64) -> Option<Self> {
        (MIN..=MAX).contains(&n).then_some(Number(n))
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<Raw> for Number<MIN, MAX> {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Self, String> {
        match raw {
            Raw::Int(n) => u64::try_from(n)
                .ok()
                .filter(|n| (MIN..=MAX).contains(n))
                .map(Number)
                .ok_or_else(|| raw.refused(true, &Self::expecting())),
            _ => Err(raw.refused(false, &Self::expecting())),
        }
    }
}

impl<const MIN: u64, const MAX: u64> Kind for Number<MIN, MAX> {
    fn expecting() -> String {
        format!("a whole number from {MIN} to {MAX}")
    }
}

impl<const MIN: u64, const MAX: u64> FromStr for Number<MIN, MAX> {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        <Self as Kind>::from_text(text)
    }
}

impl<const MIN: u64, const MAX: u64> fmt::Display for Number<MIN, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The longest timeout accepted: one day.
const MAX_SECONDS: f64 = 86_400.0;

/// A duration, written as a number of seconds (`2.5`, `30`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct Seconds(pub Duration);

impl TryFrom<Raw> for Seconds {
    type Error = String;

    fn try_from(raw: Raw) -> Result<Seconds, String> {
        let secs = match raw {
            Raw::Int(n) => n as f64,
            Raw::Float(x) => x,
            _ => return Err(raw.refused(false, &Self::expecting())),
        };
        if secs.is_finite() && secs > 0.0 && secs <= MAX_SECONDS {
            Ok(Seconds(Duration::from_secs_f64(secs)))
        } else {
            Err(raw.refused(true, &Self::expecting()))
        }
    }
}

impl Kind for Seconds {
    fn expecting() -> String {
        format!("a number of seconds above 0 and at most {MAX_SECONDS}, such as 2.5")
    }
}

/// The idle timeout: seconds, or `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct IdleTimeout(pub Option<Duration>);

impl TryFrom<Raw> for IdleTimeout {
    type Error = String;

    fn try_from(raw: Raw) -> Result<IdleTimeout, String> {
        let seconds = |raw| Seconds::try_from(raw).map(|Seconds(timeout)| timeout);
        off_or(raw, Self::expecting, seconds).map(IdleTimeout)
    }
}

/// `"off"` as `None`; else a number read by `number` (any other text or
/// type refused, saying it expected what `expecting` says).
fn off_or<T>(
    raw: Raw,
    expecting: fn() -> String,
    number: impl FnOnce(Raw) -> Result<T, String>,
) -> Result<Option<T>, String> {
    match &raw {
        Raw::Text(text) if text == "off" => Ok(None),
        Raw::Int(_) | Raw::Float(_) => number(raw.clone())
            .map(Some)
            .map_err(|_| raw.refused(true, &expecting())),
        Raw::Text(_) => Err(raw.refused(true, &expecting())),
        _ => Err(raw.refused(false, &expecting())),
    }
}

impl Kind for IdleTimeout {
    fn expecting() -> String {
        format!("{}, or \"off\"", Seconds::expecting())
    }
}

/// The request timeout: seconds, or `off` (`None`), as the idle timeout.
pub type RequestTimeout = IdleTimeout;

/// A rate of frames per second (1 to 100000000), or `off` (`None`: no
/// limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct FrameRate(pub Option<u32>);

impl TryFrom<Raw> for FrameRate {
    type Error = String;

    fn try_from(raw: Raw) -> Result<FrameRate, String> {
        let rate = |raw| Number::<1, 100_000_000>::try_from(raw).map(Number::get);
        off_or(raw, Self::expecting, rate).map(FrameRate)
    }
}

impl Kind for FrameRate {
    fn expecting() -> String {
        "a whole number from 1 to 100000000, or \"off\"".into()
    }
}

/// `true` or `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Switch(pub bool);

impl FromStr for Switch {
    type Err = String;

    fn from_str(text: &str) -> Result<Switch, String> {
        match text.trim() {
            "true" => Ok(Switch(true)),
            "false" => Ok(Switch(false)),
            _ => Err(format!("expected true or false, got {text:?}")),
        }
    }
}

/// `byte` or `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct PipeModeSetting(pub PipeMode);

impl TryFrom<Raw> for PipeModeSetting {
    type Error = String;

    fn try_from(raw: Raw) -> Result<PipeModeSetting, String> {
        match &raw {
            Raw::Text(text) if text == "byte" => Ok(PipeModeSetting(PipeMode::Byte)),
            Raw::Text(text) if text == "message" => Ok(PipeModeSetting(PipeMode::Message)),
            Raw::Text(_) => Err(raw.refused(true, &Self::expecting())),
            _ => Err(raw.refused(false, &Self::expecting())),
        }
    }
}

impl Kind for PipeModeSetting {
    fn expecting() -> String {
        "\"byte\" or \"message\"".into()
    }
}

/// Permission bits, written in octal in a string (`"0660"`): a bare TOML
/// number would be read as decimal, so numbers are refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Raw")]
pub struct SocketMode(pub u32);

impl TryFrom<Raw> for SocketMode {
    type Error = String;

    fn try_from(raw: Raw) -> Result<SocketMode, String> {
        let Raw::Text(text) = &raw else {
            return Err(raw.refused(false, &Self::expecting()));
        };
        let digits = text.strip_prefix("0o").unwrap_or(text);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && mode <= 0o777 => Ok(SocketMode(mode)),
            _ => Err(raw.refused(true, &Self::expecting())),
        }
    }
}

impl Kind for SocketMode {
    fn expecting() -> String {
        "octal permission bits up to 0777 in a string, such as \"0660\"".into()
    }
}

impl FromStr for SocketMode {
    type Err = String;

    /// Text is octal as it stands (`660`): no quotes in a variable.
    fn from_str(text: &str) -> Result<SocketMode, String> {
        SocketMode::try_from(Raw::Text(text.trim().to_owned())).map_err(|_| {
            format!("expected octal permission bits up to 0777, such as 0660, got {text:?}")
        })
    }
}

/// A list of user or group ids: a TOML array, or comma-separated text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct IdList(pub Vec<u32>);

impl FromStr for IdList {
    type Err = String;

    fn from_str(text: &str) -> Result<IdList, String> {
        text.split(',')
            .map(|id| id.trim().parse::<u32>())
            .collect::<Result<Vec<u32>, _>>()
            .map(IdList)
            .map_err(|_| {
                format!("expected comma-separated numeric ids, such as 1001,1002, got {text:?}")
            })
    }
}

from_text!(Seconds, IdleTimeout, FrameRate, PipeModeSetting);

/// One entry of `allow`, checked when read: a rule for connections
/// (`group:staff`), a rule for a method (`jobs.cancel=admin`), or the
/// preset `interactive-users`. Names in rules are resolved when the server
/// binds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowEntry(String);

/// What an [`AllowEntry`] says.
enum Allow {
    Rule(Rule),
    Method(String, Rule),
    InteractiveUsers,
}

impl AllowEntry {
    /// Whether the entry is a preset (`interactive-users`), which also
    /// sets the pipe's security descriptor.
    pub fn is_preset(&self) -> bool {
        matches!(self.parse(), Allow::InteractiveUsers)
    }

    /// The entry, as checked by `from_str`.
    fn parse(&self) -> Allow {
        AllowEntry::read(&self.0).expect("checked when the entry was made")
    }

    fn read(text: &str) -> Result<Allow, String> {
        let text = text.trim();
        if text == crate::server::Preset::InteractiveUsers.name() {
            return Ok(Allow::InteractiveUsers);
        }
        match text.split_once('=') {
            Some((method, _)) if method.trim().is_empty() => Err(format!(
                "{text:?}: name the method before `=` (METHOD=RULE)"
            )),
            Some((method, rule)) => Ok(Allow::Method(method.trim().to_owned(), rule.parse()?)),
            None => Ok(Allow::Rule(text.parse().map_err(|e| {
                format!("{e}; or METHOD=RULE, or the preset interactive-users")
            })?)),
        }
    }
}

impl TryFrom<String> for AllowEntry {
    type Error = String;

    fn try_from(text: String) -> Result<AllowEntry, String> {
        text.parse()
    }
}

impl FromStr for AllowEntry {
    type Err = String;

    fn from_str(text: &str) -> Result<AllowEntry, String> {
        AllowEntry::read(text).map(|_| AllowEntry(text.trim().to_owned()))
    }
}

/// A setting's value from the text of an environment variable: as
/// `FromStr` reads it, except lists of `allow` entries (comma-separated).
trait FromVariable: Sized {
    fn from_variable(text: &str) -> Result<Self, String>;
}

/// [`FromVariable`] through `FromStr`.
macro_rules! from_variable_by_parse {
    ($($ty:ty),*) => {$(
        impl FromVariable for $ty {
            fn from_variable(text: &str) -> Result<Self, String> {
                text.parse().map_err(|e: <$ty as FromStr>::Err| e.to_string())
            }
        }
    )*};
}

from_variable_by_parse!(
    Name,
    String,
    Seconds,
    IdleTimeout,
    FrameRate,
    Switch,
    PipeModeSetting,
    SocketMode,
    IdList
);

impl<const MIN: u64, const MAX: u64> FromVariable for Number<MIN, MAX> {
    fn from_variable(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

impl FromVariable for Vec<AllowEntry> {
    fn from_variable(text: &str) -> Result<Self, String> {
        text.split(',').map(str::parse).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPESVC: Product = Product::PIPESVC;

    fn suggest(unknown: &str) -> String {
        suggest_with(unknown, &[], |key| format!("`{key}`"))
    }

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
        let text = include_str!("../../contrib/pipesvc.toml");
        let settings = Settings::from_toml(text).expect("contrib/pipesvc.toml is valid");
        // Every key of the example is one the unit's setup relies on.
        assert_eq!(
            settings.endpoint(&PIPESVC).unwrap().address(),
            Path::new("/run/pipesvc/pipesvc.sock")
        );
        assert_eq!(settings.max_connections, Some(Number(1024)));
        assert_eq!(settings.socket_mode, Some(SocketMode(0o600)));
        // The builder takes them all.
        let builder = settings.builder(settings.endpoint(&PIPESVC).unwrap());
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
            max_input_bytes = 65536
            request_timeout = 60
            max_connections_per_user = 4
            unanswered_frame_rate = "off"
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
        assert_eq!(settings.max_input_bytes, Some(Number(65536)));
        assert_eq!(
            settings.request_timeout,
            Some(IdleTimeout(Some(Duration::from_secs(60))))
        );
        assert_eq!(settings.max_connections_per_user, Some(Number(4)));
        assert_eq!(settings.unanswered_frame_rate, Some(FrameRate(None)));
        assert_eq!(settings.allow_anyone, Some(Switch(false)));
        let rate: FrameRate = "2500".parse().unwrap();
        assert_eq!(rate, FrameRate(Some(2500)));
        assert!("0".parse::<FrameRate>().is_err());
        let off: RequestTimeout = "off".parse().unwrap();
        assert_eq!(off, IdleTimeout(None));
        // The builder takes them all.
        let builder = settings.builder(settings.endpoint(&PIPESVC).unwrap());
        let shown = format!("{builder:?}");
        assert!(shown.contains("max_input_bytes: 65536"), "{shown}");
        assert!(shown.contains("request_timeout: Some(60s)"), "{shown}");
        assert!(
            shown.contains("max_connections_per_user: Some(4)"),
            "{shown}"
        );
        assert!(shown.contains("unanswered_frame_rate: None"), "{shown}");
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
        // The largest the server takes, not a value it would clamp.
        let err = file_error("max_output_bytes = 536870912");
        assert!(err.contains("from 1024 to 536870911"), "{err}");
        // The file checks a frame length's range; its smallest is the
        // server's one rule, checked at bind (tests/serve_service.rs).
        let err = file_error("max_frame_len = 4294967296");
        assert!(err.contains("from 0 to 4294967295"), "{err}");
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
        let err = Settings::from_env(&PIPESVC, &env(&[(var, "5")])).unwrap_err();
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
        let settings = Settings::from_env(
            &PIPESVC,
            &env(&[
                ("PIPESVC_MAX_CONNECTIONS", "7"),
                ("PIPESVC_IDLE_TIMEOUT", "90"),
                ("PIPESVC_SERVER_NAME", ""),     // empty: unset
                ("PIPESVC_MAX_CONECTIONS", "8"), // unknown: a warning only
            ]),
        )
        .unwrap();
        assert_eq!(settings.max_connections, Some(Number(7)));
        assert_eq!(
            settings.idle_timeout,
            Some(IdleTimeout(Some(Duration::from_secs(90))))
        );
        assert_eq!(settings.server_name, None);
        let err =
            Settings::from_env(&PIPESVC, &env(&[("PIPESVC_MAX_IN_FLIGHT", "many")])).unwrap_err();
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
        let settings = Settings::resolve::<()>(&PIPESVC, &flags, Some(&file), &vars)
            .unwrap()
            .settings;
        assert_eq!(settings.max_connections, Some(Number(3)), "flag");
        assert_eq!(settings.max_in_flight, Some(Number(2)), "environment");
        assert_eq!(settings.max_frame_len, Some(Number(100)), "file");
        assert_eq!(settings.write_timeout, None, "default");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Path::new("/nonexistent/pipesvc.toml");
        let err = Settings::resolve::<()>(
            &PIPESVC,
            &Settings::default(),
            Some(missing),
            &BTreeMap::new(),
        )
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
            crate::transport::PeerInfo::new()
                .with_pid(1)
                .with_uid(uid)
                .with_gid(99_999)
        };
        // Unix: the default (own user and root) plus the list. (On Windows
        // the default leaves the decision to the pipe's descriptor.)
        #[cfg(unix)]
        {
            let settings = Settings {
                allow_uids: Some(IdList(vec![4242])),
                ..Settings::default()
            };
            assert!(settings.access_policy().permits(&peer(4242)));
            assert!(!settings.access_policy().permits(&peer(4243)));
        }
        let anyone = Settings {
            allow_anyone: Some(Switch(true)),
            ..Settings::default()
        };
        assert!(anyone.access_policy().permits(&peer(4243)));
    }

    fn allow(entries: &[&str]) -> Settings {
        Settings {
            allow: Some(entries.iter().map(|e| e.parse().unwrap()).collect()),
            ..Settings::default()
        }
    }

    #[test]
    fn allow_entries_replace_the_default_and_add_method_rules() {
        use crate::transport::{Caller, PeerInfo};
        let caller =
            |uid, gid| Caller::from(PeerInfo::new().with_pid(1).with_uid(uid).with_gid(gid));
        let policy = allow(&["group:50", "user:7", "jobs.cancel=user:7"]).access_policy();
        if cfg!(unix) {
            let policy = policy.clone().method("x", crate::server::Rule::anyone());
            let resolved = Server::builder("allow-test".parse().unwrap())
                .access(policy)
                .build()
                .map(drop);
            assert!(resolved.is_ok(), "{resolved:?}");
        }
        assert!(policy.permits(&PeerInfo::new().with_uid(9).with_gid(50)) == cfg!(unix));
        // The default (the service's user and root) is replaced.
        assert!(!policy.permits(&PeerInfo::new().with_uid(0).with_gid(0)));
        let refusal = policy
            .check_operation("jobs.cancel", &caller(8, 50))
            .unwrap_err();
        assert_eq!(refusal.rule(), "user:7");
        // Method entries alone keep the default for connections.
        let methods_only = allow(&["jobs.cancel=admin"]).access_policy();
        assert_eq!(
            methods_only.permits(&PeerInfo::new().with_uid(4243)),
            cfg!(windows)
        );
        let preset = allow(&["interactive-users"]).access_policy();
        assert_eq!(
            preset.preset(),
            Some(crate::server::Preset::InteractiveUsers)
        );
    }

    #[test]
    fn allow_entries_read_from_every_source_and_say_what_they_take() {
        let from_file =
            Settings::from_toml("allow = [\"same-user\", \"echo=group:staff\"]").unwrap();
        assert_eq!(
            from_file.allow,
            allow(&["same-user", "echo=group:staff"]).allow
        );
        let vars = env(&[("PIPESVC_ALLOW", "admin, sleep=user:nobody")]);
        let from_env = Settings::from_env(&PIPESVC, &vars).unwrap();
        assert_eq!(from_env.allow, allow(&["admin", "sleep=user:nobody"]).allow);
        let err = file_error("allow = [\"root\"]");
        assert!(
            err.contains("`allow`: unknown rule \"root\"") && err.contains("METHOD=RULE"),
            "{err}"
        );
        let err = file_error("allow = \"admin\"");
        assert!(err.contains("`allow`: invalid type: string"), "{err}");
        let vars = env(&[("PIPESVC_ALLOW", "=admin")]);
        let err = Settings::from_env(&PIPESVC, &vars).unwrap_err();
        assert!(
            err.contains("PIPESVC_ALLOW: \"=admin\": name the method"),
            "{err}"
        );
        let err = "user:".parse::<AllowEntry>().unwrap_err();
        assert!(err.contains("needs a name"), "{err}");
    }

    /// A product's own keys, as a product would declare them.
    #[derive(Debug, Default, PartialEq, Deserialize)]
    struct Greeting {
        greeting: Option<String>,
        shout: Option<bool>,
    }

    #[test]
    fn a_products_own_keys_come_with_the_settings() {
        let text = "max_connections = 3\ngreeting = \"hi\"\n";
        let loaded = Settings::from_toml_with::<Greeting>(text).unwrap();
        assert_eq!(loaded.settings.max_connections, Some(Number(3)));
        assert_eq!(loaded.extra.greeting.as_deref(), Some("hi"));
        assert_eq!(loaded.extra.shout, None);
        let none = Settings::from_toml_with::<Greeting>("").unwrap();
        assert_eq!(none.extra, Greeting::default());
        let err = Settings::from_toml_with::<Greeting>("max_in_flight = 2\ngreting = \"hi\"")
            .unwrap_err();
        assert_eq!(
            err,
            "line 2: unknown key `greting` (did you mean `greeting`?)"
        );
        let err = Settings::from_toml_with::<Greeting>("\nshout = \"yes\"").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
        assert!(err.contains("expected a boolean"), "{err}");
        // Without keys of its own, a product's file is read as pipesvc's.
        let err = Settings::from_toml_with::<()>("greeting = 1").unwrap_err();
        assert_eq!(err, "line 1: unknown key `greeting`");
    }

    /// A product's keys of other types than pipesvc's.
    #[derive(Debug, Deserialize)]
    struct Updater {
        #[allow(dead_code)] // read by the deserializer only
        rate: Option<u64>,
        #[allow(dead_code)]
        peers: Option<Vec<String>>,
    }

    #[test]
    fn errors_in_a_products_own_keys_name_the_key_and_line() {
        let err =
            Settings::from_toml_with::<Updater>("max_in_flight = 2\nrate = \"fast\"").unwrap_err();
        assert_eq!(
            err,
            "line 2: `rate`: invalid type: string \"fast\", expected u64"
        );
        let text = "rate = 5\n\n[peers]\nhost = \"a\"\n";
        let err = Settings::from_toml_with::<Updater>(text).unwrap_err();
        assert_eq!(
            err,
            "line 3: `peers`: invalid type: map, expected a sequence"
        );
        // A table at the very start of the file.
        let err = Settings::from_toml_with::<Updater>("[peers]\nhost = \"a\"\n").unwrap_err();
        assert_eq!(
            err,
            "line 1: `peers`: invalid type: map, expected a sequence"
        );
        let err = Settings::from_toml_with::<Updater>("\npeers = { host = \"a\" }").unwrap_err();
        assert_eq!(
            err,
            "line 2: `peers`: invalid type: map, expected a sequence"
        );
        let err = Settings::from_toml_with::<Updater>("peers = [\"a\", 7]").unwrap_err();
        assert_eq!(
            err,
            "line 1: `peers[1]`: invalid type: integer `7`, expected a string"
        );
    }

    #[test]
    fn suggestions_only_for_close_keys() {
        assert_eq!(suggest("write_timout"), " (did you mean `write_timeout`?)");
        assert_eq!(suggest("socketmode"), " (did you mean `socket_mode`?)");
        assert_eq!(suggest("banana"), "");
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

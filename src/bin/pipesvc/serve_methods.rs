//! The typed methods `pipesvc serve` offers beside the byte echo: `echo`,
//! `sleep` and `whoami` (protocol 2), and the streaming methods `count`
//! and `lines` and the topic `ticks` (revision 2.2; `pipesvc methods`
//! lists them).

use std::time::Duration;

use pipesvc::rpc::{Method, Service, StreamMethod, Topic};
use pipesvc::server::ConnectionContext;
use pipesvc::server::Publisher;
use pipesvc::transport::Caller;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `echo`: any JSON value, returned as it came.
pub const ECHO: Method<Value, Value> = Method::new("echo", "Returns its params unchanged");

/// `sleep`: the params of [`SLEEP`].
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Sleep {
    /// How long to wait, in milliseconds.
    pub ms: u64,
}

/// `sleep`: answers `null` after `ms` milliseconds; cancelling the call (or
/// its deadline) stops the wait.
pub const SLEEP: Method<Sleep, ()> =
    Method::new("sleep", "Answers after `ms` milliseconds; cancellable");

/// `count`: the params of [`COUNT`].
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Count {
    /// How many numbers to stream: 1 to `n`.
    pub n: u64,
    /// Milliseconds to wait before each number after the first (0: none).
    #[serde(default)]
    pub every_ms: u64,
}

/// `count`: streams the numbers 1 to `n`, one every `every_ms`
/// milliseconds, then answers `null` (revision 2.2).
pub const COUNT: StreamMethod<Count, (), u64, ()> = StreamMethod::server(
    "count",
    "Streams the numbers 1 to `n`, one every `every_ms` milliseconds, then answers null",
);

/// `lines`: takes strings from the client until its END, answers how many
/// (revision 2.2).
pub const LINES: StreamMethod<(), String, (), u64> = StreamMethod::client(
    "lines",
    "Takes strings until the client's END; answers how many it took",
);

/// `ticks`: the server's uptime in milliseconds, published once a second
/// (revision 2.2).
pub const TICKS: Topic<u64> = Topic::new(
    "ticks",
    "The server's uptime in milliseconds, once a second",
);

/// Publishes [`TICKS`] once a second, from now on (the service's start).
pub async fn publish_ticks(publisher: Publisher) {
    let started = tokio::time::Instant::now();
    let second = Duration::from_secs(1);
    let mut every = tokio::time::interval_at(started + second, second);
    loop {
        let at = every.tick().await;
        let uptime = at.duration_since(started).as_millis() as u64;
        publisher.publish(&TICKS, &uptime);
    }
}

/// Who the caller is, as the server's operating system reports it, read
/// once when it connected; a field is absent when the platform does not
/// tell it (uid and groups on Windows, SIDs and the token on Unix).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// The client's process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its user's name: `DOMAIN\user` on Windows, the account of its uid
    /// on Unix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its user id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Its primary group id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Its supplementary groups (Unix, where the kernel tells them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<u32>>,
    /// Its user SID (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The SIDs of its enabled groups (Windows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_sids: Vec<String>,
    /// Its logon session (Windows: the token's AuthenticationId).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logon_session: Option<u64>,
    /// Its terminal session id (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_id: Option<u32>,
    /// Its token's integrity level: untrusted, low, medium, medium-plus,
    /// high, system, protected or other (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity: Option<String>,
    /// That level's number (the label SID's RID, such as 8192 for medium).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrity_rid: Option<u32>,
    /// Whether its token is elevated (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elevated: Option<bool>,
    /// How far it lets the server act as it: identification (pipesvc's
    /// default) or impersonation (Windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impersonation: Option<String>,
    /// The executable it runs (best effort: see SECURITY.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
}

impl Identity {
    /// What `caller` tells.
    pub fn of(caller: &Caller) -> Identity {
        Identity {
            pid: caller.pid(),
            user: caller.account().map(str::to_owned),
            uid: caller.uid(),
            gid: caller.gid(),
            groups: caller.groups().map(<[u32]>::to_vec),
            sid: caller.user_sid().map(str::to_owned),
            group_sids: caller.group_sids().to_vec(),
            logon_session: caller.logon_session(),
            session_id: caller.session_id(),
            integrity: caller.integrity().map(|i| i.name().to_owned()),
            integrity_rid: caller.integrity().map(|i| i.0),
            elevated: caller.elevated(),
            impersonation: caller.impersonation_level().map(|l| l.name().to_owned()),
            executable: caller.executable().map(|p| p.display().to_string()),
        }
    }
}

/// `whoami`: the caller's identity as the server sees it.
pub const WHOAMI: Method<(), Identity> = Method::new(
    "whoami",
    "The caller's identity as the server sees it: user, groups, logon, token and process",
);

/// The typed half of `pipesvc serve`.
pub fn service() -> Service {
    Service::new("pipesvc", env!("CARGO_PKG_VERSION"), ())
        .method(&ECHO, |_, value, _| async move { Ok(value) })
        // Dropping the future (cancel, deadline) drops the timer with it.
        .method(&SLEEP, |_, sleep: Sleep, _| async move {
            tokio::time::sleep(Duration::from_millis(sleep.ms)).await;
            Ok(())
        })
        .method(&WHOAMI, |_, (), ctx: ConnectionContext| async move {
            Ok(Identity::of(ctx.caller()))
        })
        .topic(&TICKS)
        .stream_method(&COUNT, |_, count: Count, items, _, _| async move {
            let every = Duration::from_millis(count.every_ms);
            for i in 1..=count.n {
                if i > 1 && !every.is_zero() {
                    tokio::time::sleep(every).await;
                }
                items.send(&i).await?;
            }
            Ok(())
        })
        .stream_method(&LINES, |_, (), _, mut lines, _| async move {
            let mut taken = 0u64;
            while let Some(_line) = lines.next().await? {
                taken += 1;
            }
            Ok(taken)
        })
}

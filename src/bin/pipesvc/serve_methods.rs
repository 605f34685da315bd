//! The typed methods `pipesvc serve` offers beside the byte echo: `echo`,
//! `sleep` and `whoami` (protocol 2; `pipesvc methods` lists them).

use std::time::Duration;

use pipesvc::rpc::{Method, Service};
use pipesvc::server::ConnectionContext;
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

/// Who the caller is, as the server's operating system reports it; a
/// field is absent when the platform does not tell it (uid and gid on
/// Windows).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Identity {
    /// The client's process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Its user id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Its group id (Unix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// `whoami`: the caller's identity as the server sees it.
pub const WHOAMI: Method<(), Identity> = Method::new(
    "whoami",
    "The caller's pid (and uid and gid on Unix) as the server sees them",
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
            let peer = ctx.peer();
            Ok(Identity {
                pid: peer.pid,
                uid: peer.uid,
                gid: peer.gid,
            })
        })
}

//! Where and how a client command connects, and the one deadline all its
//! waits fit in.
//!
//! `--connect-timeout` bounds reaching the service (retrying while it is
//! busy or absent). `--timeout` starts when the connection is made and
//! bounds everything after it together: the handshake (the client's
//! `handshake_timeout`), each answer, writing to a service that does not
//! read, the close. So a command ends within `--connect-timeout` +
//! `--timeout`, whatever the service does.

use std::future::Future;
use std::time::Duration;

use clap::Args;
use pipesvc::client::{ClientOptions, NotificationPolicy, ServerIdentity};
use pipesvc::{Client, Endpoint, Error, Result};
use tokio::time::Instant;

use crate::identity::IdentityArgs;

/// The endpoint option of the client commands (call, methods, ping, status).
#[derive(Args, Debug, Clone)]
struct NameArg {
    /// Endpoint name: a bare name (`\\.\pipe\NAME` on Windows, a socket in
    /// a private per-user directory on Unix) or a full pipe name / socket
    /// path. Without it, PIPESVC_NAME if set (as for `serve`, so that one
    /// variable points both at the same endpoint), else `pipesvc`.
    #[arg(long = "name", short = 'n')]
    name: Option<String>,
}

/// The variable `serve` reads its endpoint from, and the clients too.
const NAME_VAR: &str = "PIPESVC_NAME";

impl NameArg {
    fn endpoint(&self) -> Result<Endpoint> {
        if let Some(name) = &self.name {
            return name.parse();
        }
        // Empty counts as unset, as it does for `serve`.
        match std::env::var(NAME_VAR) {
            Ok(name) if !name.is_empty() => name.parse().map_err(|e: Error| {
                Error::config(format!("environment variable {NAME_VAR}"), e.to_string())
            }),
            _ => "pipesvc".parse(),
        }
    }
}

/// Where and how a client command connects, and how long it may take.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    #[command(flatten)]
    name: NameArg,
    /// Seconds to keep trying to reach the service while it is busy or
    /// not there yet.
    #[arg(long, default_value_t = 5.0, value_parser = parse_seconds)]
    connect_timeout: f64,
    #[command(flatten)]
    identity: IdentityArgs,
    /// Seconds the command may take once connected: the handshake, every
    /// answer (to the last byte) and the close all fit in it, so the
    /// command ends within --connect-timeout + --timeout. Past it the
    /// command fails, saying what it was waiting for.
    #[arg(long, default_value_t = 10.0, value_parser = parse_timeout)]
    timeout: f64,
}

impl ClientArgs {
    /// Connects; the session's deadline is `--timeout` from the moment the
    /// connection was made.
    pub async fn connect(&self) -> Result<Session> {
        self.connect_with(false).await
    }

    /// [`connect`](Self::connect) with a client that reconnects (`watch`:
    /// its subscription carries on across a service restart).
    pub async fn connect_reconnecting(&self) -> Result<Session> {
        self.connect_with(true).await
    }

    async fn connect_with(&self, reconnect: bool) -> Result<Session> {
        let limit = Duration::from_secs_f64(self.timeout);
        let connect = Duration::from_secs_f64(self.connect_timeout);
        let options =
            session_options(connect, limit, self.identity.server_identity()?).reconnect(reconnect);
        let client = Client::connect_with(&self.name.endpoint()?, options).await?;
        Ok(Session {
            deadline: client.connected_at() + limit,
            limit,
            client,
        })
    }
}

/// The options of a command's clients: `connect` to reach the service,
/// then `limit` for any one wait after it (the handshake, an answer, the
/// close). Notifications are not read by any command: none is held.
pub fn client_options(
    connect: Duration,
    limit: Duration,
    identity: ServerIdentity,
) -> ClientOptions {
    ClientOptions::new()
        .connect_timeout(connect)
        .handshake_timeout(limit)
        .request_timeout(Some(limit))
        .close_timeout(limit)
        .server_identity(identity)
        .notification_policy(NotificationPolicy::Ignore)
}

/// [`client_options`] for a [`Session`]: its deadline, which starts
/// before any call, ends each call; the calls' own timeout is only a
/// backstop, later, so that the session's timeout (naming `--timeout`) is
/// the one reported, never a tie with it.
fn session_options(connect: Duration, limit: Duration, identity: ServerIdentity) -> ClientOptions {
    client_options(connect, limit, identity).request_timeout(Some(limit.saturating_mul(2)))
}

/// A connected client command: its client, and the deadline every wait of
/// the command fits in.
pub struct Session {
    client: Client,
    deadline: Instant,
    /// `--timeout`, which a timeout names.
    limit: Duration,
}

impl Session {
    /// The client, for what the command asks.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What is left of `--timeout`.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// `work` within the command's deadline; past it,
    /// [`Error::Timeout`] naming `--timeout` and `what` it waited for.
    pub async fn step<T>(
        &self,
        what: &'static str,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        tokio::time::timeout_at(self.deadline, work)
            .await
            .unwrap_or(Err(Error::Timeout(self.limit, what)))
    }

    /// Closes the connection within `--timeout` from now (a command that
    /// ran until interrupted is past its deadline); past it, aborts.
    pub async fn close_soon(self) {
        if tokio::time::timeout(self.limit, self.client.close())
            .await
            .is_err()
        {
            tracing::debug!("no time left to close gracefully; aborting the connection");
        }
    }

    /// Closes the connection within what is left of the deadline; past
    /// it, the connection is dropped (aborted) instead.
    pub async fn close(self) {
        if tokio::time::timeout_at(self.deadline, self.client.close())
            .await
            .is_err()
        {
            tracing::debug!("no time left to close gracefully; aborting the connection");
        }
    }
}

/// A number of seconds from 0 to a day (`--connect-timeout`: 0 tries once).
pub fn parse_seconds(text: &str) -> std::result::Result<f64, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.0..=86_400.0).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// A number of seconds above 0, up to a day (`--timeout`: nothing can be
/// answered in no time).
pub fn parse_timeout(text: &str) -> std::result::Result<f64, String> {
    match parse_seconds(text)? {
        secs if secs > 0.0 => Ok(secs),
        _ => Err(format!("{text:?} is not a number of seconds above 0")),
    }
}

//! The client's supervisor: the task that watches the current connection
//! and, when it is lost, publishes why and (with `reconnect`) connects
//! again in the background; and the first connect, which may wait for a
//! service that is not there yet.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::connection::Connection;
use super::notifications::Queue;
use super::pending::Pending;
use super::{ClientOptions, ConnectionState, Shared, Target};
use crate::error::{CloseReason, Error, Result};
use crate::protocol::ErrorCode;

/// First pause between two reconnect attempts; it doubles after each
/// failed attempt, up to [`RECONNECT_BACKOFF_MAX`].
pub const RECONNECT_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between two reconnect attempts.
pub const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The client's supervisor task: watches the current connection and, when
/// it is lost, publishes why and (with `reconnect`) connects again in the
/// background. It is the only task that reconnects, so callers waiting for
/// a connection all share one attempt's outcome. It holds no strong
/// reference to the client between attempts: it ends when the last clone
/// is dropped, or on close. Meanwhile it sends the connection's calls
/// their timeouts ([`Pending::expire_calls`]), until the last of them has
/// its answer once the client is closing.
pub(super) async fn supervise(
    shared: Weak<Shared>,
    mut pending: Arc<Pending>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = pending.unusable() => {}
            () = stop.cancelled() => return expire_until_idle(&pending).await,
            () = pending.expire_calls() => {}
        }
        let Some(client) = shared.upgrade() else {
            return;
        };
        let reason = pending.end_reason().unwrap_or(CloseReason::Lost);
        let reconnecting = client.options.reconnect;
        tracing::debug!(%reason, reconnecting, "connection lost");
        client.publish(ConnectionState::Lost {
            reason,
            reconnecting,
        });
        if !reconnecting {
            // After a GOODBYE the server still answers the calls in flight,
            // and their NOTIFYs come first: the stream ends only with the
            // connection (or on close, which ends it itself).
            let notifications = client.notifications.clone();
            drop(client);
            tokio::select! {
                () = pending.gone() => notifications.end(),
                () = stop.cancelled() => expire_until_idle(&pending).await,
                () = pending.expire_calls() => {}
            }
            return;
        }
        // A reconnect completes its handshake before calls use it (see
        // `ClientOptions::send_first`): a refusal is then tried again
        // with the pauses below, not passed on to the calls waiting.
        let options = client.options.clone().send_first(false);
        let target = client.target.clone();
        let queue = client.notifications.clone();
        drop(client);
        // Calls still waiting on the old connection (after a GOODBYE the
        // server answers them) keep their timeouts while the next one is
        // made, and after.
        let old = pending.clone();
        tokio::spawn(async move { expire_until_idle(&old).await }.in_current_span());
        match reconnect(&shared, &target, &options, &queue, &stop).await {
            Some(next) => pending = next,
            None => return,
        }
    }
}

/// Times out the calls still waiting on a connection being closed, until
/// none waits (a close waits for their answers, within its own limit).
async fn expire_until_idle(pending: &Pending) {
    tokio::select! {
        () = pending.wait_idle() => {}
        () = pending.gone() => {}
        () = pending.expire_calls() => {}
    }
}

/// Connects again until it succeeds, with a pause growing from
/// [`RECONNECT_BACKOFF_MIN`] to [`RECONNECT_BACKOFF_MAX`] between attempts;
/// `None` if the client was closed or dropped meanwhile.
async fn reconnect(
    shared: &Weak<Shared>,
    target: &Target,
    options: &ClientOptions,
    queue: &Arc<Queue>,
    stop: &CancellationToken,
) -> Option<Arc<Pending>> {
    let mut pause = RECONNECT_BACKOFF_MIN;
    loop {
        let attempt = target.open(options, queue);
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = stop.cancelled() => return None,
        };
        match outcome {
            Ok(fresh) => return shared.upgrade()?.install(fresh),
            Err(e) => tracing::warn!(error = %e, retry_in = ?pause, "reconnect failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = stop.cancelled() => return None,
        }
        pause = (pause * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// The first connection. With [`ClientOptions::wait_for_service`], a
/// service that is not there yet is tried again, with the reconnect's
/// pauses, until that time has passed.
pub(super) async fn open_first(
    target: &Target,
    options: &ClientOptions,
    queue: &Arc<Queue>,
) -> Result<Connection> {
    let deadline = Instant::now() + options.wait_for_service;
    let mut pause = RECONNECT_BACKOFF_MIN;
    loop {
        let err = match target.open(options, queue).await {
            Ok(connection) => return Ok(connection),
            Err(err) => err,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !not_there_yet(&err) {
            return Err(err);
        }
        tracing::debug!(error = %err, retry_in = ?pause, "waiting for the service");
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(RECONNECT_BACKOFF_MAX);
    }
}

/// Whether `err` says the service is not there yet (absent, starting,
/// busy, going away), which waiting can fix; not a bad setting, the wrong
/// server, a refusal for good or a broken protocol.
fn not_there_yet(err: &Error) -> bool {
    use std::io::ErrorKind;
    match err {
        Error::Connect { .. } | Error::Timeout(..) => true,
        Error::ConnectionClosed(reason) => match reason {
            CloseReason::ServerError { code, .. } => {
                matches!(*code, ErrorCode::OVERLOADED | ErrorCode::SHUTTING_DOWN)
            }
            CloseReason::EofDuringHandshake
            | CloseReason::Eof
            | CloseReason::Reset(_)
            | CloseReason::Goodbye(_) => true,
            _ => false,
        },
        Error::Io(e) => matches!(
            e.kind(),
            ErrorKind::NotFound
                | ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::WouldBlock
                | ErrorKind::TimedOut
        ),
        _ => false,
    }
}

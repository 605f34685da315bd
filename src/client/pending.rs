//! The table of requests waiting for an answer, and the connection's fate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::{oneshot, Notify};

use crate::error::{CloseReason, Error, Result};

type Waiter = oneshot::Sender<Result<Bytes>>;

/// Shared by the client handles and the reader task.
#[derive(Debug, Default)]
pub(super) struct Pending {
    state: Mutex<State>,
    /// Signalled whenever the table becomes empty or the connection ends.
    idle: Notify,
    /// Signalled when the connection stops taking new requests.
    unusable: Notify,
}

#[derive(Debug, Default)]
struct State {
    waiters: HashMap<u32, Waiter>,
    next_id: u32,
    /// Set once no new request may start: why.
    refusing: Option<CloseReason>,
    /// Set once the connection is gone: why.
    closed: Option<CloseReason>,
}

impl Pending {
    fn state(&self) -> MutexGuard<'_, State> {
        super::lock(&self.state)
    }

    /// Reserves a fresh id (never 0, never one in use) for a new request.
    pub(super) fn register(
        self: &Arc<Self>,
    ) -> Result<(Registration, oneshot::Receiver<Result<Bytes>>)> {
        let mut state = self.state();
        if let Some(reason) = state.closed.as_ref().or(state.refusing.as_ref()) {
            return Err(Error::ConnectionClosed(reason.clone()));
        }
        let id = loop {
            state.next_id = state.next_id.wrapping_add(1);
            let id = state.next_id;
            if id != 0 && !state.waiters.contains_key(&id) {
                break id;
            }
        };
        let (tx, rx) = oneshot::channel();
        state.waiters.insert(id, tx);
        let registration = Registration {
            pending: self.clone(),
            id,
        };
        Ok((registration, rx))
    }

    /// Delivers the answer to request `id`; `false` if nobody waits for it.
    pub(super) fn complete(&self, id: u32, answer: Result<Bytes>) -> bool {
        let waiter = {
            let mut state = self.state();
            let waiter = state.waiters.remove(&id);
            if state.waiters.is_empty() {
                self.idle.notify_waiters();
            }
            waiter
        };
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(answer);
                true
            }
            None => false,
        }
    }

    /// Requests waiting for their answers.
    pub(super) fn waiting(&self) -> usize {
        self.state().waiters.len()
    }

    /// No new requests from now on (the server said GOODBYE, or the
    /// client is closing); those in flight still get their answers.
    pub(super) fn refuse_new(&self, reason: CloseReason) {
        self.state().refusing.get_or_insert(reason);
        self.unusable.notify_waiters();
    }

    /// The connection is gone: every waiting request fails with `reason`.
    pub(super) fn fail_all(&self, reason: CloseReason) {
        let waiters: Vec<Waiter> = {
            let mut state = self.state();
            state.closed.get_or_insert(reason.clone());
            state.waiters.drain().map(|(_, w)| w).collect()
        };
        for waiter in waiters {
            let _ = waiter.send(Err(Error::ConnectionClosed(reason.clone())));
        }
        self.idle.notify_waiters();
        self.unusable.notify_waiters();
    }

    /// Whether new requests may still start (no GOODBYE, not closing, not gone).
    pub(super) fn accepts_requests(&self) -> bool {
        let state = self.state();
        state.closed.is_none() && state.refusing.is_none()
    }

    /// Why the connection is gone, if it is.
    pub(super) fn closed_reason(&self) -> Option<CloseReason> {
        self.state().closed.clone()
    }

    /// Why new requests are refused (the connection is gone, or going).
    pub(super) fn end_reason(&self) -> Option<CloseReason> {
        let state = self.state();
        state.closed.clone().or_else(|| state.refusing.clone())
    }

    /// Waits until the connection no longer takes new requests.
    pub(super) async fn unusable(&self) {
        loop {
            let notified = self.unusable.notified();
            if !self.accepts_requests() {
                return;
            }
            notified.await;
        }
    }

    /// Waits until no request is waiting or the connection is gone.
    pub(super) async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            {
                let state = self.state();
                if state.waiters.is_empty() || state.closed.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// A request's place in the table; dropping it (for example when the
/// caller stops waiting) frees the id.
#[derive(Debug)]
pub(super) struct Registration {
    pending: Arc<Pending>,
    pub(super) id: u32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        // No-op when the answer already arrived.
        let mut state = self.pending.state();
        state.waiters.remove(&self.id);
        if state.waiters.is_empty() {
            self.pending.idle.notify_waiters();
        }
    }
}

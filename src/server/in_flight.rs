//! The requests one connection is handling.
//!
//! Handler futures run inside the connection's own task (as in hyper's
//! HTTP/1 server): no task is spawned and no channel is crossed per
//! request, and every answer that is ready goes out in the connection's
//! next write. Handlers still run concurrently with each other; CPU-heavy
//! work belongs in `spawn_blocking` or a task of its own.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context as TaskContext, Poll};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use super::{Context, Handler, ServiceError};
use crate::protocol::{ErrorCode, Frame};

/// Requests started and not yet answered. `F` is the future of one request,
/// as made by [`call_handler`]; it yields the request's id and its answer.
pub(super) struct InFlight<F> {
    running: FuturesUnordered<F>,
    ids: HashSet<u32>,
    limit: usize,
}

impl<F: Future<Output = (u32, Frame)>> InFlight<F> {
    pub(super) fn new(limit: usize) -> InFlight<F> {
        InFlight {
            running: FuturesUnordered::new(),
            ids: HashSet::new(),
            limit,
        }
    }

    /// Whether another request may start.
    pub(super) fn has_room(&self) -> bool {
        self.running.len() < self.limit
    }

    pub(super) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Starts `request`, whose id is `id`; refuses an id still in flight.
    pub(super) fn start(&mut self, id: u32, request: F) -> Result<(), u32> {
        if !self.ids.insert(id) {
            return Err(id);
        }
        self.running.push(request);
        Ok(())
    }

    /// The next answer that is ready. Its id is free again from here on:
    /// the client may reuse it as soon as it has the answer.
    pub(super) fn poll_answer(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Frame>> {
        self.running.poll_next_unpin(cx).map(|done| {
            done.map(|(id, answer)| {
                self.ids.remove(&id);
                answer
            })
        })
    }

    /// Drops every running request and answers each with ERROR `shutting
    /// down`.
    pub(super) fn cancel(&mut self) -> impl Iterator<Item = Frame> + '_ {
        self.running.clear();
        self.ids.drain().map(|id| {
            let why = "the server shut down before the request finished";
            Frame::error(id, ErrorCode::SHUTTING_DOWN, why)
        })
    }

    /// Drops every running request unanswered (the connection is unusable).
    pub(super) fn abort(&mut self) {
        self.running.clear();
        self.ids.clear();
    }
}

/// Runs the handler for one request and makes its answer: the response,
/// the handler's error, or ERROR `handler failed` if it panicked.
pub(super) async fn call_handler<H: Handler>(
    handler: &H,
    id: u32,
    request: Bytes,
    ctx: Context,
) -> (u32, Frame) {
    let max_payload = ctx.max_payload();
    let outcome = AssertUnwindSafe(handler.call(request, ctx))
        .catch_unwind()
        .await;
    (id, answer(id, outcome, max_payload))
}

/// The frame that answers request `id`.
fn answer(
    id: u32,
    outcome: std::thread::Result<Result<Bytes, ServiceError>>,
    max_payload: usize,
) -> Frame {
    match outcome {
        Ok(Ok(body)) if body.len() > max_payload => {
            tracing::error!(id, len = body.len(), "response too large for one frame");
            Frame::error(
                id,
                ErrorCode::FRAME_TOO_LARGE,
                &format!(
                    "the response of {} bytes exceeds the maximum of {max_payload}",
                    body.len()
                ),
            )
        }
        Ok(Ok(body)) => Frame::response(id, body),
        Ok(Err(err)) => Frame::error(id, err.code(), err.message()),
        Err(panic) => {
            tracing::error!(id, panic = panic_message(&panic), "handler panicked");
            Frame::error(id, ErrorCode::HANDLER_FAILED, "the handler panicked")
        }
    }
}

/// What a panic said, for the log.
pub(super) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-string panic payload)")
}

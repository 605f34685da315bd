//! Writing to the server.
//!
//! A caller whose frame is the only one in flight writes it itself, at
//! once: no other task runs between `request` and the system call, which
//! is what a lone request's latency is made of. When frames are already
//! being written, or other requests are waiting for answers (their callers
//! will send again as soon as the answers arrive), the frame is queued in
//! the shared [`Outbox`] instead, and the flusher task writes everything
//! queued in one write (the task starts the first time a frame is queued:
//! a connection that asks once and goes never spawns it). Frames are never
//! reordered: whoever writes, writes the outbox from the front, under one
//! lock.
//!
//! The outbox is bounded in bytes: a caller waits for room once 64 KiB
//! (`COALESCE_LIMIT`) are queued, so that at most 64 KiB plus one frame
//! (no larger than the server's announced maximum) wait to be written. A
//! server that stops reading therefore holds up callers, who are bounded
//! by their deadline, not the client's memory.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};

use tokio::io::{AsyncWriteExt, WriteHalf};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::lock;
use super::pending::{within, Expiry, Pending};
use crate::error::{CloseReason, Error};
use crate::frame_io::Outbox;
use crate::protocol::{Frame, FrameCodec};
use crate::transport::Generic;

type Io = WriteHalf<Generic>;

#[derive(Debug)]
pub(super) struct Writer {
    state: Mutex<State>,
    pending: Arc<Pending>,
    /// Wakes the flusher: frames wait in the outbox, or it is time to close.
    work: Notify,
    /// Wakes callers waiting for room in the outbox.
    room: Notify,
    /// This writer, for the flusher task it starts the first time a frame
    /// has to wait (see [`Writer::start_flusher`]).
    me: Weak<Writer>,
    /// Where, and in which span, the flusher runs.
    runtime: tokio::runtime::Handle,
    span: tracing::Span,
}

#[derive(Debug)]
struct State {
    /// `None` once the write side is shut down.
    io: Option<Io>,
    outbox: Outbox,
    /// The flusher owns the writing until the outbox is empty.
    flushing: bool,
    /// No new frames: write what is queued, then shut down.
    closing: bool,
    /// Set once a write failed: why.
    failed: Option<CloseReason>,
    /// The flusher task, once started: a connection whose callers always
    /// wrote their frames themselves (one that asks once and goes) never
    /// starts it.
    flusher: Option<JoinHandle<()>>,
}

impl State {
    /// Why no frame can be queued now, if none can.
    fn refusal(&self) -> Option<CloseReason> {
        if let Some(why) = &self.failed {
            return Some(why.clone());
        }
        (self.closing || self.io.is_none()).then_some(CloseReason::Lost)
    }

    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Some(io) => self.outbox.poll_write_to(Pin::new(io), cx),
            None => Poll::Ready(Err(std::io::ErrorKind::NotConnected.into())),
        }
    }
}

impl Writer {
    /// A writer for `io`, on the current runtime; its flusher task starts
    /// when a frame first has to wait for it.
    pub(super) fn new(io: Io, codec: FrameCodec, pending: Arc<Pending>) -> Arc<Writer> {
        Arc::new_cyclic(|me| Writer {
            state: Mutex::new(State {
                io: Some(io),
                outbox: Outbox::new(codec),
                flushing: false,
                closing: false,
                failed: None,
                flusher: None,
            }),
            pending,
            work: Notify::new(),
            room: Notify::new(),
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
            span: tracing::Span::current(),
        })
    }

    /// Hands the outbox to the flusher (`flushing`), starting its task if
    /// this is the first time; the caller then wakes it (`work`).
    fn start_flusher(&self, state: &mut State) {
        state.flushing = true;
        if state.flusher.is_some() {
            return;
        }
        // Gone only while the writer is being dropped: nobody is left to
        // write for.
        if let Some(writer) = self.me.upgrade() {
            let flushing = writer.flush_loop().instrument(self.span.clone());
            state.flusher = Some(self.runtime.spawn(flushing));
        }
    }

    /// The flusher task, if it was started (and is not taken yet): the
    /// caller bounds the last writes of a dropped connection with it.
    pub(super) fn take_flusher(&self) -> Option<JoinHandle<()>> {
        self.state().flusher.take()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends `frame`: writes it now if the connection is quiet, else queues
    /// it for the flusher. Waits while the outbox is full (the server is
    /// not reading); fails with the reason once the connection is unusable.
    pub(super) async fn send(&self, frame: Frame) -> Result<(), CloseReason> {
        match self.send_within(frame, None).await {
            Ok(sent) => sent,
            Err(_) => unreachable!("only a deadline gives up"),
        }
    }

    /// [`Writer::send`], giving up with `expiry`'s timeout (the outer
    /// `Err`) if the outbox has no room for the frame by its deadline.
    // `Connection::call` writes these lines out in its own future: a call
    // through this `async fn`, or through a `poll_fn` future that keeps the
    // wait for room, cost 60 to 70 instructions more a request.
    pub(super) async fn send_within(
        &self,
        frame: Frame,
        expiry: Option<Expiry>,
    ) -> Result<Result<(), CloseReason>, Error> {
        let mut frame = Some(frame);
        // Most sends find room: the wait for room (a `Notified` enabled,
        // then dropped: two locks of the Notify's waiter list, 300
        // instructions a call) is armed only once the outbox was full.
        let sent = poll_fn(|cx| Poll::Ready(self.try_send(cx, &mut frame))).await;
        if let Some(result) = sent {
            return Ok(result);
        }
        // Boxed, with its timer: kept out of every call's future, which
        // its caller moves (a memcpy of all of it).
        Box::pin(self.send_when_room(frame, expiry)).await
    }

    /// [`Writer::send_within`] once the outbox was found full: waits for
    /// room, until `expiry`.
    pub(super) async fn send_when_room(
        &self,
        mut frame: Option<Frame>,
        expiry: Option<Expiry>,
    ) -> Result<Result<(), CloseReason>, Error> {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            // Tried again once armed: room made since the first try (or
            // from now on) wakes this wait, so none is missed.
            let sent = poll_fn(|cx| Poll::Ready(self.try_send(cx, &mut frame))).await;
            match sent {
                Some(result) => return Ok(result),
                None => {
                    let room_made = async {
                        room.as_mut().await;
                        Ok(())
                    };
                    within(expiry, room_made).await?;
                }
            }
        }
    }

    /// One attempt of [`Writer::send`]; `None` if the outbox is full.
    pub(super) fn try_send(
        &self,
        cx: &mut Context<'_>,
        frame: &mut Option<Frame>,
    ) -> Option<Result<(), CloseReason>> {
        let mut state = self.state();
        if let Some(why) = state.refusal() {
            return Some(Err(why));
        }
        if !state.outbox.has_room() {
            return None;
        }
        let frame = frame.take().expect("a frame is sent once");
        if let Err(e) = state.outbox.push(frame) {
            return Some(Err(CloseReason::Protocol(e.to_string())));
        }
        if state.flushing {
            return Some(Ok(()));
        }
        if self.pending.waiting() <= 1 {
            return Some(self.write_now(state, cx));
        }
        self.hand_to_flusher(state);
        Some(Ok(()))
    }

    /// Writes the outbox on the caller's turn (nobody is writing it:
    /// `flushing` is false); what the socket does not take now goes out
    /// with the flusher when the server reads. `Err`: the write failed,
    /// which is the connection's failure ([`Writer::fail`]).
    fn write_now(
        &self,
        mut state: MutexGuard<'_, State>,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        match state.poll_write(cx) {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(e)) => {
                drop(state);
                Err(self.fail(e))
            }
            Poll::Pending => {
                self.hand_to_flusher(state);
                Ok(())
            }
        }
    }

    /// Hands the outbox to the flusher (starting its task the first
    /// time) and wakes it, the lock released first.
    fn hand_to_flusher(&self, mut state: MutexGuard<'_, State>) {
        self.start_flusher(&mut state);
        drop(state);
        self.work.notify_one();
    }

    /// Holds `frame` (the client's HELLO, sending first) in the outbox
    /// without writing it: the next frame sent goes out with it, in one
    /// write, or [`Writer::write_held`] writes it alone.
    pub(super) fn hold(&self, frame: Frame) {
        let pushed = self.state().outbox.push(frame);
        debug_assert!(pushed.is_ok(), "a HELLO fits any codec");
    }

    /// Writes what [`Writer::hold`] left in the outbox, if nobody has
    /// written it since (nor is writing it): at once if the socket takes
    /// it, else by the flusher. A write that fails is the connection's
    /// failure ([`Writer::failure`]).
    pub(super) fn write_held(&self, cx: &mut Context<'_>) {
        let state = self.state();
        if state.flushing || state.outbox.is_empty() || state.refusal().is_some() {
            return;
        }
        // A failure is recorded by `write_now`; the reader learns it there.
        let _ = self.write_now(state, cx);
    }

    /// Queues `frame` without waiting, for the flusher to write; `false`
    /// if there is no room (or the connection is unusable).
    pub(super) fn queue(&self, frame: Frame) -> bool {
        let state = self.state();
        state.outbox.has_room() && self.queue_for_flusher(state, frame)
    }

    /// Queues a CANCEL or a CREDIT without waiting, even past the outbox's
    /// bound: a CANCEL frees a slot on the server and a CREDIT lets a
    /// stream go on, so neither may be lost to a full outbox. A CANCEL is
    /// 10 bytes and follows a request that was sent; a CREDIT is 14 and
    /// follows half a window consumed by the application: both are bounded
    /// by what the client did. Dropped once nothing can be written (the
    /// connection is going; the server drops its requests).
    pub(super) fn queue_control(&self, frame: Frame) {
        self.queue_for_flusher(self.state(), frame);
    }

    /// Pushes `frame` into the outbox whatever its fill, for the flusher
    /// (woken unless it is writing already); `false` if the connection
    /// takes no more frames or the frame is over the codec's maximum.
    fn queue_for_flusher(&self, mut state: MutexGuard<'_, State>, frame: Frame) -> bool {
        if state.refusal().is_some() || state.outbox.push(frame).is_err() {
            return false;
        }
        if !state.flushing {
            self.hand_to_flusher(state);
        }
        true
    }

    /// Frames queued from now on are held to `codec`'s maximum: the
    /// server's, once its HELLO is read on a connection that sent first
    /// (until then, frames are held to the smallest maximum a server may
    /// announce).
    pub(super) fn set_codec(&self, codec: FrameCodec) {
        self.state().outbox.set_codec(codec);
    }

    /// Why writing failed, if it did.
    pub(super) fn failure(&self) -> Option<CloseReason> {
        self.state().failed.clone()
    }

    /// No new frames from now on: the flusher writes what is queued, then
    /// shuts the write side down.
    pub(super) fn close(&self) {
        let mut state = self.state();
        state.closing = true;
        if state.flusher.is_none() {
            self.start_flusher(&mut state);
        }
        drop(state);
        self.work.notify_one();
        self.room.notify_waiters();
    }

    /// [`Writer::close`] when nothing is queued or being written: the
    /// write half is dropped here, with no flusher to wake and no shut
    /// down (the stream closes once the read half is dropped too, and the
    /// server reads its end). `false`, changing nothing, if frames are
    /// still to be written: the flusher's job, after [`Writer::close`].
    pub(super) fn close_if_idle(&self) -> bool {
        let state = self.state();
        if state.flushing || !state.outbox.is_empty() {
            return false;
        }
        self.stop(state);
        true
    }

    /// Stops writing at once: what is queued is dropped with the write
    /// half, and callers waiting for room fail with `why`.
    pub(super) fn abort(&self, why: CloseReason) {
        let mut state = self.state();
        state.failed.get_or_insert(why);
        self.stop(state);
    }

    /// No more frames, and the write half dropped with what is queued; the
    /// flusher (if started) is stopped, and callers waiting for room learn
    /// it.
    fn stop(&self, mut state: MutexGuard<'_, State>) {
        state.closing = true;
        state.io.take();
        let flusher = state.flusher.take();
        drop(state);
        if let Some(flusher) = flusher {
            flusher.abort();
        }
        self.room.notify_waiters();
    }

    /// Waits until the write side is shut down (after [`Writer::close`])
    /// or writing failed.
    pub(super) async fn closed(&self) {
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let state = self.state();
                if state.io.is_none() || state.failed.is_some() {
                    return;
                }
            }
            room.await;
        }
    }

    /// Records a failed write and fails every waiting request; the reason.
    fn fail(&self, err: std::io::Error) -> CloseReason {
        let why = CloseReason::io(err);
        self.state().failed.get_or_insert(why.clone());
        self.room.notify_waiters();
        // The reader may not have seen the end yet: without this, new calls
        // would still pick this connection. But during a handshake in the
        // background (the client sent first), the reader decides: a server
        // that refused us may have closed before our frames reached it, and
        // its refusal, still readable, says more than the failed write.
        if !self.pending.handshake_in_progress() {
            self.pending.fail_all(why.clone());
        }
        why
    }

    /// The flusher task: writes what callers queued, coalesced.
    async fn flush_loop(self: Arc<Self>) {
        loop {
            self.work.notified().await;
            if self.pending.waiting() > 1 {
                // The callers about to queue a frame (say, the tasks woken
                // by the answers just read) get to run first, so that their
                // frames go out in this write instead of one write each.
                tokio::task::yield_now().await;
            }
            let written = poll_fn(|cx| {
                let mut state = self.state();
                let written = std::task::ready!(state.poll_write(cx));
                state.flushing = false;
                Poll::Ready(written.map(|()| state.closing))
            })
            .await;
            self.room.notify_waiters();
            match written {
                Ok(false) => {}
                Ok(true) => return self.shut_down().await,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    async fn shut_down(&self) {
        let io = self.state().io.take();
        if let Some(mut io) = io {
            let _ = io.shutdown().await;
        }
        self.room.notify_waiters();
    }
}

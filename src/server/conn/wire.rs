//! The connection's I/O: frames read from the client ([`Input`]), frames
//! written to it through an [`Outbox`] under the write deadline, and the
//! counts of what crossed the wire.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context as TaskContext, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::time::{Instant, Sleep};

use super::super::in_flight::error_that_fits;
use super::super::input::{Input, READ_BUFFER_START};
use super::super::stats::Tally;
use super::super::{Config, Shared};
use super::turn::Event;
use super::FLUSH_TIMEOUT;
use crate::frame_io::Outbox;
use crate::log_limit::limited;
use crate::protocol::{ErrorCode, ErrorPayload, Frame, FrameCodec, Kind};
use crate::transport::ServerIo;

/// A read buffer larger than this is given back once it is empty.
const READ_BUFFER_KEEP: usize = 64 * 1024;

/// The connection's stream: what is read from it, and what waits to be
/// written to it.
pub(super) struct Wire<S> {
    pub(super) input: Input<S>,
    pub(super) outbox: Outbox,
    write_timeout: Duration,
    /// The largest payload a frame may carry: what is over is made to fit.
    max_payload: usize,
    /// Armed while a write waits for the client: the bytes queued when it
    /// was armed must be written by its deadline.
    drain: Option<Drain>,
    /// Nothing more is sent: an ERROR for the connection went out.
    sealed: bool,
    /// What this connection did since it last reported to the server.
    pub(super) tally: Tally,
    shared: Arc<Shared>,
}

/// The write deadline: the stream position to reach, and by when.
struct Drain {
    target: u64,
    timer: Pin<Box<Sleep>>,
}

impl<S: ServerIo> Wire<S> {
    pub(super) fn new(stream: S, config: &Config, shared: Arc<Shared>) -> Wire<S> {
        let codec = FrameCodec::new(config.max_frame_len);
        Wire {
            input: Input::new(stream, config),
            outbox: Outbox::new(codec),
            write_timeout: config.write_timeout,
            max_payload: config.max_payload(),
            drain: None,
            sealed: false,
            tally: Tally::default(),
            shared,
        }
    }

    pub(super) fn stream(&self) -> &S {
        self.input.get_ref()
    }

    /// Adds this connection's counts to the server's.
    pub(super) fn publish(&mut self) {
        self.shared.stats.publish(&mut self.tally);
    }

    /// Queues `frame` for the next write, made to fit the frame limit if
    /// it is over ([`fit`]). Nothing follows an ERROR for the connection.
    pub(super) fn push(&mut self, frame: Frame) {
        if self.sealed {
            return;
        }
        self.sealed = frame.kind == Kind::Error && frame.id == 0;
        let frame = match frame.payload.len() > self.max_payload {
            true => fit(frame, self.max_payload),
            false => frame,
        };
        self.tally.sent(&frame);
        if let Err(e) = self.outbox.push(frame) {
            // Only a frame `fit` cannot shorten (a NOTIFY, a PONG: checked
            // or echoing what fit before they get here).
            limited!(error, error = %e, "a frame over the limit");
        }
    }

    /// The next frame from the client, if one is there.
    pub(super) fn poll_read(&mut self, cx: &mut TaskContext<'_>) -> Poll<Event> {
        let read = ready!(self.input.poll_next_unpin(cx));
        Poll::Ready(match read {
            Some(Ok(frame)) => {
                if frame.kind == Kind::Status {
                    // Its answer counts what this connection did before it.
                    self.publish();
                }
                self.tally.bytes_in += frame.wire_len() as u64;
                Event::Frame(frame)
            }
            Some(Err(e)) => Event::ReadFailed(e),
            None => Event::Eof,
        })
    }

    /// Replaces an empty read buffer grown past [`READ_BUFFER_KEEP`] (by a
    /// large frame) with a small one: a connection keeps what its usual
    /// traffic needs, not the most it ever received.
    pub(super) fn trim_read_buffer(&mut self) {
        let buffer = self.input.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > READ_BUFFER_KEEP {
            *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        }
    }

    /// Gives an empty read buffer back: the connection has been quiet for
    /// a tick (see [`Input::give_back_read_buffer`]).
    pub(super) fn give_back_read_buffer(&mut self) {
        self.input.give_back_read_buffer();
    }

    /// Whether a whole frame waits in the read buffer (see
    /// [`Input::holds_whole_frame`]).
    pub(super) fn holds_whole_frame(&self) -> bool {
        self.input.holds_whole_frame()
    }

    /// Whether the connection holds a read buffer: then its tick runs, to
    /// give it back once the connection is quiet.
    pub(super) fn holds_read_buffer(&self) -> bool {
        self.input.holds_read_buffer()
    }

    /// Writes what the outbox holds, once (no deadline).
    pub(super) fn poll_write_once(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let stream = Pin::new(self.input.get_mut());
        let written = self.outbox.poll_write_to(stream, cx);
        if written.is_ready() {
            self.drain = None;
        }
        written
    }

    /// The write deadline of a write that has to wait: fails if the
    /// client does not take the bytes queued when a write first had to
    /// wait within the write timeout (then the same for what is queued by
    /// then, and so on). `unmoved` is what is queued for the connection
    /// and not in the outbox yet: the deadline covers it too.
    pub(super) fn poll_deadline(
        &mut self,
        cx: &mut TaskContext<'_>,
        unmoved: usize,
    ) -> Poll<io::Result<()>> {
        let timeout = self.write_timeout;
        let position = self.outbox.written();
        let queued_end = position + (self.outbox.len() + unmoved) as u64;
        let drain = self.drain.get_or_insert_with(|| Drain {
            target: queued_end,
            timer: Box::pin(tokio::time::sleep(timeout)),
        });
        if position >= drain.target {
            // What was queued went out in time: the same for what is now.
            drain.target = queued_end;
            drain.timer.as_mut().reset(Instant::now() + timeout);
        }
        ready!(drain.timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client did not take what was queued for it within {timeout:?}"),
        )))
    }

    /// Closes the stream after the last frames were written (`written`),
    /// so that the client reads them and then the end; a client that did
    /// not take them in time is cut off.
    pub(super) async fn close(self, written: io::Result<()>) {
        let stream = self.input.into_inner();
        match written {
            Ok(()) => stream.close_within(FLUSH_TIMEOUT).await,
            Err(e) => {
                tracing::debug!(error = %e, "write failed; cutting the client off");
                stream.cut_within(FLUSH_TIMEOUT).await;
            }
        }
    }

    /// Stops writing to a client that is gone or does not read (what is
    /// queued is dropped), and closes as gently as the stream allows.
    pub(super) async fn cut(mut self) {
        self.publish();
        self.input.into_inner().cut_within(FLUSH_TIMEOUT).await;
    }

    /// Drops the stream of a client that has shut it both ways (what is
    /// queued is dropped: nobody would read it). On a socket, a shut down
    /// and a drain would only find the end already found; a pipe is
    /// disconnected, as when a client is cut off.
    pub(super) fn drop_stream(mut self) {
        self.publish();
        self.input.into_inner().disconnect();
    }
}

/// `frame`, over the largest payload (`max_payload`), made to fit it: an
/// ERROR's message is cut (between two characters), an answer becomes
/// ERROR `frame too large`, so that every request still gets its one
/// answer and every ERROR is read. The smallest frame limit a server
/// accepts holds every ERROR code with some of its message.
pub(super) fn fit(frame: Frame, max_payload: usize) -> Frame {
    match frame.kind {
        Kind::Error => {
            let error = ErrorPayload::decode(&frame.payload).expect("the server's own ERROR");
            error_that_fits(frame.id, error.code, &error.message, max_payload)
        }
        Kind::Response => {
            limited!(
                error,
                id = frame.id,
                len = frame.payload.len(),
                "an answer over the limit"
            );
            let why = "the answer exceeds the maximum frame length";
            error_that_fits(frame.id, ErrorCode::FRAME_TOO_LARGE, why, max_payload)
        }
        _ => frame,
    }
}

//! The server's input side: frames read from one client, bounded in bytes
//! and in time.
//!
//! [`Input`] wraps the codec's reader and adds what only a server needs:
//!
//! - **Before the handshake** only frames up to [`HANDSHAKE_MAX_FRAME_LEN`]
//!   are accepted (a client's HELLO is 12 bytes), so a header announcing a
//!   large frame before HELLO commits nothing.
//! - **The server-wide budget** ([`MemoryBudget`]) bounds the bytes that
//!   partially received frames hold, with everything else clients make the
//!   server hold (`server/budget.rs`): a connection whose frame would need
//!   more than is left gets ERROR `overloaded`. Only a frame's growth past
//!   the plain read buffer (8 KiB per connection) is charged, from the
//!   moment its buffer grows for it until the frame is complete (its bytes
//!   then belong to its request, charged again as such) or the connection
//!   ends.
//! - **A frame deadline**: once part of a frame is here and the server
//!   waits for the rest, the rest must arrive within the frame timeout, or
//!   the connection gets ERROR `timed out`.
//!
//! The buffer itself grows with the bytes that arrive and fallibly (see
//! [`crate::protocol::FrameCodec`]).
//!
//! **An idle connection holds no read buffer.** A connection that waits
//! for the client with nothing buffered drops its buffer and waits for the
//! client's next byte with a one-byte read into the stack; only then does
//! it make a buffer again. It does so at once the first [`BUSY_WAITS`]
//! times it waits (a connection that says HELLO, makes a call or two and
//! waits, as most do), so that a storm of such
//! connections never holds their buffers at once; a busier connection
//! keeps its buffer between requests, allocating nothing per request,
//! until a whole tick of its clock (at most a second) passes without a
//! request ([`Input::give_back_read_buffer`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{Stream, StreamExt};
use tokio::io::ReadBuf;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::{Decoder, FramedRead};

use super::budget::MemoryBudget;
use super::waiting::set_timer;
use super::Config;
use crate::protocol::{CodecError, Frame, FrameCodec, KeptBuffer, PROTOCOL_VERSION, READ_CHUNK};
use crate::transport::ServerIo;

/// The size of a read buffer made for a connection (tokio-util's
/// `FramedRead` starts with as much).
pub(super) const READ_BUFFER_START: usize = READ_CHUNK;

/// The largest `length` the server accepts before it has accepted the
/// client's HELLO, or its `max_frame_len` if that is smaller. A v1 HELLO
/// has `length` 12; the rest leaves room for the extensions later
/// versions may append.
pub const HANDSHAKE_MAX_FRAME_LEN: u32 = 256;

/// The codec with the server's limits: the handshake's small maximum, then
/// the configured one; every growth for a frame charged to the budget.
struct InputCodec {
    codec: FrameCodec,
    max_frame_len: u32,
    budget: Arc<MemoryBudget>,
    /// What the read buffer holds of the budget: the frame being
    /// received, or between frames the allocation kept from the last one.
    charged: usize,
    /// The last large frame's allocation, for the next one. While that
    /// frame's payload lives, its request is charged for it; once the
    /// payload is gone, the allocation is charged here, at the next wait
    /// ([`InputCodec::charge_kept`]), or let go.
    kept: KeptBuffer,
}

impl InputCodec {
    fn release(&mut self) {
        if self.charged > 0 {
            self.budget.give_back(self.charged);
            self.charged = 0;
        }
    }

    /// Gives back the allocation kept from the last large frame, and its
    /// charge. Only between frames: a frame being received holds the
    /// charge otherwise.
    fn give_back_kept(&mut self) {
        if self.kept.holds() {
            self.kept.clear();
            self.release();
        }
    }

    /// Between frames: charges the kept allocation to the budget once the
    /// last frame's payload is gone (its request no longer counts it), or
    /// lets it go if the budget has no room: keeping it must never cost
    /// another frame its place.
    #[inline]
    fn charge_kept(&mut self) {
        if self.charged == 0 && self.kept.holds() {
            self.charge_kept_now();
        }
    }

    #[cold]
    #[inline(never)]
    fn charge_kept_now(&mut self) {
        match self.kept.unique_capacity() {
            Some(capacity) if self.budget.try_take(capacity) => self.charged = capacity,
            Some(_) => self.kept.clear(),
            None => {}
        }
    }
}

impl Decoder for InputCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let budget = &self.budget;
        let charged = &mut self.charged;
        let decoded = self
            .codec
            .decode_admitting(src, Some(&mut self.kept), |capacity| {
                // The new buffer replaces the old one: charge the difference.
                let more = capacity.saturating_sub(*charged);
                if !budget.try_take(more) {
                    return Err(CodecError::Overloaded {
                        budget: budget.limit(),
                    });
                }
                *charged += more;
                Ok(())
            });
        if !matches!(decoded, Ok(None)) {
            // Complete (its bytes now belong to the request) or failed.
            self.release();
        }
        decoded
    }
}

impl Drop for InputCodec {
    fn drop(&mut self) {
        self.release();
    }
}

/// Frames from one client, with the server's limits on input.
pub(super) struct Input<S> {
    frames: FramedRead<S, InputCodec>,
    frame_timeout: Duration,
    /// Whether the deadline below is for the frame being received: armed
    /// the first time the server waits for the rest of a frame, disarmed
    /// when a frame is delivered.
    armed: bool,
    deadline: Option<Pin<Box<Sleep>>>,
    /// The read buffer was given back: the next read waits for a byte
    /// before it makes one.
    quiet: bool,
    /// Waits for the client between frames (counted up to [`BUSY_WAITS`]).
    waits: u32,
}

/// Times a connection waits for its client between frames before it keeps
/// its read buffer while it waits: until then the buffer goes back at
/// every wait (a new one costs an allocation and a one-byte read), from
/// then on only at a quiet tick.
pub(super) const BUSY_WAITS: u32 = 4;

impl<S: ServerIo> Input<S> {
    /// Reads `stream`, accepting only handshake-sized frames until
    /// [`Input::handshake_done`]. Before it any kind byte is read (as the
    /// codec of the highest version does), so that every frame but HELLO
    /// gets the same answer, `unexpected frame`, whatever its kind.
    pub(super) fn new(stream: S, config: &Config) -> Input<S> {
        let handshake_max = HANDSHAKE_MAX_FRAME_LEN.min(config.max_frame_len);
        let codec = InputCodec {
            codec: FrameCodec::new(handshake_max).with_version(PROTOCOL_VERSION),
            max_frame_len: config.max_frame_len,
            budget: config.input_budget.clone(),
            charged: 0,
            kept: KeptBuffer::default(),
        };
        Input {
            frames: FramedRead::new(stream, codec),
            frame_timeout: config.frame_timeout,
            armed: false,
            deadline: None,
            quiet: false,
            waits: 0,
        }
    }

    /// The client's HELLO is accepted: frames up to the server's maximum,
    /// of the kinds of protocol `version`, are read from now on (from
    /// version 2 on, a kind the codec does not know is a
    /// [`Kind::Unknown`](crate::protocol::Kind::Unknown) frame to answer).
    pub(super) fn handshake_done(&mut self, version: u16) {
        let codec = self.frames.decoder_mut();
        codec.codec = FrameCodec::new(codec.max_frame_len).with_version(version);
    }

    pub(super) fn get_ref(&self) -> &S {
        self.frames.get_ref()
    }

    pub(super) fn get_mut(&mut self) -> &mut S {
        self.frames.get_mut()
    }

    pub(super) fn into_inner(self) -> S {
        self.frames.into_inner()
    }

    pub(super) fn read_buffer_mut(&mut self) -> &mut BytesMut {
        self.frames.read_buffer_mut()
    }

    /// Whether a whole frame is buffered: the next read decodes it
    /// without a system call.
    pub(super) fn holds_whole_frame(&self) -> bool {
        crate::protocol::begins_with_whole_frame(self.frames.read_buffer())
    }

    /// Whether the connection holds a read buffer (until a quiet tick
    /// gives it back).
    pub(super) fn holds_read_buffer(&self) -> bool {
        !self.quiet
    }

    /// Drops the read buffer if nothing is buffered: the connection has
    /// had no request for a whole tick. It still counts as busy (see
    /// [`BUSY_WAITS`]): when the client writes again, it takes a buffer
    /// and keeps it until the next quiet tick, rather than making one for
    /// each frame of what may be another burst.
    pub(super) fn give_back_read_buffer(&mut self) {
        self.drop_buffer();
    }

    /// Drops the read buffer if nothing is buffered, and the allocation
    /// kept from the last large frame. Its memory goes once no payload
    /// read into it is held any more (a handler that kept one keeps it,
    /// not the connection).
    #[cold]
    #[inline(never)]
    fn drop_buffer(&mut self) {
        let buffer = self.frames.read_buffer_mut();
        if self.quiet || !buffer.is_empty() {
            return;
        }
        *buffer = BytesMut::new();
        self.quiet = true;
        self.frames.decoder_mut().give_back_kept();
    }

    /// Waits, with no buffer, for the first byte after a quiet spell (a
    /// read of one byte into the stack), then makes a buffer and puts the
    /// byte there. A frame is longer than a byte, so the frame reader
    /// reads again before it can decode one, and sees the rest (or the end
    /// of the stream: then the byte is a cut frame, as it should be).
    /// `false`: the stream ended there, between frames (no buffer is made,
    /// and the end is not read a second time).
    // Out of line: the hot path (a busy connection's reads) never takes
    // it, and inlined it cost every read about 20 instructions.
    #[cold]
    #[inline(never)]
    fn poll_first_byte(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, CodecError>> {
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        ready!(Pin::new(self.frames.get_mut()).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Ok(false));
        }
        let buffer = self.frames.read_buffer_mut();
        *buffer = BytesMut::with_capacity(READ_BUFFER_START);
        buffer.extend_from_slice(read.filled());
        self.quiet = false;
        Poll::Ready(Ok(true))
    }

    /// Fails the frame being received if its deadline has passed; arms the
    /// deadline if this is the first wait for it.
    ///
    /// The deadline starts when the server first waits for the rest of a
    /// frame, not when its first byte was read: time the server spends on
    /// other work (handlers at `max_in_flight`, a full outbox) while the
    /// rest sits unread is not the client's.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<CodecError> {
        if !self.armed {
            set_timer(&mut self.deadline, Instant::now() + self.frame_timeout);
            self.armed = true;
        }
        let deadline = self.deadline.as_mut().expect("armed above");
        deadline
            .as_mut()
            .poll(cx)
            .map(|()| CodecError::Stalled(self.frame_timeout))
    }
}

impl<S: ServerIo> Stream for Input<S> {
    type Item = Result<Frame, CodecError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.quiet && !ready!(this.poll_first_byte(cx))? {
            return Poll::Ready(None);
        }
        match this.frames.poll_next_unpin(cx) {
            Poll::Ready(item) => {
                this.armed = false;
                Poll::Ready(item)
            }
            // Waiting between frames: no deadline (the idle timeout's
            // job), and no buffer unless the connection is busy.
            Poll::Pending if this.frames.read_buffer().is_empty() => {
                this.armed = false;
                if this.waits < BUSY_WAITS {
                    this.waits += 1;
                    this.drop_buffer();
                } else {
                    this.frames.decoder_mut().charge_kept();
                }
                Poll::Pending
            }
            // Part of a frame is here; the rest is not.
            Poll::Pending => this.poll_deadline(cx).map(|e| Some(Err(e))),
        }
    }
}

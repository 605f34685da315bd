//! Frame output shared by the server and the client.
//!
//! [`Outbox`] gathers the frames a connection has to send so that all of
//! them go out in as few writes as the transport allows: small frames are
//! encoded one after another into one buffer, large payloads are sent from
//! where they already are (a vectored write), never copied.
//!
//! The server's connection task writes through its own `Outbox`; the
//! client's callers share one (see `client/writer.rs`).

use std::collections::VecDeque;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWrite;

use crate::protocol::{CodecError, Frame, FrameCodec, HEADER_LEN, LENGTH_FIELD_LEN};

/// Bytes a connection gathers before it writes whether or not more frames
/// are ready: large enough for one write to carry hundreds of small frames,
/// small enough that the first of them is not kept waiting.
pub(crate) const COALESCE_LIMIT: usize = 64 * 1024;

/// Payloads up to this size are copied next to their header; larger ones
/// are written from their own buffer. Below it, a copy is cheaper than one
/// more slice in the vectored write.
pub(crate) const COPY_LIMIT: usize = 4 * 1024;

/// Slices handed to one vectored write (Linux accepts 1024).
const MAX_SLICES: usize = 64;

/// Room first reserved for encoding small frames; it grows as needed.
const STAGING_MIN: usize = 1024;

/// A staging buffer that grew past this (a burst) is freed once written,
/// so that a quiet connection does not keep it.
const STAGING_KEEP: usize = 8 * 1024;

/// Encoded frames waiting to be written, in order.
///
/// Small frames and the headers of large ones are encoded one after the
/// other into `staging`; the run encoded so far is split off (as `Bytes`,
/// no copy) when it is queued behind it a large payload or when a write
/// begins. A written chunk is dropped at once, so the memory of what the
/// client has taken is given back as it goes, even while later frames keep
/// the outbox from ever being empty; once every chunk split from the
/// staging buffer is written, `staging` reuses its memory in place, so a
/// steady stream of frames allocates nothing. Large payloads are
/// referenced where they are.
#[derive(Debug)]
pub(crate) struct Outbox {
    codec: FrameCodec,
    staging: BytesMut,
    /// What to write, in order, before what `staging` holds.
    chunks: VecDeque<Bytes>,
    /// Bytes of the first chunk already written.
    offset: usize,
    /// Bytes not yet written.
    queued: usize,
    /// Bytes written since the outbox was made.
    written: u64,
}

impl Outbox {
    pub(crate) fn new(codec: FrameCodec) -> Outbox {
        Outbox {
            codec,
            staging: BytesMut::new(),
            chunks: VecDeque::new(),
            offset: 0,
            queued: 0,
            written: 0,
        }
    }

    /// Encodes the frames pushed from now on with `codec` (a client that
    /// sent first learns the server's maximum frame length after it has
    /// queued frames: PROTOCOL.md, "Sending first").
    pub(crate) fn set_codec(&mut self, codec: FrameCodec) {
        self.codec = codec;
    }

    /// Bytes waiting to be written.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Bytes written since the outbox was made: with [`Outbox::len`], where
    /// in the stream a frame pushed now ends.
    pub(crate) fn written(&self) -> u64 {
        self.written
    }

    /// Whether the outbox takes more frames before it must be written out.
    pub(crate) fn has_room(&self) -> bool {
        self.queued < COALESCE_LIMIT
    }

    /// Queues `frame`, or refuses it (queuing nothing) if it is over the
    /// maximum frame length.
    pub(crate) fn push(&mut self, frame: Frame) -> Result<(), CodecError> {
        if self.staging.capacity() - self.staging.len() < HEADER_LEN + LENGTH_FIELD_LEN {
            self.staging.reserve(STAGING_MIN);
        }
        let len = frame.payload.len();
        self.codec
            .encode_header(frame.kind, frame.id, len, &mut self.staging)?;
        if len <= COPY_LIMIT {
            self.staging.extend_from_slice(&frame.payload);
        } else {
            self.seal();
            self.chunks.push_back(frame.payload);
        }
        self.queued += LENGTH_FIELD_LEN + HEADER_LEN + len;
        Ok(())
    }

    /// Frees the staging buffer if nothing waits to be written: the
    /// connection is quiet, and the next frame makes one again.
    pub(crate) fn give_back(&mut self) {
        if self.queued == 0 && self.chunks.is_empty() && self.staging.is_empty() {
            self.staging = BytesMut::new();
            self.chunks = VecDeque::new();
        }
    }

    /// Queues what `staging` holds as a chunk of its own.
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Writes everything queued to `io`, with one vectored write where the
    /// transport supports it, and flushes `io`.
    pub(crate) fn poll_write_to<W>(
        &mut self,
        mut io: Pin<&mut W>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>>
    where
        W: AsyncWrite + ?Sized,
    {
        self.seal();
        while let Some(first) = self.chunks.front() {
            let first = &first[self.offset..];
            let written = if io.is_write_vectored() && self.chunks.len() > 1 {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                slices[0] = IoSlice::new(first);
                let rest = self.chunks.iter().skip(1).map(|c| &c[..]);
                let count = 1 + slices[1..]
                    .iter_mut()
                    .zip(rest)
                    .map(|(slice, bytes)| *slice = IoSlice::new(bytes))
                    .count();
                ready!(io.as_mut().poll_write_vectored(cx, &slices[..count]))?
            } else {
                ready!(io.as_mut().poll_write(cx, first))?
            };
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.consume(written);
        }
        if self.staging.capacity() > STAGING_KEEP {
            self.staging = BytesMut::new();
        }
        io.poll_flush(cx)
    }

    /// Writes everything queued to `io`; see [`Outbox::poll_write_to`].
    #[cfg(test)]
    pub(crate) async fn write_to<W: AsyncWrite + Unpin>(&mut self, io: &mut W) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write_to(Pin::new(&mut *io), cx)).await
    }

    /// Drops the first `written` bytes, which the transport has taken.
    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        self.written += written as u64;
        while written > 0 {
            let front = self.chunks.front().expect("written bytes were queued");
            let left = front.len() - self.offset;
            if written < left {
                self.offset += written;
                return;
            }
            written -= left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Kind;
    use tokio_util::codec::Encoder;

    fn encoded(frames: &[Frame]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for frame in frames {
            FrameCodec::default()
                .encode(frame.clone(), &mut buf)
                .unwrap();
        }
        buf.to_vec()
    }

    fn frames() -> Vec<Frame> {
        [0usize, 1, 100, COPY_LIMIT, COPY_LIMIT + 1, 3, 1 << 20, 7]
            .iter()
            .enumerate()
            .map(|(i, &len)| Frame::new(Kind::Response, i as u32 + 1, vec![i as u8; len]))
            .collect()
    }

    #[tokio::test]
    async fn writes_the_same_bytes_as_the_codec_small_and_large_payloads_mixed() {
        let frames = frames();
        let mut outbox = Outbox::new(FrameCodec::default());
        for frame in frames.clone() {
            outbox.push(frame).unwrap();
        }
        assert_eq!(outbox.len(), encoded(&frames).len());
        let mut out = Vec::new();
        outbox.write_to(&mut out).await.unwrap();
        assert_eq!(out, encoded(&frames));
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn survives_short_writes() {
        // A transport that takes at most 7 bytes per call, never vectored.
        let frames = frames();
        let (mut near, mut far) = tokio::io::duplex(7);
        let mut outbox = Outbox::new(FrameCodec::default());
        for frame in frames.clone() {
            outbox.push(frame).unwrap();
        }
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut far, &mut all)
                .await
                .unwrap();
            all
        });
        outbox.write_to(&mut near).await.unwrap();
        drop(near);
        assert_eq!(reader.await.unwrap(), encoded(&frames));
    }

    #[test]
    fn refuses_a_frame_over_the_maximum_and_queues_nothing() {
        let mut outbox = Outbox::new(FrameCodec::new(100));
        let err = outbox
            .push(Frame::new(Kind::Response, 1, vec![0u8; 95]))
            .unwrap_err();
        assert!(matches!(err, CodecError::TooLarge { len: 101, .. }));
        assert!(outbox.is_empty());
        outbox
            .push(Frame::new(Kind::Response, 1, vec![0u8; 94]))
            .unwrap();
        assert_eq!(outbox.len(), 104);
    }

    /// Counts the bytes allocated and not yet freed by the current thread
    /// (other tests run on other threads).
    // Debian's clippy 1.96 flags this `thread_local!` for the Windows
    // target although its initializer is already `const`.
    #[allow(clippy::missing_const_for_thread_local)]
    mod thread_heap {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            static LIVE: Cell<isize> = const { Cell::new(0) };
        }

        pub(super) fn live() -> isize {
            LIVE.with(Cell::get)
        }

        fn add(n: isize) {
            // `try_with`: nothing to count once the thread is going away.
            let _ = LIVE.try_with(|live| live.set(live.get() + n));
        }

        pub(super) struct Counting;

        // SAFETY: every call goes to the system allocator unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }

            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }

            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
                add(new_size as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new_size) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;
    }

    /// Takes `room` bytes, then is not ready until given more.
    struct Narrow {
        room: usize,
    }

    impl AsyncWrite for Narrow {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let n = buf.len().min(self.room);
            if n == 0 {
                return Poll::Pending;
            }
            self.room -= n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn written_bytes_are_given_back_while_more_frames_keep_coming() {
        // Small frames (copied into the staging buffer); the transport
        // takes two per round and one more is always queued, so the outbox
        // is never empty.
        let frame = || Frame::new(Kind::Notify, 0, vec![1u8; 100]);
        let wire_len = frame().wire_len();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut outbox = Outbox::new(FrameCodec::default());
        let mut io = Narrow { room: 0 };
        outbox.push(frame()).unwrap();
        let start = thread_heap::live();
        let mut peak = 0;
        for _ in 0..10_000 {
            outbox.push(frame()).unwrap();
            outbox.push(frame()).unwrap();
            io.room = 2 * wire_len;
            assert!(outbox
                .poll_write_to(Pin::new(&mut io), &mut cx)
                .is_pending());
            peak = peak.max(thread_heap::live() - start);
        }
        assert_eq!(outbox.len(), wire_len);
        eprintln!("pipesvc-report: outbox never empty, 20000 frames of {wire_len} bytes: peak held {peak} bytes");
        // 20,000 frames went through (2.2 MB); at most a few are held.
        assert!(
            peak < 16 * 1024,
            "peak {peak} bytes held for one queued frame"
        );
    }
}

//! [`FrameCodec`]: the v1 frame layout as a `tokio_util` codec.
//!
//! The read buffer grows as a frame's bytes arrive, never to the length a
//! header announces: a peer that sends a header and stops commits at most
//! [`GROWTH_START`] bytes, and one that has sent `n` bytes of a frame at
//! most `2 n`. Growth is fallible: when the system cannot give the memory,
//! decoding fails with [`CodecError::NoMemory`] instead of aborting.
//!
//! The readers of pipesvc's client and server add one thing
//! ([`KeptBuffer`]): the allocation a large frame arrived in is read into
//! again by the next frame as large, once the first one's payload is gone,
//! rather than a buffer grown for it from [`GROWTH_START`] again. That
//! holds no memory the peer had not already made the reader hold (it sent
//! that whole frame), and it goes as soon as a frame shows it is not
//! needed.

use std::collections::TryReserveError;
use std::io;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{ErrorCode, Frame, Kind, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LENGTH_FIELD_LEN};

const PREFIX_LEN: usize = LENGTH_FIELD_LEN + HEADER_LEN;

/// The least capacity a read buffer is given when it has no room left (the
/// size `tokio_util`'s `FramedRead` starts with): enough for many small
/// frames per read.
pub const READ_CHUNK: usize = 8 * 1024;

/// The capacity a buffer is first grown to for a frame larger than what it
/// holds (or the frame's size, if smaller). Past this, a frame's buffer
/// grows only when it is full, to twice what has arrived: its capacity is
/// at most `max(GROWTH_START, 2 × bytes received)`, and each byte is moved
/// less than once on average while it grows.
pub const GROWTH_START: usize = 64 * 1024;

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The `length` field is over the maximum. Nothing was allocated for it.
    #[error("frame length {len} exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The length the peer announced.
        len: u64,
        /// The maximum in force.
        max: u32,
    },
    /// The `length` field is smaller than the 6-byte header it must cover.
    #[error("frame length {0} is shorter than the {HEADER_LEN}-byte header")]
    TooShort(u32),
    /// The flags byte is not zero (v1 defines no flags).
    #[error("frame flags are {0:#04x}; protocol v1 requires 0")]
    NonZeroFlags(u8),
    /// The kind byte is not defined by the codec's protocol version (on a
    /// version 1 connection: not 1 to 9).
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The buffer for a frame could not be grown: the system refused the
    /// memory (an address-space limit, for example).
    #[error("cannot allocate {capacity} bytes for a frame; try again later")]
    NoMemory {
        /// The capacity that was asked for.
        capacity: usize,
    },
    /// The server's budget for what its clients' frames hold is spent:
    /// frames being received, and requests waiting or running, hold it.
    #[error("the server holds {budget} bytes for its clients' frames and requests, its limit; try again later")]
    Overloaded {
        /// The server's input budget, in bytes.
        budget: usize,
    },
    /// A frame that had started did not complete in time.
    #[error("a frame was not completed within {0:?} of its first bytes")]
    Stalled(Duration),
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CodecError {
    /// The ERROR code that reports this failure to the peer, if it is the
    /// peer's fault (I/O errors are not).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            CodecError::TooLarge { .. } => Some(ErrorCode::FRAME_TOO_LARGE),
            CodecError::TooShort(_) | CodecError::NonZeroFlags(_) => {
                Some(ErrorCode::MALFORMED_FRAME)
            }
            CodecError::UnknownKind(_) => Some(ErrorCode::UNKNOWN_KIND),
            CodecError::NoMemory { .. } | CodecError::Overloaded { .. } => {
                Some(ErrorCode::OVERLOADED)
            }
            CodecError::Stalled(_) => Some(ErrorCode::TIMED_OUT),
            CodecError::Io(_) => None,
        }
    }
}

/// Encodes and decodes protocol v1 frames, enforcing a maximum frame length.
///
/// The maximum applies to the `length` field (header plus payload) and is
/// checked as soon as the four length bytes arrive, before any buffer is
/// grown for the frame. The buffer then grows with the bytes that arrive
/// (at most `max(64 KiB, 2 × bytes received)`), fallibly. Decoded payloads are split out of the
/// read buffer without copying.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_len: u32,
    /// The protocol version whose kinds are decoded: in version 1 any
    /// other kind byte is [`CodecError::UnknownKind`]; from version 2 on
    /// it decodes as [`Kind::Unknown`].
    version: u16,
}

impl FrameCodec {
    /// A codec accepting `length` fields up to `max_frame_len`.
    ///
    /// # Panics
    /// If `max_frame_len` cannot hold even a header (`< 6`).
    pub fn new(max_frame_len: u32) -> FrameCodec {
        assert!(
            max_frame_len as usize >= HEADER_LEN,
            "max_frame_len must be at least {HEADER_LEN}"
        );
        FrameCodec {
            max_frame_len,
            version: 1,
        }
    }

    /// The same codec decoding the kinds of protocol `version`: from
    /// version 2 on, a kind byte it does not know is not an error but a
    /// [`Kind::Unknown`] frame, which the receiver answers (PROTOCOL.md,
    /// "Unknown kinds"). Version 1 (the default) refuses it.
    pub fn with_version(mut self, version: u16) -> FrameCodec {
        self.version = version;
        self
    }

    /// The protocol version whose kinds this codec decodes.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// The maximum `length` field this codec accepts and produces.
    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// The largest payload that fits in one frame.
    pub fn max_payload_len(&self) -> usize {
        self.max_frame_len as usize - HEADER_LEN
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.decode_admitting(src, None, |_| Ok(()))
    }
}

/// The allocation the last large frame was read into, kept when the frame
/// leaves the read buffer, so that the next frame as large is read into
/// it once that frame's payload is gone, instead of into a buffer grown
/// again from [`GROWTH_START`]: each doubling copies what has arrived,
/// about one frame's worth of copying per large frame, most of the CPU a
/// stream of large frames costs.
///
/// It holds nothing new: only an allocation a frame that arrived in full
/// made, and only until the next frame shows whether it is needed (a
/// frame at most [`GROWTH_START`] long, or one the allocation is more
/// than twice the size of, lets it go), or until its owner gives it back
/// ([`KeptBuffer::clear`]: the server at a quiet tick, charged to its
/// input budget meanwhile once the frame's payload is gone; the client
/// after a second unused).
// Boxed: every connection's reader carries one, and only large frames
// fill it (a pointer, not a `BytesMut`, in each connection's future).
#[derive(Debug, Default)]
pub(crate) struct KeptBuffer(Option<Box<BytesMut>>);

impl KeptBuffer {
    /// After a frame over [`GROWTH_START`] bytes was split off `src`: its
    /// allocation is kept if nothing of the next frame is in it (`src`
    /// then gets a fresh buffer of its own). After any other frame,
    /// nothing is kept ([`KeptBuffer::clear`]).
    #[cold]
    fn set_aside(&mut self, src: &mut BytesMut) {
        self.0 = src
            .is_empty()
            .then(|| Box::new(std::mem::replace(src, BytesMut::with_capacity(READ_CHUNK))));
    }

    /// For a frame of `total` bytes begun in `src`: reads it into the
    /// kept allocation if the last frame's payload is gone, the allocation
    /// holds this whole frame without being more than twice its size, and
    /// `admit` lets the buffer have that size. What has arrived moves
    /// there. `false`: nothing is kept any more, and the buffer grows as
    /// usual (so a refusal of the kept size never refuses the frame: its
    /// usual growth is asked for next).
    fn reuse(
        &mut self,
        src: &mut BytesMut,
        total: usize,
        admit: &mut impl FnMut(usize) -> Result<(), CodecError>,
    ) -> bool {
        let Some(kept) = self.0.take() else {
            return false;
        };
        let mut kept = *kept;
        let fits = total > GROWTH_START && kept.try_reclaim(total);
        if !fits || kept.capacity() > total.saturating_mul(2) || admit(kept.capacity()).is_err() {
            return false;
        }
        kept.extend_from_slice(src);
        *src = kept;
        true
    }

    /// Whether an allocation is kept.
    #[inline(always)]
    pub(crate) fn holds(&self) -> bool {
        self.0.is_some()
    }

    /// The kept allocation's size once nothing else holds it (the last
    /// frame's payload is gone), which it then views whole; `None` while
    /// something does, or if nothing is kept. Once per kept allocation:
    /// asked again after it answered, it says `None`.
    pub(crate) fn unique_capacity(&mut self) -> Option<usize> {
        let kept = self.0.as_mut()?;
        // What is kept is the end of an allocation whose frame, before
        // it, was over `GROWTH_START` bytes: asking for more room than the
        // end has, by that much, succeeds exactly when no payload shares
        // the allocation, and then views all of it.
        let whole = kept.capacity() + GROWTH_START + 1;
        kept.try_reclaim(whole).then(|| kept.capacity())
    }

    /// Lets the kept allocation go.
    pub(crate) fn clear(&mut self) {
        self.0 = None;
    }
}

/// A [`FrameCodec`] that keeps a large frame's allocation for the next
/// one ([`KeptBuffer`]): the client's reader.
#[derive(Debug)]
pub(crate) struct KeepingCodec {
    /// The limits and the version frames are decoded with.
    pub(crate) codec: FrameCodec,
    /// The last large frame's allocation.
    pub(crate) kept: KeptBuffer,
}

impl KeepingCodec {
    pub(crate) fn new(codec: FrameCodec) -> KeepingCodec {
        KeepingCodec {
            codec,
            kept: KeptBuffer::default(),
        }
    }
}

impl Decoder for KeepingCodec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        self.codec
            .decode_admitting(src, Some(&mut self.kept), |_| Ok(()))
    }
}

impl FrameCodec {
    /// Decodes like [`Decoder::decode`], asking `admit` before the buffer
    /// is grown past [`READ_CHUNK`] for the frame it holds: `admit` gets
    /// the capacity the buffer is about to have, allocated or (with
    /// `kept`) reused, and may refuse it (the server charges it to its
    /// input budget). A refused reuse is followed by the usual growth's
    /// request.
    pub(crate) fn decode_admitting(
        &self,
        src: &mut BytesMut,
        kept: Option<&mut KeptBuffer>,
        mut admit: impl FnMut(usize) -> Result<(), CodecError>,
    ) -> Result<Option<Frame>, CodecError> {
        let Some(length) = peek_u32(src, 0) else {
            return make_room(src).map(|()| None);
        };
        if length > self.max_frame_len {
            return Err(CodecError::TooLarge {
                len: length.into(),
                max: self.max_frame_len,
            });
        }
        if (length as usize) < HEADER_LEN {
            return Err(CodecError::TooShort(length));
        }
        // Validate the header as soon as it is here, so that a bad frame is
        // refused without waiting for (or buffering) its payload.
        if src.len() < PREFIX_LEN {
            return make_room(src).map(|()| None);
        }
        let kind = self.kind(src[4])?;
        if src[5] != 0 {
            return Err(CodecError::NonZeroFlags(src[5]));
        }
        let total = LENGTH_FIELD_LEN + length as usize;
        if src.len() < total {
            if let Some(capacity) = next_capacity(src, total) {
                let reused = kept.is_some_and(|kept| kept.reuse(src, total, &mut admit));
                if !reused {
                    if capacity > READ_CHUNK {
                        admit(capacity)?;
                    }
                    try_grow(src, capacity).map_err(|_| CodecError::NoMemory { capacity })?;
                }
            }
            return Ok(None);
        }
        let id = peek_u32(src, 6).expect("header is buffered");
        src.advance(PREFIX_LEN);
        let payload = src.split_to(total - PREFIX_LEN).freeze();
        if let Some(kept) = kept {
            if total > GROWTH_START {
                kept.set_aside(src);
            } else if kept.holds() {
                kept.clear();
            }
        }
        Ok(Some(Frame { kind, id, payload }))
    }
}

impl FrameCodec {
    /// The kind a wire byte stands for under this codec's version.
    fn kind(&self, byte: u8) -> Result<Kind, CodecError> {
        match Kind::of_version(byte, self.version) {
            Some(kind) => Ok(kind),
            None if self.version >= 2 => Ok(Kind::Unknown(byte)),
            None => Err(CodecError::UnknownKind(byte)),
        }
    }
}

/// The capacity `src` should grow to for the `total`-byte frame it begins,
/// or `None` if it has enough: the frame fits, or the buffer is not yet
/// full and already past the first step. Growth doubles what has arrived,
/// so it happens a logarithmic number of times, each when the buffer is full.
fn next_capacity(src: &BytesMut, total: usize) -> Option<usize> {
    let (len, capacity) = (src.len(), src.capacity());
    let first_step = total.min(GROWTH_START);
    if capacity >= total || (len < capacity && capacity >= first_step) {
        return None;
    }
    let want = total.min(len.saturating_mul(2).max(GROWTH_START));
    Some(want.max(READ_CHUNK))
}

/// Gives a full buffer room for the next read (and nothing more).
fn make_room(src: &mut BytesMut) -> Result<(), CodecError> {
    if src.len() < src.capacity() {
        return Ok(());
    }
    let capacity = src.len() + READ_CHUNK;
    try_grow(src, capacity).map_err(|_| CodecError::NoMemory { capacity })
}

/// Grows `buf` to hold `capacity` bytes, reusing its allocation when it
/// can (no payload split from it is alive any more) and it is not much
/// larger, growing it in place (`realloc`) when that is all it needs, and
/// otherwise moving its bytes to a new one; every allocation may fail
/// without aborting.
fn try_grow(buf: &mut BytesMut, capacity: usize) -> Result<(), TryReserveError> {
    let additional = capacity.saturating_sub(buf.len());
    // Reclaiming may hand back the whole allocation of an earlier large
    // frame: kept only if it is not much more than asked for, so that
    // the bound on a frame's buffer holds whatever came before.
    let most = capacity.max(GROWTH_START);
    if buf.try_reclaim(additional) && buf.capacity() <= most {
        return Ok(());
    }
    let held = std::mem::take(buf).freeze();
    if held.is_unique() {
        let mut grown = Vec::from(held);
        if grown.capacity() <= most {
            // Nothing else holds its allocation: grown where it is (its
            // bytes moved to its front at most), so that `realloc` can
            // extend it or remap its pages instead of copying all that
            // has arrived at each step.
            let reserved = grown.try_reserve_exact(additional);
            *buf = BytesMut::from(bytes::Bytes::from(grown));
            return reserved;
        }
        // The allocation of an earlier, larger frame: its bytes move to
        // one of the size asked for, and it is freed.
        return copy_into_new(buf, &grown, capacity);
    }
    // A payload split from it is still alive: a new allocation, and a copy.
    copy_into_new(buf, &held, capacity)
}

/// `buf` becomes a new allocation of `capacity` holding `bytes`. Should it
/// fail, `buf` is left empty: the frame is refused and the connection
/// closes, so nothing is copied back.
fn copy_into_new(buf: &mut BytesMut, bytes: &[u8], capacity: usize) -> Result<(), TryReserveError> {
    let mut grown = Vec::new();
    grown.try_reserve_exact(capacity)?;
    grown.extend_from_slice(bytes);
    // Through `Bytes`, which keeps the whole capacity: unique, it turns
    // back into a `BytesMut` without copying.
    *buf = BytesMut::from(bytes::Bytes::from(grown));
    Ok(())
}

impl FrameCodec {
    /// Appends the length, kind, flags and id of a frame carrying
    /// `payload_len` bytes, and nothing else: the payload is for the caller
    /// to add or to send from where it already is.
    pub(crate) fn encode_header(
        &self,
        kind: Kind,
        id: u32,
        payload_len: usize,
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        let length = HEADER_LEN + payload_len;
        if length > self.max_frame_len as usize {
            return Err(CodecError::TooLarge {
                len: length as u64,
                max: self.max_frame_len,
            });
        }
        // Made whole, then appended at once: each `put_*` checks and moves
        // the buffer's length on its own (100 instructions for the four).
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..LENGTH_FIELD_LEN].copy_from_slice(&(length as u32).to_le_bytes());
        prefix[LENGTH_FIELD_LEN] = kind.to_u8();
        prefix[PREFIX_LEN - 4..].copy_from_slice(&id.to_le_bytes());
        dst.extend_from_slice(&prefix);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_header(frame.kind, frame.id, frame.payload.len(), dst)?;
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

/// Whether `src` begins with a whole frame (or with a length no frame can
/// have): decoding it then needs no more bytes from the stream.
#[inline]
pub(crate) fn begins_with_whole_frame(src: &[u8]) -> bool {
    peek_u32(src, 0).is_some_and(|length| src.len() - LENGTH_FIELD_LEN >= length as usize)
}

fn peek_u32(src: &[u8], at: usize) -> Option<u32> {
    let bytes = src.get(at..at + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, Bytes};

    fn encode(frame: Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        FrameCodec::default().encode(frame, &mut buf).unwrap();
        buf
    }

    #[test]
    fn layout_matches_protocol_md() {
        let buf = encode(Frame::request(0x0102_0304, Bytes::from_static(b"hi")));
        assert_eq!(
            &buf[..],
            &[8, 0, 0, 0, 2, 0, 0x04, 0x03, 0x02, 0x01, b'h', b'i']
        );
    }

    #[test]
    fn decodes_only_when_the_whole_frame_is_buffered() {
        let wire = encode(Frame::response(7, Bytes::from_static(b"abc")));
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        for &byte in &wire[..wire.len() - 1] {
            buf.put_u8(byte);
            assert!(codec.decode(&mut buf).unwrap().is_none());
        }
        buf.put_u8(wire[wire.len() - 1]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame, Frame::response(7, Bytes::from_static(b"abc")));
        assert!(buf.is_empty());
    }

    #[test]
    fn empty_payload_is_a_valid_frame() {
        let mut buf = encode(Frame::notify(Bytes::new()));
        assert_eq!(buf.len(), 10);
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.kind, Kind::Notify);
        assert!(frame.payload.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_before_allocating() {
        let mut codec = FrameCodec::new(1024);
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let capacity = buf.capacity();
        let err = codec.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err,
            CodecError::TooLarge {
                len: 0xffff_ffff,
                max: 1024
            }
        ));
        assert_eq!(err.code(), Some(ErrorCode::FRAME_TOO_LARGE));
        assert_eq!(
            buf.capacity(),
            capacity,
            "no buffer growth for a refused frame"
        );
    }

    #[test]
    fn the_maximum_itself_is_accepted() {
        let mut codec = FrameCodec::new(16);
        let mut buf = BytesMut::new();
        codec
            .encode(Frame::request(1, vec![7u8; 10]), &mut buf)
            .unwrap();
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap().payload.len(), 10);
        let err = codec.encode(Frame::request(1, vec![7u8; 11]), &mut buf);
        assert!(matches!(
            err,
            Err(CodecError::TooLarge { len: 17, max: 16 })
        ));
    }

    #[test]
    fn header_errors_are_reported_without_waiting_for_the_payload() {
        let mut codec = FrameCodec::default();
        let cases: [(&[u8], ErrorCode); 3] = [
            (&[5, 0, 0, 0], ErrorCode::MALFORMED_FRAME),
            (&[100, 0, 0, 0, 42, 0, 0, 0, 0, 0], ErrorCode::UNKNOWN_KIND),
            (
                &[100, 0, 0, 0, 2, 1, 0, 0, 0, 0],
                ErrorCode::MALFORMED_FRAME,
            ),
        ];
        for (wire, code) in cases {
            let err = codec.decode(&mut BytesMut::from(wire)).unwrap_err();
            assert_eq!(err.code(), Some(code), "{wire:?}: {err}");
        }
    }

    /// A REQUEST header announcing `payload` bytes, without them.
    fn header(payload: usize) -> BytesMut {
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        buf.put_u32_le((HEADER_LEN + payload) as u32);
        buf.put_slice(&[Kind::Request.to_u8(), 0, 1, 0, 0, 0]);
        buf
    }

    #[test]
    fn a_large_frame_grows_its_buffer_as_it_arrives() {
        const PAYLOAD: usize = (8 << 20) - HEADER_LEN;
        let mut codec = FrameCodec::default();
        let mut buf = header(PAYLOAD);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= GROWTH_START, "{}", buf.capacity());
        let chunk = [7u8; 3000];
        let mut sent = 0;
        let mut growths = 0;
        let frame = loop {
            // As a read would: into the room the codec made, no more.
            let room = buf.capacity() - buf.len();
            let n = chunk.len().min(PAYLOAD - sent).min(room);
            let before = buf.capacity();
            buf.put_slice(&chunk[..n]);
            sent += n;
            if let Some(frame) = codec.decode(&mut buf).unwrap() {
                break frame;
            }
            growths += usize::from(buf.capacity() != before);
            let bound = GROWTH_START.max(2 * buf.len());
            assert!(buf.capacity() <= bound, "{} > {bound}", buf.capacity());
        };
        assert_eq!(frame.payload.len(), PAYLOAD);
        assert!(growths <= 12, "{growths} growth steps");
    }

    #[test]
    fn a_growth_the_caller_refuses_fails_the_frame() {
        let codec = FrameCodec::default();
        let mut buf = header(1 << 20);
        let capacity = buf.capacity();
        let err = codec
            .decode_admitting(&mut buf, None, |wanted| {
                assert_eq!(wanted, GROWTH_START);
                Err(CodecError::Overloaded { budget: 0 })
            })
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::OVERLOADED));
        assert_eq!(buf.capacity(), capacity, "nothing allocated");
        // Small frames fit the read buffer and are never submitted.
        let mut small = header(100);
        small.put_slice(&[1u8; 100]);
        let frame = codec
            .decode_admitting(&mut small, None, |_| panic!("asked for a small frame"))
            .unwrap();
        assert_eq!(frame.unwrap().payload.len(), 100);
    }

    #[test]
    fn a_large_frames_allocation_is_not_reused_for_the_next_one() {
        // `FrameCodec` alone keeps nothing ([`KeptBuffer`] is the reader's
        // choice to make): the bound holds across frames.
        let mut codec = FrameCodec::default();
        let mut buf = encode(Frame::request(1, vec![1u8; 1 << 20]));
        drop(codec.decode(&mut buf).unwrap().unwrap());
        // The 1 MiB allocation is unique again; the next frame's header
        // must not get it back whole.
        assert!(codec.decode(&mut buf).unwrap().is_none());
        buf.put_slice(&header(1 << 20));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= GROWTH_START, "{}", buf.capacity());
    }

    /// A reader's codec that keeps large frames' allocations, and its read
    /// buffer.
    fn keeping() -> (KeepingCodec, BytesMut) {
        let codec = KeepingCodec::new(FrameCodec::default());
        (codec, BytesMut::with_capacity(READ_CHUNK))
    }

    /// A frame of `payload` bytes, decoded by `codec` from `buf` as reads
    /// would deliver it: into the room the codec made, 64 KiB at a time.
    fn read_through(codec: &mut KeepingCodec, buf: &mut BytesMut, payload: usize) -> Frame {
        let bytes = encode(Frame::request(1, vec![3u8; payload]));
        let mut sent = 0;
        loop {
            let room = (buf.capacity() - buf.len()).max(1);
            let n = room.min(64 * 1024).min(bytes.len() - sent);
            buf.put_slice(&bytes[sent..sent + n]);
            sent += n;
            if let Some(frame) = codec.decode(buf).unwrap() {
                assert_eq!(sent, bytes.len());
                return frame;
            }
        }
    }

    #[test]
    fn a_large_frames_allocation_is_read_into_again_once_its_payload_is_gone() {
        const PAYLOAD: usize = 1 << 20;
        let (mut codec, mut buf) = keeping();
        let first = read_through(&mut codec, &mut buf, PAYLOAD);
        let allocation = first.payload.as_ptr() as usize - PREFIX_LEN;
        assert!(codec.kept.holds());
        assert_eq!(
            buf.capacity(),
            READ_CHUNK,
            "a buffer of its own for what follows"
        );
        drop(first);
        // The next frame as large is read into the same allocation: no
        // growth, so nothing it received is copied again.
        let second = read_through(&mut codec, &mut buf, PAYLOAD);
        assert_eq!(second.payload.as_ptr() as usize - PREFIX_LEN, allocation);
        assert_eq!(second.payload.len(), PAYLOAD);
        assert!(second.payload.iter().all(|&b| b == 3));
    }

    #[test]
    fn a_kept_allocation_the_caller_refuses_lets_the_frame_grow_as_usual() {
        let (mut codec, mut buf) = keeping();
        drop(read_through(&mut codec, &mut buf, 1 << 20));
        buf.put_slice(&header(1 << 20));
        let mut asked = Vec::new();
        let decoded = codec
            .codec
            .decode_admitting(&mut buf, Some(&mut codec.kept), |wanted| {
                asked.push(wanted);
                match wanted <= GROWTH_START {
                    true => Ok(()),
                    false => Err(CodecError::Overloaded { budget: 0 }),
                }
            });
        assert!(decoded.unwrap().is_none(), "refused only the kept size");
        assert_eq!(asked.len(), 2, "{asked:?}");
        assert!(asked[0] > 1 << 20, "the kept size first: {asked:?}");
        assert_eq!(asked[1], GROWTH_START);
        assert!(!codec.kept.holds());
        assert!(buf.capacity() <= GROWTH_START, "{}", buf.capacity());
    }

    #[test]
    fn a_kept_allocation_is_unique_once_its_payload_is_gone() {
        const PAYLOAD: usize = 1 << 20;
        let (mut codec, mut buf) = keeping();
        let frame = read_through(&mut codec, &mut buf, PAYLOAD);
        assert_eq!(codec.kept.unique_capacity(), None, "the payload holds it");
        drop(frame);
        let whole = codec.kept.unique_capacity().expect("unique");
        assert!(whole >= PREFIX_LEN + PAYLOAD, "{whole}");
    }

    #[test]
    fn a_kept_allocation_a_payload_still_holds_is_not_reused() {
        let (mut codec, mut buf) = keeping();
        let first = read_through(&mut codec, &mut buf, 1 << 20);
        buf.put_slice(&header(1 << 20));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(!codec.kept.holds(), "let go once the next frame began");
        assert!(buf.capacity() <= GROWTH_START, "{}", buf.capacity());
        assert!(
            first.payload.iter().all(|&b| b == 3),
            "the payload is untouched"
        );
    }

    #[test]
    fn a_kept_allocation_is_not_reused_for_a_frame_under_half_its_size() {
        let (mut codec, mut buf) = keeping();
        drop(read_through(&mut codec, &mut buf, 1 << 20));
        buf.put_slice(&header(400 * 1024));
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(!codec.kept.holds());
        assert!(buf.capacity() <= GROWTH_START, "{}", buf.capacity());
        // A small frame lets it go too (on a buffer of its own: the
        // frame above is left unfinished).
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        drop(read_through(&mut codec, &mut buf, 1 << 20));
        assert!(codec.kept.holds());
        let small = read_through(&mut codec, &mut buf, 100);
        assert_eq!(small.payload.len(), 100);
        assert!(!codec.kept.holds());
    }

    #[test]
    fn payload_is_split_without_copying() {
        let mut buf = encode(Frame::request(1, vec![9u8; 4096]));
        let start = buf.as_ptr() as usize;
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload.as_ptr() as usize, start + PREFIX_LEN);
    }

    #[test]
    fn kinds_past_version_1_are_unknown_there_and_frames_from_version_2_on() {
        let frame = |kind: u8| {
            let mut buf = BytesMut::new();
            buf.put_u32_le(6);
            buf.put_slice(&[kind, 0, 7, 0, 0, 0]);
            buf
        };
        let v1 = FrameCodec::default();
        for kind in [0, 10, 11, 12, 200] {
            let err = v1.clone().decode(&mut frame(kind)).unwrap_err();
            assert!(
                matches!(err, CodecError::UnknownKind(k) if k == kind),
                "{err}"
            );
        }
        let v2 = FrameCodec::default().with_version(2);
        assert_eq!(v2.version(), 2);
        let decoded = |kind| v2.clone().decode(&mut frame(kind)).unwrap().unwrap();
        assert_eq!(decoded(10).kind, Kind::Call);
        assert_eq!(decoded(11).kind, Kind::Cancel);
        assert_eq!(decoded(12).kind, Kind::Describe);
        let unknown = decoded(200);
        assert_eq!((unknown.kind, unknown.id), (Kind::Unknown(200), 7));
        assert_eq!(decoded(0).kind, Kind::Unknown(0));
        for byte in 0..=255u8 {
            assert_eq!(decoded(byte).kind.to_u8(), byte);
        }
    }
}

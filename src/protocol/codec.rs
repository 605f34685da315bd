//! [`FrameCodec`]: the v1 frame layout as a `tokio_util` codec.

use std::io;

use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::{ErrorCode, Frame, Kind, DEFAULT_MAX_FRAME_LEN, HEADER_LEN, LENGTH_FIELD_LEN};

const PREFIX_LEN: usize = LENGTH_FIELD_LEN + HEADER_LEN;

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
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
    /// The kind byte is not defined by v1.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The underlying transport failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl DecodeError {
    /// The ERROR code that reports this failure to the peer, if it is the
    /// peer's fault (I/O errors are not).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            DecodeError::TooLarge { .. } => Some(ErrorCode::FRAME_TOO_LARGE),
            DecodeError::TooShort(_) | DecodeError::NonZeroFlags(_) => {
                Some(ErrorCode::MALFORMED_FRAME)
            }
            DecodeError::UnknownKind(_) => Some(ErrorCode::UNKNOWN_KIND),
            DecodeError::Io(_) => None,
        }
    }
}

/// Encodes and decodes protocol v1 frames, enforcing a maximum frame length.
///
/// The maximum applies to the `length` field (header plus payload) and is
/// checked as soon as the four length bytes arrive, before any buffer is
/// grown for the frame. Decoded payloads are split out of the read buffer
/// without copying.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    max_frame_len: u32,
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
        FrameCodec { max_frame_len }
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
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(length) = peek_u32(src, 0) else {
            return Ok(None);
        };
        if length > self.max_frame_len {
            return Err(DecodeError::TooLarge {
                len: length.into(),
                max: self.max_frame_len,
            });
        }
        if (length as usize) < HEADER_LEN {
            return Err(DecodeError::TooShort(length));
        }
        // Validate the header as soon as it is here, so that a bad frame is
        // refused without waiting for (or buffering) its payload.
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let kind = Kind::from_u8(src[4]).ok_or(DecodeError::UnknownKind(src[4]))?;
        if src[5] != 0 {
            return Err(DecodeError::NonZeroFlags(src[5]));
        }
        let total = LENGTH_FIELD_LEN + length as usize;
        if src.len() < total {
            // One allocation for the whole frame, bounded by the maximum.
            src.reserve(total - src.len());
            return Ok(None);
        }
        let id = peek_u32(src, 6).expect("header is buffered");
        src.advance(PREFIX_LEN);
        let payload = src.split_to(total - PREFIX_LEN).freeze();
        Ok(Some(Frame { kind, id, payload }))
    }
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
    ) -> Result<(), DecodeError> {
        let length = HEADER_LEN + payload_len;
        if length > self.max_frame_len as usize {
            return Err(DecodeError::TooLarge {
                len: length as u64,
                max: self.max_frame_len,
            });
        }
        dst.reserve(PREFIX_LEN);
        dst.put_u32_le(length as u32);
        dst.put_u8(kind as u8);
        dst.put_u8(0);
        dst.put_u32_le(id);
        Ok(())
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = DecodeError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), DecodeError> {
        self.encode_header(frame.kind, frame.id, frame.payload.len(), dst)?;
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

fn peek_u32(src: &[u8], at: usize) -> Option<u32> {
    let bytes = src.get(at..at + 4)?;
    Some(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

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
            DecodeError::TooLarge {
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
            Err(DecodeError::TooLarge { len: 17, max: 16 })
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

    #[test]
    fn payload_is_split_without_copying() {
        let mut buf = encode(Frame::request(1, vec![9u8; 4096]));
        let start = buf.as_ptr() as usize;
        let frame = FrameCodec::default().decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.payload.as_ptr() as usize, start + PREFIX_LEN);
    }
}

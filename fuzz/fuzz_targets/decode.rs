//! Fuzzes `FrameCodec`'s decoder with arbitrary bytes.
//!
//! Input: one control byte, then the byte stream. The control byte picks the
//! codec's maximum frame length (low 3 bits), how the stream is split into
//! reads (bits 3-6) and the protocol version whose kinds are decoded (bit
//! 7: version 2, where a kind byte the codec does not know is a
//! `Kind::Unknown` frame; in version 1 it is an error, kinds 10-12 too).
//! The stream is decoded twice, as one read and split, and checked against
//! a model of PROTOCOL.md's frame layout:
//!
//! - `decode` never panics, and returns what the model predicts: a frame, an
//!   error of the right kind, or "need more data";
//! - a decoded payload never exceeds the maximum; re-encoding a frame gives
//!   exactly the bytes it was decoded from;
//! - while it waits for more data, the buffer holds less than one maximal
//!   frame; a refused frame allocates nothing;
//! - how the stream is split into reads changes nothing;
//! - at end of stream, `decode_eof` fails exactly when a partial frame is left.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use pipesvc::protocol::{CodecError, Frame, FrameCodec, Kind, HEADER_LEN, LENGTH_FIELD_LEN};
use tokio_util::codec::{Decoder, Encoder};

/// Maximum frame lengths to test: the smallest legal one, a few small ones
/// that inputs can reach, and 64 KiB.
const MAX_FRAME_LENS: [u32; 8] = [6, 7, 10, 16, 64, 255, 1024, 64 * 1024];

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let max = MAX_FRAME_LENS[usize::from(control & 7)];
    let version = if control & 0x80 != 0 { 2 } else { 1 };
    let codec = Codec { max, version };
    let whole = decode_all(codec, stream, &mut std::iter::repeat(usize::MAX));
    let split = match (control >> 3) & 0x0f {
        0 => return,
        // Fixed-size reads of 1 to 12 bytes.
        n @ 1..=12 => decode_all(codec, stream, &mut std::iter::repeat(usize::from(n))),
        // Reads sized by a small pseudo-random sequence.
        n => {
            let mut state = u32::from(n).wrapping_mul(2_654_435_761);
            let mut sizes = std::iter::from_fn(move || {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                Some(1 + (state % 37) as usize)
            });
            decode_all(codec, stream, &mut sizes)
        }
    };
    assert_eq!(
        whole, split,
        "splitting the stream into reads changed the result"
    );
});

/// The codec under test: its maximum frame length and protocol version.
#[derive(Clone, Copy, Debug)]
struct Codec {
    max: u32,
    version: u16,
}

/// Everything decoding one stream produced.
#[derive(Debug, PartialEq)]
struct Outcome {
    frames: Vec<Frame>,
    /// `Debug` of the error that ended decoding, if any.
    error: Option<String>,
    /// Bytes left over at the end of a stream that decoded without error
    /// (a partial frame). After an error, how much was buffered depends on
    /// the reads, so it is not compared.
    leftover: usize,
}

/// Decodes `stream`, appended to the buffer in reads of the given sizes,
/// as `FramedRead` would: decode until it needs more, then read more; stop
/// at the first error.
fn decode_all(under: Codec, stream: &[u8], sizes: &mut dyn Iterator<Item = usize>) -> Outcome {
    let mut codec = FrameCodec::new(under.max).with_version(under.version);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = sizes.next().expect("endless").min(rest.len());
        let (read, tail) = rest.split_at(n);
        buf.extend_from_slice(read);
        rest = tail;
        loop {
            match decode_checked(&mut codec, &mut buf, under) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => {
                    return Outcome {
                        frames,
                        error: Some(format!("{e:?}")),
                        leftover: 0,
                    }
                }
            }
        }
    }
    let leftover = buf.len();
    match codec.decode_eof(&mut buf) {
        Ok(None) => assert_eq!(leftover, 0, "decode_eof ignored a partial frame"),
        Ok(Some(frame)) => panic!("decode_eof found a frame decode missed: {frame:?}"),
        Err(CodecError::Io(_)) => assert_ne!(leftover, 0, "decode_eof failed on an empty buffer"),
        Err(e) => panic!("decode_eof failed with a frame error decode missed: {e:?}"),
    }
    Outcome {
        frames,
        error: None,
        leftover,
    }
}

/// What PROTOCOL.md says the buffer holds.
enum Expected {
    /// Not a whole frame yet (and nothing wrong with what is there).
    More,
    /// A whole frame: these bytes.
    Frame(Bytes),
    /// `length` over the maximum.
    TooLarge(u32),
    /// `length` under 6.
    TooShort(u32),
    /// Bad kind byte and/or bad flags byte (either may be reported first).
    BadHeader { kind: u8, flags: u8 },
}

/// The model: PROTOCOL.md's frame layout, written independently of the codec.
fn expect(buf: &[u8], max: u32, version: u16) -> Expected {
    if buf.len() < 4 {
        return Expected::More;
    }
    let length = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if length > max {
        return Expected::TooLarge(length);
    }
    if length < 6 {
        return Expected::TooShort(length);
    }
    if buf.len() < 10 {
        return Expected::More;
    }
    let (kind, flags) = (buf[4], buf[5]);
    // Kinds 1 to 8, and 9 (STATUS) since revision 1.1; in version 2 also
    // 10 to 12, and any other byte is a frame of an unknown kind.
    let known = match version {
        1 => (1..=9).contains(&kind),
        _ => true,
    };
    if !known || flags != 0 {
        return Expected::BadHeader { kind, flags };
    }
    let total = 4 + length as usize;
    if buf.len() < total {
        return Expected::More;
    }
    Expected::Frame(Bytes::copy_from_slice(&buf[..total]))
}

/// One `decode` call, checked against the model and the invariants.
fn decode_checked(
    codec: &mut FrameCodec,
    buf: &mut BytesMut,
    under: Codec,
) -> Result<Option<Frame>, CodecError> {
    let max = under.max;
    let expected = expect(buf, max, under.version);
    let (len_before, capacity_before) = (buf.len(), buf.capacity());
    let result = codec.decode(buf);
    match (&result, expected) {
        (Ok(Some(frame)), Expected::Frame(wire)) => {
            assert!(
                frame.payload.len() <= max as usize - HEADER_LEN,
                "payload of {} bytes over the maximum {max}",
                frame.payload.len()
            );
            assert_eq!(
                len_before - buf.len(),
                wire.len(),
                "decode consumed the wrong number of bytes"
            );
            assert_eq!(frame.wire_len(), wire.len());
            // The kind byte as sent: known kinds by name, from version 2
            // every other byte as `Kind::Unknown`.
            let byte = wire[4];
            assert_eq!(frame.kind.to_u8(), byte);
            let unknown =
                Kind::from_u8(byte).is_none() || byte > Kind::last_of_version(under.version);
            assert_eq!(matches!(frame.kind, Kind::Unknown(_)), unknown, "{frame:?}");
            let mut reencoded = BytesMut::new();
            codec
                .encode(frame.clone(), &mut reencoded)
                .expect("a decoded frame re-encodes");
            assert_eq!(&reencoded[..], &wire[..], "re-encoding changed the bytes");
        }
        (Ok(None), Expected::More) => {
            assert_eq!(
                buf.len(),
                len_before,
                "decode consumed bytes without a frame"
            );
            assert!(
                buf.len() < LENGTH_FIELD_LEN + max as usize,
                "{} bytes buffered while waiting, more than one maximal frame ({max})",
                buf.len()
            );
        }
        (Err(CodecError::TooLarge { len, max: m }), Expected::TooLarge(length)) => {
            assert_eq!((*len, *m), (u64::from(length), max));
        }
        (Err(CodecError::TooShort(len)), Expected::TooShort(length)) => {
            assert_eq!(*len, length);
        }
        (Err(CodecError::UnknownKind(k)), Expected::BadHeader { kind, .. }) => {
            assert_eq!(*k, kind);
            assert_eq!(under.version, 1, "version 2 decodes every kind byte");
            assert!(!(1..=9).contains(&kind), "kind {kind} is a version 1 kind");
        }
        (Err(CodecError::NonZeroFlags(f)), Expected::BadHeader { flags, .. }) => {
            assert_eq!(*f, flags);
            assert_ne!(flags, 0);
        }
        (got, expected) => panic!(
            "decode returned {got:?}, PROTOCOL.md says {}",
            match expected {
                Expected::More => "need more data".to_string(),
                Expected::Frame(wire) => format!("the frame {wire:?}"),
                Expected::TooLarge(len) => format!("too large ({len})"),
                Expected::TooShort(len) => format!("too short ({len})"),
                Expected::BadHeader { kind, flags } => {
                    format!("bad header (kind {kind}, flags {flags})")
                }
            }
        ),
    }
    if let Err(e) = &result {
        assert!(
            e.code().is_some(),
            "a frame error without an ERROR code: {e:?}"
        );
        assert_eq!(
            (buf.len(), buf.capacity()),
            (len_before, capacity_before),
            "a refused frame changed the buffer"
        );
    }
    result
}

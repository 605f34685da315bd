use bytes::{BufMut, Bytes, BytesMut};

use super::{ErrorCode, Kind};

/// One protocol frame: kind, request id and payload.
///
/// The flags byte is not represented: v1 requires it to be zero, the codec
/// rejects anything else and always writes zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: Kind,
    /// The request id, or 0 for frames that carry none.
    pub id: u32,
    /// The payload, shared with the read buffer it was decoded from.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of any kind.
    pub fn new(kind: Kind, id: u32, payload: impl Into<Bytes>) -> Frame {
        Frame {
            kind,
            id,
            payload: payload.into(),
        }
    }

    /// A REQUEST with this id.
    pub fn request(id: u32, payload: impl Into<Bytes>) -> Frame {
        Frame::new(Kind::Request, id, payload)
    }

    /// A RESPONSE to the request with this id.
    pub fn response(id: u32, payload: impl Into<Bytes>) -> Frame {
        Frame::new(Kind::Response, id, payload)
    }

    /// A NOTIFY (id 0).
    pub fn notify(payload: impl Into<Bytes>) -> Frame {
        Frame::new(Kind::Notify, 0, payload)
    }

    /// An ERROR about request `id`, or about the connection when `id` is 0.
    pub fn error(id: u32, code: ErrorCode, message: &str) -> Frame {
        Frame::new(Kind::Error, id, ErrorPayload::encode(code, message))
    }

    /// A GOODBYE with a human-readable reason.
    pub fn goodbye(reason: &str) -> Frame {
        Frame::new(Kind::Goodbye, 0, Bytes::copy_from_slice(reason.as_bytes()))
    }

    /// Number of bytes this frame occupies on the wire.
    pub fn wire_len(&self) -> usize {
        super::LENGTH_FIELD_LEN + super::HEADER_LEN + self.payload.len()
    }
}

/// The payload of an ERROR frame: u16 code, then a UTF-8 message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPayload {
    /// The error code.
    pub code: ErrorCode,
    /// The human-readable message (lossily decoded if not valid UTF-8).
    pub message: String,
}

impl ErrorPayload {
    /// Encodes an ERROR payload.
    pub fn encode(code: ErrorCode, message: &str) -> Bytes {
        let mut buf = BytesMut::with_capacity(2 + message.len());
        buf.put_u16_le(code.0);
        buf.put_slice(message.as_bytes());
        buf.freeze()
    }

    /// Decodes an ERROR payload; `None` if it is shorter than its code.
    pub fn decode(payload: &[u8]) -> Option<ErrorPayload> {
        let code = u16::from_le_bytes(payload.get(..2)?.try_into().ok()?);
        let message = String::from_utf8_lossy(&payload[2..]).into_owned();
        Some(ErrorPayload {
            code: ErrorCode(code),
            message,
        })
    }
}

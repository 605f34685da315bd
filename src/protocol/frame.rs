use bytes::{BufMut, Bytes, BytesMut};

use super::ErrorCode;

/// The kind of a frame (byte 4 of every frame).
///
/// Kinds 10 to 12 exist from protocol version 2 on. On a version 2
/// connection a kind byte the receiver does not know decodes as
/// [`Kind::Unknown`], so that it can be answered instead of closing the
/// connection (PROTOCOL.md, "Unknown kinds").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// Handshake: the server's greeting, then the client's answer.
    Hello,
    /// A call from the client; answered by RESPONSE or ERROR with the same id.
    Request,
    /// The successful answer to the REQUEST with the same id.
    Response,
    /// A failure: of the request with this id, or of the connection (id 0).
    Error,
    /// A one-way message, in either direction; never answered.
    Notify,
    /// Sent by the server when it closes the connection on purpose.
    Goodbye,
    /// Liveness probe from the client; answered by PONG with the same id.
    Ping,
    /// The answer to a PING; echoes its id and payload.
    Pong,
    /// The client asks for the server's counters; answered by RESPONSE
    /// with a [`Status`](super::Status) payload (protocol 1.1).
    Status,
    /// A call of a named method, with metadata such as a deadline
    /// ([`CallHeader`](super::CallHeader)); answered by RESPONSE or ERROR with the same
    /// id (protocol 2).
    Call,
    /// The client no longer wants the answer to the request with this id;
    /// the server stops it and answers ERROR `cancelled` (protocol 2).
    Cancel,
    /// The client asks for the service's description; answered by RESPONSE
    /// with JSON (protocol 2).
    Describe,
    /// A kind byte this crate does not know, read on a version 2
    /// connection (a version 1 connection refuses it instead).
    Unknown(u8),
}

impl Kind {
    /// The kind for a wire byte, or `None` for a byte no protocol version
    /// this crate speaks defines (1 to 12; 10 to 12 only in version 2).
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Hello,
            2 => Kind::Request,
            3 => Kind::Response,
            4 => Kind::Error,
            5 => Kind::Notify,
            6 => Kind::Goodbye,
            7 => Kind::Ping,
            8 => Kind::Pong,
            9 => Kind::Status,
            10 => Kind::Call,
            11 => Kind::Cancel,
            12 => Kind::Describe,
            _ => return None,
        })
    }

    /// The kind's wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Kind::Hello => 1,
            Kind::Request => 2,
            Kind::Response => 3,
            Kind::Error => 4,
            Kind::Notify => 5,
            Kind::Goodbye => 6,
            Kind::Ping => 7,
            Kind::Pong => 8,
            Kind::Status => 9,
            Kind::Call => 10,
            Kind::Cancel => 11,
            Kind::Describe => 12,
            Kind::Unknown(byte) => byte,
        }
    }

    /// The highest kind byte defined by protocol `version` (9 in version 1,
    /// 12 in version 2).
    pub fn last_of_version(version: u16) -> u8 {
        if version >= 2 {
            12
        } else {
            9
        }
    }
}

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

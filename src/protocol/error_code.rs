use std::fmt;

/// A numeric error code carried by an ERROR frame.
///
/// Codes 1 to 999 are defined by the protocol (see `PROTOCOL.md`); codes
/// from 1000 up are free for services to define. Code 0 is never sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The frame could not be parsed: header too short, non-zero flags, or a
    /// control payload (such as HELLO) that does not follow its layout.
    pub const MALFORMED_FRAME: ErrorCode = ErrorCode(1);
    /// The `length` field exceeds the receiver's maximum frame length.
    pub const FRAME_TOO_LARGE: ErrorCode = ErrorCode(2);
    /// The peer's HELLO names a protocol version this side does not speak.
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(3);
    /// The `kind` byte is not one of the kinds defined by the protocol.
    pub const UNKNOWN_KIND: ErrorCode = ErrorCode(4);
    /// The service's handler failed (returned an error or panicked).
    pub const HANDLER_FAILED: ErrorCode = ErrorCode(5);
    /// The server is at a limit (such as its connection limit) and refused.
    pub const OVERLOADED: ErrorCode = ErrorCode(6);
    /// The server is shutting down; the request was not (fully) handled.
    pub const SHUTTING_DOWN: ErrorCode = ErrorCode(7);
    /// An operation did not complete in the time allowed.
    pub const TIMED_OUT: ErrorCode = ErrorCode(8);
    /// A well-formed frame that is not allowed in this state or direction,
    /// such as a REQUEST before the client's HELLO or a RESPONSE sent by a client.
    pub const UNEXPECTED_FRAME: ErrorCode = ErrorCode(9);
    /// A REQUEST reused the id of a request still in flight on this connection.
    pub const DUPLICATE_ID: ErrorCode = ErrorCode(10);
    /// The peer is not allowed to use this service.
    pub const NOT_ALLOWED: ErrorCode = ErrorCode(11);
    /// The first code available to services for their own errors.
    pub const FIRST_SERVICE_CODE: u16 = 1000;

    /// A short, stable name for the code, as written in `PROTOCOL.md`.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "malformed frame",
            2 => "frame too large",
            3 => "unsupported version",
            4 => "unknown kind",
            5 => "handler failed",
            6 => "overloaded",
            7 => "shutting down",
            8 => "timed out",
            9 => "unexpected frame",
            10 => "duplicate id",
            11 => "not allowed",
            n if n >= Self::FIRST_SERVICE_CODE => "service error",
            _ => "unknown error code",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl From<u16> for ErrorCode {
    fn from(code: u16) -> Self {
        ErrorCode(code)
    }
}

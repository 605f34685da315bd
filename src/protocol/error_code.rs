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
    /// A CALL named a method the service does not have (protocol 2).
    pub const UNKNOWN_METHOD: ErrorCode = ErrorCode(12);
    /// A CALL the server cannot act on: its header does not follow the
    /// layout, its encoding is not offered, or its params do not decode
    /// into the method's request type (protocol 2).
    pub const BAD_REQUEST: ErrorCode = ErrorCode(13);
    /// The request was cancelled: the client sent CANCEL for it (protocol 2).
    pub const CANCELLED: ErrorCode = ErrorCode(14);
    /// The client did not take what was sent to it fast enough: with id 0
    /// it is cut off, and what the server still held for it was dropped
    /// (protocol 2.2, sent to every client).
    pub const TOO_SLOW: ErrorCode = ErrorCode(15);
    /// The peer broke a stream's flow control: it sent an ITEM on a
    /// stream whose credit it had used up, or a CREDIT that took the
    /// other side's credit past 2147483647 bytes (protocol 2.2; id 0,
    /// close).
    pub const FLOW_CONTROL: ErrorCode = ErrorCode(16);
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
            12 => "unknown method",
            13 => "bad request",
            14 => "cancelled",
            15 => "too slow",
            16 => "flow control",
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

/// A code for a service's own errors: 1000 and up, the range the protocol
/// leaves to services (lower codes are the protocol's own). Made only
/// through [`ServiceCode::new`] or `TryFrom<u16>`, so that a
/// [`ServiceError`](crate::server::ServiceError) can never carry a
/// protocol code, and an invalid number is an error the caller sees rather
/// than a panic.
///
/// In a constant, an invalid code fails the build instead:
///
/// ```
/// use pipesvc::protocol::ServiceCode;
///
/// const NOT_FOUND: ServiceCode = ServiceCode::new(1404).unwrap();
/// assert_eq!(NOT_FOUND.get(), 1404);
/// assert!(ServiceCode::new(999).is_none());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceCode(u16);

impl ServiceCode {
    /// The code `code`, or `None` below 1000
    /// ([`ErrorCode::FIRST_SERVICE_CODE`]).
    pub const fn new(code: u16) -> Option<ServiceCode> {
        if code >= ErrorCode::FIRST_SERVICE_CODE {
            Some(ServiceCode(code))
        } else {
            None
        }
    }

    /// The number.
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ServiceCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ErrorCode::from(*self), f)
    }
}

impl From<ServiceCode> for ErrorCode {
    fn from(code: ServiceCode) -> Self {
        ErrorCode(code.0)
    }
}

impl TryFrom<u16> for ServiceCode {
    type Error = InvalidServiceCode;

    fn try_from(code: u16) -> Result<Self, Self::Error> {
        ServiceCode::new(code).ok_or(InvalidServiceCode(code))
    }
}

/// A number below 1000 offered as a [`ServiceCode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("service error codes start at 1000 (lower ones belong to the protocol), not {0}")]
pub struct InvalidServiceCode(pub u16);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_codes_start_at_1000() {
        assert_eq!(ServiceCode::new(999), None);
        assert_eq!(ServiceCode::new(0), None);
        assert_eq!(ServiceCode::new(1000).map(ServiceCode::get), Some(1000));
        assert_eq!(
            ServiceCode::new(u16::MAX).map(ServiceCode::get),
            Some(u16::MAX)
        );
        let err = ServiceCode::try_from(5).unwrap_err();
        assert_eq!(err, InvalidServiceCode(5));
        assert!(err.to_string().contains("start at 1000"), "{err}");
        let code = ServiceCode::try_from(1234).unwrap();
        assert_eq!(code.to_string(), "service error (1234)");
        assert_eq!(ErrorCode::from(code), ErrorCode(1234));
    }
}

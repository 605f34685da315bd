//! The HELLO payloads exchanged when a connection opens.

use bytes::{BufMut, Bytes, BytesMut};

use super::{ErrorCode, MAGIC};

/// Why a HELLO payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Too short, or not starting with `PSVC`.
    #[error("HELLO payload is malformed: {0}")]
    Malformed(&'static str),
    /// Well-formed, but a version this side does not speak.
    #[error("protocol version {0} is not supported (this side speaks {supported})", supported = super::PROTOCOL_VERSION)]
    UnsupportedVersion(u16),
}

impl HelloError {
    /// The ERROR code to answer this failure with.
    pub fn code(&self) -> ErrorCode {
        match self {
            HelloError::Malformed(_) => ErrorCode::MALFORMED_FRAME,
            HelloError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
        }
    }
}

/// The server's HELLO: magic, version, max frame length, server name.
/// Later revisions may append fields, so it is made with
/// [`ServerHello::new`] (or [`decode`](ServerHello::decode)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerHello {
    /// The protocol version the server speaks.
    pub version: u16,
    /// The largest `length` field the server accepts.
    pub max_frame_len: u32,
    /// The server's self-chosen name (UTF-8, may be empty).
    pub server_name: String,
}

impl ServerHello {
    /// This crate's HELLO ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)),
    /// announcing `max_frame_len` and the name `server_name`.
    pub fn new(max_frame_len: u32, server_name: impl Into<String>) -> ServerHello {
        ServerHello {
            version: super::PROTOCOL_VERSION,
            max_frame_len,
            server_name: server_name.into(),
        }
    }

    /// Payload bytes before the server name: magic, version, max frame length.
    pub const fn fixed_len() -> usize {
        10
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::fixed_len() + self.server_name.len());
        buf.put_slice(&MAGIC);
        buf.put_u16_le(self.version);
        buf.put_u32_le(self.max_frame_len);
        buf.put_slice(self.server_name.as_bytes());
        buf.freeze()
    }

    /// Decodes the payload, refusing a version other than ours.
    pub fn decode(payload: &[u8]) -> Result<ServerHello, HelloError> {
        let version = check_magic_and_version(payload)?;
        let rest = &payload[6..];
        let max = rest
            .get(..4)
            .ok_or(HelloError::Malformed("missing max frame length"))?;
        let max_frame_len = u32::from_le_bytes(max.try_into().expect("4 bytes"));
        let server_name = std::str::from_utf8(&rest[4..])
            .map_err(|_| HelloError::Malformed("server name is not UTF-8"))?
            .to_owned();
        Ok(ServerHello {
            version,
            max_frame_len,
            server_name,
        })
    }
}

/// The client's HELLO: magic and version. Later versions may extend it
/// (PROTOCOL.md), so it is made with [`ClientHello::new`] (or
/// [`decode`](ClientHello::decode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientHello {
    /// The protocol version the client speaks.
    pub version: u16,
}

impl Default for ClientHello {
    fn default() -> Self {
        ClientHello::new()
    }
}

impl ClientHello {
    /// This crate's HELLO ([`PROTOCOL_VERSION`](super::PROTOCOL_VERSION)).
    pub fn new() -> ClientHello {
        ClientHello {
            version: super::PROTOCOL_VERSION,
        }
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(6);
        buf.put_slice(&MAGIC);
        buf.put_u16_le(self.version);
        buf.freeze()
    }

    /// Decodes the payload, refusing a version other than ours. Bytes after
    /// the version are ignored so that later versions may extend it.
    pub fn decode(payload: &[u8]) -> Result<ClientHello, HelloError> {
        check_magic_and_version(payload).map(|version| ClientHello { version })
    }
}

fn check_magic_and_version(payload: &[u8]) -> Result<u16, HelloError> {
    if payload.len() < 6 {
        return Err(HelloError::Malformed("shorter than magic and version"));
    }
    if payload[..4] != MAGIC {
        return Err(HelloError::Malformed("does not start with PSVC"));
    }
    let version = u16::from_le_bytes([payload[4], payload[5]]);
    if version != super::PROTOCOL_VERSION {
        return Err(HelloError::UnsupportedVersion(version));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_hello_round_trips() {
        let hello = ServerHello {
            version: 1,
            max_frame_len: 4096,
            server_name: "svc ✓".into(),
        };
        assert_eq!(ServerHello::decode(&hello.encode()), Ok(hello));
    }

    #[test]
    fn client_hello_layout_is_magic_then_version() {
        assert_eq!(&ClientHello { version: 1 }.encode()[..], b"PSVC\x01\x00");
    }

    #[test]
    fn wrong_magic_and_version_are_told_apart() {
        assert_eq!(
            ClientHello::decode(b"PSVX\x01\x00").unwrap_err().code(),
            ErrorCode::MALFORMED_FRAME
        );
        assert_eq!(
            ClientHello::decode(b"PSVC\x02\x00"),
            Err(HelloError::UnsupportedVersion(2))
        );
        assert_eq!(
            ClientHello::decode(b"PSV").unwrap_err().code(),
            ErrorCode::MALFORMED_FRAME
        );
        assert!(ServerHello::decode(b"PSVC\x01\x00\x00").is_err());
    }
}

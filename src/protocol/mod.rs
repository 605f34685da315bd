//! Wire protocol v1: frame layout, kinds, error codes and the handshake.
//!
//! `PROTOCOL.md` at the repository root is the normative description; this
//! module is its Rust rendering. Every integer on the wire is little-endian.
//!
//! ```text
//! offset 0  u32  length   number of bytes after this field = 6 + payload length
//! offset 4  u8   kind     see [`Kind`]
//! offset 5  u8   flags    0 in v1
//! offset 6  u32  id       request id for REQUEST/RESPONSE/ERROR/PING/PONG/STATUS, 0 otherwise
//! offset 10      payload
//! ```

mod codec;
mod error_code;
mod frame;
mod hello;
mod status;

pub use codec::{CodecError, FrameCodec};
pub use error_code::{ErrorCode, InvalidServiceCode, ServiceCode};
pub use frame::{ErrorPayload, Frame, Kind};
pub use hello::{ClientHello, HelloError, ServerHello};
pub use status::{Status, STATUS_FORMAT};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The four bytes that open every HELLO payload.
pub const MAGIC: [u8; 4] = *b"PSVC";

/// Size of the `length` prefix in bytes.
pub const LENGTH_FIELD_LEN: usize = 4;

/// Size of the header that follows the length prefix (kind, flags, id).
pub const HEADER_LEN: usize = 6;

/// Default maximum value of the `length` field: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;

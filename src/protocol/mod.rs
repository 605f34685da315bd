//! The wire protocol, versions 1 and 2: frame layout, kinds, error codes,
//! the handshake, and the CALL header of version 2.
//!
//! `PROTOCOL.md` at the repository root is the normative description; this
//! module is its Rust rendering. Every integer on the wire is little-endian.
//!
//! ```text
//! offset 0  u32  length   number of bytes after this field = 6 + payload length
//! offset 4  u8   kind     see [`Kind`]
//! offset 5  u8   flags    0 (in versions 1 and 2)
//! offset 6  u32  id       request id for REQUEST/RESPONSE/ERROR/PING/PONG/STATUS/CALL/CANCEL/DESCRIBE, 0 otherwise
//! offset 10      payload
//! ```

mod call;
mod codec;
mod error_code;
mod frame;
mod hello;
mod kind;
mod status;
mod stream;
mod topic;

pub(crate) use call::{own_copy, CallParts, MethodName, ReadHeader};
pub use call::{
    CallError, CallHeader, Encoding, MAX_METADATA, MAX_METHOD_LEN, RESERVED_METADATA_PREFIX,
};
pub(crate) use codec::{begins_with_whole_frame, KeepingCodec, KeptBuffer, READ_CHUNK};
pub use codec::{CodecError, FrameCodec};
pub use error_code::{ErrorCode, InvalidServiceCode, ServiceCode};
pub use frame::{ErrorPayload, Frame};
pub use hello::{
    negotiate, ClientHello, HelloError, HelloReply, KindSet, ServerHello, FIELD_ENCODINGS,
    FIELD_KINDS, FIELD_STREAM_WINDOW,
};
pub use kind::{IdRule, Kind, KindRules, Sender, KINDS, SPOKEN_REVISION};
pub(crate) use status::SMALLEST_ANSWER_LEN as SMALLEST_STATUS_LEN;
pub use status::{Status, STATUS_FORMAT};
pub use stream::{
    check_item, decode_credit, decode_item, encode_credit, encode_item, encode_item_entry,
    next_entry, Consumed, Credit, CreditOverflow, Entry, ItemError, Subscribe, SubscribeError,
    DEFAULT_STREAM_WINDOW, ENTRY_HEADER_LEN, ENTRY_ITEM, ENTRY_LAGGED, ENTRY_SUBSCRIBED,
    MAX_CREDIT,
};
pub(crate) use stream::{entry_at, EntryRef};
pub use topic::{SlowSubscriber, StreamDirection, Topic, DEFAULT_TOPIC_QUEUE};

/// The highest protocol version this crate speaks (it speaks 1 too): the
/// highest that defines a kind in [`Kind::rules`]'s table.
pub const PROTOCOL_VERSION: u16 = kind::highest_version();

/// The version field of every server's first HELLO, whatever versions the
/// server speaks: a version 1 client closes on any other number, so a
/// server of version 2 announces it in its [`HelloReply`] instead.
pub const SERVER_HELLO_VERSION: u16 = 1;

/// The four bytes that open every HELLO payload.
pub const MAGIC: [u8; 4] = *b"PSVC";

/// Size of the `length` prefix in bytes.
pub const LENGTH_FIELD_LEN: usize = 4;

/// Size of the header that follows the length prefix (kind, flags, id).
pub const HEADER_LEN: usize = 6;

/// Default maximum value of the `length` field: 8 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 8 * 1024 * 1024;

//! The HELLO payloads exchanged when a connection opens.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Encoding, ErrorCode, Kind, MAGIC};

/// Why a HELLO payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Too short, or not starting with `PSVC`.
    #[error("HELLO payload is malformed: {0}")]
    Malformed(&'static str),
    /// Well-formed, but a version this side does not speak.
    #[error("protocol version {0} is not supported (this side speaks 1 to {supported})", supported = super::PROTOCOL_VERSION)]
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
    /// The version field: [`SERVER_HELLO_VERSION`](super::SERVER_HELLO_VERSION)
    /// (1) from every server, whatever versions it speaks.
    pub version: u16,
    /// The largest `length` field the server accepts.
    pub max_frame_len: u32,
    /// The server's self-chosen name (UTF-8, may be empty).
    pub server_name: String,
}

impl ServerHello {
    /// This crate's HELLO, announcing `max_frame_len` and the name
    /// `server_name`. Its version field is
    /// [`SERVER_HELLO_VERSION`](super::SERVER_HELLO_VERSION) (1) whatever
    /// the server speaks: a version 1 client closes on any other number.
    /// A server of version 2 says so in its [`HelloReply`].
    pub fn new(max_frame_len: u32, server_name: impl Into<String>) -> ServerHello {
        ServerHello {
            version: super::SERVER_HELLO_VERSION,
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

    /// Decodes the payload, refusing a version field other than
    /// [`SERVER_HELLO_VERSION`](super::SERVER_HELLO_VERSION).
    pub fn decode(payload: &[u8]) -> Result<ServerHello, HelloError> {
        let version = check_magic(payload)?;
        if version != super::SERVER_HELLO_VERSION {
            return Err(HelloError::UnsupportedVersion(version));
        }
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

/// The client's HELLO: magic, the highest version the client speaks, and
/// (from version 2 on) fields a server that does not know them ignores.
/// Made with [`ClientHello::new`] (or [`decode`](ClientHello::decode)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientHello {
    /// The highest protocol version the client speaks.
    pub version: u16,
    /// Revision 2.2: the frame kinds the client accepts from the server,
    /// as wire bytes (field [`FIELD_KINDS`]); `None` from a client that
    /// sends no such field (every client before revision 2.2), which is
    /// never sent ITEM nor CREDIT.
    pub kinds: Option<KindSet>,
}

/// A set of frame kinds' wire bytes, as a HELLO's kinds field lists them
/// (written in the order of their bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KindSet([u64; 4]);

impl KindSet {
    /// The set of these wire bytes.
    pub fn from_bytes(bytes: &[u8]) -> KindSet {
        let mut set = KindSet::default();
        for &byte in bytes {
            set.0[usize::from(byte / 64)] |= 1 << (byte % 64);
        }
        set
    }

    /// Whether it holds `byte`.
    pub fn contains(&self, byte: u8) -> bool {
        self.0[usize::from(byte / 64)] & (1 << (byte % 64)) != 0
    }

    /// Its bytes, in order. Walks the set bits, not all 256 bytes: a
    /// client writes this in every HELLO (a scan cost 2,700 instructions a
    /// connect).
    pub fn bytes(&self) -> Vec<u8> {
        let count = self.0.iter().map(|word| word.count_ones() as usize).sum();
        let mut bytes = Vec::with_capacity(count);
        for (i, &word) in self.0.iter().enumerate() {
            let mut rest = word;
            while rest != 0 {
                // i < 4 and trailing_zeros < 64: the byte fits.
                bytes.push((i * 64) as u8 + rest.trailing_zeros() as u8);
                rest &= rest - 1; // that bit, done
            }
        }
        bytes
    }
}

impl Default for ClientHello {
    fn default() -> Self {
        ClientHello::new()
    }
}

impl ClientHello {
    /// This crate's HELLO: version [`PROTOCOL_VERSION`](super::PROTOCOL_VERSION).
    pub fn new() -> ClientHello {
        ClientHello::with_version(super::PROTOCOL_VERSION)
    }

    /// A HELLO naming `version` (1 for a client that speaks version 1 only).
    pub fn with_version(version: u16) -> ClientHello {
        ClientHello {
            version,
            kinds: None,
        }
    }

    /// Whether the client accepts frames of `kind` from the server: only
    /// if it listed them (revision 2.2), so never ITEM nor CREDIT from a
    /// client that sent no kinds.
    pub fn accepts(&self, kind: Kind) -> bool {
        self.kinds.is_some_and(|kinds| kinds.contains(kind.to_u8()))
    }

    /// Encodes the payload: magic and version, then (revision 2.2) the
    /// kinds field if there is one.
    pub fn encode(&self) -> Bytes {
        let kinds = self.kinds.map(|kinds| kinds.bytes());
        let kinds = kinds.as_deref();
        let mut buf = BytesMut::with_capacity(6 + kinds.map_or(0, |k| 3 + k.len()));
        buf.put_slice(&MAGIC);
        buf.put_u16_le(self.version);
        if let Some(kinds) = kinds {
            buf.put_u8(FIELD_KINDS);
            buf.put_u16_le(kinds.len() as u16);
            buf.put_slice(kinds);
        }
        buf.freeze()
    }

    /// Decodes the payload. Any version from 1 up is accepted (the server
    /// answers with the lower of it and its own, [`negotiate`]). After the
    /// version come fields (revision 2.2): the kinds field is read, fields
    /// of other tags are skipped. A field that runs past the end is
    /// malformed once this crate speaks revision 2.2
    /// ([`SPOKEN_REVISION`](super::SPOKEN_REVISION)); until then bytes
    /// after the version that are not whole fields are ignored, as
    /// revision 2.1 says.
    pub fn decode(payload: &[u8]) -> Result<ClientHello, HelloError> {
        let version = check_magic(payload)?;
        if version == 0 {
            return Err(HelloError::UnsupportedVersion(0));
        }
        let mut hello = ClientHello::with_version(version);
        match read_fields(&payload[6..], |tag, value| {
            if tag == FIELD_KINDS {
                hello.kinds = Some(KindSet::from_bytes(value));
            }
            Ok(())
        }) {
            Ok(()) => Ok(hello),
            Err(e) if super::SPOKEN_REVISION >= 2 => Err(e),
            Err(_) => Ok(ClientHello::with_version(version)),
        }
    }
}

/// The version a server that speaks up to [`PROTOCOL_VERSION`] uses with a
/// client whose HELLO names `client_version`: the lower of the two.
///
/// [`PROTOCOL_VERSION`]: super::PROTOCOL_VERSION
pub fn negotiate(client_version: u16) -> u16 {
    client_version.min(super::PROTOCOL_VERSION)
}

/// A field of [`HelloReply`]: the message encodings the server accepts for
/// CALL params, one byte each ([`Encoding`]), in its order of preference.
pub const FIELD_ENCODINGS: u8 = 1;

/// A field of [`HelloReply`]: the frame kinds the server accepts from a
/// client, one byte each.
pub const FIELD_KINDS: u8 = 2;

/// A field of [`HelloReply`] (revision 2.2): u32, the initial credit in
/// bytes of each direction of every stream.
pub const FIELD_STREAM_WINDOW: u8 = 3;

/// The server's second HELLO, sent only on a connection of version 2 or
/// later, right after it accepted the client's HELLO: the version chosen,
/// then fields (`u8 tag, u16 length, value`) of which a client ignores
/// those it does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HelloReply {
    /// The version of this connection: the lower of the client's and the
    /// server's highest.
    pub version: u16,
    /// The encodings the server accepts for CALL params, as wire bytes
    /// (see [`Encoding::from_u8`]), in its order of preference.
    pub encodings: Vec<u8>,
    /// The frame kinds the server accepts from a client, as wire bytes.
    pub kinds: Vec<u8>,
    /// Revision 2.2: the initial credit, in bytes, of each direction of
    /// every stream ([`FIELD_STREAM_WINDOW`]); `None` from a server that
    /// does not stream (it lists no ITEM in `kinds`).
    pub stream_window: Option<u32>,
}

impl HelloReply {
    /// The reply for a connection of `version`, offering `encodings`, from a
    /// server that accepts the client kinds this crate defines for it
    /// ([`Kind::accepted_from_client`], from the kinds' table).
    pub fn new(version: u16, encodings: &[Encoding]) -> HelloReply {
        let kinds: Vec<u8> = Kind::accepted_from_client(version)
            .map(Kind::to_u8)
            .collect();
        // A server that takes ITEMs streams: it says with what window.
        let streams = kinds.contains(&Kind::Item.to_u8());
        HelloReply {
            version,
            encodings: encodings.iter().map(|e| e.to_u8()).collect(),
            kinds,
            stream_window: streams.then_some(super::DEFAULT_STREAM_WINDOW),
        }
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(6 + 6 + self.encodings.len() + self.kinds.len());
        buf.put_slice(&MAGIC);
        buf.put_u16_le(self.version);
        for (tag, value) in [
            (FIELD_ENCODINGS, &self.encodings),
            (FIELD_KINDS, &self.kinds),
        ] {
            buf.put_u8(tag);
            buf.put_u16_le(value.len() as u16);
            buf.put_slice(value);
        }
        if let Some(window) = self.stream_window {
            buf.put_u8(FIELD_STREAM_WINDOW);
            buf.put_u16_le(4);
            buf.put_u32_le(window);
        }
        buf.freeze()
    }

    /// Decodes the payload; fields of unknown tags are skipped, a field
    /// that runs past the end is malformed.
    pub fn decode(payload: &[u8]) -> Result<HelloReply, HelloError> {
        let version = check_magic(payload)?;
        if version < 2 {
            return Err(HelloError::Malformed(
                "a HELLO reply names version 2 or later",
            ));
        }
        let mut reply = HelloReply {
            version,
            encodings: Vec::new(),
            kinds: Vec::new(),
            stream_window: None,
        };
        read_fields(&payload[6..], |tag, value| {
            match tag {
                FIELD_ENCODINGS => reply.encodings = value.to_vec(),
                FIELD_KINDS => reply.kinds = value.to_vec(),
                FIELD_STREAM_WINDOW => {
                    let window: [u8; 4] = value
                        .try_into()
                        .map_err(|_| HelloError::Malformed("a stream window is not 4 bytes"))?;
                    reply.stream_window = Some(u32::from_le_bytes(window));
                }
                _ => {}
            }
            Ok(())
        })?;
        Ok(reply)
    }

    /// The offered encodings this crate knows, in the server's order.
    pub fn known_encodings(&self) -> Vec<Encoding> {
        self.known_encodings_iter().collect()
    }

    /// [`HelloReply::known_encodings`] without collecting them: a typed
    /// call picks its encoding from them and allocates nothing.
    pub(crate) fn known_encodings_iter(&self) -> impl Iterator<Item = Encoding> + Clone + '_ {
        self.encodings
            .iter()
            .filter_map(|&byte| Encoding::from_u8(byte))
    }

    /// Whether the server accepts frames of `kind` from a client.
    pub fn accepts(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind.to_u8())
    }
}

/// Calls `field` with each field's tag and value (`u8 tag, u16 length,
/// value`), in order; one that runs past the end is malformed.
fn read_fields(
    mut rest: &[u8],
    mut field: impl FnMut(u8, &[u8]) -> Result<(), HelloError>,
) -> Result<(), HelloError> {
    while !rest.is_empty() {
        let (tag, len) = match rest {
            [tag, a, b, ..] => (*tag, u16::from_le_bytes([*a, *b]) as usize),
            _ => return Err(HelloError::Malformed("a field header is cut short")),
        };
        let value = rest
            .get(3..3 + len)
            .ok_or(HelloError::Malformed("a field runs past the end"))?;
        field(tag, value)?;
        rest = &rest[3 + len..];
    }
    Ok(())
}

/// Checks the magic; returns the version that follows it.
fn check_magic(payload: &[u8]) -> Result<u16, HelloError> {
    if payload.len() < 6 {
        return Err(HelloError::Malformed("shorter than magic and version"));
    }
    if payload[..4] != MAGIC {
        return Err(HelloError::Malformed("does not start with PSVC"));
    }
    Ok(u16::from_le_bytes([payload[4], payload[5]]))
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
        assert_eq!(&ClientHello::with_version(1).encode()[..], b"PSVC\x01\x00");
    }

    #[test]
    fn wrong_magic_and_version_are_told_apart() {
        assert_eq!(
            ClientHello::decode(b"PSVX\x01\x00").unwrap_err().code(),
            ErrorCode::MALFORMED_FRAME
        );
        assert_eq!(
            ClientHello::decode(b"PSVC\x00\x00"),
            Err(HelloError::UnsupportedVersion(0))
        );
        assert_eq!(
            ClientHello::decode(b"PSV").unwrap_err().code(),
            ErrorCode::MALFORMED_FRAME
        );
        assert!(ServerHello::decode(b"PSVC\x01\x00\x00").is_err());
        assert_eq!(
            ServerHello::decode(b"PSVC\x02\x00\x00\x10\x00\x00"),
            Err(HelloError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn a_client_hello_of_any_later_version_is_accepted_and_negotiated_down() {
        assert_eq!(ClientHello::new().encode().as_ref(), b"PSVC\x02\x00");
        let v9 = ClientHello::decode(b"PSVC\x09\x00\x07\x06\x00future").unwrap();
        assert_eq!(v9.version, 9);
        assert_eq!(negotiate(v9.version), 2);
        assert_eq!(negotiate(1), 1);
    }

    #[test]
    fn hello_reply_layout_matches_protocol_md() {
        let reply = HelloReply::new(2, &[Encoding::MessagePack, Encoding::Json]);
        let bytes = reply.encode();
        assert_eq!(
            bytes.as_ref(),
            b"PSVC\x02\x00\x01\x02\x00\x02\x01\x02\x0c\x00\x01\x02\x05\x07\x09\x0a\x0b\x0c\
              \x0d\x0e\x0f\x10\x03\x04\x00\x00\x00\x04\x00"
        );
        assert_eq!(HelloReply::decode(&bytes), Ok(reply.clone()));
        assert_eq!(
            reply.known_encodings(),
            vec![Encoding::MessagePack, Encoding::Json]
        );
        assert!(reply.accepts(Kind::Cancel) && !reply.accepts(Kind::Response));
    }

    #[test]
    fn a_kind_set_lists_its_bytes_in_order_in_every_word() {
        for bytes in [
            &[][..],
            &[0],
            &[255],
            &[0, 1, 63, 64, 65, 127, 128, 191, 192, 254, 255],
            &[3, 4, 5, 6, 8, 13, 14],
        ] {
            let set = KindSet::from_bytes(bytes);
            assert_eq!(set.bytes(), bytes);
            let scanned: Vec<u8> = (0..=u8::MAX).filter(|&b| set.contains(b)).collect();
            assert_eq!(set.bytes(), scanned);
        }
        let every: Vec<u8> = (0..=u8::MAX).collect();
        assert_eq!(KindSet::from_bytes(&every).bytes(), every);
        // Listed twice, written once.
        assert_eq!(KindSet::from_bytes(&[9, 2, 9]).bytes(), [2, 9]);
    }

    #[test]
    fn a_revision_2_2_client_hello_lists_the_kinds_it_accepts() {
        // PROTOCOL.md, "A complete exchange, revision 2.2".
        let payload = b"PSVC\x02\x00\x02\x08\x00\x01\x03\x04\x05\x06\x08\x0d\x0e";
        let hello = ClientHello::decode(payload).unwrap();
        let kinds = hello.kinds.unwrap().bytes();
        assert_eq!(kinds, [1, 3, 4, 5, 6, 8, 13, 14]);
        assert!(hello.accepts(Kind::Item) && hello.accepts(Kind::Credit));
        assert_eq!(&hello.encode()[..], &payload[..]);
        // Fields of other tags are skipped.
        let more = b"PSVC\x02\x00\x09\x01\x00z\x02\x01\x00\x0d";
        let kinds = ClientHello::decode(more).unwrap().kinds;
        assert_eq!(kinds, Some(KindSet::from_bytes(&[13])));
        // A client before revision 2.2 lists nothing: it is sent no ITEM.
        let old = ClientHello::decode(b"PSVC\x02\x00").unwrap();
        assert_eq!(old.kinds, None);
        assert!(!old.accepts(Kind::Item));
        // A field that runs past the end: malformed (revision 2.2).
        let cut = ClientHello::decode(b"PSVC\x02\x00\x02\x05\x00\x01");
        assert_eq!(cut.unwrap_err().code(), ErrorCode::MALFORMED_FRAME);
    }

    #[test]
    fn a_revision_2_2_hello_reply_carries_the_stream_window() {
        // PROTOCOL.md, "A complete exchange, revision 2.2".
        let payload = b"PSVC\x02\x00\x01\x02\x00\x02\x01\x02\x0c\x00\
            \x01\x02\x05\x07\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x03\x04\x00\x00\x00\x04\x00";
        let reply = HelloReply::decode(payload).unwrap();
        assert_eq!(
            reply.stream_window,
            Some(super::super::DEFAULT_STREAM_WINDOW)
        );
        assert_eq!(reply.kinds, [1, 2, 5, 7, 9, 10, 11, 12, 13, 14, 15, 16]);
        assert_eq!(&reply.encode()[..], &payload[..]);
        // A 2.1 server sends no window.
        let old = b"PSVC\x02\x00\x01\x01\x00\x01\x02\x08\x00\x01\x02\x05\x07\x09\x0a\x0b\x0c";
        let old = HelloReply::decode(old).unwrap();
        assert_eq!(old.stream_window, None);
        assert_eq!(HelloReply::decode(&old.encode()).unwrap(), old);
        let short = b"PSVC\x02\x00\x03\x02\x00\x00\x04";
        assert!(HelloReply::decode(short).is_err());
    }

    #[test]
    fn hello_reply_skips_unknown_fields_and_refuses_cut_ones() {
        let mut bytes = b"PSVC\x03\x00\x09\x02\x00zz\x01\x01\x00\x01".to_vec();
        let reply = HelloReply::decode(&bytes).unwrap();
        assert_eq!((reply.version, reply.encodings), (3, vec![1]));
        bytes.extend_from_slice(b"\x02\x05\x00\x01");
        assert!(HelloReply::decode(&bytes).is_err());
        assert!(HelloReply::decode(b"PSVC\x01\x00").is_err());
        assert!(HelloReply::decode(b"PSVC\x02\x00\x01").is_err());
    }
}

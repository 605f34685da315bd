//! The payload of a CALL (protocol 2): which method, in which encoding,
//! within which deadline, with which metadata; then the params.
//!
//! ```text
//! offset 0  u8   encoding   of the params and of the answer (see `Encoding`)
//! offset 1  u8   M          length of the method name
//! offset 2  M    method     UTF-8; empty: the service's byte handler
//! then      u32  timeout    milliseconds the server allows the call; 0: none
//! then      u8   n          metadata entries
//! then      n x (u8 K, K bytes key, u16 V, V bytes value)   both UTF-8
//! then           params     the rest of the payload
//! ```

use std::fmt;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

/// How the params of a CALL and its answer are encoded (protocol 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// JSON (RFC 8259), UTF-8: readable, and what other languages and the
    /// CLI use. Wire byte 1.
    Json,
    /// MessagePack, structs as maps of field names to values: compact, and
    /// still self-describing. Wire byte 2.
    MessagePack,
}

impl Encoding {
    /// The encoding for a wire byte, or `None` for one this crate does not know.
    pub fn from_u8(byte: u8) -> Option<Encoding> {
        match byte {
            1 => Some(Encoding::Json),
            2 => Some(Encoding::MessagePack),
            _ => None,
        }
    }

    /// The encoding's wire byte.
    pub fn to_u8(self) -> u8 {
        match self {
            Encoding::Json => 1,
            Encoding::MessagePack => 2,
        }
    }

    /// Its name in PROTOCOL.md, DESCRIBE and the CLI: `json` or `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::MessagePack => "msgpack",
        }
    }

    /// The encoding called `name` ([`Encoding::name`]).
    pub fn from_name(name: &str) -> Option<Encoding> {
        [Encoding::Json, Encoding::MessagePack]
            .into_iter()
            .find(|e| e.name() == name)
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Metadata keys starting with this are the protocol's, not a service's
/// (PROTOCOL.md, "CALL"). None is defined yet: a server does not pass them
/// to its handlers, so that none comes to rely on one, and a later
/// revision may give them a meaning that an older server simply ignores.
pub const RESERVED_METADATA_PREFIX: &str = "pipesvc-";

/// The longest method name: its length is one byte.
pub const MAX_METHOD_LEN: usize = u8::MAX as usize;

/// The most metadata entries one CALL carries: their count is one byte.
pub const MAX_METADATA: usize = u8::MAX as usize;

/// A CALL's header: everything before its params.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallHeader {
    /// The encoding byte as sent (see [`Encoding::from_u8`]); ignored for
    /// the byte handler (an empty method).
    pub encoding: u8,
    /// The method; empty for the service's byte handler.
    pub method: String,
    /// How long the server allows the call, from when it reads it.
    pub timeout: Option<Duration>,
    /// Free key/value pairs, such as a trace context.
    pub metadata: Vec<(String, String)>,
}

/// Why a CALL's header cannot be read, or made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The payload ends inside the header.
    #[error("the CALL header is cut short: {0}")]
    Truncated(&'static str),
    /// A method name, key or value is not UTF-8.
    #[error("the CALL header's {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A method name, key or value is longer than its length field allows,
    /// or there are more than 255 metadata entries.
    #[error("the CALL header's {what} is too long ({len}, at most {max})")]
    TooLong {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The most its length field holds.
        max: usize,
    },
    /// The system refused the memory for a copy of a name, key or value
    /// (an address-space limit, for example): the call cannot be taken
    /// now, and may be sent again later.
    #[error("cannot allocate {0} bytes for the CALL header; try again later")]
    NoMemory(usize),
}

impl CallHeader {
    /// A header calling `method` with params in `encoding`, no deadline and
    /// no metadata.
    pub fn new(method: impl Into<String>, encoding: Encoding) -> CallHeader {
        CallHeader {
            encoding: encoding.to_u8(),
            method: method.into(),
            timeout: None,
            metadata: Vec::new(),
        }
    }

    /// The same header with a deadline (`None`: none).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> CallHeader {
        self.timeout = timeout;
        self
    }

    /// The same header with `metadata`.
    pub fn with_metadata(mut self, metadata: Vec<(String, String)>) -> CallHeader {
        self.metadata = metadata;
        self
    }

    /// The encoding, if this crate knows its byte.
    pub fn known_encoding(&self) -> Option<Encoding> {
        Encoding::from_u8(self.encoding)
    }

    /// The timeout field: milliseconds, rounded up so that a deadline
    /// under a millisecond is not sent as "none", and at most `u32::MAX`.
    pub fn timeout_ms(&self) -> u32 {
        self.parts().timeout_ms()
    }

    /// Bytes the header takes on the wire.
    pub fn encoded_len(&self) -> usize {
        self.parts().encoded_len()
    }

    /// Appends the header to `buf`; the params go right after it.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), CallError> {
        self.parts().encode(buf)
    }

    /// A whole CALL payload: this header, then `params`.
    pub fn encode_with(&self, params: &[u8]) -> Result<Bytes, CallError> {
        self.parts().encode_with(params)
    }

    fn parts(&self) -> CallParts<'_> {
        CallParts {
            encoding: self.encoding,
            method: &self.method,
            timeout: self.timeout,
            metadata: &self.metadata,
        }
    }
    /// Splits a CALL payload into its header and its params (which share
    /// the payload's memory).
    pub fn decode(payload: &Bytes) -> Result<(CallHeader, Bytes), CallError> {
        let (read, params) = ReadHeader::decode(payload)?;
        let header = CallHeader {
            encoding: read.encoding,
            method: owned_text(read.method.as_str())?,
            timeout: read.timeout,
            metadata: read.metadata,
        };
        Ok((header, params))
    }

    /// Bytes the header's own copies take in memory (the method, the keys
    /// and values, and their bookkeeping), apart from the frame it was
    /// read from.
    pub fn heap_len(&self) -> usize {
        self.method.len() + metadata_heap_len(&self.metadata)
    }

    /// The value of the first metadata entry called `key`.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A CALL header as the server reads it: [`CallHeader`]'s fields, with
/// the method a slice of the frame rather than a `String` of its own
/// (one allocation and copy less per call, about 200 instructions).
#[derive(Debug)]
pub(crate) struct ReadHeader {
    pub(crate) encoding: u8,
    pub(crate) method: MethodName,
    pub(crate) timeout: Option<Duration>,
    pub(crate) metadata: Vec<(String, String)>,
}

impl ReadHeader {
    /// Splits a CALL payload into its header and its params, both sharing
    /// the payload's memory (the metadata apart: copied, as they are few).
    pub(crate) fn decode(payload: &Bytes) -> Result<(ReadHeader, Bytes), CallError> {
        let mut reader = Reader {
            buf: payload,
            at: 0,
        };
        let encoding = reader.u8("encoding")?;
        let method_len = reader.u8("method length")? as usize;
        let method = reader.name(payload, method_len)?;
        let timeout = match reader.u32("timeout")? {
            0 => None,
            ms => Some(Duration::from_millis(ms.into())),
        };
        let entries = reader.u8("metadata count")?;
        let mut metadata = Vec::new();
        metadata
            .try_reserve_exact(entries.into())
            .map_err(|_| CallError::NoMemory(usize::from(entries) * 48))?;
        for _ in 0..entries {
            let key_len = reader.u8("metadata key length")? as usize;
            let key = reader.text(key_len, "metadata key")?;
            let value_len = reader.u16("metadata value length")? as usize;
            let value = reader.text(value_len, "metadata value")?;
            metadata.push((key, value));
        }
        let header = ReadHeader {
            encoding,
            method,
            timeout,
            metadata,
        };
        Ok((header, payload.slice(reader.at..)))
    }

    /// The encoding, if this crate knows its byte.
    pub(crate) fn known_encoding(&self) -> Option<Encoding> {
        Encoding::from_u8(self.encoding)
    }

    /// What the header holds in memory beyond its frame's bytes, counted
    /// as [`CallHeader::heap_len`] counts it (the method included, which
    /// may be [detached](MethodName::detached) from the frame).
    pub(crate) fn heap_len(&self) -> usize {
        self.method.0.len() + metadata_heap_len(&self.metadata)
    }
}

/// A CALL's method name as read: bytes of the frame, checked to be UTF-8
/// when read. Every way to make one starts from UTF-8 it has checked (or
/// a `str`), and its bytes never change: [`MethodName::as_str`] relies on
/// it.
#[derive(Debug)]
pub(crate) struct MethodName(Bytes);

impl MethodName {
    /// The name. Not checked again: `str::from_utf8` is a call of its own
    /// that costs about 100 instructions, and the server asks for the name
    /// four times a call (440 instructions in callgrind).
    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: the bytes are UTF-8: `Reader::name` checked them, or
        // they were copied from a `str` or from another `MethodName`, and
        // `Bytes` never changes what it holds.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The name in memory of its own, not the frame's: for a header kept
    /// while the large frame it came in is let go ([`own_copy`]).
    pub(crate) fn detached(&self) -> Result<MethodName, CallError> {
        own_copy(&self.0).map(MethodName)
    }
}

/// What metadata entries hold in memory: their text and the `String`s'
/// bookkeeping.
fn metadata_heap_len(metadata: &[(String, String)]) -> usize {
    const STRING: usize = std::mem::size_of::<String>();
    metadata
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2 * STRING)
        .sum()
}

/// A name not read from a frame (a test's, say).
impl From<&str> for MethodName {
    fn from(name: &str) -> MethodName {
        MethodName(Bytes::copy_from_slice(name.as_bytes()))
    }
}

/// `bytes` in an allocation of their own, allocated fallibly (as
/// [`owned_text`]): for what a server keeps of a CALL without keeping its
/// large frame.
pub(crate) fn own_copy(bytes: &[u8]) -> Result<Bytes, CallError> {
    let mut copy = Vec::new();
    copy.try_reserve_exact(bytes.len())
        .map_err(|_| CallError::NoMemory(bytes.len()))?;
    copy.extend_from_slice(bytes);
    Ok(copy.into())
}

/// `text` as a `String` of its own, allocated fallibly: a CALL holds up
/// to 16 MiB of names and metadata, which a server under a memory limit
/// must be able to refuse rather than abort on.
fn owned_text(text: &str) -> Result<String, CallError> {
    let mut owned = String::new();
    owned
        .try_reserve_exact(text.len())
        .map_err(|_| CallError::NoMemory(text.len()))?;
    owned.push_str(text);
    Ok(owned)
}

/// A CALL header's fields, borrowed: what a client encodes each call
/// from, without copying its method name and metadata into a
/// [`CallHeader`] first.
pub(crate) struct CallParts<'a> {
    pub(crate) encoding: u8,
    pub(crate) method: &'a str,
    pub(crate) timeout: Option<Duration>,
    pub(crate) metadata: &'a [(String, String)],
}

impl CallParts<'_> {
    fn timeout_ms(&self) -> u32 {
        self.timeout.map_or(0, |t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            ms.clamp(1, u32::MAX as u128) as u32
        })
    }

    fn encoded_len(&self) -> usize {
        let entries: usize = self
            .metadata
            .iter()
            .map(|(k, v)| 1 + k.len() + 2 + v.len())
            .sum();
        2 + self.method.len() + 4 + 1 + entries
    }

    fn encode(&self, buf: &mut BytesMut) -> Result<(), CallError> {
        check_len("method", self.method.len(), MAX_METHOD_LEN)?;
        check_len("metadata", self.metadata.len(), MAX_METADATA)?;
        for (key, value) in self.metadata {
            check_len("metadata key", key.len(), u8::MAX as usize)?;
            check_len("metadata value", value.len(), u16::MAX as usize)?;
        }
        buf.reserve(self.encoded_len());
        // The fixed fields in two pieces around the method: each `put_*`
        // checks and moves the buffer's length on its own.
        buf.extend_from_slice(&[self.encoding, self.method.len() as u8]);
        buf.extend_from_slice(self.method.as_bytes());
        let mut after = [0u8; 5];
        after[..4].copy_from_slice(&self.timeout_ms().to_le_bytes());
        after[4] = self.metadata.len() as u8;
        buf.extend_from_slice(&after);
        for (key, value) in self.metadata {
            buf.put_u8(key.len() as u8);
            buf.put_slice(key.as_bytes());
            buf.put_u16_le(value.len() as u16);
            buf.put_slice(value.as_bytes());
        }
        Ok(())
    }

    /// A whole CALL payload: the header, then `params`.
    pub(crate) fn encode_with(&self, params: &[u8]) -> Result<Bytes, CallError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len() + params.len());
        self.encode(&mut buf)?;
        buf.put_slice(params);
        Ok(buf.freeze())
    }
}

fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), CallError> {
    if len > max {
        return Err(CallError::TooLong { what, len, max });
    }
    Ok(())
}

/// Reads the header's fields in order, naming the one that is cut short.
struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], CallError> {
        let bytes = self
            .buf
            .get(self.at..self.at + n)
            .ok_or(CallError::Truncated(what))?;
        self.at += n;
        Ok(bytes)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CallError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CallError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CallError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes(bytes.try_into().expect("4 bytes")))
    }

    /// The next `n` bytes as a `String` of their own ([`owned_text`]).
    fn text(&mut self, n: usize, what: &'static str) -> Result<String, CallError> {
        owned_text(self.str(n, what)?)
    }

    /// The next `n` bytes, checked to be UTF-8.
    fn str(&mut self, n: usize, what: &'static str) -> Result<&str, CallError> {
        let bytes = self.take(n, what)?;
        std::str::from_utf8(bytes).map_err(|_| CallError::NotUtf8(what))
    }

    /// The method: the next `n` bytes, checked to be UTF-8, as a slice of
    /// `payload` (the buffer this reader reads).
    fn name(&mut self, payload: &Bytes, n: usize) -> Result<MethodName, CallError> {
        let start = self.at;
        let bytes = self.take(n, "method")?;
        // A name is nearly always ASCII, which is UTF-8 and is told at a
        // fraction of `from_utf8`'s cost (110 instructions a call).
        if !bytes.is_ascii() && std::str::from_utf8(bytes).is_err() {
            return Err(CallError::NotUtf8("method"));
        }
        Ok(MethodName(payload.slice(start..start + n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_protocol_md() {
        let header = CallHeader::new("sleep", Encoding::Json)
            .with_timeout(Some(Duration::from_millis(1500)))
            .with_metadata(vec![("trace".into(), "ab".into())]);
        let payload = header.encode_with(br#"{"ms":5}"#).unwrap();
        let expected: &[u8] = b"\x01\x05sleep\xdc\x05\x00\x00\x01\x05trace\x02\x00ab{\"ms\":5}";
        assert_eq!(payload.as_ref(), expected);
        assert_eq!(header.encoded_len(), payload.len() - 8);
        let (decoded, params) = CallHeader::decode(&payload).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(params.as_ref(), br#"{"ms":5}"#);
        assert_eq!(decoded.metadata_value("trace"), Some("ab"));
        assert_eq!(decoded.known_encoding(), Some(Encoding::Json));
    }

    #[test]
    fn every_cut_of_a_header_names_the_field_it_ends_in() {
        let header = CallHeader::new("m", Encoding::MessagePack)
            .with_metadata(vec![("k".into(), "v".into())]);
        let payload = header.encode_with(b"").unwrap();
        for cut in 0..payload.len() {
            let err = CallHeader::decode(&payload.slice(..cut)).unwrap_err();
            assert!(matches!(err, CallError::Truncated(_)), "{cut}: {err}");
        }
        let bad = Bytes::from_static(b"\x01\x02\xff\xfe\x00\x00\x00\x00\x00");
        assert_eq!(
            CallHeader::decode(&bad).unwrap_err(),
            CallError::NotUtf8("method")
        );
    }

    #[test]
    fn the_server_reads_any_utf8_method_and_refuses_other_bytes() {
        // Not ASCII, so past the ASCII shortcut: UTF-8 all the same.
        let payload = CallHeader::new("grüße.añadir", Encoding::Json)
            .encode_with(b"[]")
            .unwrap();
        let (read, params) = ReadHeader::decode(&payload).unwrap();
        assert_eq!(read.method.as_str(), "grüße.añadir");
        assert_eq!(params.as_ref(), b"[]");
        let detached = read.method.detached().unwrap();
        assert_eq!(detached.as_str(), "grüße.añadir");
        // A lone continuation byte, a cut sequence, a surrogate: not UTF-8.
        for method in [&b"a\x80"[..], b"\xc3", b"\xed\xa0\x80"] {
            let mut bad = vec![1, method.len() as u8];
            bad.extend_from_slice(method);
            bad.extend_from_slice(&[0, 0, 0, 0, 0]);
            let bad = Bytes::from(bad);
            assert_eq!(
                ReadHeader::decode(&bad).unwrap_err(),
                CallError::NotUtf8("method")
            );
            assert_eq!(
                CallHeader::decode(&bad).unwrap_err(),
                CallError::NotUtf8("method")
            );
        }
    }

    #[test]
    fn a_timeout_is_rounded_up_to_a_millisecond_and_capped() {
        let ms = |t| {
            CallHeader::new("m", Encoding::Json)
                .with_timeout(t)
                .timeout_ms()
        };
        assert_eq!(ms(None), 0);
        assert_eq!(ms(Some(Duration::from_micros(1))), 1);
        assert_eq!(ms(Some(Duration::from_micros(1001))), 2);
        assert_eq!(ms(Some(Duration::from_secs(u64::MAX))), u32::MAX);
    }

    #[test]
    fn names_too_long_for_their_length_field_are_refused() {
        let long = CallHeader::new("m".repeat(256), Encoding::Json);
        assert!(matches!(
            long.encode_with(b""),
            Err(CallError::TooLong { what: "method", .. })
        ));
        let many =
            CallHeader::new("m", Encoding::Json).with_metadata(vec![("k".into(), "v".into()); 256]);
        assert!(many.encode_with(b"").is_err());
        assert_eq!(Encoding::from_name("msgpack"), Some(Encoding::MessagePack));
        assert_eq!(Encoding::from_u8(3), None);
    }
}

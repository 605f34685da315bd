//! The payloads of revision 2.2's stream frames (PROTOCOL.md, "Streams",
//! "Flow control", "SUBSCRIBE"): the entries of an ITEM, the u32 of a
//! CREDIT and the header of a SUBSCRIBE, and the rules of a stream's
//! credit.
//!
//! These are the wire layouts only. Nothing here is sent yet: a server of
//! this crate lists no kind above 12 in its HELLO reply, so clients see a
//! revision 2.1 server, and frames of kinds 13 to 16 are still
//! [unknown kinds](super::Kind::Unknown).

use bytes::{BufMut, Bytes, BytesMut};

use super::Encoding;

/// The `stream window` pipesvc announces in its HELLO reply: the initial
/// credit, in bytes of ITEM payload, of each direction of every stream
/// (256 KiB).
pub const DEFAULT_STREAM_WINDOW: u32 = 256 * 1024;

/// The most credit a receiver may give a sender: a CREDIT that takes the
/// sender's credit past it is ERROR `flow control` (PROTOCOL.md, "Flow
/// control").
pub const MAX_CREDIT: i64 = i32::MAX as i64;

/// The bytes an entry's header takes in an ITEM: its type and its value's
/// length.
pub const ENTRY_HEADER_LEN: usize = 5;

/// Entry type: an item of a stream, or an event of a topic.
pub const ENTRY_ITEM: u8 = 0;
/// Entry type: events of a topic were dropped here (u64, how many).
pub const ENTRY_LAGGED: u8 = 1;
/// Entry type: the first entry of a subscription (empty).
pub const ENTRY_SUBSCRIBED: u8 = 2;

/// One entry of an ITEM payload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// An item (or a topic's event): one value in the stream's encoding.
    Item(Bytes),
    /// So many events of a topic were dropped since the subscription's
    /// previous ITEM (from the server only).
    Lagged(u64),
    /// The subscription is open: every event published from now on
    /// reaches it (from the server only; its first entry).
    Subscribed,
}

impl Entry {
    /// Its type byte.
    pub const fn type_byte(&self) -> u8 {
        match self {
            Entry::Item(_) => ENTRY_ITEM,
            Entry::Lagged(_) => ENTRY_LAGGED,
            Entry::Subscribed => ENTRY_SUBSCRIBED,
        }
    }

    /// The bytes it takes in an ITEM payload (and from the sender's
    /// credit): its header and its value.
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER_LEN
            + match self {
                Entry::Item(value) => value.len(),
                Entry::Lagged(_) => 8,
                Entry::Subscribed => 0,
            }
    }

    /// Appends it to an ITEM payload being built.
    pub fn encode_into(&self, buf: &mut BytesMut) {
        match self {
            Entry::Item(value) => encode_item_entry(value, buf),
            Entry::Lagged(lost) => {
                buf.put_u8(ENTRY_LAGGED);
                buf.put_u32_le(8);
                buf.put_u64_le(*lost);
            }
            Entry::Subscribed => {
                buf.put_u8(ENTRY_SUBSCRIBED);
                buf.put_u32_le(0);
            }
        }
    }
}

/// Appends the `item` entry of `value` to `buf`: what
/// [`Entry::Item`]`(value)`'s [`encode_into`](Entry::encode_into) appends,
/// from a borrowed value (a sender that copies its items into one buffer
/// of entries).
pub fn encode_item_entry(value: &[u8], buf: &mut BytesMut) {
    // One reserve and the header whole: each `put_*` checks and moves the
    // buffer's length on its own, on every item of a stream.
    let mut header = [ENTRY_ITEM, 0, 0, 0, 0];
    header[1..].copy_from_slice(&(value.len() as u32).to_le_bytes());
    buf.reserve(ENTRY_HEADER_LEN + value.len());
    buf.extend_from_slice(&header);
    buf.extend_from_slice(value);
}

/// Why an ITEM payload was refused: each is `malformed frame` (id 0),
/// close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// An ITEM with no entry.
    #[error("an ITEM with no entry")]
    Empty,
    /// An entry's header or value runs past the end of the payload.
    #[error("an ITEM entry runs past the end of the payload")]
    CutShort,
    /// A `lagged` entry whose value is not 8 bytes.
    #[error("a lagged entry's value is not 8 bytes")]
    BadLagged,
    /// A `lagged` or `subscribed` entry from a client.
    #[error("an ITEM entry of type {0} from a client")]
    NotFromClient(u8),
}

/// Encodes entries into one ITEM payload. The caller keeps it within the
/// maximum frame (the sum of their [`Entry::encoded_len`]).
pub fn encode_item(entries: &[Entry]) -> Bytes {
    let len = entries.iter().map(Entry::encoded_len).sum();
    let mut buf = BytesMut::with_capacity(len);
    for entry in entries {
        entry.encode_into(&mut buf);
    }
    buf.freeze()
}

/// Decodes an ITEM payload into its entries, skipping entries of a type
/// this crate does not know (a later revision may add types). `from_client`:
/// the ITEM came from a client, which may send `item` entries only.
pub fn decode_item(payload: &Bytes, from_client: bool) -> Result<Vec<Entry>, ItemError> {
    if payload.is_empty() {
        return Err(ItemError::Empty);
    }
    let mut entries = Vec::new();
    let mut at = 0;
    while let Some(entry) = next_entry(payload, &mut at, from_client)? {
        entries.push(entry);
    }
    Ok(entries)
}

/// The entry of an ITEM payload at `*at`, moving `*at` past it: the
/// entries one by one, without collecting them (pipesvc's client keeps an
/// ITEM's payload and hands its entries out as the application takes
/// them). `Ok(None)` at the end; entries of a type this crate does not
/// know are skipped. The errors of [`decode_item`].
pub fn next_entry(
    payload: &Bytes,
    at: &mut usize,
    from_client: bool,
) -> Result<Option<Entry>, ItemError> {
    Ok(entry_at(payload, at, from_client)?.map(|entry| entry.to_entry(payload)))
}

/// An entry of an ITEM payload, its value lent out of the payload: what
/// [`entry_at`] reads, so that checking a payload or decoding an item
/// from it takes no reference on the payload's buffer per entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryRef<'a> {
    Item(&'a [u8]),
    Lagged(u64),
    Subscribed,
}

impl EntryRef<'_> {
    /// The entry as [`next_entry`] hands it out: an item's value a view of
    /// `payload`, the bytes it was lent from.
    pub(crate) fn to_entry(self, payload: &Bytes) -> Entry {
        match self {
            EntryRef::Item(value) => Entry::Item(payload.slice_ref(value)),
            EntryRef::Lagged(missed) => Entry::Lagged(missed),
            EntryRef::Subscribed => Entry::Subscribed,
        }
    }
}

/// [`next_entry`] over borrowed bytes: the one reader of entries.
pub(crate) fn entry_at<'a>(
    payload: &'a [u8],
    at: &mut usize,
    from_client: bool,
) -> Result<Option<EntryRef<'a>>, ItemError> {
    while *at < payload.len() {
        let header = payload
            .get(*at..*at + ENTRY_HEADER_LEN)
            .ok_or(ItemError::CutShort)?;
        let kind = header[0];
        let len = u32::from_le_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let start = *at + ENTRY_HEADER_LEN;
        let end = start.checked_add(len).ok_or(ItemError::CutShort)?;
        let value = payload.get(start..end).ok_or(ItemError::CutShort)?;
        if from_client && matches!(kind, ENTRY_LAGGED | ENTRY_SUBSCRIBED) {
            return Err(ItemError::NotFromClient(kind));
        }
        *at = end;
        match kind {
            ENTRY_ITEM => return Ok(Some(EntryRef::Item(value))),
            ENTRY_LAGGED => {
                let value: [u8; 8] = value.try_into().map_err(|_| ItemError::BadLagged)?;
                return Ok(Some(EntryRef::Lagged(u64::from_le_bytes(value))));
            }
            ENTRY_SUBSCRIBED => return Ok(Some(EntryRef::Subscribed)),
            _ => {}
        }
    }
    Ok(None)
}

/// Checks an ITEM payload as [`decode_item`] does, without collecting its
/// entries (then [`next_entry`] takes them one by one).
pub fn check_item(payload: &Bytes, from_client: bool) -> Result<(), ItemError> {
    if payload.is_empty() {
        return Err(ItemError::Empty);
    }
    let mut at = 0;
    while entry_at(payload, &mut at, from_client)?.is_some() {}
    Ok(())
}

/// The bytes a CREDIT grants: its payload's first 4 (the rest is
/// ignored); `None` for fewer than 4, which is `malformed frame`.
pub fn decode_credit(payload: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(payload.get(..4)?.try_into().ok()?))
}

/// A CREDIT's payload granting `bytes`.
pub fn encode_credit(bytes: u32) -> Bytes {
    Bytes::copy_from_slice(&bytes.to_le_bytes())
}

/// One direction of a stream's credit, as its sender counts it: the bytes
/// of ITEM payload it may still send. It may go below 0 by at most one
/// ITEM (an ITEM is sent while the credit is above 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credit(i64);

/// A CREDIT took the credit past [`MAX_CREDIT`]: ERROR `flow control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a CREDIT took the stream's credit past 2147483647 bytes")]
pub struct CreditOverflow;

impl Credit {
    /// The credit a direction starts with: the stream window.
    pub const fn new(window: u32) -> Credit {
        Credit(window as i64)
    }

    /// The bytes left (below 0 after an ITEM larger than what was left).
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Whether the sender may send an ITEM now: its credit is above 0.
    pub const fn may_send(self) -> bool {
        self.0 > 0
    }

    /// An ITEM of `payload_len` bytes was sent (or read, by the receiver
    /// that checks it). `false` if the credit was used up before it: the
    /// sender broke flow control (the receiver answers ERROR `flow
    /// control`), and the credit is left as it was.
    pub fn take(&mut self, payload_len: usize) -> bool {
        if !self.may_send() {
            return false;
        }
        self.0 -= payload_len as i64;
        true
    }

    /// The receiver granted `bytes` more.
    pub fn grant(&mut self, bytes: u32) -> Result<(), CreditOverflow> {
        let next = self.0 + i64::from(bytes);
        if next > MAX_CREDIT {
            return Err(CreditOverflow);
        }
        self.0 = next;
        Ok(())
    }
}

/// What a receiver has consumed of a stream and not yet granted back:
/// pipesvc grants once that is at least half the window, so that at most
/// a window (and one ITEM) is ever on its way or unread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Consumed {
    window: u32,
    pending: u32,
}

impl Consumed {
    /// Nothing consumed yet, of a stream whose window is `window`.
    pub const fn new(window: u32) -> Consumed {
        Consumed { window, pending: 0 }
    }

    /// The application took an ITEM of `payload_len` bytes: the CREDIT to
    /// send now, if any (what was consumed, once it is half the window).
    pub fn took(&mut self, payload_len: usize) -> Option<u32> {
        let len = u32::try_from(payload_len).unwrap_or(u32::MAX);
        self.pending = self.pending.saturating_add(len);
        if self.pending >= self.window.div_ceil(2).max(1) {
            Some(std::mem::take(&mut self.pending))
        } else {
            None
        }
    }
}

/// Why a SUBSCRIBE's payload was refused: ERROR `bad request` with its
/// id, the connection carrying on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// Shorter than its encoding, the topic's length and the topic.
    #[error("the SUBSCRIBE payload is cut short")]
    CutShort,
    /// A topic of length 0.
    #[error("the SUBSCRIBE names no topic")]
    NoTopic,
    /// A topic that is not UTF-8.
    #[error("the SUBSCRIBE's topic is not UTF-8")]
    NotUtf8,
}

/// A SUBSCRIBE's payload: the encoding of the events and the topic.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Subscribe {
    /// The encoding's wire byte ([`Encoding::from_u8`]); one the server
    /// did not offer is `bad request`.
    pub encoding: u8,
    /// The topic's name, 1 to 255 bytes.
    pub topic: String,
}

impl Subscribe {
    /// A subscription to `topic` (1 to 255 bytes) in `encoding`; `None` for
    /// a topic of another length.
    pub fn new(encoding: Encoding, topic: &str) -> Option<Subscribe> {
        (1..=255).contains(&topic.len()).then(|| Subscribe {
            encoding: encoding.to_u8(),
            topic: topic.to_owned(),
        })
    }

    /// Encodes the payload.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(2 + self.topic.len());
        buf.put_u8(self.encoding);
        buf.put_u8(self.topic.len() as u8);
        buf.put_slice(self.topic.as_bytes());
        buf.freeze()
    }

    /// Decodes the payload; bytes after the topic are ignored.
    pub fn decode(payload: &[u8]) -> Result<Subscribe, SubscribeError> {
        let (&encoding, &len) = match payload {
            [encoding, len, ..] => (encoding, len),
            _ => return Err(SubscribeError::CutShort),
        };
        if len == 0 {
            return Err(SubscribeError::NoTopic);
        }
        let topic = payload
            .get(2..2 + len as usize)
            .ok_or(SubscribeError::CutShort)?;
        let topic = std::str::from_utf8(topic).map_err(|_| SubscribeError::NotUtf8)?;
        Ok(Subscribe {
            encoding,
            topic: topic.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ITEM payloads of PROTOCOL.md's revision 2.2 exchange.
    #[test]
    fn the_documents_items_decode_and_encode_byte_for_byte() {
        let two = Bytes::from_static(b"\x00\x01\x00\x00\x001\x00\x01\x00\x00\x002");
        let entries = decode_item(&two, false).unwrap();
        assert_eq!(
            entries,
            [Entry::Item(Bytes::from("1")), Entry::Item(Bytes::from("2"))]
        );
        assert_eq!(encode_item(&entries), two);

        let subscribed = Bytes::from_static(b"\x02\x00\x00\x00\x00");
        assert_eq!(
            decode_item(&subscribed, false).unwrap(),
            [Entry::Subscribed]
        );

        let lagged = Bytes::from_static(
            b"\x01\x08\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x00\x004000",
        );
        let entries = decode_item(&lagged, false).unwrap();
        assert_eq!(
            entries,
            [Entry::Lagged(2), Entry::Item(Bytes::from("4000"))]
        );
        assert_eq!(encode_item(&entries), lagged);
        // 5 + 9 + 22: the credit the client grants back in the document.
        let thousand = encode_item(&[Entry::Item(Bytes::from("1000"))]);
        assert_eq!(subscribed.len() + thousand.len() + lagged.len(), 0x24);
    }

    #[test]
    fn entries_one_by_one_are_those_decode_item_collects() {
        let payload = Bytes::from_static(
            b"\x02\x00\x00\x00\x00\x09\x01\x00\x00\x00z\x01\x08\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x001",
        );
        let mut at = 0;
        let mut one_by_one = Vec::new();
        while let Some(entry) = next_entry(&payload, &mut at, false).unwrap() {
            one_by_one.push(entry);
        }
        assert_eq!(one_by_one, decode_item(&payload, false).unwrap());
        assert_eq!(at, payload.len());
        assert_eq!(check_item(&payload, false), Ok(()));
        assert_eq!(check_item(&Bytes::new(), false), Err(ItemError::Empty));
        let cut = Bytes::from_static(b"\x00\x05\x00\x00\x00abc");
        assert_eq!(check_item(&cut, false), Err(ItemError::CutShort));
        assert_eq!(check_item(&payload, true), Err(ItemError::NotFromClient(2)));
    }

    #[test]
    fn malformed_items_are_refused() {
        assert_eq!(decode_item(&Bytes::new(), false), Err(ItemError::Empty));
        let cut = Bytes::from_static(b"\x00\x05\x00\x00\x00abc");
        assert_eq!(decode_item(&cut, false), Err(ItemError::CutShort));
        let header = Bytes::from_static(b"\x00\x01\x00");
        assert_eq!(decode_item(&header, false), Err(ItemError::CutShort));
        let lagged = Bytes::from_static(b"\x01\x04\x00\x00\x00abcd");
        assert_eq!(decode_item(&lagged, false), Err(ItemError::BadLagged));
        let subscribed = Bytes::from_static(b"\x02\x00\x00\x00\x00");
        assert_eq!(
            decode_item(&subscribed, true),
            Err(ItemError::NotFromClient(2))
        );
        // A type this revision does not define is skipped.
        let later = Bytes::from_static(b"\x09\x01\x00\x00\x00z\x00\x01\x00\x00\x00a");
        assert_eq!(
            decode_item(&later, true).unwrap(),
            [Entry::Item(Bytes::from("a"))]
        );
    }

    #[test]
    fn credit_follows_the_flow_control_rules() {
        assert_eq!(decode_credit(b"\x24\x00\x00\x00"), Some(36));
        assert_eq!(decode_credit(b"\x24\x00\x00\x00extra"), Some(36));
        assert_eq!(decode_credit(b"\x24\x00\x00"), None);
        assert_eq!(&encode_credit(36)[..], b"\x24\x00\x00\x00");

        let mut credit = Credit::new(10);
        // An ITEM larger than what is left is sent while above 0...
        assert!(credit.take(25));
        assert_eq!(credit.get(), -15);
        // ...and then nothing until credit comes.
        assert!(!credit.take(1));
        credit.grant(20).unwrap();
        assert!(credit.may_send());
        let mut full = Credit::new(u32::MAX >> 1);
        assert_eq!(full.grant(1), Err(CreditOverflow));
        assert_eq!(full.get(), MAX_CREDIT);
        full.grant(0).unwrap();

        let mut consumed = Consumed::new(DEFAULT_STREAM_WINDOW);
        assert_eq!(consumed.took(100_000), None);
        assert_eq!(consumed.took(31_072), Some(131_072));
        assert_eq!(consumed.took(1), None);
    }

    #[test]
    fn the_documents_subscribe_round_trips() {
        let payload = b"\x01\x05ticks";
        let subscribe = Subscribe::decode(payload).unwrap();
        assert_eq!(subscribe, Subscribe::new(Encoding::Json, "ticks").unwrap());
        assert_eq!(&subscribe.encode()[..], payload);
        assert_eq!(
            Subscribe::decode(b"\x01\x05ticksmore").unwrap().topic,
            "ticks"
        );
        assert_eq!(Subscribe::decode(b"\x01"), Err(SubscribeError::CutShort));
        assert_eq!(Subscribe::decode(b"\x01\x00"), Err(SubscribeError::NoTopic));
        assert_eq!(
            Subscribe::decode(b"\x01\x05tick"),
            Err(SubscribeError::CutShort)
        );
        assert_eq!(
            Subscribe::decode(b"\x01\x01\xff"),
            Err(SubscribeError::NotUtf8)
        );
        assert!(Subscribe::new(Encoding::Json, "").is_none());
    }
}

//! The answer to STATUS: a server's counters since it started.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ErrorCode;

/// The layout of the STATUS answer this crate writes (PROTOCOL.md).
pub const STATUS_FORMAT: u16 = 1;

/// Bytes before the list of error counts.
const FIXED_LEN: usize = 2 + 6 * 8 + 2;

/// What a server reports about itself, in answer to STATUS.
///
/// Later formats may append fields, so it is made with `Status::default()`
/// (or [`decode`](Status::decode)) and its fields set one by one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// Time since the server started serving.
    pub uptime: Duration,
    /// Clients connected now (past the handshake).
    pub connections_open: u64,
    /// Connections accepted since the start, refused ones included.
    pub connections_total: u64,
    /// REQUESTs answered (with a RESPONSE or an ERROR).
    pub requests_served: u64,
    /// Bytes of frames received, headers included.
    pub bytes_in: u64,
    /// Bytes of frames sent, headers included.
    pub bytes_out: u64,
    /// ERROR frames sent, by code, in increasing code order.
    pub errors: Vec<(ErrorCode, u64)>,
    /// Requests the client cancelled (answered ERROR `cancelled`); appended
    /// by protocol 2 servers, 0 from older ones.
    pub requests_cancelled: u64,
    /// Requests stopped at a deadline (answered ERROR `timed out`);
    /// appended by protocol 2 servers, 0 from older ones.
    pub requests_timed_out: u64,
    /// Streams of streaming methods open now (revision 2.2; 0 from older
    /// servers, as are the four counts after it).
    pub streams_open: u64,
    /// Item entries sent in ITEMs of streaming methods (revision 2.2).
    pub items_sent: u64,
    /// Subscriptions open now, on every connection (revision 2.2).
    pub subscribers: u64,
    /// Event entries sent to subscribers (revision 2.2).
    pub events_sent: u64,
    /// Events subscribers lost: counted in `lagged` entries, or left
    /// unsent when a subscription or a connection was cut off (revision
    /// 2.2).
    pub events_dropped: u64,
}

/// Bytes of the five counts a server of revision 2.2 appends after the
/// version 2 counts.
pub(crate) const PUSH_LEN: usize = 40;

/// Bytes of the counts a protocol 2 server appends after the error counts.
pub(crate) const APPENDED_LEN: usize = 16;

/// The smallest STATUS answer a protocol 2 server sends: its fixed fields
/// and appended counts, with no error count (68 bytes).
pub(crate) const SMALLEST_ANSWER_LEN: usize = FIXED_LEN + APPENDED_LEN;

impl Status {
    /// The payload of the RESPONSE to STATUS.
    pub fn encode(&self) -> Bytes {
        self.encode_with_push(true)
    }

    /// The payload, without the five counts of revision 2.2 if `push` is
    /// `false` (a server whose maximum payload cannot hold them).
    pub fn encode_with_push(&self, push: bool) -> Bytes {
        let mut buf = BytesMut::with_capacity(FIXED_LEN + self.errors.len() * 10);
        buf.put_u16_le(STATUS_FORMAT);
        buf.put_u64_le(self.uptime.as_millis().min(u64::MAX as u128) as u64);
        for n in [
            self.connections_open,
            self.connections_total,
            self.requests_served,
            self.bytes_in,
            self.bytes_out,
        ] {
            buf.put_u64_le(n);
        }
        buf.put_u16_le(self.errors.len().min(u16::MAX as usize) as u16);
        for &(code, count) in self.errors.iter().take(u16::MAX as usize) {
            buf.put_u16_le(code.0);
            buf.put_u64_le(count);
        }
        buf.put_u64_le(self.requests_cancelled);
        buf.put_u64_le(self.requests_timed_out);
        if push {
            for n in [
                self.streams_open,
                self.items_sent,
                self.subscribers,
                self.events_sent,
                self.events_dropped,
            ] {
                buf.put_u64_le(n);
            }
        }
        buf.freeze()
    }

    /// Reads a STATUS answer; `None` if it is too short or of an unknown
    /// format. Bytes after the documented fields are ignored, so that later
    /// formats may append fields.
    pub fn decode(mut payload: &[u8]) -> Option<Status> {
        if payload.len() < FIXED_LEN || payload.get_u16_le() != STATUS_FORMAT {
            return None;
        }
        let uptime = Duration::from_millis(payload.get_u64_le());
        let mut next = || payload.get_u64_le();
        let (connections_open, connections_total, requests_served, bytes_in, bytes_out) =
            (next(), next(), next(), next(), next());
        let count = payload.get_u16_le() as usize;
        if payload.len() < count * 10 {
            return None;
        }
        let errors = (0..count)
            .map(|_| (ErrorCode(payload.get_u16_le()), payload.get_u64_le()))
            .collect();
        // Absent from a server older than protocol 2.
        let (requests_cancelled, requests_timed_out) = match payload.len() >= APPENDED_LEN {
            true => (payload.get_u64_le(), payload.get_u64_le()),
            false => (0, 0),
        };
        // Absent from a server older than revision 2.2.
        let mut push = [0u64; 5];
        if payload.len() >= PUSH_LEN {
            for n in &mut push {
                *n = payload.get_u64_le();
            }
        }
        let [streams_open, items_sent, subscribers, events_sent, events_dropped] = push;
        Some(Status {
            uptime,
            connections_open,
            connections_total,
            requests_served,
            bytes_in,
            bytes_out,
            errors,
            requests_cancelled,
            requests_timed_out,
            streams_open,
            items_sent,
            subscribers,
            events_sent,
            events_dropped,
        })
    }

    /// The status as one JSON object: uptime in seconds, errors as an
    /// object from code to count.
    pub fn to_json(&self) -> String {
        let mut errors = String::new();
        for (i, (code, count)) in self.errors.iter().enumerate() {
            let comma = if i == 0 { "" } else { "," };
            let _ = write!(errors, "{comma}\"{}\":{count}", code.0);
        }
        format!(
            "{{\"uptime_secs\":{:.3},\"connections_open\":{},\"connections_total\":{},\
             \"requests_served\":{},\"requests_cancelled\":{},\"requests_timed_out\":{},\
             \"bytes_in\":{},\"bytes_out\":{},\"streams_open\":{},\"items_sent\":{},\
             \"subscribers\":{},\"events_sent\":{},\"events_dropped\":{},\
             \"errors\":{{{errors}}}}}",
            self.uptime.as_secs_f64(),
            self.connections_open,
            self.connections_total,
            self.requests_served,
            self.requests_cancelled,
            self.requests_timed_out,
            self.bytes_in,
            self.bytes_out,
            self.streams_open,
            self.items_sent,
            self.subscribers,
            self.events_sent,
            self.events_dropped,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            uptime: Duration::from_millis(90_061_001),
            connections_open: 3,
            connections_total: 1_000_000,
            requests_served: u64::MAX,
            bytes_in: 1 << 40,
            bytes_out: 7,
            errors: vec![(ErrorCode(4), 2), (ErrorCode(1000), 5)],
            requests_cancelled: 6,
            requests_timed_out: 9,
            streams_open: 2,
            items_sent: 3,
            subscribers: 4,
            events_sent: 5,
            events_dropped: 6,
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(Status::decode(&sample().encode()), Some(sample()));
        assert_eq!(
            Status::decode(&Status::default().encode()),
            Some(Status::default())
        );
    }

    #[test]
    fn layout_matches_protocol_md() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), FIXED_LEN + 2 * 10 + APPENDED_LEN + PUSH_LEN);
        assert_eq!(&bytes[..2], &[1, 0]);
        assert_eq!(&bytes[2..10], &90_061_001u64.to_le_bytes());
        assert_eq!(&bytes[50..52], &[2, 0]);
        assert_eq!(&bytes[52..54], &[4, 0]);
        assert_eq!(&bytes[54..62], &2u64.to_le_bytes());
        assert_eq!(&bytes[72..80], &6u64.to_le_bytes());
        assert_eq!(&bytes[80..88], &9u64.to_le_bytes());
        assert_eq!(&bytes[88..96], &2u64.to_le_bytes());
        assert_eq!(&bytes[120..128], &6u64.to_le_bytes());
        // Without errors: 108 bytes of fixed fields (PROTOCOL.md).
        assert_eq!(Status::default().encode().len(), 108);
        assert_eq!(Status::default().encode_with_push(false).len(), 68);
    }

    #[test]
    fn a_status_without_the_protocol_2_counts_reads_them_as_zero() {
        let bytes = sample().encode();
        let old = Status::decode(&bytes[..bytes.len() - APPENDED_LEN - PUSH_LEN]).unwrap();
        assert_eq!((old.requests_cancelled, old.requests_timed_out), (0, 0));
        let v21 = Status::decode(&bytes[..bytes.len() - PUSH_LEN]).unwrap();
        assert_eq!((v21.requests_timed_out, v21.events_dropped), (9, 0));
        assert_eq!(old.errors, sample().errors);
    }

    #[test]
    fn refuses_short_or_unknown_formats_and_ignores_appended_bytes() {
        let bytes = sample().encode();
        assert_eq!(
            Status::decode(&bytes[..bytes.len() - APPENDED_LEN - PUSH_LEN - 1]),
            None
        );
        assert_eq!(Status::decode(&bytes[..FIXED_LEN - 1]), None);
        let mut other = bytes.to_vec();
        other[0] = 2;
        assert_eq!(Status::decode(&other), None);
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(b"future fields");
        assert_eq!(Status::decode(&longer), Some(sample()));
    }

    #[test]
    fn json_has_every_field() {
        assert_eq!(
            sample().to_json(),
            "{\"uptime_secs\":90061.001,\"connections_open\":3,\"connections_total\":1000000,\
             \"requests_served\":18446744073709551615,\"requests_cancelled\":6,\
             \"requests_timed_out\":9,\"bytes_in\":1099511627776,\
             \"bytes_out\":7,\"streams_open\":2,\"items_sent\":3,\"subscribers\":4,\
             \"events_sent\":5,\"events_dropped\":6,\"errors\":{\"4\":2,\"1000\":5}}"
        );
    }
}

//! Messages to and from bytes in a CALL's encoding, shared by both sides.

use std::cell::Cell;
use std::io;

use bytes::Bytes;
use rmp_serde::decode::ReadRefReader;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::bounded::{Meter, Metered};
use crate::protocol::Encoding;

/// `value` in `encoding`: JSON, or MessagePack with structs as maps of
/// field names (PROTOCOL.md, "Encodings").
pub(crate) fn encode<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    encode_into(encoding, value, &mut out)?;
    Ok(out)
}

fn encode_into<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    match encoding {
        Encoding::Json => serde_json::to_writer(out, value).map_err(|e| e.to_string()),
        Encoding::MessagePack => {
            rmp_serde::encode::write_named(out, value).map_err(|e| e.to_string())
        }
    }
}

// Most values are small, and encoding one into a Vec of its own cost
// three trips to the allocator: the Vec, its regrowth (or the trim that
// keeps a queued item from holding twice its length), and the shared
// header `Bytes::from(Vec)` allocates when length and capacity differ.
// Each thread keeps one buffer to encode into instead; a small value is
// copied out of it at its length (one allocation, or none when the
// caller copies it into a frame), a large one takes the buffer with it.

/// Encoded values up to this length are copied out of the thread's
/// buffer; a longer one keeps the buffer it was encoded in.
const COPY_UP_TO: usize = 8 * 1024;

// The thread's buffer to encode into: empty between uses, its capacity at
// most `2 * COPY_UP_TO` (what doubling reaches on the way to a value that
// is copied out). A value encoded while another is (a `Serialize` that
// makes a call) finds it taken and starts a new one.
thread_local! {
    // It is `const`: clippy 1.96 says otherwise for the Windows targets,
    // where std expands a `const` thread-local another way.
    #[allow(clippy::missing_const_for_thread_local)]
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// `value` in `encoding`, in the thread's buffer: give it back with
/// [`give_back`] once read.
fn encode_in_scratch<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
) -> Result<Vec<u8>, String> {
    let mut buf = SCRATCH.take();
    match encode_into(encoding, value, &mut buf) {
        Ok(()) => Ok(buf),
        Err(e) => {
            give_back(buf);
            Err(e)
        }
    }
}

fn give_back(mut buf: Vec<u8>) {
    if buf.capacity() <= 2 * COPY_UP_TO {
        buf.clear();
        SCRATCH.set(buf);
    }
}

/// `use_` of `value` in `encoding`: for a caller that copies the value
/// into something larger (a CALL's payload) and keeps no buffer of it.
pub(crate) fn with_encoded<T: Serialize + ?Sized, R>(
    encoding: Encoding,
    value: &T,
    use_: impl FnOnce(&[u8]) -> R,
) -> Result<R, String> {
    let buf = encode_in_scratch(encoding, value)?;
    let used = use_(&buf);
    give_back(buf);
    Ok(used)
}

/// `value` in `encoding`, as the bytes of a frame, holding no more than
/// an eighth of its length in spare capacity: it may wait in a queue
/// bounded by its values' lengths.
pub(crate) fn encode_bytes<T: Serialize + ?Sized>(
    encoding: Encoding,
    value: &T,
) -> Result<Bytes, String> {
    let mut buf = encode_in_scratch(encoding, value)?;
    if buf.len() <= COPY_UP_TO {
        let bytes = Bytes::copy_from_slice(&buf);
        give_back(buf);
        return Ok(bytes);
    }
    if buf.capacity() - buf.len() > buf.len() / 8 {
        buf.shrink_to_fit();
    }
    Ok(Bytes::from(buf))
}

/// Decodes `bytes` (one whole value, nothing after it) in `encoding`, its
/// memory bounded ([`bounded`](super::bounded)). The error names the field
/// that failed, below `what` (`params.ms: ...`). Empty input is read as
/// `null` / nil.
pub(crate) fn decode<T: DeserializeOwned>(
    encoding: Encoding,
    bytes: &[u8],
    what: &str,
) -> Result<T, String> {
    decode_metered(encoding, bytes, what, &Meter::new(bytes.len(), None))
}

/// [`decode`] with `meter` counting the value's memory (its
/// [`refusal`](Meter::refusal) says if it stopped the decode).
pub(crate) fn decode_metered<T: DeserializeOwned>(
    encoding: Encoding,
    bytes: &[u8],
    what: &str,
    meter: &Meter,
) -> Result<T, String> {
    let bytes = match (bytes.is_empty(), encoding) {
        (false, _) => bytes,
        (true, Encoding::Json) => b"null",
        (true, Encoding::MessagePack) => &[0xc0],
    };
    let decoded = match encoding {
        Encoding::Json => decode_json(bytes, what, meter),
        Encoding::MessagePack => decode_msgpack(bytes, what, meter),
    };
    decoded.map_err(|message| match meter.refusal() {
        // The meter's own words, not the decoder's wrapping of them.
        Some(refusal) => format!("{what}: {refusal}"),
        None => message,
    })
}

/// How deep MessagePack values may nest (serde_json's own limit): each
/// level costs stack, which a value of a few bytes per level must not
/// exhaust (rmp-serde allows 1024).
const MAX_DEPTH: usize = 128;

// Each decoder first runs plainly: serde_path_to_error keeps every map
// key it passes as a String, a cost on each call. Only a failure is
// decoded once more, to say where (decoding is deterministic, so the
// second run fails at the same place), unless the meter stopped it: that
// needs no second look.

fn decode_json<T: DeserializeOwned>(bytes: &[u8], what: &str, meter: &Meter) -> Result<T, String> {
    let plain = {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        T::deserialize(Metered::new(&mut de, meter)).and_then(|value| de.end().map(|()| value))
    };
    plain.map_err(|plain| {
        if meter.refusal().is_some() {
            return plain.to_string();
        }
        meter.restart();
        let mut de = serde_json::Deserializer::from_slice(bytes);
        match serde_path_to_error::deserialize::<_, T>(Metered::new(&mut de, meter)) {
            Err(e) => at_path(what, e),
            Ok(_) => format!("{what}: {plain}"),
        }
    })
}

/// A MessagePack decoder of `bytes`, its nesting bounded, that copies
/// what it reads and tells how much is left: for the error paths.
fn msgpack_reader(bytes: &[u8]) -> rmp_serde::Deserializer<rmp_serde::decode::ReadReader<&[u8]>> {
    let mut de = rmp_serde::Deserializer::new(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

/// The MessagePack decoder of a call: it lends strings and bins out of
/// `bytes`, where the reader above copies each into a buffer of its own
/// (allocated per decode, grown by `read_to_end`) before the value
/// copies it again.
fn msgpack_borrowing(bytes: &[u8]) -> rmp_serde::Deserializer<ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
    de.set_max_depth(MAX_DEPTH);
    de
}

fn decode_msgpack<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    meter: &Meter,
) -> Result<T, String> {
    let mut de = msgpack_borrowing(bytes);
    let value = T::deserialize(Metered::new(&mut de, meter)).map_err(|plain| {
        if meter.refusal().is_some() {
            return plain.to_string();
        }
        meter.restart();
        let plain = plain.to_string();
        explain_msgpack::<T>(bytes, what, meter, &plain)
            .unwrap_or_else(|| format!("{what}: {plain}"))
    })?;
    if !at_end(&mut de) {
        return Err(trailing::<T>(bytes, what));
    }
    Ok(value)
}

/// Whether `de` has read all of its input. The borrowing decoder does
/// not say how much is left, but reading one more value from an empty
/// input fails at its marker with `UnexpectedEof`, and from anything else
/// does not (what follows is read no further than the input: bounded by
/// its length, and only for a value that is refused anyway).
fn at_end(de: &mut rmp_serde::Deserializer<ReadRefReader<'_, [u8]>>) -> bool {
    match IgnoredAny::deserialize(de) {
        Err(rmp_serde::decode::Error::InvalidMarkerRead(e)) => {
            e.kind() == io::ErrorKind::UnexpectedEof
        }
        _ => false,
    }
}

/// The refusal of a value with bytes after it, saying how many: the
/// value decoded once more by the reader that tells what is left (decoding
/// is deterministic: it stops where the first decode did).
fn trailing<T: DeserializeOwned>(bytes: &[u8], what: &str) -> String {
    let mut de = msgpack_reader(bytes);
    let meter = Meter::new(bytes.len(), None);
    let left = match T::deserialize(Metered::new(&mut de, &meter)) {
        Ok(_) => de.get_ref().len(),
        Err(_) => 0,
    };
    format!("{what}: {left} bytes after the value")
}

/// A better message for MessagePack that does not decode into `T`, from
/// one more decode: rmp names a type mismatch by its marker (`wrong
/// msgpack marker FixStr(1)`), so read the value as a JSON value (metered
/// like any decode, and tracking where it is) and decode `T` from that,
/// which says `invalid type: string "x", expected u64` and where. When
/// the bytes are no JSON value, where that read failed, if it failed as
/// the first decode did (`plain`: such as a map with an integer key for a
/// method taking a JSON value). `None` when that tells nothing more.
fn explain_msgpack<T: DeserializeOwned>(
    bytes: &[u8],
    what: &str,
    meter: &Meter,
    plain: &str,
) -> Option<String> {
    let mut de = msgpack_reader(bytes);
    let value =
        serde_path_to_error::deserialize::<_, serde_json::Value>(Metered::new(&mut de, meter));
    match value {
        Ok(value) => match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(_) => None,
            Err(e) => Some(at_path(what, e)),
        },
        Err(e) if e.inner().to_string() == plain => Some(at_path(what, e)),
        Err(_) => None,
    }
}

/// `what.field[2].name: message`, or `what: message` at the top.
fn at_path<E: std::fmt::Display>(what: &str, err: serde_path_to_error::Error<E>) -> String {
    let path = err.path().to_string();
    let inner = err.inner();
    match path.as_str() {
        "." => format!("{what}: {inner}"),
        seq if seq.starts_with('[') => format!("{what}{seq}: {inner}"),
        field => format!("{what}.{field}: {inner}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Inner {
        name: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Outer {
        ms: u64,
        items: Vec<Inner>,
        map: BTreeMap<String, i8>,
    }

    fn sample() -> Outer {
        Outer {
            ms: u64::MAX,
            items: vec![Inner {
                name: "é✓".into()
            }],
            map: [("k".to_owned(), -1)].into(),
        }
    }

    #[test]
    fn values_round_trip_in_both_encodings() {
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            let bytes = encode(encoding, &sample()).unwrap();
            let back: Outer = decode(encoding, &bytes, "params").unwrap();
            assert_eq!(back, sample(), "{encoding}");
        }
    }

    /// Serializes as a list whose second element is its own encoding,
    /// made while the outer value is being encoded (the thread's buffer is
    /// taken then).
    struct Nested(Encoding);

    impl serde::Serialize for Nested {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let inner = encode_bytes(self.0, &("inner", 7)).map_err(serde::ser::Error::custom)?;
            let mut seq = s.serialize_seq(Some(2))?;
            seq.serialize_element("outer")?;
            seq.serialize_element(&inner[..])?;
            seq.end()
        }
    }

    #[test]
    fn the_threads_buffer_gives_the_bytes_of_a_buffer_of_their_own() {
        let big: Vec<String> = (0..2000).map(|n| format!("item {n}")).collect();
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            // Small (copied out), large (takes the buffer), then small again
            // (a new buffer), and through `with_encoded`.
            for value in [&sample() as &dyn erased::Value, &big, &sample()] {
                let own = value.encode_own(encoding);
                assert_eq!(value.encode_bytes(encoding), own, "{encoding}");
                assert_eq!(value.with_encoded(encoding), own, "{encoding}");
            }
            assert!(encode(encoding, &big).unwrap().len() > COPY_UP_TO);
            // Encoded while the thread's buffer holds the outer value.
            let nested = encode_bytes(encoding, &Nested(encoding)).unwrap();
            let inner = encode(encoding, &("inner", 7)).unwrap();
            let expected = encode(encoding, &("outer", &inner[..])).unwrap();
            assert_eq!(nested[..], expected[..], "{encoding}");
        }
    }

    /// The encoders over values of different types, for one loop.
    mod erased {
        use super::*;

        pub(super) trait Value {
            fn encode_own(&self, encoding: Encoding) -> Vec<u8>;
            fn encode_bytes(&self, encoding: Encoding) -> Vec<u8>;
            fn with_encoded(&self, encoding: Encoding) -> Vec<u8>;
        }

        impl<T: serde::Serialize> Value for T {
            fn encode_own(&self, encoding: Encoding) -> Vec<u8> {
                encode(encoding, self).unwrap()
            }
            fn encode_bytes(&self, encoding: Encoding) -> Vec<u8> {
                super::encode_bytes(encoding, self).unwrap().to_vec()
            }
            fn with_encoded(&self, encoding: Encoding) -> Vec<u8> {
                super::with_encoded(encoding, self, <[u8]>::to_vec).unwrap()
            }
        }
    }

    #[test]
    fn msgpack_structs_are_maps_of_field_names() {
        let bytes = encode(Encoding::MessagePack, &Inner { name: "a".into() }).unwrap();
        // fixmap of 1, fixstr "name", fixstr "a".
        assert_eq!(bytes, b"\x81\xa4name\xa1a");
    }

    #[test]
    fn errors_name_the_field_at_any_depth() {
        let json = br#"{"ms":1,"items":[{"name":5}],"map":{}}"#;
        let err = decode::<Outer>(Encoding::Json, json, "params").unwrap_err();
        assert!(
            err.starts_with("params.items[0].name: invalid type: integer `5`"),
            "{err}"
        );
        let bad_map = br#"{"ms":1,"items":[],"map":{"k":300}}"#;
        let err = decode::<Outer>(Encoding::Json, bad_map, "params").unwrap_err();
        assert!(err.starts_with("params.map.k: invalid value"), "{err}");
        let err = decode::<Vec<u8>>(Encoding::Json, b"[1,\"x\"]", "params").unwrap_err();
        assert!(err.starts_with("params[1]: invalid type"), "{err}");
        let err = decode::<u8>(Encoding::Json, b"\"x\"", "params").unwrap_err();
        assert!(err.starts_with("params: invalid type"), "{err}");
    }

    #[test]
    fn msgpack_type_errors_are_told_like_json_ones() {
        let bytes = encode(Encoding::MessagePack, &("x", 1)).unwrap();
        let err = decode::<(u8, u8)>(Encoding::MessagePack, &bytes, "params").unwrap_err();
        assert_eq!(err, "params[0]: invalid type: string \"x\", expected u8");
        // Not a value JSON holds (binary): rmp's own message.
        let err = decode::<u8>(Encoding::MessagePack, b"\xc4\x01a", "params").unwrap_err();
        assert!(err.starts_with("params: "), "{err}");
    }

    #[test]
    fn errors_inside_an_enum_variant_name_it_in_both_encodings() {
        #[derive(Debug, serde::Serialize, serde::Deserialize)]
        enum Shape {
            Rect { w: u32 },
        }
        let wrong: BTreeMap<&str, BTreeMap<&str, &str>> = [("Rect", [("w", "x")].into())].into();
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            let bytes = encode(encoding, &wrong).unwrap();
            let err = decode::<Shape>(encoding, &bytes, "params").unwrap_err();
            let expected = "params.Rect.w: invalid type: string \"x\", expected u32";
            assert!(err.starts_with(expected), "{encoding}: {err}");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let err = decode::<u8>(Encoding::Json, b"1 2", "params").unwrap_err();
        assert!(err.contains("trailing characters"), "{err}");
        let err = decode::<u8>(Encoding::MessagePack, b"\x01\x02", "params").unwrap_err();
        assert_eq!(err, "params: 1 bytes after the value");
        // Whatever follows: a marker no value has, a value cut short in
        // its length or in its data, a whole value of its own.
        for (bytes, left) in [
            (&b"\x01\xc1"[..], 1),
            (b"\x01\xc4", 1),
            (b"\x01\xc4\x05ab", 4),
            (b"\x01\xa2ab\xc0", 4),
        ] {
            let err = decode::<u8>(Encoding::MessagePack, bytes, "params").unwrap_err();
            assert_eq!(
                err,
                format!("params: {left} bytes after the value"),
                "{bytes:?}"
            );
        }
    }

    #[test]
    fn empty_input_is_null() {
        for encoding in [Encoding::Json, Encoding::MessagePack] {
            decode::<()>(encoding, b"", "params").unwrap();
            assert_eq!(decode::<Option<u8>>(encoding, b"", "params"), Ok(None));
            assert!(decode::<u8>(encoding, b"", "params").is_err());
        }
    }
}

//! Fuzzes the payload decoders of revision 2.2's stream frames
//! (`protocol::stream`) with arbitrary bytes, against a model of
//! PROTOCOL.md's layouts written independently of them.
//!
//! Input: one control byte, then a payload. Bit 0 of the control byte says
//! whether the ITEM came from a client (which may send `item` entries
//! only). The payload is decoded as an ITEM, a CREDIT and a SUBSCRIBE:
//!
//! - no decoder panics, and each accepts exactly what the model accepts,
//!   refusing the rest for the model's reason;
//! - a decoded ITEM re-encodes to its payload without the entries of
//!   unknown types (which a receiver skips); a decoded SUBSCRIBE re-encodes
//!   to the payload's bytes up to the end of its topic;
//! - a sender's credit, driven by the payload's bytes as ITEM lengths and
//!   grants, never lets an ITEM go out at 0 or less and never exceeds the
//!   maximum.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use pipesvc::protocol::{
    decode_credit, decode_item, encode_item, Credit, ItemError, Subscribe, SubscribeError,
    MAX_CREDIT,
};

fuzz_target!(|data: &[u8]| {
    let Some((&control, payload)) = data.split_first() else {
        return;
    };
    let from_client = control & 1 != 0;
    let payload = Bytes::copy_from_slice(payload);
    check_item(&payload, from_client);
    check_credit(&payload);
    check_subscribe(&payload);
    check_flow(&payload, control);
});

/// The model's reading of an ITEM: the bytes of the entries a receiver
/// keeps (re-encoded as sent), or why it is malformed.
fn model_item(payload: &[u8], from_client: bool) -> Result<Vec<u8>, ItemError> {
    if payload.is_empty() {
        return Err(ItemError::Empty);
    }
    let mut kept = Vec::new();
    let mut rest = payload;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(ItemError::CutShort);
        }
        let kind = rest[0];
        let len = u32::from_le_bytes([rest[1], rest[2], rest[3], rest[4]]) as u64;
        if (rest.len() as u64) < 5 + len {
            return Err(ItemError::CutShort);
        }
        let whole = &rest[..5 + len as usize];
        match kind {
            1 | 2 if from_client => return Err(ItemError::NotFromClient(kind)),
            1 if len != 8 => return Err(ItemError::BadLagged),
            // A `subscribed` entry re-encodes empty, whatever it carried.
            2 => kept.extend_from_slice(&[2, 0, 0, 0, 0]),
            0 | 1 => kept.extend_from_slice(whole),
            _ => {}
        }
        rest = &rest[5 + len as usize..];
    }
    Ok(kept)
}

fn check_item(payload: &Bytes, from_client: bool) {
    let got = decode_item(payload, from_client);
    match (got, model_item(payload, from_client)) {
        (Ok(entries), Ok(kept)) => {
            assert_eq!(&encode_item(&entries)[..], &kept[..], "re-encoded");
            let len: usize = entries.iter().map(|e| e.encoded_len()).sum();
            assert_eq!(len, kept.len());
        }
        (Err(e), Err(model)) => assert_eq!(e, model),
        (got, model) => panic!("decode_item: {got:?}, the model: {model:?}"),
    }
}

fn check_credit(payload: &[u8]) {
    let model = (payload.len() >= 4)
        .then(|| u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]));
    assert_eq!(decode_credit(payload), model);
}

fn check_subscribe(payload: &[u8]) {
    let model = match payload {
        [_] | [] => Err(SubscribeError::CutShort),
        [_, 0, ..] => Err(SubscribeError::NoTopic),
        [_, len, rest @ ..] if rest.len() < *len as usize => Err(SubscribeError::CutShort),
        [encoding, len, rest @ ..] => match std::str::from_utf8(&rest[..*len as usize]) {
            Ok(topic) => Ok((*encoding, topic.to_owned())),
            Err(_) => Err(SubscribeError::NotUtf8),
        },
    };
    match (Subscribe::decode(payload), model) {
        (Ok(got), Ok((encoding, topic))) => {
            assert_eq!((got.encoding, &got.topic), (encoding, &topic));
            assert_eq!(&got.encode()[..], &payload[..2 + topic.len()]);
        }
        (Err(e), Err(model)) => assert_eq!(e, model),
        (got, model) => panic!("Subscribe::decode: {got:?}, the model: {model:?}"),
    }
}

/// The payload's bytes as operations on a sender's credit: even bytes
/// send an ITEM of that many KiB, odd ones grant that many KiB (or, for
/// 0xff, a grant of u32::MAX).
fn check_flow(ops: &[u8], control: u8) {
    let window = u32::from(control >> 1) * 4096;
    let mut credit = Credit::new(window);
    let mut model = i64::from(window);
    for &op in ops {
        if op & 1 == 0 {
            let len = usize::from(op) * 1024;
            let sent = credit.take(len);
            assert_eq!(
                sent,
                model > 0,
                "an ITEM goes out exactly while credit is above 0"
            );
            if sent {
                model -= len as i64;
            }
        } else {
            let grant = if op == 0xff {
                u32::MAX
            } else {
                u32::from(op) * 1024
            };
            let granted = credit.grant(grant).is_ok();
            assert_eq!(granted, model + i64::from(grant) <= MAX_CREDIT);
            if granted {
                model += i64::from(grant);
            }
        }
        assert_eq!(credit.get(), model);
        assert!(credit.get() <= MAX_CREDIT);
    }
}

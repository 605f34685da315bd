//! Property tests: any sequence of frames survives encode, arbitrary
//! re-chunking and decode; arbitrary bytes never panic the decoder nor make
//! it buffer more than the maximum frame.

use bytes::{Bytes, BytesMut};
use pipesvc::protocol::{Frame, FrameCodec, Kind};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn kind() -> impl Strategy<Value = Kind> {
    (1u8..=9).prop_map(|b| Kind::from_u8(b).expect("1..=9 are kinds"))
}

fn frame() -> impl Strategy<Value = Frame> {
    (
        kind(),
        any::<u32>(),
        prop::collection::vec(any::<u8>(), 0..3000),
    )
        .prop_map(|(kind, id, payload)| Frame::new(kind, id, Bytes::from(payload)))
}

proptest! {
    #[test]
    fn frames_round_trip_through_any_chunking(
        frames in prop::collection::vec(frame(), 0..20),
        cuts in prop::collection::vec(1usize..5000, 1..40),
    ) {
        let mut codec = FrameCodec::new(4096);
        let mut wire = BytesMut::new();
        for frame in &frames {
            codec.encode(frame.clone(), &mut wire).unwrap();
        }
        let wire = wire.freeze();

        let mut decoded = Vec::new();
        let mut buffer = BytesMut::new();
        let mut offset = 0;
        for cut in cuts.iter().cycle() {
            if offset == wire.len() {
                break;
            }
            let end = (offset + cut).min(wire.len());
            buffer.extend_from_slice(&wire[offset..end]);
            offset = end;
            while let Some(frame) = codec.decode(&mut buffer).unwrap() {
                decoded.push(frame);
            }
        }
        prop_assert_eq!(decoded, frames);
        prop_assert!(buffer.is_empty());
    }

    #[test]
    fn garbage_is_refused_or_decoded_never_over_buffered(
        garbage in prop::collection::vec(any::<u8>(), 0..10_000),
        max in 6u32..2048,
    ) {
        let mut codec = FrameCodec::new(max);
        let mut buffer = BytesMut::from(&garbage[..]);
        loop {
            match codec.decode(&mut buffer) {
                Ok(Some(frame)) => prop_assert!(frame.payload.len() + 6 <= max as usize),
                Ok(None) => {
                    // Waiting for more: never for more than one maximal frame.
                    prop_assert!(buffer.len() < 4 + max as usize);
                    break;
                }
                Err(e) => {
                    prop_assert!(e.code().is_some(), "a peer error, not I/O: {}", e);
                    break;
                }
            }
        }
    }
}

//! Property tests: any sequence of frames survives encode, arbitrary
//! re-chunking and decode; arbitrary bytes never panic the decoder nor make
//! it hold (capacity, not length) more than twice what arrived.

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
        header in prop::collection::vec(any::<u8>(), 0..16),
        length in 0u32..(8 << 20),
        plausible in any::<bool>(),
        garbage in prop::collection::vec(any::<u8>(), 0..10_000),
        max in 6u32..(8 << 20),
        cut in 1usize..4096,
    ) {
        // Random bytes, or random bytes after a plausible header (a length
        // up to 8 MiB, a defined kind, no flags) so that the decoder waits
        // for a large frame.
        let mut wire = header;
        if plausible {
            wire = length.to_le_bytes().to_vec();
            wire.extend_from_slice(&[2, 0, 1, 0, 0, 0]);
        }
        wire.extend_from_slice(&garbage);
        let mut codec = FrameCodec::new(max);
        // Fed as reads would: into the room the codec leaves, `cut` bytes
        // at most at a time.
        let mut buffer = BytesMut::new();
        let mut fed = 0;
        'reads: loop {
            let room = (buffer.capacity() - buffer.len()).max(1);
            let end = (fed + cut.min(room)).min(wire.len());
            buffer.extend_from_slice(&wire[fed..end]);
            fed = end;
            loop {
                match codec.decode(&mut buffer) {
                    Ok(Some(frame)) => prop_assert!(frame.payload.len() + 6 <= max as usize),
                    Ok(None) => {
                        // What the buffer holds, not only what it shows:
                        // never the announced length up front, at most
                        // twice what arrived (or the 64 KiB first step).
                        let bound = (64 * 1024usize).max(2 * buffer.len());
                        prop_assert!(
                            buffer.capacity() <= bound,
                            "capacity {} for {} buffered bytes", buffer.capacity(), buffer.len()
                        );
                        break;
                    }
                    Err(e) => {
                        prop_assert!(e.code().is_some(), "a peer error, not I/O: {}", e);
                        break 'reads;
                    }
                }
            }
            if fed == wire.len() {
                break;
            }
        }
    }
}

//! The MPEG-TS keyframe scanner: any bytes, split anywhere, give the same keyframes as in one piece,
//! in increasing offset order, each inside the input.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/tsindex.rs"]
mod tsindex;

use libfuzzer_sys::fuzz_target;
use tsindex::{Keyframe, TsIndexer};

fn scan(pieces: &[&[u8]]) -> (Vec<Keyframe>, Vec<Keyframe>) {
    let mut ix = TsIndexer::tracking_frames(1000);
    let mut keyframes = Vec::new();
    for p in pieces {
        keyframes.extend(ix.feed(p));
    }
    keyframes.extend(ix.finish());
    (keyframes, ix.take_frame_starts())
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let at = (usize::from(cut) * 191) % (stream.len() + 1);
    let whole = scan(&[stream]);
    let split = scan(&[&stream[..at], &stream[at..]]);
    assert_eq!(whole, split, "a split at {at} changed what was found");
    for list in [&whole.0, &whole.1] {
        assert!(
            list.windows(2).all(|w| w[0].offset < w[1].offset),
            "out of order: {list:?}"
        );
        assert!(
            list.iter()
                .all(|k| k.offset >= 1000 && k.offset < 1000 + stream.len() as u64)
        );
    }
});

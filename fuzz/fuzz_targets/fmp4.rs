//! The fragmented-MP4 box parser: any bytes, split anywhere, give the same events as in one piece,
//! each at an offset inside the input.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/fmp4.rs"]
mod fmp4;

use fmp4::{Fmp4Event, Fmp4Indexer};
use libfuzzer_sys::fuzz_target;

fn events(pieces: &[&[u8]]) -> Vec<Fmp4Event> {
    let mut ix = Fmp4Indexer::new(500);
    pieces.iter().flat_map(|p| ix.feed(p)).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let at = (usize::from(cut) * 97) % (stream.len() + 1);
    let whole = events(&[stream]);
    assert_eq!(
        whole,
        events(&[&stream[..at], &stream[at..]]),
        "a split at {at}"
    );
    let end = 500 + stream.len() as u64;
    for e in &whole {
        match e {
            Fmp4Event::Init { offset, bytes } => {
                assert!(*offset >= 500 && offset + bytes.len() as u64 <= end)
            }
            Fmp4Event::Fragment { offset, .. } => assert!(*offset >= 500 && *offset < end),
        }
    }
});

//! Chunked bodies: any bytes, delivered in any pieces, decode to the same payload and end (or the
//! same refusal) as when delivered at once, and the decoder never consumes what it was not given.
#![no_main]
#![allow(dead_code)]

#[path = "../../src/http/mod.rs"]
mod http;

use http::chunked::{ChunkEvent, ChunkedDecoder, ChunkedLimits};
use libfuzzer_sys::fuzz_target;

/// Payload and bytes consumed at the end, Err(status) on a refusal, Ok(None) when the input ends
/// before the body does.
fn drive(stream: &[u8], piece: usize) -> Result<Option<(Vec<u8>, usize)>, u16> {
    let mut decoder = ChunkedDecoder::new(ChunkedLimits {
        max_chunk_line: 64,
        max_trailer_bytes: 256,
    });
    let (mut payload, mut pos) = (Vec::new(), 0);
    loop {
        let remaining = decoder.payload_remaining();
        if remaining > 0 {
            let take = (piece as u64)
                .min(remaining)
                .min((stream.len() - pos) as u64) as usize;
            if take == 0 {
                return Ok(None);
            }
            payload.extend_from_slice(&stream[pos..pos + take]);
            pos += take;
            decoder.consume_payload(take as u64);
            continue;
        }
        let end = (pos + piece).min(stream.len());
        let (consumed, event) = decoder.feed(&stream[pos..end]).map_err(|e| e.status)?;
        assert!(consumed <= end - pos, "consumed more than it was given");
        pos += consumed;
        match event {
            ChunkEvent::End => return Ok(Some((payload, pos))),
            ChunkEvent::Data(n) => assert_eq!(n, decoder.payload_remaining()),
            ChunkEvent::NeedMore if pos == stream.len() => return Ok(None),
            ChunkEvent::NeedMore => assert_eq!(consumed, end - (pos - consumed)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let piece = usize::from(first % 16) + 1;
    let whole = drive(stream, stream.len().max(1));
    let pieces = drive(stream, piece);
    assert_eq!(whole, pieces, "pieces of {piece} bytes decode differently");
    if let Err(status) = whole {
        assert_eq!(status, 400);
    }
});

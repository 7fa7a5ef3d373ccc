//! The read half of a connection: the small framing buffer (heads, chunk-size lines, pipelined
//! requests), one read(2) at a time, and the decoder of a request body's framing (length or chunked).
//! It knows nothing of what a request means; payload is read by the caller's target slice, never
//! through this buffer — except bytes that arrived with framing, moved out of it once.

use std::io::{self, Read};

use crate::http::HttpError;
use crate::http::chunked::{ChunkEvent, ChunkedDecoder, ChunkedLimits};
use crate::http::request::{HeadLimits, RequestHead, parse_request_head};
use crate::routes::Framing;

/// How many bytes of a peer's sends a waiting follower's hang-up check reads at most.
pub const PEEK_READ: usize = 4096;

/// The outcome of one read.
#[derive(Debug, PartialEq, Eq)]
pub enum Got {
    /// This many bytes were read from the socket.
    Read(usize),
    /// This many bytes were moved from the framing buffer (read earlier with framing).
    Buffered(usize),
    /// Nothing to read now (not readable, or WouldBlock).
    Blocked,
    /// Interrupted: try again.
    Retry,
    /// The peer closed its side, or the socket failed.
    Closed,
}

/// What a request body's framing says comes next.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyNext {
    /// Up to this many payload bytes (more than zero).
    Payload(u64),
    /// A chunk-size line (or trailer) is incomplete: read more framing.
    NeedFraming,
    /// Framing was consumed: look again.
    Again,
    /// The body is complete.
    End,
}

/// A request body's framing: the bytes still expected, or the chunked decoder.
enum BodyDecoder {
    Length(u64),
    Chunked(ChunkedDecoder),
}

pub struct Reader {
    /// Framing bytes read but not yet parsed (heads, chunk lines, pipelined requests).
    inbuf: Vec<u8>,
    /// The socket may have bytes (set by the loop on a readable event, cleared on WouldBlock).
    pub readable: bool,
    /// The body being read, if any.
    body: Option<BodyDecoder>,
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            inbuf: Vec::new(),
            readable: true,
            body: None,
        }
    }

    /// No framing bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.inbuf.is_empty()
    }

    pub fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Drop what is buffered (after a malformed head: nothing after it can be trusted).
    pub fn clear(&mut self) {
        self.inbuf.clear();
    }

    /// A complete request head from the buffer, if one is there (its bytes are consumed).
    pub fn take_head(&mut self, limits: &HeadLimits) -> Result<Option<RequestHead>, HttpError> {
        if self.inbuf.is_empty() {
            return Ok(None);
        }
        let Some((head, used)) = parse_request_head(&self.inbuf, limits)? else {
            return Ok(None);
        };
        self.inbuf.drain(..used);
        Ok(Some(head))
    }

    /// One read of at most `max` framing bytes into the buffer.
    pub fn read_framing(&mut self, stream: &mut impl Read, max: usize) -> Got {
        if !self.readable {
            return Got::Blocked;
        }
        let old = self.inbuf.len();
        self.inbuf.resize(old + max, 0);
        let r = stream.read(&mut self.inbuf[old..]);
        self.inbuf.truncate(old + *r.as_ref().unwrap_or(&0));
        self.outcome(r)
    }

    /// Payload into `target`: bytes that arrived with framing are moved from the buffer once; else
    /// one read from the socket straight into it.
    pub fn read_payload(&mut self, stream: &mut impl Read, target: &mut [u8]) -> Got {
        if !self.inbuf.is_empty() {
            let k = target.len().min(self.inbuf.len());
            target[..k].copy_from_slice(&self.inbuf[..k]);
            self.inbuf.drain(..k);
            return Got::Buffered(k);
        }
        if !self.readable {
            return Got::Blocked;
        }
        let r = stream.read(target);
        self.outcome(r)
    }

    /// Has a waiting peer closed its side? What it sent meanwhile is kept for its next request.
    pub fn peer_hung_up(&mut self, stream: &mut impl Read) -> bool {
        if !self.readable || self.inbuf.len() >= PEEK_READ {
            return false;
        }
        matches!(self.read_framing(stream, PEEK_READ), Got::Closed)
    }

    /// Read and drop what the peer still sends (a lingering close).
    pub fn discard(&mut self, stream: &mut impl Read) -> Got {
        if !self.readable {
            return Got::Blocked;
        }
        let mut scratch = [0u8; 4096];
        let r = stream.read(&mut scratch);
        self.outcome(r)
    }

    fn outcome(&mut self, r: io::Result<usize>) -> Got {
        match r {
            Ok(0) => Got::Closed,
            Ok(n) => Got::Read(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Got::Blocked
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Retry,
            Err(_) => Got::Closed,
        }
    }

    /// A request body with this framing follows the head.
    pub fn start_body(&mut self, framing: Framing, max_trailer_bytes: usize) {
        assert!(self.body.is_none(), "one body at a time");
        self.body = Some(match framing {
            Framing::Length(n) => BodyDecoder::Length(n),
            Framing::Chunked => BodyDecoder::Chunked(ChunkedDecoder::new(ChunkedLimits {
                max_chunk_line: 4096,
                max_trailer_bytes,
            })),
        });
    }

    /// The body is done with (complete, cut or refused).
    pub fn end_body(&mut self) {
        self.body = None;
    }

    /// What the body's framing says next; chunk-size lines and trailers are parsed from the buffer.
    pub fn body_next(&mut self) -> Result<BodyNext, HttpError> {
        let want = match &mut self.body {
            None => 0,
            Some(BodyDecoder::Length(n)) => *n,
            Some(BodyDecoder::Chunked(dec)) => {
                if dec.payload_remaining() == 0 && !dec.is_done() {
                    let (used, ev) = dec.feed(&self.inbuf)?;
                    self.inbuf.drain(..used);
                    return Ok(match ev {
                        ChunkEvent::End => BodyNext::End,
                        ChunkEvent::Data(_) => BodyNext::Again,
                        ChunkEvent::NeedMore => BodyNext::NeedFraming,
                    });
                }
                dec.payload_remaining()
            }
        };
        Ok(if want == 0 {
            BodyNext::End
        } else {
            BodyNext::Payload(want)
        })
    }

    /// `k` payload bytes of the body arrived.
    pub fn body_consumed(&mut self, k: u64) {
        match &mut self.body {
            Some(BodyDecoder::Length(n)) => {
                assert!(k <= *n, "a body read stays inside its length");
                *n -= k;
            }
            Some(BodyDecoder::Chunked(dec)) => dec.consume_payload(k),
            None => panic!("BUG: body bytes without a body"),
        }
    }
}

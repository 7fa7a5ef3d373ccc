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
    /// Framing bytes read but not yet parsed (heads, chunk lines, pipelined requests) are
    /// `buf[start..end]`. The buffer keeps its size between requests and is zero-filled only when it
    /// grows, and consuming bytes moves `start`, not the bytes (a profile showed a 4 KiB fill per read).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket may have bytes (set by the loop on a readable event, cleared on WouldBlock).
    pub readable: bool,
    /// The body being read, if any.
    body: Option<BodyDecoder>,
}

impl Reader {
    pub fn new() -> Reader {
        Reader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            readable: true,
            body: None,
        }
    }

    /// No framing bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// `n` buffered bytes were used.
    fn consume(&mut self, n: usize) {
        assert!(
            n <= self.buffered(),
            "consumed {n} of {} buffered",
            self.buffered()
        );
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Take `spare` as the framing buffer if this reader has none (the loop lends one buffer to the
    /// connection it drives, so idle connections hold no buffer).
    pub fn borrow_buffer(&mut self, spare: &mut Vec<u8>) {
        if self.buf.capacity() == 0 {
            std::mem::swap(&mut self.buf, spare);
        }
    }

    /// Give the framing buffer back to `spare` when it holds no bytes (dropped if `spare` already
    /// has one); a reader with buffered bytes keeps its buffer. Only `buf[start..end]` is ever
    /// read, so what another connection left past `end` is never seen.
    pub fn return_buffer(&mut self, spare: &mut Vec<u8>) {
        if !self.is_empty() {
            return;
        }
        self.start = 0;
        self.end = 0;
        if spare.capacity() == 0 {
            std::mem::swap(&mut self.buf, spare);
        } else {
            self.buf = Vec::new();
        }
    }

    /// Drop what is buffered (after a malformed head: nothing after it can be trusted).
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }

    /// Make room for `max` more bytes after `end`: move the buffered bytes to the front, and grow
    /// the buffer (zero-filling only the new part) if that is not enough.
    fn room(&mut self, max: usize) -> &mut [u8] {
        if self.start > 0 && self.end + max > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end + max > self.buf.len() {
            self.buf.resize(self.end + max, 0);
        }
        &mut self.buf[self.end..self.end + max]
    }

    /// A complete request head from the buffer, if one is there (its bytes are consumed).
    pub fn take_head(&mut self, limits: &HeadLimits) -> Result<Option<RequestHead>, HttpError> {
        if self.is_empty() {
            return Ok(None);
        }
        let Some((head, used)) = parse_request_head(self.data(), limits)? else {
            return Ok(None);
        };
        self.consume(used);
        Ok(Some(head))
    }

    /// One read of at most `max` framing bytes into the buffer.
    pub fn read_framing(&mut self, stream: &mut impl Read, max: usize) -> Got {
        if !self.readable {
            return Got::Blocked;
        }
        let r = stream.read(self.room(max));
        if let Ok(n) = r {
            assert!(n <= max, "read more than asked");
            self.end += n;
        }
        self.outcome(r)
    }

    /// Payload into `target`: bytes that arrived with framing are moved from the buffer once; else
    /// one read from the socket straight into it.
    pub fn read_payload(&mut self, stream: &mut impl Read, target: &mut [u8]) -> Got {
        if !self.is_empty() {
            let k = target.len().min(self.buffered());
            target[..k].copy_from_slice(&self.data()[..k]);
            self.consume(k);
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
        if !self.readable || self.buffered() >= PEEK_READ {
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
                    let (used, ev) = dec.feed(&self.buf[self.start..self.end])?;
                    self.consume(used);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that hands out its bytes in reads of at most `step`.
    struct Peer {
        bytes: Vec<u8>,
        pos: usize,
        step: usize,
    }

    impl Read for Peer {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            if self.pos == self.bytes.len() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = out.len().min(self.step).min(self.bytes.len() - self.pos);
            out[..n].copy_from_slice(&self.bytes[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn limits() -> HeadLimits {
        HeadLimits {
            max_request_line: 1024,
            max_head_bytes: 8192,
            max_headers: 16,
        }
    }

    #[test]
    fn an_idle_reader_gives_its_buffer_back_a_busy_one_keeps_it_and_a_lent_one_shows_no_old_bytes()
    {
        let peer = |text: &str| Peer {
            bytes: text.as_bytes().to_vec(),
            pos: 0,
            step: 4096,
        };
        let mut spare = Vec::new();
        let mut r = Reader::new();
        r.borrow_buffer(&mut spare);
        let mut first = peer("GET /a-long-path-name HTTP/1.1\r\nHost: h\r\n\r\nGET /b");
        assert!(matches!(r.read_framing(&mut first, 4096), Got::Read(_)));
        assert_eq!(
            r.take_head(&limits()).unwrap().unwrap().path,
            "/a-long-path-name"
        );
        r.return_buffer(&mut spare);
        assert_eq!(
            spare.capacity(),
            0,
            "a reader holding a partial head keeps its buffer"
        );
        assert_eq!(r.buffered(), 6);
        let mut rest = peer(" HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(r.read_framing(&mut rest, 4096), Got::Read(_)));
        assert_eq!(r.take_head(&limits()).unwrap().unwrap().path, "/b");
        r.return_buffer(&mut spare);
        assert!(
            spare.capacity() > 0 && r.buf.capacity() == 0,
            "an idle reader holds no buffer"
        );
        // Another connection borrows it: only what it reads itself is parsed.
        let mut other = Reader::new();
        other.borrow_buffer(&mut spare);
        assert!(other.is_empty());
        let mut short = peer("GET /c HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(other.read_framing(&mut short, 4096), Got::Read(_)));
        let head = other.take_head(&limits()).unwrap().unwrap();
        assert_eq!((head.path.as_str(), other.buffered()), ("/c", 0));
    }

    #[test]
    fn heads_split_across_reads_and_pipelined_come_out_in_order_and_the_buffer_stays_small() {
        let one = |i: usize| format!("GET /v{i} HTTP/1.1\r\nHost: h\r\n\r\n");
        let text: String = (0..1000).map(one).collect();
        let mut peer = Peer {
            bytes: text.into_bytes(),
            pos: 0,
            step: 7,
        };
        let mut r = Reader::new();
        let mut got = 0;
        loop {
            while let Some(head) = r.take_head(&limits()).unwrap() {
                assert_eq!(head.path, format!("/v{got}"));
                got += 1;
            }
            match r.read_framing(&mut peer, 4096) {
                Got::Read(_) => {}
                Got::Blocked => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got, 1000);
        assert!(r.is_empty());
        assert!(r.buf.len() <= 2 * 4096, "buffer grew to {}", r.buf.len());
    }

    #[test]
    fn payload_that_came_with_framing_is_moved_once_then_read_from_the_socket() {
        let mut peer = Peer {
            bytes: b"PUT /v HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\n0123456789".to_vec(),
            pos: 0,
            step: 50,
        };
        let mut r = Reader::new();
        assert_eq!(r.read_framing(&mut peer, 4096), Got::Read(50));
        let head = r.take_head(&limits()).unwrap().unwrap();
        assert_eq!(head.content_length, Some(10));
        let mut target = [0u8; 10];
        let Got::Buffered(k) = r.read_payload(&mut peer, &mut target) else {
            panic!("buffered bytes first");
        };
        assert_eq!(
            r.read_payload(&mut peer, &mut target[k..]),
            Got::Read(10 - k)
        );
        assert_eq!(&target, b"0123456789");
        assert!(r.is_empty());
    }
}

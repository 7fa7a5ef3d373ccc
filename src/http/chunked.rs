//! Incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1) that
//! never touches payload: it consumes only framing (size lines, the CRLF after data, trailers)
//! and, inside chunk data, tells the caller how many payload bytes follow so that the caller can
//! read them straight from the socket into their destination. It is strict about the shapes
//! used for request smuggling: CRLF only (no bare LF or CR), no sign, prefix or whitespace
//! before a size, no size beyond u64.

use super::HttpError;

/// Default bound on one chunk-size line, extensions included (CRLF excluded).
pub const DEFAULT_MAX_CHUNK_LINE: usize = 4096;
/// Default bound on the whole trailer section, CRLFs included.
pub const DEFAULT_MAX_TRAILER_BYTES: usize = 8192;

#[derive(Debug, Clone, Copy)]
pub struct ChunkedLimits {
    /// Longest chunk-size line, extensions included, CRLF excluded.
    pub max_chunk_line: usize,
    /// Largest trailer section, including its final empty line.
    pub max_trailer_bytes: usize,
}

impl Default for ChunkedLimits {
    fn default() -> Self {
        ChunkedLimits {
            max_chunk_line: DEFAULT_MAX_CHUNK_LINE,
            max_trailer_bytes: DEFAULT_MAX_TRAILER_BYTES,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEvent {
    /// The framing bytes given so far are all consumed/incomplete; read more framing.
    NeedMore,
    /// Inside chunk data: this many payload bytes remain in the current chunk.
    Data(u64),
    /// Last chunk and trailers consumed: body complete.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a chunk-size line: a hex digit must come first.
    SizeStart,
    /// Reading hex digits of the size.
    SizeDigits,
    /// Whitespace after the size: only more whitespace or ';' may follow (BWS before chunk-ext).
    SizeWhitespace,
    /// Inside chunk extensions, ignored up to CR.
    Extension,
    /// CR of the size line seen, LF must follow.
    SizeLf,
    /// Inside chunk data with this many payload bytes left (always > 0).
    Data(u64),
    /// Chunk data complete: CR must follow.
    DataCr,
    /// CR after chunk data seen, LF must follow.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerLineStart,
    /// Inside a trailer field line; `saw_colon` says whether it has its ':' yet.
    TrailerLine { saw_colon: bool },
    /// CR of a trailer field line seen, LF must follow.
    TrailerLineLf,
    /// CR of the final empty line seen, LF must follow.
    FinalLf,
    /// Body complete.
    Done,
    /// A framing error was reported; every later feed reports it again.
    Failed,
}

pub struct ChunkedDecoder {
    limits: ChunkedLimits,
    state: State,
    /// Chunk size accumulated from the hex digits read so far.
    size: u64,
    /// Bytes of the current chunk-size line so far (CRLF excluded).
    line_len: usize,
    /// Bytes of the trailer section so far.
    trailer_len: usize,
}

impl ChunkedDecoder {
    pub fn new(limits: ChunkedLimits) -> Self {
        ChunkedDecoder {
            limits,
            state: State::SizeStart,
            size: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Feed framing bytes. Returns (consumed, event). Consumes only framing (size line, chunk
    /// CRLF, trailers); stops at the start of chunk data returning Data(n) with consumed pointing
    /// at the first payload byte. When state is already Data(n), returns (0, Data(n)). Never
    /// consumes payload. After End, returns (0, End) and consumes nothing further.
    pub fn feed(&mut self, buf: &[u8]) -> Result<(usize, ChunkEvent), HttpError> {
        match self.state {
            State::Data(n) => return Ok((0, ChunkEvent::Data(n))),
            State::Done => return Ok((0, ChunkEvent::End)),
            State::Failed => return Err(bad("chunked body already failed to decode")),
            _ => {}
        }
        for (i, &b) in buf.iter().enumerate() {
            let consumed = i + 1;
            match self.step(b) {
                Ok(Some(event)) => return Ok((consumed, event)),
                Ok(None) => {}
                Err(e) => {
                    self.state = State::Failed;
                    return Err(e);
                }
            }
        }
        Ok((buf.len(), ChunkEvent::NeedMore))
    }

    /// The caller delivered n payload bytes of the current chunk (n <= remaining). Delivering
    /// more than remain is a caller bug; the excess is ignored (and asserted in debug builds).
    pub fn consume_payload(&mut self, n: u64) {
        if let State::Data(remaining) = self.state {
            debug_assert!(n <= remaining, "consumed {n} payload bytes of {remaining}");
            let left = remaining.saturating_sub(n);
            self.state = if left == 0 {
                State::DataCr
            } else {
                State::Data(left)
            };
        } else {
            debug_assert!(n == 0, "consumed {n} payload bytes outside chunk data");
        }
    }

    /// Payload bytes left in the current chunk; 0 when not in data.
    pub fn payload_remaining(&self) -> u64 {
        match self.state {
            State::Data(n) => n,
            _ => 0,
        }
    }

    /// True once the last chunk and the trailer section have been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// One framing byte. Some(event) when the byte ends a step the caller must act on.
    fn step(&mut self, b: u8) -> Result<Option<ChunkEvent>, HttpError> {
        match self.state {
            State::SizeStart => {
                let digit = hex_digit(b).ok_or_else(|| {
                    bad(format!(
                        "chunk size must start with a hex digit, got {:?}",
                        char::from(b)
                    ))
                })?;
                self.size = u64::from(digit);
                self.line_len = 1;
                self.state = State::SizeDigits;
            }
            State::SizeDigits => {
                if b != b'\r' {
                    self.count_line_byte()?;
                }
                if let Some(digit) = hex_digit(b) {
                    self.size = self
                        .size
                        .checked_mul(16)
                        .and_then(|s| s.checked_add(u64::from(digit)))
                        .ok_or_else(|| bad("chunk size overflows 64 bits"))?;
                } else {
                    match b {
                        b'\r' => self.state = State::SizeLf,
                        b';' => self.state = State::Extension,
                        b' ' | b'\t' => self.state = State::SizeWhitespace,
                        _ => {
                            return Err(bad(format!(
                                "invalid byte {:?} in chunk size",
                                char::from(b)
                            )));
                        }
                    }
                }
            }
            State::SizeWhitespace => {
                self.count_line_byte()?;
                match b {
                    b' ' | b'\t' => {}
                    b';' => self.state = State::Extension,
                    _ => return Err(bad("whitespace after a chunk size must precede ';'")),
                }
            }
            State::Extension => {
                if b != b'\r' {
                    self.count_line_byte()?;
                }
                match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => return Err(bad("bare LF in chunk extension")),
                    b'\t' | b' '..=b'~' | 0x80..=0xFF => {}
                    _ => return Err(bad("control character in chunk extension")),
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(bad("chunk size line must end with CRLF"));
                }
                if self.size == 0 {
                    self.state = State::TrailerLineStart;
                } else {
                    self.state = State::Data(self.size);
                    return Ok(Some(ChunkEvent::Data(self.size)));
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(bad("chunk data must be followed by CRLF"));
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(bad("chunk data must be followed by CRLF"));
                }
                self.state = State::SizeStart;
            }
            State::TrailerLineStart => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' => self.state = State::FinalLf,
                    b' ' | b'\t' => return Err(bad("obsolete line folding in trailer")),
                    b':' => return Err(bad("trailer field without a name")),
                    b'\n' => return Err(bad("bare LF in trailer section")),
                    _ if is_field_byte(b) => self.state = State::TrailerLine { saw_colon: false },
                    _ => return Err(bad("control character in trailer")),
                }
            }
            State::TrailerLine { saw_colon } => {
                self.count_trailer_byte()?;
                match b {
                    b'\r' if saw_colon => self.state = State::TrailerLineLf,
                    b'\r' => return Err(bad("trailer field line without ':'")),
                    b'\n' => return Err(bad("bare LF in trailer section")),
                    b':' => self.state = State::TrailerLine { saw_colon: true },
                    _ if is_field_byte(b) => {}
                    _ => return Err(bad("control character in trailer")),
                }
            }
            State::TrailerLineLf => {
                self.count_trailer_byte()?;
                if b != b'\n' {
                    return Err(bad("trailer line must end with CRLF"));
                }
                self.state = State::TrailerLineStart;
            }
            State::FinalLf => {
                self.count_trailer_byte()?;
                if b != b'\n' {
                    return Err(bad("chunked body must end with CRLF"));
                }
                self.state = State::Done;
                return Ok(Some(ChunkEvent::End));
            }
            // `feed` never steps in these states.
            State::Data(n) => return Ok(Some(ChunkEvent::Data(n))),
            State::Done => return Ok(Some(ChunkEvent::End)),
            State::Failed => return Err(bad("chunked body already failed to decode")),
        }
        Ok(None)
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_len = self.line_len.saturating_add(1);
        if self.line_len > self.limits.max_chunk_line {
            return Err(bad(format!(
                "chunk size line longer than {} bytes",
                self.limits.max_chunk_line
            )));
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), HttpError> {
        self.trailer_len = self.trailer_len.saturating_add(1);
        if self.trailer_len > self.limits.max_trailer_bytes {
            return Err(bad(format!(
                "chunked trailer section larger than {} bytes",
                self.limits.max_trailer_bytes
            )));
        }
        Ok(())
    }
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::bad_request(message)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Bytes allowed inside a trailer field line: HTAB, SP, visible ASCII, obs-text.
fn is_field_byte(b: u8) -> bool {
    matches!(b, b'\t' | b' '..=b'~' | 0x80..=0xFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ChunkedLimits {
        ChunkedLimits {
            max_chunk_line: 32,
            max_trailer_bytes: 64,
        }
    }

    /// Drives a decoder the way a connection does: framing bytes are fed from the stream in
    /// pieces of `next_piece()` bytes; payload is taken straight from the stream.
    /// Returns (payload, bytes of the stream used) or the error.
    fn drive(
        stream: &[u8],
        mut next_piece: impl FnMut() -> usize,
    ) -> Result<(Vec<u8>, usize), HttpError> {
        let mut decoder = ChunkedDecoder::new(limits());
        let mut payload = Vec::new();
        let mut pos = 0;
        loop {
            let remaining = decoder.payload_remaining();
            if remaining > 0 {
                let piece = (next_piece().max(1) as u64).min(remaining) as usize;
                let available = stream.len() - pos;
                assert!(available > 0, "stream ended inside chunk data");
                let take = piece.min(available);
                payload.extend_from_slice(&stream[pos..pos + take]);
                pos += take;
                decoder.consume_payload(take as u64);
                continue;
            }
            let end = (pos + next_piece().max(1)).min(stream.len());
            let fed = end - pos;
            let (consumed, event) = decoder.feed(&stream[pos..end])?;
            assert!(consumed <= fed);
            pos += consumed;
            match event {
                ChunkEvent::End => {
                    assert!(decoder.is_done());
                    return Ok((payload, pos));
                }
                ChunkEvent::Data(n) => assert_eq!(n, decoder.payload_remaining()),
                ChunkEvent::NeedMore => {
                    assert_eq!(consumed, fed, "NeedMore consumes everything it was given");
                    assert!(pos < stream.len(), "stream ended before the body did");
                }
            }
        }
    }

    fn decode_whole(stream: &[u8]) -> Result<(Vec<u8>, usize), HttpError> {
        drive(stream, || usize::MAX / 2)
    }

    fn decode_err(stream: &[u8]) -> HttpError {
        let mut decoder = ChunkedDecoder::new(limits());
        let mut pos = 0;
        loop {
            match decoder.feed(&stream[pos..]) {
                Err(e) => return e,
                Ok((consumed, ChunkEvent::Data(n))) => {
                    pos += consumed;
                    let take = (n as usize).min(stream.len() - pos);
                    pos += take;
                    decoder.consume_payload(take as u64);
                    assert!(pos < stream.len(), "no error for {stream:?}");
                }
                Ok(other) => panic!(
                    "no error for {:?}: {other:?}",
                    String::from_utf8_lossy(stream)
                ),
            }
        }
    }

    /// xorshift64*: deterministic pseudo-random numbers for split tests.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn sample_stream() -> (Vec<u8>, Vec<u8>) {
        let mut stream = Vec::new();
        let mut payload = Vec::new();
        for (i, size) in [1usize, 15, 16, 255, 3, 4096, 7].into_iter().enumerate() {
            let data: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            if i % 3 == 0 {
                stream.extend_from_slice(format!("{size:x};name=value;flag\r\n").as_bytes());
            } else if i % 3 == 1 {
                stream.extend_from_slice(format!("{size:X} ; e=\"q\"\r\n").as_bytes());
            } else {
                stream.extend_from_slice(format!("000{size:x}\r\n").as_bytes());
            }
            stream.extend_from_slice(&data);
            stream.extend_from_slice(b"\r\n");
            payload.extend_from_slice(&data);
        }
        stream.extend_from_slice(b"0\r\nX-Checksum: abc\r\nX-Other:\r\n\r\n");
        (stream, payload)
    }

    #[test]
    fn whole_body_in_one_feed() {
        let (stream, payload) = sample_stream();
        let mut with_pipelined = stream.clone();
        with_pipelined.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            decode_whole(&with_pipelined).unwrap(),
            (payload, stream.len())
        );
    }

    #[test]
    fn byte_by_byte_matches_one_feed() {
        let (stream, payload) = sample_stream();
        assert_eq!(drive(&stream, || 1).unwrap(), (payload, stream.len()));
    }

    #[test]
    fn random_splits_match_one_feed() {
        let (stream, payload) = sample_stream();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..200 {
            let max_piece = 1 + (rng.next() % 64) as usize;
            let mut piece_rng = Rng(rng.next() | 1);
            let result = drive(&stream, || 1 + (piece_rng.next() as usize % max_piece));
            assert_eq!(result.unwrap(), (payload.clone(), stream.len()));
        }
    }

    #[test]
    fn feed_stops_at_first_payload_byte_and_never_consumes_payload() {
        let mut decoder = ChunkedDecoder::new(limits());
        let stream = b"5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(decoder.feed(stream).unwrap(), (3, ChunkEvent::Data(5)));
        assert_eq!(
            decoder.feed(&stream[3..]).unwrap(),
            (0, ChunkEvent::Data(5))
        );
        assert_eq!(decoder.payload_remaining(), 5);
        decoder.consume_payload(2);
        assert_eq!(decoder.payload_remaining(), 3);
        assert_eq!(
            decoder.feed(&stream[5..]).unwrap(),
            (0, ChunkEvent::Data(3))
        );
        decoder.consume_payload(3);
        assert_eq!(decoder.payload_remaining(), 0);
        assert!(!decoder.is_done());
        assert_eq!(decoder.feed(&stream[8..]).unwrap(), (7, ChunkEvent::End));
        assert!(decoder.is_done());
        assert_eq!(decoder.feed(b"more").unwrap(), (0, ChunkEvent::End));
    }

    #[test]
    fn incomplete_framing_needs_more() {
        let mut decoder = ChunkedDecoder::new(limits());
        assert_eq!(decoder.feed(b"").unwrap(), (0, ChunkEvent::NeedMore));
        assert_eq!(decoder.feed(b"1f").unwrap(), (2, ChunkEvent::NeedMore));
        assert_eq!(decoder.feed(b"\r").unwrap(), (1, ChunkEvent::NeedMore));
        assert_eq!(decoder.feed(b"\n").unwrap(), (1, ChunkEvent::Data(31)));
    }

    #[test]
    fn empty_body_and_trailers() {
        assert_eq!(decode_whole(b"0\r\n\r\n").unwrap(), (vec![], 5));
        assert_eq!(
            decode_whole(b"000;x=y\r\n\r\n").unwrap().0,
            Vec::<u8>::new()
        );
        assert_eq!(
            decode_whole(b"0\r\nA: 1\r\nB:2\r\n\r\n").unwrap(),
            (vec![], 16)
        );
    }

    #[test]
    fn sizes_up_to_u64_max_are_accepted() {
        let mut decoder = ChunkedDecoder::new(limits());
        assert_eq!(
            decoder.feed(b"ffffffffffffffff\r\n").unwrap(),
            (18, ChunkEvent::Data(u64::MAX))
        );
        let mut decoder = ChunkedDecoder::new(limits());
        assert_eq!(
            decoder.feed(b"0000FFFFFFFFFFFFFFFF\r\n").unwrap(),
            (22, ChunkEvent::Data(u64::MAX))
        );
    }

    #[test]
    fn smuggling_shapes_and_malformed_framing_are_400() {
        for stream in [
            &b"10000000000000000\r\n"[..], // 17 significant hex digits
            b"fffffffffffffffff\r\n",      // overflow
            b"0x5\r\nhello\r\n0\r\n\r\n",  // prefix
            b"+5\r\nhello\r\n0\r\n\r\n",   // sign
            b"-5\r\n",                     // sign
            b" 5\r\nhello\r\n0\r\n\r\n",   // leading whitespace
            b"\t5\r\n",                    // leading whitespace
            b"5 \r\nhello\r\n0\r\n\r\n",   // trailing whitespace without extension
            b"g\r\n",                      // not hex
            b"\r\n",                       // empty size
            b";ext\r\n",                   // extension without size
            b"5\nhello\r\n0\r\n\r\n",      // bare LF after size
            b"5;a=b\nhello\r\n0\r\n\r\n",  // bare LF after extension
            b"5\rhello\r\n0\r\n\r\n",      // bare CR
            b"5\r\nhelloX\r\n0\r\n\r\n",   // data longer than size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after data
            b"5\r\nhello\rX0\r\n\r\n",     // CR without LF after data
            b"5\r\nhello0\r\n\r\n",        // missing CRLF after data
            b"5;a\x00b\r\n",               // NUL in extension
            b"0\r\n\n",                    // bare LF ending
            b"0\r\n\rX",                   // CR without LF ending
            b"0\r\nX-A: 1\n\r\n",          // bare LF in trailer
            b"0\r\nX-A: 1\r\r\n",          // CR CR in trailer
            b"0\r\n X-A: 1\r\n\r\n",       // folded trailer
            b"0\r\nNoColon\r\n\r\n",       // trailer without colon
            b"0\r\n: v\r\n\r\n",           // trailer without name
            b"0\r\nX-A: a\x01b\r\n\r\n",   // control char in trailer
        ] {
            let err = decode_err(stream);
            assert_eq!(err.status, 400, "{:?}", String::from_utf8_lossy(stream));
        }
    }

    #[test]
    fn chunk_line_limit() {
        // 32 bytes exactly (CRLF excluded) is fine.
        let ok = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(30));
        assert_eq!(decode_whole(ok.as_bytes()).unwrap().0, b"hello");
        let over = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(31));
        assert_eq!(decode_err(over.as_bytes()).status, 400);
        // Leading zeros count too, so they cannot run forever.
        let zeros = format!("{}5\r\n", "0".repeat(40));
        assert_eq!(decode_err(zeros.as_bytes()).status, 400);
        // The limit applies to each line, not the body.
        let many: String = (0..20)
            .map(|_| format!("1;{}\r\nx\r\n", "e".repeat(29)))
            .collect();
        let many = format!("{many}0\r\n\r\n");
        assert_eq!(decode_whole(many.as_bytes()).unwrap().0, vec![b'x'; 20]);
    }

    #[test]
    fn trailer_limit() {
        // 64 bytes of trailer section exactly: one 62-byte line + CRLF... plus the final CRLF.
        let line = format!("X:{}", "v".repeat(58)); // 60 bytes + CRLF = 62, + final CRLF = 64
        let ok = format!("0\r\n{line}\r\n\r\n");
        assert!(decode_whole(ok.as_bytes()).is_ok());
        let line = format!("X:{}", "v".repeat(59));
        let over = format!("0\r\n{line}\r\n\r\n");
        assert_eq!(decode_err(over.as_bytes()).status, 400);
        // Many small trailer lines add up.
        let many = format!("0\r\n{}\r\n", "A:1\r\n".repeat(20));
        assert_eq!(decode_err(many.as_bytes()).status, 400);
    }

    #[test]
    fn errors_are_sticky() {
        let mut decoder = ChunkedDecoder::new(limits());
        assert!(decoder.feed(b"x").is_err());
        assert!(decoder.feed(b"0\r\n\r\n").is_err());
        assert!(!decoder.is_done());
    }
}

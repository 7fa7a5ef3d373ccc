//! The pure HTTP/1.1 layer: request heads, ranges, chunked bodies, response heads, dates and
//! preconditions. Nothing here touches a socket or the disk; the connection state machine feeds
//! bytes in and gets parsed values, framing decisions and serialized heads back.

pub mod chunked;
pub mod conditional;
pub mod date;
pub mod range;
pub mod request;
pub mod response;

/// An error that becomes an HTTP error response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// Shorthand for a 400 Bad Request error.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(400, message)
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            response::reason_phrase(self.status),
            self.message
        )
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_status_reason_and_message() {
        let e = HttpError::new(414, "request line longer than 8192 bytes");
        assert_eq!(
            e.to_string(),
            "414 URI Too Long: request line longer than 8192 bytes"
        );
        assert_eq!(HttpError::bad_request("x").status, 400);
    }

    /// Random and mutated inputs through every parser: errors are fine, panics are not.
    #[test]
    fn garbage_never_panics() {
        let seeds: [&[u8]; 6] = [
            b"GET /videos/a?t=00%3A00 HTTP/1.1\r\nHost: h\r\nRange: bytes=0-9\r\n\r\n",
            b"PUT /videos/a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"5;x=y\r\nhello\r\n0\r\nA: b\r\n\r\n",
            b"bytes=0-99, -5, 7-",
            b"bytes 0-99/1000",
            b"Sun, 06 Nov 1994 08:49:37 GMT",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let alphabet = b"\r\n :;,-=/%.0123456789abcdefxGHTP*\"W\t\0\xff";
        let limits = request::HeadLimits::default();
        let chunk_limits = chunked::ChunkedLimits::default();
        for round in 0..20_000 {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..(next() % 6) {
                let at = (next() as usize) % (input.len() + 1);
                let byte = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if at < input.len() => input[at] = byte,
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.insert(at, byte),
                }
            }
            let _ = request::parse_request_head(&input, &limits);
            let mut decoder = chunked::ChunkedDecoder::new(chunk_limits);
            if let Ok((_, chunked::ChunkEvent::Data(n))) = decoder.feed(&input) {
                decoder.consume_payload(n);
                let _ = decoder.feed(&input);
            }
            let text = String::from_utf8_lossy(&input);
            if let Ok(specs) = range::parse_range_header(&text, 16) {
                let _ = range::resolve_ranges(&specs, next() % 200);
            }
            let _ = range::parse_content_range(&text);
            let _ = date::parse_http_date(&text);
            let _ = request::query_param(&text, "t");
            let _ = conditional::if_range_allows(&text, "\"e\"", std::time::UNIX_EPOCH);
        }
    }
}

//! Serialization of HTTP/1.1 response heads, complete small responses (error pages, JSON) and
//! JSON string escaping. Only heads and small bodies pass through here; video payload is
//! written by the connection straight from the mapped file.

use std::borrow::Cow;
use std::io::Write;

use super::date::with_http_date_now;

/// The reason phrase for a status code; codes not listed get their class's generic phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    let known = match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        425 => "Too Early",
        426 => "Upgrade Required",
        428 => "Precondition Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => "",
    };
    if !known.is_empty() {
        return known;
    }
    match status {
        100..=199 => "Informational",
        200..=299 => "Success",
        300..=399 => "Redirection",
        400..=499 => "Client Error",
        _ => "Server Error",
    }
}

/// Statuses that never carry a body or Content-Length (RFC 9110 §8.6, §15.3.5).
fn forbids_content_length(status: u16) -> bool {
    (100..200).contains(&status) || status == 204
}

/// A response head. Names are static and fixed values are not copied, so building a head costs an
/// allocation only for values computed per response (lengths, ranges, validators).
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(&'static str, Cow<'static, str>)>,
}

/// Header lines a typical response carries (validators, range, type, length, connection …).
const TYPICAL_HEADERS: usize = 10;

impl ResponseHead {
    pub fn new(status: u16) -> Self {
        ResponseHead {
            status,
            headers: Vec::with_capacity(TYPICAL_HEADERS),
        }
    }

    /// Append a header line (no de-duplication: the caller adds each header once).
    pub fn header(&mut self, name: &'static str, value: impl Into<Cow<'static, str>>) -> &mut Self {
        self.headers.push((name, value.into()));
        self
    }

    /// `Connection: keep-alive` or `Connection: close` (explicit keep-alive also serves
    /// HTTP/1.0 clients, which need it to keep the connection).
    pub fn connection(&mut self, keep_alive: bool) -> &mut Self {
        self.header(
            "Connection",
            if keep_alive { "keep-alive" } else { "close" },
        )
    }

    /// Replace any `Connection` header with `Connection: keep-alive` or `Connection: close`, last in
    /// the head: making a response close its connection is a field change, not string surgery.
    pub fn set_connection(&mut self, keep_alive: bool) -> &mut Self {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("Connection"));
        self.connection(keep_alive)
    }

    /// The value of header `name` (any case), if it is set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// True when a header of that name (case-insensitive) has been added.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Serialize "HTTP/1.1 ..." + headers + "\r\n" into out (appending). Always adds `Date` and
    /// `Server: vcache` if not set. CR, LF and NUL in names or values are replaced by spaces so
    /// that no value can inject a header line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {}\r\n",
            self.status,
            reason_phrase(self.status)
        );
        if !self.has_header("Date") {
            with_http_date_now(|date| push_header_line(out, "Date", date));
        }
        if !self.has_header("Server") {
            push_header_line(out, "Server", "vcache");
        }
        for (name, value) in &self.headers {
            push_header_line(out, name, value);
        }
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header_line(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = |b: u8| {
        if matches!(b, b'\r' | b'\n' | 0) {
            b' '
        } else {
            b
        }
    };
    out.extend(name.bytes().map(clean));
    out.extend_from_slice(b": ");
    out.extend(value.bytes().map(clean));
    out.extend_from_slice(b"\r\n");
}

/// A complete small response (error pages, JSON), kept structured: a head with Content-Length (and
/// Content-Type when not empty), and the body to send after it — empty for HEAD (head_only=true,
/// Content-Length kept), 1xx and 204 (no Content-Length either) and 304 (no Content-Length; pass the
/// representation's length in `extra` if wanted). `Connection: close` when keep_alive is false,
/// `Connection: keep-alive` otherwise.
pub fn simple_parts(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
    extra: &[(&'static str, String)],
) -> (ResponseHead, Vec<u8>) {
    let bodyless = forbids_content_length(status) || status == 304;
    let mut head = ResponseHead::new(status);
    if !bodyless {
        if !content_type.is_empty() {
            head.header("Content-Type", content_type.to_string());
        }
        head.header("Content-Length", body.len().to_string());
    }
    for (name, value) in extra {
        head.header(name, value.clone());
    }
    head.connection(keep_alive);
    let body = if !head_only && !bodyless {
        body.to_vec()
    } else {
        Vec::new()
    };
    (head, body)
}

/// The media type of vcache's error bodies (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details body for an error status: `type` about:blank, `title` the reason
/// phrase, `status`, and `detail` the human explanation.
pub fn problem_body(status: u16, detail: &str) -> String {
    format!(
        "{{\"type\":\"about:blank\",\"title\":{},\"status\":{status},\"detail\":{}}}\n",
        json_string(reason_phrase(status)),
        json_string(detail)
    )
}

/// Escape a string for a JSON string literal (quotes included).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            // Controls, plus the two separators that break JavaScript string literals.
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small response serialized as it goes on the wire.
    fn simple_response(
        out: &mut Vec<u8>,
        status: u16,
        content_type: &str,
        body: &[u8],
        head_only: bool,
        keep_alive: bool,
        extra: &[(&'static str, String)],
    ) {
        let (head, body) = simple_parts(status, content_type, body, head_only, keep_alive, extra);
        head.write_to(out);
        out.extend_from_slice(&body);
    }

    #[test]
    fn set_connection_replaces_the_header_last() {
        let (mut head, _) = simple_parts(200, "text/plain", b"x", false, true, &[]);
        head.header("X-After", "1");
        head.set_connection(false);
        let mut out = Vec::new();
        head.write_to(&mut out);
        let s = text(&out);
        assert!(!s.contains("keep-alive"));
        assert!(s.ends_with("X-After: 1\r\nConnection: close\r\n\r\n"));
    }

    fn text(out: &[u8]) -> String {
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn reason_phrases() {
        assert_eq!(reason_phrase(200), "OK");
        assert_eq!(reason_phrase(206), "Partial Content");
        assert_eq!(reason_phrase(416), "Range Not Satisfiable");
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(505), "HTTP Version Not Supported");
        assert_eq!(reason_phrase(499), "Client Error");
        assert_eq!(reason_phrase(599), "Server Error");
        assert_eq!(reason_phrase(0), "Server Error");
    }

    #[test]
    fn head_adds_date_and_server_once() {
        let mut out = Vec::new();
        let mut head = ResponseHead::new(206);
        head.header("Content-Range", "bytes 0-9/100")
            .header("Accept-Ranges", "bytes");
        head.write_to(&mut out);
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 206 Partial Content\r\n"));
        assert!(s.ends_with("Content-Range: bytes 0-9/100\r\nAccept-Ranges: bytes\r\n\r\n"));
        assert_eq!(s.matches("\r\nDate: ").count(), 1);
        assert!(s.contains("\r\nServer: vcache\r\n"));
        assert!(s.contains(" GMT\r\n"));
    }

    #[test]
    fn head_keeps_given_date_and_server() {
        let mut out = b"previous".to_vec();
        let mut head = ResponseHead::new(200);
        head.header("date", "Sun, 06 Nov 1994 08:49:37 GMT")
            .header("SERVER", "other");
        head.write_to(&mut out);
        let s = text(&out);
        assert!(s.starts_with("previousHTTP/1.1 200 OK\r\n"));
        assert_eq!(s.matches("ate: ").count(), 1);
        assert_eq!(s.to_ascii_lowercase().matches("server:").count(), 1);
    }

    #[test]
    fn header_injection_is_neutralised() {
        let mut out = Vec::new();
        let mut head = ResponseHead::new(200);
        head.header("X-Id", "a\r\nSet-Cookie: x\0");
        head.write_to(&mut out);
        let s = text(&out);
        assert!(s.contains("X-Id: a  Set-Cookie: x \r\n"));
        assert!(!s.contains("\r\nSet-Cookie"));
    }

    #[test]
    fn simple_response_with_body() {
        let mut out = Vec::new();
        simple_response(
            &mut out,
            404,
            "text/plain; charset=utf-8",
            b"no such video\n",
            false,
            true,
            &[("X-Extra", "1".to_string())],
        );
        let s = text(&out);
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(s.contains("\r\nContent-Length: 14\r\n"));
        assert!(s.contains("\r\nX-Extra: 1\r\n"));
        assert!(s.contains("\r\nConnection: keep-alive\r\n"));
        assert!(s.ends_with("\r\n\r\nno such video\n"));
    }

    #[test]
    fn simple_response_head_only_keeps_length() {
        let mut out = Vec::new();
        simple_response(&mut out, 200, "application/json", b"{}", true, false, &[]);
        let s = text(&out);
        assert!(s.contains("\r\nContent-Length: 2\r\n"));
        assert!(s.contains("\r\nConnection: close\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn bodyless_statuses() {
        for status in [204, 304, 100] {
            let mut out = Vec::new();
            simple_response(&mut out, status, "text/plain", b"ignored", false, true, &[]);
            let s = text(&out);
            assert!(!s.contains("Content-Length"), "{status}");
            assert!(!s.contains("Content-Type"), "{status}");
            assert!(s.ends_with("\r\n\r\n"), "{status}");
        }
        let mut out = Vec::new();
        simple_response(&mut out, 200, "", b"", false, true, &[]);
        let s = text(&out);
        assert!(s.contains("Content-Length: 0\r\n"));
        assert!(!s.contains("Content-Type"));
    }

    #[test]
    fn problem_details() {
        assert_eq!(
            problem_body(404, "no video with id \"x\""),
            "{\"type\":\"about:blank\",\"title\":\"Not Found\",\"status\":404,\"detail\":\"no video with id \\\"x\\\"\"}\n"
        );
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_string("movie"), "\"movie\"");
        assert_eq!(json_string(""), "\"\"");
        assert_eq!(json_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(json_string("\n\r\t\u{8}\u{c}"), "\"\\n\\r\\t\\b\\f\"");
        assert_eq!(json_string("\u{0}\u{1f}"), "\"\\u0000\\u001f\"");
        assert_eq!(json_string("\u{2028}"), "\"\\u2028\"");
        assert_eq!(json_string("é/<>"), "\"é/<>\"");
    }
}

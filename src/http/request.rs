//! Parsing of HTTP/1.x request heads (request line + header fields) with `httparse`, plus the
//! framing and safety checks httparse leaves to us: size limits, body framing (Content-Length vs
//! Transfer-Encoding, the request-smuggling shapes), Host rules and request-target validation.
//! The result is a `RequestHead` with owned, trimmed values; the body is never looked at here.

use super::HttpError;
use std::mem::MaybeUninit;

/// Default bound on the request line (method, target, version), in bytes without the CRLF.
pub const DEFAULT_MAX_REQUEST_LINE: usize = 8 * 1024;
/// Default bound on a whole request head (request line, headers and the blank line), in bytes.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;
/// Default bound on the number of header fields in one request.
pub const DEFAULT_MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
    Options,
    /// Any other method (including unknown extension methods); `method_name` has the text.
    #[default]
    Other,
}

impl Method {
    /// Methods are case-sensitive (RFC 9110 §9.1): `get` is an unknown method, not GET.
    pub fn from_name(name: &str) -> Method {
        match name {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "PUT" => Method::Put,
            "POST" => Method::Post,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Longest accepted request line in bytes, excluding its CRLF (longer → 414).
    pub max_request_line: usize,
    /// Largest accepted head in bytes, through the blank line (larger → 431).
    pub max_head_bytes: usize,
    /// Most header fields accepted (more → 431).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            max_request_line: DEFAULT_MAX_REQUEST_LINE,
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: Method,
    /// The method as sent, for logs.
    pub method_name: String,
    /// The raw request-target as sent.
    pub target: String,
    /// Percent-decoded (exactly once) and validated path: starts with `/`, no `.`/`..` segments,
    /// no control characters, no backslash.
    pub path: String,
    /// Raw query after '?', not decoded.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// HTTP/1.1: true unless `Connection: close`; HTTP/1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` (the only transfer coding accepted).
    pub chunked: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0 as RFC 9110 §10.1.1 says).
    pub expect_continue: bool,
    /// Host header, or the authority of an absolute-form target (which takes precedence).
    pub host: Option<String>,
    pub range: Option<String>,
    pub content_range: Option<String>,
    pub if_range: Option<String>,
    /// Combined with ", " when sent in several header lines (it is a list).
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    /// Combined with ", " when sent in several header lines (it is a list).
    pub if_match: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// `X-Vcache-Peer` (any value): another node of the tier asks; answered from the cache only.
    pub peer: bool,
}

impl RequestHead {
    /// True when a body follows the head: chunked, or a Content-Length above zero.
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|n| n > 0)
    }
}

/// Header slots kept on the stack while parsing (limits.max_headers above this uses the heap).
const STACK_HEADERS: usize = 128;

/// Parse a request head from the start of `buf`.
///
/// Ok(None): need more bytes (and buf is still within limits). Ok(Some((head, head_len))):
/// head_len is the number of bytes of buf the head used (through the blank line); the rest of
/// buf is body/pipelined data.
pub fn parse_request_head(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(RequestHead, usize)>, HttpError> {
    check_request_line_length(buf, limits.max_request_line)?;

    // Header slots are handed to httparse uninitialised: on the stack for the usual limit, else on
    // the heap, and never zero-filled (a profile showed the per-request fill of 100 slots).
    let mut on_stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; STACK_HEADERS];
    let mut on_heap = Vec::new();
    let slots = if limits.max_headers <= STACK_HEADERS {
        &mut on_stack[..limits.max_headers]
    } else {
        on_heap.reserve_exact(limits.max_headers);
        &mut on_heap.spare_capacity_mut()[..limits.max_headers]
    };
    let mut req = httparse::Request::new(&mut []);
    let head_len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // An incomplete head that already fills the limit can only end up larger than it.
            if buf.len() >= limits.max_head_bytes {
                return Err(HttpError::new(
                    431,
                    format!("request head larger than {} bytes", limits.max_head_bytes),
                ));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(
                431,
                format!("more than {} header fields", limits.max_headers),
            ));
        }
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(e) => {
            return Err(HttpError::bad_request(format!(
                "malformed request head: {e}"
            )));
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(HttpError::new(
            431,
            format!("request head larger than {} bytes", limits.max_head_bytes),
        ));
    }

    let (Some(method_name), Some(target), Some(minor_version)) =
        (req.method, req.path, req.version)
    else {
        return Err(HttpError::bad_request("incomplete request line"));
    };
    if minor_version > 1 {
        return Err(HttpError::new(
            505,
            "only HTTP/1.0 and HTTP/1.1 are supported",
        ));
    }

    let parsed_target = parse_target(target)?;
    let mut head = RequestHead {
        method: Method::from_name(method_name),
        method_name: method_name.to_string(),
        target: target.to_string(),
        path: parsed_target.path,
        query: parsed_target.query,
        minor_version,
        ..RequestHead::default()
    };
    apply_headers(&mut head, req.headers, parsed_target.authority)?;
    Ok(Some((head, head_len)))
}

/// 414 when the request line (after the empty lines httparse skips) is longer than the limit,
/// also while it is still incomplete.
fn check_request_line_length(buf: &[u8], max_request_line: usize) -> Result<(), HttpError> {
    let mut start = 0;
    while let Some(&b) = buf.get(start) {
        if b == b'\r' || b == b'\n' {
            start += 1;
        } else {
            break;
        }
    }
    let rest = buf.get(start..).unwrap_or(&[]);
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(lf) => rest.get(..lf).unwrap_or(rest),
        None => rest,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > max_request_line {
        return Err(HttpError::new(
            414,
            format!("request line longer than {max_request_line} bytes"),
        ));
    }
    Ok(())
}

/// httparse reports any version other than exactly `HTTP/1.0`/`HTTP/1.1` as a version error; a
/// well-formed `HTTP/<digit>...` is an unsupported version (505), anything else is malformed (400).
fn version_error(buf: &[u8]) -> HttpError {
    let text = String::from_utf8_lossy(buf);
    let line = text.trim_start_matches(['\r', '\n']);
    let line = line.split(['\r', '\n']).next().unwrap_or("");
    // Only a well-formed `METHOD SP target SP version` line names a version; with more or fewer
    // parts (e.g. a space inside the target) the line itself is malformed, whatever its last word.
    let parts: Vec<&str> = line.split(' ').collect();
    let version = match parts.as_slice() {
        [_, _, v] if *v != "HTTP/1.0" && *v != "HTTP/1.1" => *v,
        _ => "",
    };
    let is_http_version = version
        .strip_prefix("HTTP/")
        .and_then(|v| v.chars().next())
        .is_some_and(|c| c.is_ascii_digit());
    if is_http_version {
        HttpError::new(
            505,
            format!("HTTP version {version:?} not supported (use HTTP/1.1)"),
        )
    } else {
        HttpError::bad_request("malformed HTTP version in request line")
    }
}

struct ParsedTarget {
    path: String,
    query: Option<String>,
    /// Authority of an absolute-form target.
    authority: Option<String>,
}

/// Origin-form (`/p?q`) or absolute-form (`http://host/p?q`, reduced to its path); `*` and
/// authority-form are rejected.
fn parse_target(target: &str) -> Result<ParsedTarget, HttpError> {
    if target.contains('#') {
        return Err(HttpError::bad_request(
            "request-target must not contain a fragment ('#')",
        ));
    }
    let (origin_form, authority) = if target.starts_with('/') {
        (target, None)
    } else if let Some(after_scheme) = strip_http_scheme(target) {
        let authority_end = after_scheme.find(['/', '?']).unwrap_or(after_scheme.len());
        let (authority, rest) = after_scheme.split_at(authority_end);
        if authority.is_empty() || authority.contains('@') {
            return Err(HttpError::bad_request(
                "absolute-form request-target needs a host and no userinfo",
            ));
        }
        (rest, Some(authority.to_string()))
    } else {
        return Err(HttpError::bad_request(format!(
            "request-target must start with '/' (got {:?})",
            truncate_for_message(target)
        )));
    };
    let (raw_path, query) = match origin_form.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (origin_form, None),
    };
    // An absolute-form target with an empty path means "/".
    let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
    let path = validate_path(raw_path)?;
    Ok(ParsedTarget {
        path,
        query,
        authority,
    })
}

fn strip_http_scheme(target: &str) -> Option<&str> {
    for scheme in ["http://", "https://"] {
        if let Some(prefix) = target.get(..scheme.len())
            && prefix.eq_ignore_ascii_case(scheme)
        {
            return target.get(scheme.len()..);
        }
    }
    None
}

/// Percent-decode `raw_path` exactly once and reject anything that could escape a directory or
/// confuse a later consumer.
fn validate_path(raw_path: &str) -> Result<String, HttpError> {
    let bytes = percent_decode(raw_path, false)
        .ok_or_else(|| HttpError::bad_request("invalid percent-escape in request path"))?;
    let path = String::from_utf8(bytes)
        .map_err(|_| HttpError::bad_request("request path is not valid UTF-8 after decoding"))?;
    if path.chars().any(|c| c.is_control()) {
        return Err(HttpError::bad_request(
            "request path contains a control character",
        ));
    }
    if path.contains('\\') {
        return Err(HttpError::bad_request("request path contains a backslash"));
    }
    if path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(HttpError::bad_request(
            "request path contains a '.' or '..' segment",
        ));
    }
    Ok(path)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decode `%XX` escapes once (and `+` as a space when `plus_is_space`); None on a bad escape.
fn percent_decode(s: &str, plus_is_space: bool) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = hex_value(*bytes.get(i + 1)?)?;
                let lo = hex_value(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

fn truncate_for_message(s: &str) -> &str {
    const MAX_ECHOED_CHARS: usize = 64;
    match s.char_indices().nth(MAX_ECHOED_CHARS) {
        Some((i, _)) => s.get(..i).unwrap_or(s),
        None => s,
    }
}

/// Singleton header fields stored in `RequestHead`; a duplicate of any of them is a 400.
fn singleton_slot<'h>(head: &'h mut RequestHead, name: &str) -> Option<&'h mut Option<String>> {
    let slot = if name.eq_ignore_ascii_case("host") {
        &mut head.host
    } else if name.eq_ignore_ascii_case("range") {
        &mut head.range
    } else if name.eq_ignore_ascii_case("content-range") {
        &mut head.content_range
    } else if name.eq_ignore_ascii_case("if-range") {
        &mut head.if_range
    } else if name.eq_ignore_ascii_case("if-modified-since") {
        &mut head.if_modified_since
    } else if name.eq_ignore_ascii_case("if-unmodified-since") {
        &mut head.if_unmodified_since
    } else if name.eq_ignore_ascii_case("authorization") {
        &mut head.authorization
    } else if name.eq_ignore_ascii_case("content-type") {
        &mut head.content_type
    } else {
        return None;
    };
    Some(slot)
}

/// List-valued header fields stored in `RequestHead`; repeated lines are joined with ", ".
fn list_slot<'h>(head: &'h mut RequestHead, name: &str) -> Option<&'h mut Option<String>> {
    if name.eq_ignore_ascii_case("if-none-match") {
        Some(&mut head.if_none_match)
    } else if name.eq_ignore_ascii_case("if-match") {
        Some(&mut head.if_match)
    } else {
        None
    }
}

fn apply_headers(
    head: &mut RequestHead,
    headers: &[httparse::Header<'_>],
    target_authority: Option<String>,
) -> Result<(), HttpError> {
    let mut content_length_text: Option<String> = None;
    let mut transfer_codings: Vec<String> = Vec::new();
    let mut saw_transfer_encoding = false;
    let mut connection_close = false;
    let mut connection_keep_alive = false;

    for header in headers {
        let name = header.name;
        let value = std::str::from_utf8(header.value)
            .map_err(|_| HttpError::bad_request(format!("header {name} is not valid UTF-8")))?
            .trim_matches([' ', '\t']);

        if name.eq_ignore_ascii_case("content-length") {
            for element in value.split(',') {
                let element = element.trim_matches([' ', '\t']);
                parse_content_length(element)?;
                match &content_length_text {
                    Some(previous) if previous != element => {
                        return Err(HttpError::bad_request("conflicting Content-Length values"));
                    }
                    Some(_) => {}
                    None => content_length_text = Some(element.to_string()),
                }
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            saw_transfer_encoding = true;
            for element in value.split(',') {
                let element = element.trim_matches([' ', '\t']);
                if element.is_empty() || !element.bytes().all(is_tchar) {
                    return Err(HttpError::bad_request(format!(
                        "malformed Transfer-Encoding {value:?}"
                    )));
                }
                transfer_codings.push(element.to_ascii_lowercase());
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for option in value.split(',') {
                let option = option.trim_matches([' ', '\t']);
                if option.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if option.eq_ignore_ascii_case("keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("x-vcache-peer") {
            head.peer = true;
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case("100-continue") && head.minor_version >= 1 {
                head.expect_continue = true;
            }
        } else if let Some(slot) = list_slot(head, name) {
            match slot {
                Some(existing) => {
                    existing.push_str(", ");
                    existing.push_str(value);
                }
                None => *slot = Some(value.to_string()),
            }
        } else if let Some(slot) = singleton_slot(head, name) {
            if slot.is_some() {
                return Err(HttpError::bad_request(format!("duplicate {name} header")));
            }
            *slot = Some(value.to_string());
        }
    }

    if let Some(text) = &content_length_text {
        head.content_length = Some(parse_content_length(text)?);
    }
    if saw_transfer_encoding {
        if head.minor_version == 0 {
            return Err(HttpError::bad_request(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        if head.content_length.is_some() {
            return Err(HttpError::bad_request(
                "Content-Length together with Transfer-Encoding",
            ));
        }
        head.chunked = transfer_codings_are_chunked(&transfer_codings)?;
    }

    if head.minor_version >= 1 && head.host.is_none() {
        return Err(HttpError::bad_request(
            "HTTP/1.1 request without Host header",
        ));
    }
    if target_authority.is_some() {
        // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
        head.host = target_authority;
    }
    head.keep_alive = if head.minor_version >= 1 {
        !connection_close
    } else {
        connection_keep_alive && !connection_close
    };
    Ok(())
}

/// Only exactly one `chunked` is supported: `chunked` anywhere else in the list is malformed
/// (400), any other coding is not implemented (501).
fn transfer_codings_are_chunked(codings: &[String]) -> Result<bool, HttpError> {
    let chunked_count = codings.iter().filter(|c| *c == "chunked").count();
    let last_is_chunked = codings.last().is_some_and(|c| c == "chunked");
    if chunked_count > 1 || (chunked_count == 1 && !last_is_chunked) {
        return Err(HttpError::bad_request(
            "Transfer-Encoding: chunked must appear once, as the final coding",
        ));
    }
    if let Some(unknown) = codings.iter().find(|c| *c != "chunked") {
        return Err(HttpError::new(
            501,
            format!("transfer coding {unknown:?} not implemented (only chunked)"),
        ));
    }
    Ok(chunked_count == 1)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A plain decimal: at least one digit, digits only, fits u64.
fn parse_content_length(text: &str) -> Result<u64, HttpError> {
    parse_decimal_u64(text)
        .ok_or_else(|| HttpError::bad_request(format!("invalid Content-Length {text:?}")))
}

/// Digits only (no sign, no whitespace), at least one, without overflowing u64.
pub(crate) fn parse_decimal_u64(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

/// Query parameter lookup on a raw query string, percent-decoding the value
/// (`t=00%3A00%3A10%3A00`); `+` decodes to a space as in form encoding. The first parameter
/// with that (decoded) name wins; a parameter without `=` has the empty value. A value with an
/// invalid percent-escape or that is not UTF-8 after decoding is treated as absent (None).
pub fn query_param(query: &str, name: &str) -> Option<String> {
    for pair in query.split('&') {
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(key) = percent_decode(raw_key, true).and_then(|k| String::from_utf8(k).ok())
        else {
            continue;
        };
        if key == name {
            return percent_decode(raw_value, true).and_then(|v| String::from_utf8(v).ok());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_request_line: 100,
            max_head_bytes: 400,
            max_headers: 8,
        }
    }

    #[test]
    fn header_limits_above_the_stack_slots_use_the_heap() {
        let mut text = String::from("GET /v HTTP/1.1\r\nHost: h\r\n");
        for i in 0..199 {
            text.push_str(&format!("X-{i}: {i}\r\n"));
        }
        text.push_str("Range: bytes=1-2\r\n\r\n");
        let lim = |n| HeadLimits {
            max_request_line: 100,
            max_head_bytes: 1 << 20,
            max_headers: n,
        };
        let (head, used) = parse_request_head(text.as_bytes(), &lim(300))
            .unwrap()
            .unwrap();
        assert_eq!(used, text.len());
        assert_eq!(
            head.range.as_deref(),
            Some("bytes=1-2"),
            "the 201st header is read"
        );
        let e = parse_request_head(text.as_bytes(), &lim(150)).unwrap_err();
        assert_eq!(e.status, 431);
        let e = parse_request_head(text.as_bytes(), &lim(STACK_HEADERS)).unwrap_err();
        assert_eq!(e.status, 431);
    }

    fn parse(text: &str) -> Result<Option<(RequestHead, usize)>, HttpError> {
        parse_request_head(text.as_bytes(), &limits())
    }

    fn parse_ok(text: &str) -> RequestHead {
        match parse(text) {
            Ok(Some((head, len))) => {
                assert_eq!(len, text.len(), "head length for {text:?}");
                head
            }
            other => panic!("expected a complete head for {text:?}, got {other:?}"),
        }
    }

    fn status_of(text: &str) -> u16 {
        match parse(text) {
            Err(e) => e.status,
            other => panic!("expected an error for {text:?}, got {other:?}"),
        }
    }

    fn with_header(header: &str) -> String {
        format!("PUT /videos/a HTTP/1.1\r\nHost: h\r\n{header}\r\n\r\n")
    }

    #[test]
    fn simple_get_parses_every_field() {
        let head = parse_ok(
            "GET /videos/movie?t=00:00:10:00 HTTP/1.1\r\nHost: example\r\n\
             Range: bytes=0-99\r\nIf-Range: \"abc\"\r\nIf-None-Match: \"x\"\r\n\
             If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\nIf-Match: *\r\n\
             If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Authorization:   Bearer tok  \r\n\r\n",
        );
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.method_name, "GET");
        assert_eq!(head.target, "/videos/movie?t=00:00:10:00");
        assert_eq!(head.path, "/videos/movie");
        assert_eq!(head.query.as_deref(), Some("t=00:00:10:00"));
        assert_eq!(head.minor_version, 1);
        assert!(head.keep_alive);
        assert_eq!(head.content_length, None);
        assert!(!head.chunked);
        assert!(!head.has_body());
        assert_eq!(head.host.as_deref(), Some("example"));
        assert_eq!(head.range.as_deref(), Some("bytes=0-99"));
        assert_eq!(head.if_range.as_deref(), Some("\"abc\""));
        assert_eq!(head.if_none_match.as_deref(), Some("\"x\""));
        assert_eq!(
            head.if_modified_since.as_deref(),
            Some("Sun, 06 Nov 1994 08:49:37 GMT")
        );
        assert_eq!(head.if_match.as_deref(), Some("*"));
        assert!(head.if_unmodified_since.is_some());
        assert_eq!(head.authorization.as_deref(), Some("Bearer tok"));
    }

    #[test]
    fn methods_are_case_sensitive() {
        for (name, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("PUT", Method::Put),
            ("POST", Method::Post),
            ("DELETE", Method::Delete),
            ("OPTIONS", Method::Options),
            ("get", Method::Other),
            ("PATCH", Method::Other),
        ] {
            let head = parse_ok(&format!("{name} / HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(head.method, method, "{name}");
            assert_eq!(head.method_name, name);
        }
    }

    #[test]
    fn incomplete_heads_need_more() {
        let full = "GET /videos/a HTTP/1.1\r\nHost: h\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn head_len_excludes_pipelined_data() {
        let first = "PUT /videos/a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
        let text = format!("{first}helloGET / HTTP/1.1\r\n");
        let (head, len) = parse(&text).unwrap().unwrap();
        assert_eq!(len, first.len());
        assert_eq!(head.content_length, Some(5));
        assert!(head.has_body());
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let text = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (head, len) = parse(text).unwrap().unwrap();
        assert_eq!(len, text.len());
        assert_eq!(head.path, "/");
    }

    #[test]
    fn request_line_limit_is_414_complete_or_not() {
        let target = format!("/{}", "a".repeat(100 - "GET  HTTP/1.1".len() - 1));
        let at_limit = format!("GET {target} HTTP/1.1");
        assert_eq!(at_limit.len(), 100);
        assert!(
            parse(&format!("{at_limit}\r\nHost: h\r\n\r\n"))
                .unwrap()
                .is_some()
        );
        let over = format!("GET {target}a HTTP/1.1");
        assert_eq!(status_of(&format!("{over}\r\nHost: h\r\n\r\n")), 414);
        // Still incomplete (no CRLF yet) but already too long.
        assert_eq!(status_of(&format!("GET /{}", "a".repeat(120))), 414);
        // Exactly at the limit and incomplete, with a CR pending: still fine.
        assert_eq!(parse(&format!("{at_limit}\r")), Ok(None));
    }

    #[test]
    fn head_byte_limit_is_431() {
        let big = format!("X-Pad: {}", "p".repeat(90));
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for _ in 0..4 {
            text.push_str(&big);
            text.push_str("\r\n");
        }
        assert!(text.len() > 400);
        // No end yet, already over the limit.
        assert_eq!(status_of(&text), 431);
        // Complete but over the limit.
        text.push_str("\r\n");
        assert_eq!(status_of(&text), 431);
    }

    #[test]
    fn incomplete_head_exactly_at_limit_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ");
        text.push_str(&"p".repeat(400 - text.len()));
        assert_eq!(text.len(), 400);
        assert_eq!(status_of(&text), 431);
        assert_eq!(parse(&text[..399]), Ok(None));
    }

    #[test]
    fn header_count_limit_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..7 {
            text.push_str(&format!("X-{i}: v\r\n"));
        }
        let at_limit = format!("{text}\r\n");
        assert!(parse(&at_limit).unwrap().is_some());
        text.push_str("X-8: v\r\n\r\n");
        assert_eq!(status_of(&text), 431);
    }

    #[test]
    fn versions() {
        assert_eq!(parse_ok("GET / HTTP/1.0\r\n\r\n").minor_version, 0);
        assert_eq!(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of("GET / HTTP/3\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of("GET / FOO/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(status_of("GET / http/1.1\r\nHost: h\r\n\r\n"), 400);
        // A space inside the target leaves a valid version as the last word: still malformed.
        assert_eq!(status_of("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn malformed_request_lines_are_400() {
        for text in [
            "GET\r\n\r\n",
            "GET /\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/1.1 x\r\nHost: h\r\n\r\n",
            "G(T / HTTP/1.1\r\nHost: h\r\n\r\n",
            "\x16\x03\x01\x02\x00\x01\x00\x01\x7c\x03\x03",
        ] {
            assert_eq!(status_of(text), 400, "{text:?}");
        }
    }

    #[test]
    fn malformed_headers_are_400() {
        for header in [
            "Bad Name: v",
            "Name : v",
            "NoColon",
            ": empty-name",
            "X-Nul: a\0b",
        ] {
            assert_eq!(status_of(&with_header(header)), 400, "{header:?}");
        }
        // Obsolete line folding.
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\r\n  folded\r\n\r\n"),
            400
        );
    }

    #[test]
    fn non_utf8_header_value_is_400() {
        let mut bytes = b"GET / HTTP/1.1\r\nHost: h\r\nX-A: \xff\xfe\r\n\r\n".to_vec();
        let err = parse_request_head(&bytes, &limits()).unwrap_err();
        assert_eq!(err.status, 400);
        // Valid UTF-8 non-ASCII is kept.
        bytes = "GET / HTTP/1.1\r\nHost: h\r\nContent-Type: vidéo\r\n\r\n"
            .as_bytes()
            .to_vec();
        let (head, _) = parse_request_head(&bytes, &limits()).unwrap().unwrap();
        assert_eq!(head.content_type.as_deref(), Some("vidéo"));
    }

    #[test]
    fn host_rules() {
        assert_eq!(status_of("GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(parse_ok("GET / HTTP/1.0\r\n\r\n").host, None);
    }

    #[test]
    fn keep_alive_rules() {
        let h11 = |c: &str| parse_ok(&format!("GET / HTTP/1.1\r\nHost: h\r\n{c}\r\n")).keep_alive;
        let h10 = |c: &str| parse_ok(&format!("GET / HTTP/1.0\r\n{c}\r\n")).keep_alive;
        assert!(h11(""));
        assert!(!h11("Connection: close\r\n"));
        assert!(!h11("Connection: keep-alive, CLOSE\r\n"));
        assert!(h11("Connection: Upgrade\r\n"));
        assert!(!h10(""));
        assert!(h10("Connection: Keep-Alive\r\n"));
        assert!(!h10("Connection: keep-alive\r\nConnection: close\r\n"));
    }

    #[test]
    fn expect_continue() {
        let head = parse_ok(&with_header("Expect: 100-Continue"));
        assert!(head.expect_continue);
        assert!(!parse_ok(&with_header("Expect: other")).expect_continue);
        let head = parse_ok("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(!head.expect_continue, "ignored on HTTP/1.0");
    }

    #[test]
    fn content_length_forms() {
        let cl = |v: &str| parse_ok(&with_header(v)).content_length;
        assert_eq!(cl("Content-Length: 0"), Some(0));
        assert!(!parse_ok(&with_header("Content-Length: 0")).has_body());
        assert_eq!(cl("Content-Length: 42"), Some(42));
        assert_eq!(cl("content-length:   7  "), Some(7));
        assert_eq!(cl("Content-Length: 18446744073709551615"), Some(u64::MAX));
        assert_eq!(cl("Content-Length: 5, 5"), Some(5));
        assert_eq!(cl("Content-Length: 5\r\nContent-Length: 5"), Some(5));
        for bad in [
            "Content-Length: 18446744073709551616",
            "Content-Length: 99999999999999999999999",
            "Content-Length: -1",
            "Content-Length: +1",
            "Content-Length: 1 2",
            "Content-Length: 0x10",
            "Content-Length: 1.0",
            "Content-Length: ",
            "Content-Length: 5,",
            "Content-Length: 5, 6",
            "Content-Length: 5\r\nContent-Length: 6",
            "Content-Length: 5\r\nContent-Length: 05",
        ] {
            assert_eq!(status_of(&with_header(bad)), 400, "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding_forms() {
        let head = parse_ok(&with_header("Transfer-Encoding: Chunked"));
        assert!(head.chunked);
        assert!(head.has_body());
        assert_eq!(head.content_length, None);
        for (te, status) in [
            ("Transfer-Encoding: gzip, chunked", 501),
            ("Transfer-Encoding: identity", 501),
            ("Transfer-Encoding: gzip", 501),
            ("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked", 501),
            ("Transfer-Encoding: chunked, chunked", 400),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                400,
            ),
            ("Transfer-Encoding: chunked, gzip", 400),
            ("Transfer-Encoding: chunked,", 400),
            ("Transfer-Encoding: ", 400),
            ("Transfer-Encoding: chunked;q=1", 400),
            ("Transfer-Encoding: \"chunked\"", 400),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5", 400),
            ("Content-Length: 5\r\nTransfer-Encoding: chunked", 400),
            ("Content-Length: 0\r\nTransfer-Encoding: chunked", 400),
        ] {
            assert_eq!(status_of(&with_header(te)), status, "{te:?}");
        }
        assert_eq!(
            status_of("PUT / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
    }

    #[test]
    fn singleton_duplicates_are_400_and_lists_are_joined() {
        for name in [
            "Range",
            "Content-Range",
            "If-Range",
            "If-Modified-Since",
            "If-Unmodified-Since",
            "Authorization",
            "Content-Type",
        ] {
            let text = with_header(&format!("{name}: a\r\n{name}: a"));
            assert_eq!(status_of(&text), 400, "{name}");
        }
        let head = parse_ok(&with_header("If-None-Match: \"a\"\r\nIf-None-Match: \"b\""));
        assert_eq!(head.if_none_match.as_deref(), Some("\"a\", \"b\""));
        let head = parse_ok(&with_header("If-Match: \"a\"\r\nif-match: \"b\""));
        assert_eq!(head.if_match.as_deref(), Some("\"a\", \"b\""));
    }

    #[test]
    fn absolute_form_is_reduced_to_its_path() {
        let head =
            parse_ok("GET http://media.example:8080/videos/a?t=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(head.path, "/videos/a");
        assert_eq!(head.query.as_deref(), Some("t=1"));
        assert_eq!(head.host.as_deref(), Some("media.example:8080"));
        let head = parse_ok("GET HTTP://h HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.path, "/");
        assert_eq!(status_of("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
        assert_eq!(
            status_of("GET http://u@h/x HTTP/1.1\r\nHost: h\r\n\r\n"),
            400
        );
    }

    #[test]
    fn non_origin_targets_are_400() {
        for target in ["*", "example.com:443", "videos/a", "ftp://h/x", "%2fvideos"] {
            let text = format!("OPTIONS {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(&text), 400, "{target}");
        }
    }

    #[test]
    fn path_is_decoded_exactly_once() {
        let path = |t: &str| parse_ok(&format!("GET {t} HTTP/1.1\r\nHost: h\r\n\r\n")).path;
        assert_eq!(path("/videos/a%20b"), "/videos/a b");
        assert_eq!(path("/videos/%41"), "/videos/A");
        assert_eq!(path("/videos/a+b"), "/videos/a+b");
        // Double encoding: one decode leaves a literal '%'.
        assert_eq!(path("/videos/%252e%252e/x"), "/videos/%2e%2e/x");
        assert_eq!(path("/videos/.hidden"), "/videos/.hidden");
        assert_eq!(path("/videos/a..b"), "/videos/a..b");
        assert_eq!(path("/videos/..."), "/videos/...");
        assert_eq!(path("/videos/%C3%A9"), "/videos/é");
        assert_eq!(path("/"), "/");
    }

    #[test]
    fn path_tricks_are_400() {
        for target in [
            "/videos/..",
            "/videos/../etc/passwd",
            "/videos/..%2fetc",
            "/videos/..%2Fetc",
            "/videos/%2e%2e/x",
            "/videos/%2E%2e/x",
            "/videos/.%2e/x",
            "/videos/%2e/x",
            "/videos/a/./b",
            "/videos/a/.",
            "/./videos",
            "/videos/%00",
            "/videos/a%00.ts",
            "/videos/%0d%0aSet-Cookie:x",
            "/videos/%7f",
            "/videos/%c2%85",
            "/videos/a%5c..%5cb",
            "/videos/a\\b",
            "/videos/%",
            "/videos/%2",
            "/videos/%zz",
            "/videos/%g0",
            "/videos/%ff",
            "/videos/a#frag",
        ] {
            let text = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(&text), 400, "{target}");
        }
    }

    #[test]
    fn query_is_raw_and_not_validated_as_path() {
        let head = parse_ok("GET /v?a=..%2f&b=%zz HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.path, "/v");
        assert_eq!(head.query.as_deref(), Some("a=..%2f&b=%zz"));
        let head = parse_ok("GET /v? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.query.as_deref(), Some(""));
    }

    #[test]
    fn query_param_lookup() {
        let q = "x=1&t=00%3A00%3A10%3A00&t=second&flag&sp=a+b%20c&bad=%zz&k%65y=v";
        assert_eq!(query_param(q, "t").as_deref(), Some("00:00:10:00"));
        assert_eq!(query_param(q, "x").as_deref(), Some("1"));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "sp").as_deref(), Some("a b c"));
        assert_eq!(query_param(q, "bad"), None);
        assert_eq!(query_param(q, "key").as_deref(), Some("v"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param("", "t"), None);
        assert_eq!(query_param("t=a=b", "t").as_deref(), Some("a=b"));
        assert_eq!(query_param("t=%ff", "t"), None);
    }

    #[test]
    fn decimal_parser() {
        assert_eq!(parse_decimal_u64("0"), Some(0));
        assert_eq!(parse_decimal_u64("007"), Some(7));
        assert_eq!(parse_decimal_u64("18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_decimal_u64("18446744073709551616"), None);
        assert_eq!(parse_decimal_u64(""), None);
        assert_eq!(parse_decimal_u64(" 1"), None);
        assert_eq!(parse_decimal_u64("-1"), None);
        assert_eq!(parse_decimal_u64("１"), None);
    }
}

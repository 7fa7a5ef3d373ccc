//! Byte ranges (RFC 9110 §14): parsing `Range` request headers, resolving them against a
//! representation's length into sorted, coalesced spans, parsing the `Content-Range` of a ranged
//! PUT, and laying out `multipart/byteranges` bodies (part headers, trailer, total length).

use super::HttpError;
use super::request::parse_decimal_u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `a-b`: bytes a through b inclusive (b >= a).
    FromTo(u64, u64),
    /// `a-`: from byte a to the end.
    From(u64),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeHeaderError {
    /// The range unit is not `bytes`: RFC 9110 says ignore the header.
    NotBytes,
    /// Not a valid byte-range set.
    Malformed,
    /// More range specs than the configured bound.
    TooMany,
}

/// Optional whitespace (RFC 9110 OWS).
const OWS: [char; 2] = [' ', '\t'];

/// Parse `bytes=0-99, 200-, -50`. Unit case-insensitive, whitespace around commas/`=` tolerated,
/// empty list elements tolerated as RFC 9110 allows. Numbers that overflow u64 → Malformed.
/// FromTo with last < first → Malformed. More than max_ranges specs → TooMany.
pub fn parse_range_header(
    value: &str,
    max_ranges: usize,
) -> Result<Vec<RangeSpec>, RangeHeaderError> {
    let Some((unit, set)) = value.split_once('=') else {
        let unit = value.trim_matches(OWS);
        return if !unit.is_empty() && !unit.eq_ignore_ascii_case("bytes") && is_token(unit) {
            Err(RangeHeaderError::NotBytes)
        } else {
            Err(RangeHeaderError::Malformed)
        };
    };
    let unit = unit.trim_matches(OWS);
    if !unit.eq_ignore_ascii_case("bytes") {
        return if is_token(unit) {
            Err(RangeHeaderError::NotBytes)
        } else {
            Err(RangeHeaderError::Malformed)
        };
    }
    let mut specs = Vec::new();
    for element in set.split(',') {
        let element = element.trim_matches(OWS);
        if element.is_empty() {
            continue;
        }
        if specs.len() >= max_ranges {
            return Err(RangeHeaderError::TooMany);
        }
        specs.push(parse_range_spec(element).ok_or(RangeHeaderError::Malformed)?);
    }
    if specs.is_empty() {
        return Err(RangeHeaderError::Malformed);
    }
    Ok(specs)
}

fn parse_range_spec(element: &str) -> Option<RangeSpec> {
    let (first, last) = element.split_once('-')?;
    if first.is_empty() {
        return Some(RangeSpec::Suffix(parse_decimal_u64(last)?));
    }
    let first = parse_decimal_u64(first)?;
    if last.is_empty() {
        return Some(RangeSpec::From(first));
    }
    let last = parse_decimal_u64(last)?;
    if last < first {
        return None;
    }
    Some(RangeSpec::FromTo(first, last))
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Inclusive byte span [first, last].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSpan {
    pub first: u64,
    pub last: u64,
}

impl ByteSpan {
    /// Number of bytes in the span (saturating at u64::MAX for the span of every u64 offset).
    pub fn len(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    /// A well-formed span always holds at least one byte; this is true only for a span whose
    /// `last` is below its `first`, which `resolve_ranges` never produces.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// Resolve specs against a representation of `len` bytes: clamp `last` to len-1, drop
/// unsatisfiable specs (first >= len; suffix 0), turn suffix -n into the last n bytes (all if
/// n > len). Then sort and merge overlapping or adjacent spans (RFC 9110 allows coalescing).
/// Empty result → Err(()) (→ 416).
#[allow(clippy::result_unit_err)]
pub fn resolve_ranges(specs: &[RangeSpec], len: u64) -> Result<Vec<ByteSpan>, ()> {
    let Some(end) = len.checked_sub(1) else {
        return Err(());
    };
    let mut spans: Vec<ByteSpan> = specs
        .iter()
        .filter_map(|spec| match *spec {
            RangeSpec::FromTo(first, last) if first <= end => Some(ByteSpan {
                first,
                last: last.min(end),
            }),
            RangeSpec::From(first) if first <= end => Some(ByteSpan { first, last: end }),
            RangeSpec::Suffix(n) if n > 0 => Some(ByteSpan {
                first: len - n.min(len),
                last: end,
            }),
            _ => None,
        })
        .collect();
    if spans.is_empty() {
        return Err(());
    }
    spans.sort_by_key(|s| (s.first, s.last));
    let mut merged: Vec<ByteSpan> = Vec::with_capacity(spans.len());
    for span in spans {
        match merged.last_mut() {
            // `current.last < len <= u64::MAX`, so `+ 1` cannot overflow; saturate anyway.
            Some(current) if span.first <= current.last.saturating_add(1) => {
                current.last = current.last.max(span.last);
            }
            _ => merged.push(span),
        }
    }
    Ok(merged)
}

/// `Content-Range` of a PUT: `bytes a-b/N` or `bytes a-b/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    pub last: u64,
    /// N of `/N`; None for `/*` (length unknown).
    pub complete_length: Option<u64>,
}

#[cfg(test)]
impl ContentRange {
    /// Number of bytes the range covers (last - first + 1; at least 1).
    pub fn len(&self) -> u64 {
        ByteSpan {
            first: self.first,
            last: self.last,
        }
        .len()
    }
}

/// Errors: malformed, last < first, overflow, complete_length present and <= last. (`bytes */N`
/// is not a valid PUT range: error.) All errors are 400.
pub fn parse_content_range(value: &str) -> Result<ContentRange, HttpError> {
    let bad = |why: &str| HttpError::bad_request(format!("invalid Content-Range {value:?}: {why}"));
    let value = value.trim_matches(OWS);
    let (unit, rest) = value
        .split_once([' ', '\t'])
        .ok_or_else(|| bad("expected \"bytes first-last/length\""))?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return Err(bad("range unit must be bytes"));
    }
    let rest = rest.trim_start_matches(OWS);
    let (span, complete) = rest
        .split_once('/')
        .ok_or_else(|| bad("expected \"first-last/length\""))?;
    if span == "*" {
        return Err(bad(
            "an unsatisfied-range (\"*/N\") carries no bytes to write",
        ));
    }
    let (first, last) = span
        .split_once('-')
        .ok_or_else(|| bad("expected \"first-last\""))?;
    let first =
        parse_decimal_u64(first).ok_or_else(|| bad("first byte is not a number that fits"))?;
    let last = parse_decimal_u64(last).ok_or_else(|| bad("last byte is not a number that fits"))?;
    if last < first {
        return Err(bad("last byte is before first byte"));
    }
    let complete_length = if complete == "*" {
        None
    } else {
        let n = parse_decimal_u64(complete)
            .ok_or_else(|| bad("complete length is not a number that fits"))?;
        if n <= last {
            return Err(bad("last byte is beyond the complete length"));
        }
        Some(n)
    };
    Ok(ContentRange {
        first,
        last,
        complete_length,
    })
}

/// A multipart/byteranges boundary string: 32 hex digits derived from the time, the process id
/// and a counter, so that it is unpredictable enough never to occur in a video by chance.
pub fn multipart_boundary() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 32);
    let a = splitmix64(seed ^ count.rotate_left(17));
    let b = splitmix64(a ^ seed.rotate_left(29) ^ count);
    format!("vcache-{a:016x}{b:016x}")
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The part header that precedes `span` in a multipart/byteranges body. Every part, the first
/// included, starts with CRLF: "\r\n--BOUNDARY\r\nContent-Type: T\r\nContent-Range: bytes
/// a-b/N\r\n\r\n" (the leading CRLF of the first part is an empty preamble, as nginx sends).
pub fn multipart_part_header(
    boundary: &str,
    content_type: &str,
    span: ByteSpan,
    complete_len: u64,
) -> String {
    format!(
        "\r\n--{boundary}\r\nContent-Type: {content_type}\r\nContent-Range: bytes {}-{}/{complete_len}\r\n\r\n",
        span.first, span.last
    )
}

/// The closing delimiter of a multipart/byteranges body: "\r\n--BOUNDARY--\r\n".
pub fn multipart_trailer(boundary: &str) -> String {
    format!("\r\n--{boundary}--\r\n")
}

/// Total body length of a multipart/byteranges response for Content-Length (saturating; a
/// real response is far below u64::MAX).
pub fn multipart_body_len(
    boundary: &str,
    content_type: &str,
    spans: &[ByteSpan],
    complete_len: u64,
) -> u64 {
    let parts = spans.iter().fold(0u64, |total, span| {
        let header = multipart_part_header(boundary, content_type, *span, complete_len).len();
        total
            .saturating_add(header as u64)
            .saturating_add(span.len())
    });
    parts.saturating_add(multipart_trailer(boundary).len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeSpec::*;

    const MAX: usize = 8;

    fn parse(v: &str) -> Result<Vec<RangeSpec>, RangeHeaderError> {
        parse_range_header(v, MAX)
    }

    fn span(first: u64, last: u64) -> ByteSpan {
        ByteSpan { first, last }
    }

    #[test]
    fn every_range_form() {
        assert_eq!(parse("bytes=0-99"), Ok(vec![FromTo(0, 99)]));
        assert_eq!(parse("bytes=5-5"), Ok(vec![FromTo(5, 5)]));
        assert_eq!(parse("bytes=200-"), Ok(vec![From(200)]));
        assert_eq!(parse("bytes=-50"), Ok(vec![Suffix(50)]));
        assert_eq!(parse("bytes=-0"), Ok(vec![Suffix(0)]));
        assert_eq!(
            parse("bytes=0-99, 200-, -50"),
            Ok(vec![FromTo(0, 99), From(200), Suffix(50)])
        );
        assert_eq!(
            parse("bytes=0-9007199254740991"),
            Ok(vec![FromTo(0, 9007199254740991)])
        );
        assert_eq!(
            parse("bytes=0-18446744073709551615"),
            Ok(vec![FromTo(0, u64::MAX)])
        );
    }

    #[test]
    fn unit_case_and_whitespace() {
        assert_eq!(parse("BYTES=1-2"), Ok(vec![FromTo(1, 2)]));
        assert_eq!(parse("Bytes = 1-2"), Ok(vec![FromTo(1, 2)]));
        assert_eq!(
            parse(" bytes=\t1-2 ,\t3-4 "),
            Ok(vec![FromTo(1, 2), FromTo(3, 4)])
        );
        assert_eq!(parse("bytes=, 1-2,,3-,"), Ok(vec![FromTo(1, 2), From(3)]));
    }

    #[test]
    fn other_units_are_not_bytes() {
        assert_eq!(parse("items=0-5"), Err(RangeHeaderError::NotBytes));
        assert_eq!(parse("byte=0-5"), Err(RangeHeaderError::NotBytes));
        assert_eq!(parse("seconds"), Err(RangeHeaderError::NotBytes));
    }

    #[test]
    fn malformed_ranges() {
        for v in [
            "",
            "bytes",
            "bytes=",
            "bytes= , ,",
            "=0-5",
            "bytes=5-2",
            "bytes=-",
            "bytes=1",
            "bytes=a-b",
            "bytes=0x10-",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=--5",
            "bytes=1--5",
            "bytes=1-2-3",
            "bytes=1 -2",
            "bytes=1- 2",
            "bytes=99999999999999999999-",
            "bytes=0-99999999999999999999",
            "bytes=-99999999999999999999",
            "bytes=18446744073709551616-",
            "bytes=0-1;2-3",
            "by tes=0-1",
        ] {
            assert_eq!(parse(v), Err(RangeHeaderError::Malformed), "{v:?}");
        }
    }

    #[test]
    fn too_many_ranges() {
        let at_limit = format!("bytes={}", ["0-0"; MAX].join(","));
        assert_eq!(parse(&at_limit).map(|v| v.len()), Ok(MAX));
        let over = format!("bytes={}", ["0-0"; MAX + 1].join(","));
        assert_eq!(parse(&over), Err(RangeHeaderError::TooMany));
        // Empty elements do not count.
        let padded = format!("bytes={},,,,", ["0-0"; MAX].join(","));
        assert_eq!(parse(&padded).map(|v| v.len()), Ok(MAX));
        assert_eq!(
            parse_range_header("bytes=0-1", 0),
            Err(RangeHeaderError::TooMany)
        );
    }

    #[test]
    fn resolve_single_specs() {
        assert_eq!(
            resolve_ranges(&[FromTo(0, 99)], 1000),
            Ok(vec![span(0, 99)])
        );
        assert_eq!(
            resolve_ranges(&[FromTo(900, 5000)], 1000),
            Ok(vec![span(900, 999)])
        );
        assert_eq!(
            resolve_ranges(&[FromTo(999, 999)], 1000),
            Ok(vec![span(999, 999)])
        );
        assert_eq!(resolve_ranges(&[From(10)], 1000), Ok(vec![span(10, 999)]));
        assert_eq!(resolve_ranges(&[From(999)], 1000), Ok(vec![span(999, 999)]));
        assert_eq!(
            resolve_ranges(&[Suffix(50)], 1000),
            Ok(vec![span(950, 999)])
        );
        assert_eq!(
            resolve_ranges(&[Suffix(1000)], 1000),
            Ok(vec![span(0, 999)])
        );
        assert_eq!(
            resolve_ranges(&[Suffix(5000)], 1000),
            Ok(vec![span(0, 999)])
        );
        assert_eq!(
            resolve_ranges(&[Suffix(u64::MAX)], 1000),
            Ok(vec![span(0, 999)])
        );
        assert_eq!(
            resolve_ranges(&[FromTo(0, u64::MAX)], u64::MAX),
            Ok(vec![span(0, u64::MAX - 1)])
        );
    }

    #[test]
    fn unsatisfiable_specs_are_dropped() {
        assert_eq!(resolve_ranges(&[FromTo(1000, 1001)], 1000), Err(()));
        assert_eq!(resolve_ranges(&[From(1000)], 1000), Err(()));
        assert_eq!(resolve_ranges(&[Suffix(0)], 1000), Err(()));
        assert_eq!(resolve_ranges(&[], 1000), Err(()));
        assert_eq!(
            resolve_ranges(&[From(5000), FromTo(0, 0), Suffix(0)], 1000),
            Ok(vec![span(0, 0)])
        );
    }

    #[test]
    fn zero_length_representation_satisfies_nothing() {
        for spec in [FromTo(0, 0), From(0), Suffix(1), Suffix(0)] {
            assert_eq!(resolve_ranges(&[spec], 0), Err(()), "{spec:?}");
        }
    }

    #[test]
    fn multi_range_sort_and_merge() {
        // Overlapping, adjacent, out of order, and one disjoint.
        let specs = [
            FromTo(50, 60),
            FromTo(0, 10),
            FromTo(11, 20),
            FromTo(5, 15),
            Suffix(10),
        ];
        assert_eq!(
            resolve_ranges(&specs, 100),
            Ok(vec![span(0, 20), span(50, 60), span(90, 99)])
        );
        // Contained span does not shrink the container.
        assert_eq!(
            resolve_ranges(&[FromTo(0, 50), FromTo(10, 20)], 100),
            Ok(vec![span(0, 50)])
        );
        // Gap of one byte stays two spans.
        assert_eq!(
            resolve_ranges(&[FromTo(0, 9), FromTo(11, 20)], 100),
            Ok(vec![span(0, 9), span(11, 20)])
        );
        // Everything collapses to the whole representation.
        assert_eq!(
            resolve_ranges(&[From(0), Suffix(5), FromTo(3, 4)], 10),
            Ok(vec![span(0, 9)])
        );
    }

    #[test]
    fn byte_span_len() {
        assert_eq!(span(0, 0).len(), 1);
        assert_eq!(span(10, 19).len(), 10);
        assert_eq!(span(0, u64::MAX).len(), u64::MAX);
        assert!(!span(3, 3).is_empty());
    }

    #[test]
    fn content_range_forms() {
        assert_eq!(
            parse_content_range("bytes 0-99/1000"),
            Ok(ContentRange {
                first: 0,
                last: 99,
                complete_length: Some(1000)
            })
        );
        assert_eq!(
            parse_content_range("Bytes  5-5/*"),
            Ok(ContentRange {
                first: 5,
                last: 5,
                complete_length: None
            })
        );
        assert_eq!(
            parse_content_range("bytes 999-999/1000").map(|c| c.len()),
            Ok(1)
        );
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/18446744073709551615"),
            Ok(ContentRange {
                first: 0,
                last: u64::MAX - 1,
                complete_length: Some(u64::MAX)
            })
        );
    }

    #[test]
    fn content_range_errors_are_400() {
        for v in [
            "",
            "bytes",
            "bytes 0-99",
            "bytes */1000",
            "bytes */*",
            "bytes=0-99/1000",
            "items 0-99/1000",
            "bytes 99-0/1000",
            "bytes 0-1000/1000",
            "bytes 0-99/99",
            "bytes 0-99/0",
            "bytes -99/1000",
            "bytes 0-/1000",
            "bytes 0 - 99/1000",
            "bytes 0-99 /1000",
            "bytes 0-99/ 1000",
            "bytes +0-99/1000",
            "bytes 0x0-99/1000",
            "bytes 0-99/1000/2000",
            "bytes 0-99,100-199/1000",
            "bytes 18446744073709551616-18446744073709551617/*",
            "bytes 0-18446744073709551616/*",
            "bytes 0-1/18446744073709551616",
            "bytes 0-18446744073709551615/18446744073709551615",
        ] {
            let err = parse_content_range(v).unwrap_err();
            assert_eq!(err.status, 400, "{v:?}");
        }
    }

    #[test]
    fn boundaries_differ_and_are_long_tokens() {
        let a = multipart_boundary();
        let b = multipart_boundary();
        assert_ne!(a, b);
        assert!(a.len() >= 20);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'));
    }

    #[test]
    fn multipart_layout_and_length() {
        let spans = [span(0, 9), span(20, 24)];
        assert_eq!(
            multipart_part_header("B", "video/mp4", spans[0], 100),
            "\r\n--B\r\nContent-Type: video/mp4\r\nContent-Range: bytes 0-9/100\r\n\r\n"
        );
        assert_eq!(multipart_trailer("B"), "\r\n--B--\r\n");
        let mut body = String::new();
        for s in spans {
            body.push_str(&multipart_part_header("B", "video/mp4", s, 100));
            body.push_str(&"x".repeat(s.len() as usize));
        }
        body.push_str(&multipart_trailer("B"));
        assert_eq!(
            multipart_body_len("B", "video/mp4", &spans, 100),
            body.len() as u64
        );
        assert_eq!(
            multipart_body_len("B", "video/mp4", &[], 100),
            multipart_trailer("B").len() as u64
        );
    }
}

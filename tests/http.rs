//! HTTP semantics battery: byte-exact single, open, suffix and multi ranges of a file video against
//! the file itself, 416s, conditional requests (ETag, If-None-Match, If-Range, If-Modified-Since),
//! Content-Type by extension, keep-alive and pipelining, HEAD, curl as a real client (ranges, PUT with
//! `Expect: 100-continue`), read and write tokens, `/videos` and `/metrics`, upload-slot holes, and the
//! "Limits and bad input" list of the SPEC: malformed requests, smuggling shapes, overflowing numbers,
//! path tricks, and every configured limit hit once.

mod common;
use common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "write-secret";

// ---------------------------------------------------------------- helpers

/// A daemon serving one random file video `m.ts` of `len` bytes (plus whatever `videos` adds).
fn file_daemon(
    name: &str,
    len: usize,
    seed: u64,
    server_extra: &str,
    rest: &str,
) -> (TestDir, Daemon, Vec<u8>) {
    let dir = TestDir::new(name);
    let data = pseudo_random_bytes(len, seed);
    std::fs::write(dir.join("m.ts"), &data).unwrap();
    let config = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n{server_extra}\n{rest}\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n"
    );
    let d = Daemon::start(&dir.path, &config);
    (dir, d, data)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request on a keep-alive connection.
fn ka(c: &mut Client, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    c.send(req.as_bytes());
    c.read(method == "HEAD")
}

fn put(
    d: &Daemon,
    id: &str,
    token: Option<&str>,
    content_range: Option<&str>,
    body: &[u8],
) -> Response {
    let auth = token.map(bearer);
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    if let Some(cr) = content_range {
        h.push(("Content-Range", cr));
    }
    let cl = body.len().to_string();
    h.push(("Content-Length", &cl));
    request(d.addr(), "PUT", &format!("/videos/{id}"), &h, body)
}

/// `bytes a-b/N` → (a, b, N).
fn content_range(v: &str) -> (u64, u64, u64) {
    let rest = v
        .strip_prefix("bytes ")
        .unwrap_or_else(|| panic!("Content-Range {v:?}"));
    let (span, total) = rest.split_once('/').unwrap();
    let (a, b) = span.split_once('-').unwrap();
    (
        a.parse().unwrap(),
        b.parse().unwrap(),
        total.parse().unwrap(),
    )
}

/// One part of a multipart/byteranges body.
#[derive(Debug)]
struct MultiPart {
    content_type: Option<String>,
    range: (u64, u64, u64),
    body: Vec<u8>,
}

/// Parse a multipart/byteranges body by its delimiters (RFC 2046), independent of the server's lengths.
fn multipart_parts(r: &Response) -> Vec<MultiPart> {
    let ct = r.header("Content-Type").expect("Content-Type");
    assert!(ct.starts_with("multipart/byteranges"), "Content-Type {ct}");
    let boundary = ct
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("boundary parameter")
        .trim_matches('"')
        .to_string();
    let body = &r.body;
    let delim = format!("--{boundary}");
    let mut pos = find(body, delim.as_bytes(), 0).expect("first delimiter");
    let mut parts = Vec::new();
    loop {
        pos += delim.len();
        if body[pos..].starts_with(b"--") {
            break; // close delimiter
        }
        assert!(body[pos..].starts_with(b"\r\n"), "CRLF after delimiter");
        pos += 2;
        let head_end = find(body, b"\r\n\r\n", pos).expect("end of part headers");
        let head = String::from_utf8(body[pos..head_end].to_vec()).unwrap();
        let mut content_type = None;
        let mut range = None;
        for line in head.split("\r\n") {
            let (k, v) = line.split_once(':').expect("part header line");
            if k.eq_ignore_ascii_case("content-type") {
                content_type = Some(v.trim().to_string());
            } else if k.eq_ignore_ascii_case("content-range") {
                range = Some(content_range(v.trim()));
            }
        }
        let start = head_end + 4;
        let next = find(body, format!("\r\n{delim}").as_bytes(), start).expect("next delimiter");
        parts.push(MultiPart {
            content_type,
            range: range.expect("part Content-Range"),
            body: body[start..next].to_vec(),
        });
        pos = next + 2;
    }
    parts
}

/// A range spec as a client writes it: (first, last) with either side optional.
type Spec = (Option<u64>, Option<u64>);

fn spec_text(specs: &[Spec]) -> String {
    let parts: Vec<String> = specs
        .iter()
        .map(|s| match s {
            (Some(a), Some(b)) => format!("{a}-{b}"),
            (Some(a), None) => format!("{a}-"),
            (None, Some(n)) => format!("-{n}"),
            (None, None) => unreachable!(),
        })
        .collect();
    format!("bytes={}", parts.join(","))
}

/// RFC 9110 §14.1.2 resolution of the satisfiable specs as half-open [a, b), merged.
fn resolve(specs: &[Spec], len: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = specs
        .iter()
        .filter_map(|s| match *s {
            (Some(a), Some(b)) if a < len => Some((a, b.min(len - 1) + 1)),
            (Some(a), None) if a < len => Some((a, len)),
            (None, Some(n)) if n > 0 && len > 0 => Some((len - n.min(len), len)),
            _ => None,
        })
        .collect();
    merge(&mut v)
}

fn merge(v: &mut [(u64, u64)]) -> Vec<(u64, u64)> {
    v.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(a, b) in v.iter() {
        match out.last_mut() {
            Some(l) if a <= l.1 => l.1 = l.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// Check a response to `Range: <specs>` of `data` completely; returns the served spans (half-open).
fn check_ranged(r: &Response, specs: &[Spec], data: &[u8]) {
    let len = data.len() as u64;
    let want = resolve(specs, len);
    let what = spec_text(specs);
    if want.is_empty() {
        assert_eq!(r.status, 416, "{what}: {}", r.text());
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes */{len}").as_str()),
            "{what}"
        );
        return;
    }
    assert_eq!(r.status, 206, "{what}: {}", r.text());
    assert_eq!(r.header("Accept-Ranges"), Some("bytes"));
    let ct = r.header("Content-Type").unwrap_or("");
    let mut got: Vec<(u64, u64)> = Vec::new();
    if ct.starts_with("multipart/byteranges") {
        assert!(
            r.header("Content-Range").is_none(),
            "{what}: multipart with a Content-Range"
        );
        let parts = multipart_parts(r);
        assert!(
            parts.len() >= 2 || want.len() == 1,
            "{what}: {} parts",
            parts.len()
        );
        for p in &parts {
            let (a, b, total) = p.range;
            assert_eq!(total, len, "{what}");
            assert_eq!(p.content_type.as_deref(), Some("video/mp2t"), "{what}");
            assert_eq!(
                p.body.len() as u64,
                b - a + 1,
                "{what}: part {a}-{b} length"
            );
            assert!(
                p.body == data[a as usize..=b as usize],
                "{what}: part {a}-{b} bytes differ"
            );
            got.push((a, b + 1));
        }
    } else {
        assert_eq!(ct, "video/mp2t", "{what}");
        let (a, b, total) = content_range(r.header("Content-Range").expect("Content-Range"));
        assert_eq!(total, len, "{what}");
        assert_eq!(
            r.header("Content-Length"),
            Some((b - a + 1).to_string().as_str())
        );
        assert!(
            r.body == data[a as usize..=b as usize],
            "{what}: bytes {a}-{b} differ"
        );
        got.push((a, b + 1));
    }
    assert_eq!(
        merge(&mut got),
        want,
        "{what}: served spans differ from the requested ones"
    );
}

/// A response to anything with an overflowing or odd Range: whatever the status, the bytes are exact.
fn check_any_read(r: &Response, data: &[u8], what: &str) {
    match r.status {
        200 => assert!(r.body == data, "{what}: 200 with wrong bytes"),
        206 => {
            let (a, b, _) = content_range(r.header("Content-Range").expect("Content-Range"));
            assert!(
                r.body == data[a as usize..=b as usize],
                "{what}: 206 with wrong bytes"
            );
        }
        416 => assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes */{}", data.len()).as_str())
        ),
        s => panic!("{what}: status {s}: {}", r.text()),
    }
}

/// The status code of the first response in raw bytes.
fn raw_status(bytes: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(bytes);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no response at all"));
    assert!(line.starts_with("HTTP/1.1 "), "status line {line:?}");
    line[9..12].parse().unwrap()
}

/// How many responses (status lines) raw bytes hold (anywhere: a binary body need not end a line).
fn count_responses(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut pos = 0;
    while let Some(p) = find(bytes, b"HTTP/1.1 ", pos) {
        let code = bytes.get(p + 9..p + 13).unwrap_or(b"");
        if code.len() == 4 && code[..3].iter().all(u8::is_ascii_digit) && code[3] == b' ' {
            n += 1;
        }
        pos = p + 1;
    }
    n
}

/// Run curl. These tests fail without it even when VCACHE_REQUIRE_TOOLS is not set.
fn curl(args: &[&str]) -> std::process::Output {
    let curl = require_tool("curl").expect("this test needs curl (apt-get install curl)");
    Command::new(curl).args(args).output().expect("run curl")
}

/// The video's entry in GET /videos.
fn video_entry(d: &Daemon, id: &str) -> Json {
    let r = d.get("/videos", &[]);
    assert_eq!(r.status, 200);
    let j = parse_json(&r.text());
    j.get("videos")
        .and_then(|v| v.as_array())
        .expect("videos array")
        .iter()
        .find(|v| v.get("id").and_then(|s| s.as_str()) == Some(id))
        .unwrap_or_else(|| panic!("no entry for {id}"))
        .clone()
}

// A minimal JSON reader, to check the shape of /videos without a JSON crate.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, k: &str) -> Option<&Json> {
        match self {
            Json::Obj(m) => m.iter().find(|(n, _)| n == k).map(|(_, v)| v),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&Vec<Json>> {
        if let Json::Arr(a) = self {
            Some(a)
        } else {
            None
        }
    }
    fn as_str(&self) -> Option<&str> {
        if let Json::Str(s) = self {
            Some(s)
        } else {
            None
        }
    }
    fn as_u64(&self) -> Option<u64> {
        if let Json::Num(n) = self {
            Some(*n as u64)
        } else {
            None
        }
    }
}

fn parse_json(text: &str) -> Json {
    let b = text.trim().as_bytes();
    let mut i = 0;
    let v = json_value(b, &mut i);
    assert_eq!(i, b.len(), "trailing bytes after JSON in {text:?}");
    v
}

fn json_ws(b: &[u8], i: &mut usize) {
    while *i < b.len() && b[*i].is_ascii_whitespace() {
        *i += 1;
    }
}

fn json_value(b: &[u8], i: &mut usize) -> Json {
    json_ws(b, i);
    let v = match b[*i] {
        b'{' => {
            *i += 1;
            let mut m = Vec::new();
            json_ws(b, i);
            if b[*i] == b'}' {
                *i += 1;
            } else {
                loop {
                    json_ws(b, i);
                    let Json::Str(k) = json_value(b, i) else {
                        panic!("object key")
                    };
                    json_ws(b, i);
                    assert_eq!(b[*i], b':');
                    *i += 1;
                    m.push((k, json_value(b, i)));
                    json_ws(b, i);
                    *i += 1;
                    match b[*i - 1] {
                        b',' => continue,
                        b'}' => break,
                        c => panic!("unexpected {:?} in object", c as char),
                    }
                }
            }
            Json::Obj(m)
        }
        b'[' => {
            *i += 1;
            let mut a = Vec::new();
            json_ws(b, i);
            if b[*i] == b']' {
                *i += 1;
            } else {
                loop {
                    a.push(json_value(b, i));
                    json_ws(b, i);
                    *i += 1;
                    match b[*i - 1] {
                        b',' => continue,
                        b']' => break,
                        c => panic!("unexpected {:?} in array", c as char),
                    }
                }
            }
            Json::Arr(a)
        }
        b'"' => {
            *i += 1;
            let mut s = String::new();
            while b[*i] != b'"' {
                if b[*i] == b'\\' {
                    *i += 1;
                    match b[*i] {
                        b'n' => s.push('\n'),
                        b't' => s.push('\t'),
                        b'u' => {
                            let h = std::str::from_utf8(&b[*i + 1..*i + 5]).unwrap();
                            s.push(
                                char::from_u32(u32::from_str_radix(h, 16).unwrap()).unwrap_or('?'),
                            );
                            *i += 4;
                        }
                        c => s.push(c as char),
                    }
                    *i += 1;
                } else {
                    let start = *i;
                    while b[*i] != b'"' && b[*i] != b'\\' {
                        *i += 1;
                    }
                    s.push_str(std::str::from_utf8(&b[start..*i]).unwrap());
                }
            }
            *i += 1;
            Json::Str(s)
        }
        b't' => {
            *i += 4;
            Json::Bool(true)
        }
        b'f' => {
            *i += 5;
            Json::Bool(false)
        }
        b'n' => {
            *i += 4;
            Json::Null
        }
        _ => {
            let start = *i;
            while *i < b.len() && (b[*i].is_ascii_digit() || b"+-.eE".contains(&b[*i])) {
                *i += 1;
            }
            Json::Num(
                std::str::from_utf8(&b[start..*i])
                    .unwrap()
                    .parse()
                    .expect("number"),
            )
        }
    };
    json_ws(b, i);
    v
}

/// Read from a raw socket until EOF or `limit`; returns the bytes and whether EOF was seen.
fn read_until_eof(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    while start.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => {}
        }
    }
    (out, false)
}

// ---------------------------------------------------------------- ranges of a file video

#[test]
fn random_ranges_of_a_file_video_are_byte_exact() {
    let len = 3_000_000 + (Rng(7).below(2_000_000) as usize);
    let (_dir, d, data) = file_daemon("ranges", len, 11, "", "");
    let n = len as u64;
    let mut rng = Rng(0x5eed);
    let mut c = Client::connect(d.addr());
    for i in 0..300 {
        let count = if i % 5 == 4 {
            2 + rng.below(4) as usize
        } else {
            1
        };
        let mut specs: Vec<Spec> = Vec::new();
        for _ in 0..count {
            let spec = match rng.below(6) {
                0 => (Some(rng.below(n)), None),
                1 => (None, Some(1 + rng.below(n / 4))),
                2 => (Some(rng.below(n)), Some(n + rng.below(1000))), // last beyond the end: clamped
                _ => {
                    let a = rng.below(n);
                    (Some(a), Some((a + rng.below(200_000)).min(n - 1)))
                }
            };
            specs.push(spec);
        }
        let r = ka(&mut c, "GET", "/videos/m", &[("Range", &spec_text(&specs))]);
        check_ranged(&r, &specs, &data);
    }
    // Edges: first byte, last byte, whole file as a range, a suffix longer than the file.
    for specs in [
        vec![(Some(0), Some(0))],
        vec![(Some(n - 1), Some(n - 1))],
        vec![(Some(n - 1), None)],
        vec![(Some(0), None)],
        vec![(None, Some(1))],
        vec![(None, Some(n + 10))],
        vec![(Some(0), Some(0)), (Some(n - 1), None)],
        // Overlapping and adjacent specs may be coalesced; the union must still be exact.
        vec![
            (Some(10), Some(20)),
            (Some(15), Some(30)),
            (Some(31), Some(40)),
        ],
    ] {
        let r = ka(&mut c, "GET", "/videos/m", &[("Range", &spec_text(&specs))]);
        check_ranged(&r, &specs, &data);
    }
}

#[test]
fn unsatisfiable_ranges_get_416_with_the_length() {
    let (_dir, d, data) = file_daemon("r416", 10_000, 3, "", "");
    let mut c = Client::connect(d.addr());
    for r in [
        "bytes=10000-",
        "bytes=10000-10010",
        "bytes=20000-30000",
        "bytes=-0",
        "bytes=10000-,12000-12001",
    ] {
        let resp = ka(&mut c, "GET", "/videos/m", &[("Range", r)]);
        assert_eq!(resp.status, 416, "{r}: {}", resp.text());
        assert_eq!(resp.header("Content-Range"), Some("bytes */10000"), "{r}");
        // And HEAD agrees, without a body (the next request on the connection parses).
        let resp = ka(&mut c, "HEAD", "/videos/m", &[("Range", r)]);
        assert_eq!(resp.status, 416, "HEAD {r}");
    }
    // One satisfiable spec among unsatisfiable ones is served alone.
    let resp = ka(&mut c, "GET", "/videos/m", &[("Range", "bytes=20000-,5-9")]);
    assert_eq!(resp.status, 206);
    assert_eq!(resp.header("Content-Range"), Some("bytes 5-9/10000"));
    assert_eq!(resp.body, &data[5..10]);
}

#[test]
fn invalid_or_foreign_range_headers_are_ignored_and_overflowing_numbers_are_harmless() {
    let (_dir, d, data) = file_daemon("rbad", 50_000, 5, "", "");
    let mut c = Client::connect(d.addr());
    // RFC 9110 §14.2: a Range that is not a valid bytes range set is ignored: 200 with everything.
    for r in [
        "items=0-5",
        "bytes=5-2",
        "bytes=a-b",
        "bytes=",
        "bytes=--5",
        "bytes 0-5",
        "bytes=0-5;x",
    ] {
        let resp = ka(&mut c, "GET", "/videos/m", &[("Range", r)]);
        assert_eq!(resp.status, 200, "{r}: {}", resp.text());
        assert!(resp.body == data, "{r}: whole body");
    }
    // Numbers past u64: never a 5xx, never a wrong byte (ignored → 200, or clamped → 206, or 416).
    for r in [
        "bytes=0-99999999999999999999999999",
        "bytes=99999999999999999999999999-",
        "bytes=-99999999999999999999999999",
        "bytes=18446744073709551615-",
        "bytes=18446744073709551615-18446744073709551615",
        "bytes=18446744073709551616-18446744073709551617",
        "bytes=0-18446744073709551615",
        "bytes=-18446744073709551615",
    ] {
        let resp = ka(&mut c, "GET", "/videos/m", &[("Range", r)]);
        check_any_read(&resp, &data, r);
    }
    // RFC 8673's "very large last byte" form is an ordinary open range on a file video.
    let resp = ka(
        &mut c,
        "GET",
        "/videos/m",
        &[("Range", "bytes=49000-9007199254740991")],
    );
    assert_eq!(resp.status, 206);
    assert_eq!(
        resp.header("Content-Range"),
        Some("bytes 49000-49999/50000")
    );
    assert_eq!(resp.body, &data[49000..]);
    assert_eq!(ka(&mut c, "GET", "/healthz", &[]).status, 200);
}

#[test]
fn multipart_byteranges_parts_are_byte_exact_with_their_content_range() {
    let (_dir, d, data) = file_daemon("multi", 200_000, 9, "", "");
    let r = d.get(
        "/videos/m",
        &[("Range", "bytes=0-99,1000-1999,-500,150000-")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Length"),
        Some(r.body.len().to_string().as_str())
    );
    let parts = multipart_parts(&r);
    let ranges: Vec<(u64, u64, u64)> = parts.iter().map(|p| p.range).collect();
    // -500 lies inside 150000- and is merged with it (RFC 9110 allows coalescing).
    assert_eq!(
        ranges,
        vec![
            (0, 99, 200_000),
            (1000, 1999, 200_000),
            (150_000, 199_999, 200_000)
        ]
    );
    for p in &parts {
        let (a, b, _) = p.range;
        assert_eq!(p.content_type.as_deref(), Some("video/mp2t"));
        assert!(p.body == data[a as usize..=b as usize], "part {a}-{b}");
    }
    // HEAD of the same: same head, no body.
    let h = request(
        d.addr(),
        "HEAD",
        "/videos/m",
        &[("Range", "bytes=0-99,1000-1999")],
        b"",
    );
    assert_eq!(h.status, 206);
    assert!(
        h.header("Content-Type")
            .unwrap()
            .starts_with("multipart/byteranges; boundary=")
    );
    assert!(h.body.is_empty());
    // Through curl, which a player-like client would use.
    let out = curl(&["-sS", "-r", "0-9,20-29", &d.url("/videos/m")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The boundary differs per response: take it from the body's first delimiter line.
    let first_line_end = find(&out.stdout, b"\r\n", 2).unwrap();
    let boundary = String::from_utf8(out.stdout[4..first_line_end].to_vec()).unwrap();
    let as_resp = Response {
        status: 206,
        headers: vec![(
            "Content-Type".into(),
            format!("multipart/byteranges; boundary={boundary}"),
        )],
        body: out.stdout.clone(),
    };
    let parts = multipart_parts(&as_resp);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].body, &data[0..10]);
    assert_eq!(parts[1].body, &data[20..30]);
}

#[test]
fn more_ranges_than_max_ranges_are_served_whole_as_nginx_does() {
    let (_dir, d, data) = file_daemon("maxranges", 30_000, 13, "", "[limits]\nmax_ranges = 4\n");
    let r = d.get("/videos/m", &[("Range", "bytes=0-0,10-10,20-20,30-30")]);
    assert_eq!(r.status, 206);
    assert_eq!(multipart_parts(&r).len(), 4);
    let r = d.get(
        "/videos/m",
        &[("Range", "bytes=0-0,10-10,20-20,30-30,40-40")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == data);
}

#[test]
fn curl_ranges_are_byte_exact() {
    let (dir, d, data) = file_daemon("curlr", 1_500_000, 17, "", "");
    let url = d.url("/videos/m");
    for (arg, want) in [
        ("100-199", &data[100..200]),
        ("1000000-", &data[1_000_000..]),
        ("-4096", &data[data.len() - 4096..]),
        ("0-1499999", &data[..]),
    ] {
        let out_path = dir.join("out.bin");
        let out = curl(&[
            "-sS",
            "-f",
            "-r",
            arg,
            "-o",
            out_path.to_str().unwrap(),
            "-w",
            "%{http_code}",
            &url,
        ]);
        assert!(
            out.status.success(),
            "curl -r {arg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "206", "curl -r {arg}");
        assert!(
            std::fs::read(&out_path).unwrap() == want,
            "curl -r {arg}: bytes differ"
        );
    }
    // Whole file, no range.
    let out = curl(&["-sS", "-f", &url]);
    assert!(out.status.success());
    assert!(out.stdout == data);
}

// ---------------------------------------------------------------- heads, types, conditionals

#[test]
fn head_has_the_headers_of_get_and_no_body() {
    let (_dir, d, data) = file_daemon("head", 123_456, 19, "", "");
    let mut c = Client::connect(d.addr());
    let h = ka(&mut c, "HEAD", "/videos/m", &[]);
    assert_eq!(h.status, 200);
    assert_eq!(h.header("Content-Length"), Some("123456"));
    assert_eq!(h.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(h.header("Content-Type"), Some("video/mp2t"));
    assert!(
        h.header("ETag")
            .is_some_and(|e| e.starts_with('"') && e.ends_with('"'))
    );
    assert!(h.header("Last-Modified").is_some());
    let hr = ka(&mut c, "HEAD", "/videos/m", &[("Range", "bytes=100-199")]);
    assert_eq!(hr.status, 206);
    assert_eq!(hr.header("Content-Length"), Some("100"));
    assert_eq!(hr.header("Content-Range"), Some("bytes 100-199/123456"));
    // Had the server sent a body after either HEAD, this GET's status line would not parse.
    let g = ka(&mut c, "GET", "/videos/m", &[]);
    assert_eq!(g.status, 200);
    assert!(g.body == data);
    for k in [
        "Content-Length",
        "Accept-Ranges",
        "Content-Type",
        "ETag",
        "Last-Modified",
    ] {
        assert_eq!(g.header(k), h.header(k), "{k} of GET and HEAD");
    }
}

#[test]
fn content_type_follows_the_extension() {
    let dir = TestDir::new("ctype");
    let mut cfg = format!("[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n");
    let cases = [
        ("a.ts", "video/mp2t"),
        ("b.mp4", "video/mp4"),
        ("c.webm", "video/webm"),
        ("d.mkv", "video/x-matroska"),
        ("e.M4V", "video/mp4"),
        ("f.bin", "application/octet-stream"),
    ];
    for (i, (file, _)) in cases.iter().enumerate() {
        std::fs::write(dir.join(file), pseudo_random_bytes(100, i as u64)).unwrap();
        cfg.push_str(&format!(
            "\n[[video]]\nid = \"v{i}\"\nkind = \"file\"\npath = \"{file}\"\n"
        ));
    }
    cfg.push_str("\n[[video]]\nid = \"cfg\"\nkind = \"file\"\npath = \"f.bin\"\ncontent_type = \"video/mp4\"\n");
    let d = Daemon::start(&dir.path, &cfg);
    for (i, (file, ct)) in cases.iter().enumerate() {
        let r = d.get(&format!("/videos/v{i}"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some(*ct), "{file}");
        let r = d.get(&format!("/videos/v{i}"), &[("Range", "bytes=0-1")]);
        assert_eq!(r.header("Content-Type"), Some(*ct), "{file} ranged");
    }
    assert_eq!(
        d.get("/videos/cfg", &[]).header("Content-Type"),
        Some("video/mp4"),
        "content_type in the config wins"
    );
}

#[test]
fn conditional_requests_follow_rfc_9110() {
    let dir = TestDir::new("cond");
    let data = pseudo_random_bytes(40_000, 23);
    std::fs::write(dir.join("m.mp4"), &data).unwrap();
    // A known mtime: Wed, 01 Jan 2020 00:00:00 GMT.
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_836_800);
    std::fs::File::options()
        .write(true)
        .open(dir.join("m.mp4"))
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let d = Daemon::start(
        &dir.path,
        &format!(
            "[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.mp4\"\n"
        ),
    );
    let mut c = Client::connect(d.addr());
    let g = ka(&mut c, "GET", "/videos/m", &[]);
    assert_eq!(g.status, 200);
    assert_eq!(
        g.header("Last-Modified"),
        Some("Wed, 01 Jan 2020 00:00:00 GMT")
    );
    let etag = g.header("ETag").expect("ETag").to_string();
    let weak = format!("W/{etag}");
    let get = |c: &mut Client, h: &[(&str, &str)]| ka(c, "GET", "/videos/m", h);

    // If-None-Match: a match (strong, weak, in a list, or *) is 304 with the validators and no body.
    for inm in [
        etag.as_str(),
        weak.as_str(),
        &format!("\"nope\", {etag}"),
        "*",
    ] {
        let r = get(&mut c, &[("If-None-Match", inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert_eq!(r.header("ETag"), Some(etag.as_str()));
        assert!(r.body.is_empty());
    }
    let r = get(&mut c, &[("If-None-Match", "\"other\"")]);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    // HEAD answers 304 too.
    let r = ka(&mut c, "HEAD", "/videos/m", &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);

    // If-Modified-Since: not modified since the date (equal or later) → 304; earlier → 200.
    for ims in [
        "Wed, 01 Jan 2020 00:00:00 GMT",
        "Thu, 02 Jan 2020 00:00:00 GMT",
    ] {
        assert_eq!(
            get(&mut c, &[("If-Modified-Since", ims)]).status,
            304,
            "{ims}"
        );
    }
    let r = get(
        &mut c,
        &[("If-Modified-Since", "Tue, 31 Dec 2019 23:59:59 GMT")],
    );
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    // An invalid date is ignored.
    assert_eq!(
        get(&mut c, &[("If-Modified-Since", "yesterday")]).status,
        200
    );
    // If-None-Match takes precedence: a mismatching tag ignores If-Modified-Since (RFC 9110 §13.2.2).
    let r = get(
        &mut c,
        &[
            ("If-None-Match", "\"other\""),
            ("If-Modified-Since", "Thu, 02 Jan 2020 00:00:00 GMT"),
        ],
    );
    assert_eq!(r.status, 200);

    // If-Range: the current strong ETag or the exact Last-Modified date → 206; anything else → 200 whole.
    for ir in [etag.as_str(), "Wed, 01 Jan 2020 00:00:00 GMT"] {
        let r = get(&mut c, &[("Range", "bytes=10-19"), ("If-Range", ir)]);
        assert_eq!(r.status, 206, "If-Range: {ir}");
        assert_eq!(r.body, &data[10..20]);
    }
    for ir in [
        "\"stale-etag\"",
        weak.as_str(),
        "Tue, 31 Dec 2019 00:00:00 GMT",
        "Thu, 02 Jan 2020 00:00:00 GMT",
    ] {
        let r = get(&mut c, &[("Range", "bytes=10-19"), ("If-Range", ir)]);
        assert_eq!(r.status, 200, "If-Range: {ir}");
        assert!(r.body == data, "If-Range: {ir}: whole body");
    }

    // If-Match: a mismatch is 412; a match serves.
    assert_eq!(get(&mut c, &[("If-Match", "\"other\"")]).status, 412);
    assert_eq!(get(&mut c, &[("If-Match", &etag)]).status, 200);
    assert_eq!(
        get(
            &mut c,
            &[("If-Unmodified-Since", "Tue, 31 Dec 2019 00:00:00 GMT")]
        )
        .status,
        412
    );
}

// ---------------------------------------------------------------- connections

#[test]
fn one_keep_alive_connection_serves_many_requests() {
    let (_dir, d, data) = file_daemon("keepalive", 64_000, 29, "", "");
    let mut c = Client::connect(d.addr());
    let mut rng = Rng(3);
    for i in 0..200u64 {
        let a = rng.below(64_000);
        let b = (a + rng.below(5000)).min(63_999);
        let r = ka(
            &mut c,
            "GET",
            "/videos/m",
            &[("Range", &format!("bytes={a}-{b}"))],
        );
        assert_eq!(r.status, 206, "request {i}");
        assert!(r.body == data[a as usize..=b as usize], "request {i}");
        assert_ne!(r.header("Connection"), Some("close"));
    }
    assert_eq!(ka(&mut c, "GET", "/healthz", &[]).status, 200);
    assert_eq!(ka(&mut c, "GET", "/videos", &[]).status, 200);
    assert_eq!(ka(&mut c, "GET", "/videos/nope", &[]).status, 404);
    let r = ka(&mut c, "GET", "/videos/m", &[]);
    assert!(r.body == data);
}

#[test]
fn pipelined_requests_are_answered_in_order_and_byte_exact() {
    let (_dir, d, data) = file_daemon("pipeline", 2_000_000, 31, "", "");
    let mut reqs = Vec::new();
    let ranges = [
        (0u64, 99u64),
        (1_999_000, 1_999_999),
        (500_000, 1_499_999),
        (7, 7),
    ];
    for (a, b) in ranges {
        reqs.extend_from_slice(
            format!("GET /videos/m HTTP/1.1\r\nHost: x\r\nRange: bytes={a}-{b}\r\n\r\n").as_bytes(),
        );
    }
    reqs.extend_from_slice(b"HEAD /videos/m HTTP/1.1\r\nHost: x\r\n\r\n");
    reqs.extend_from_slice(
        b"GET /videos/m HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9,100-109\r\n\r\n",
    );
    reqs.extend_from_slice(b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    reqs.extend_from_slice(b"GET /videos/m HTTP/1.1\r\nHost: x\r\n\r\n");
    reqs.extend_from_slice(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut c = Client::connect(d.addr());
    c.send(&reqs); // one write
    for (a, b) in ranges {
        let r = c.read(false);
        assert_eq!(r.status, 206);
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {a}-{b}/2000000").as_str())
        );
        assert!(r.body == data[a as usize..=b as usize], "{a}-{b}");
    }
    let r = c.read(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("2000000"));
    let r = c.read(false);
    assert_eq!(r.status, 206);
    let parts = multipart_parts(&r);
    assert_eq!(parts[0].body, &data[0..10]);
    assert_eq!(parts[1].body, &data[100..110]);
    assert_eq!(c.read(false).status, 404);
    let r = c.read(false);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
    let r = c.read(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"ok\n");
    let mut rest = Vec::new();
    let _ = c.reader.read_to_end(&mut rest);
    assert!(rest.is_empty(), "nothing after the last response: {rest:?}");
}

// ---------------------------------------------------------------- writes and tokens

fn slots_daemon(name: &str, server_extra: &str, videos: &str) -> (TestDir, Daemon) {
    let dir = TestDir::new(name);
    let cfg = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n{server_extra}\n{videos}"
    );
    let d = Daemon::start(&dir.path, &cfg);
    (dir, d)
}

#[test]
fn curl_put_with_expect_100_continue_fills_an_upload_slot() {
    let size = 2 * 1024 * 1024;
    let (dir, d) = slots_daemon(
        "curlput",
        "",
        &format!(
            "[[video]]\nid = \"up\"\nkind = \"upload\"\nsize = {size}\n\n[[video]]\nid = \"up2\"\nkind = \"upload\"\nsize = 300000\n"
        ),
    );
    let body = pseudo_random_bytes(size, 37);
    std::fs::write(dir.join("body.bin"), &body).unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let out = curl(&[
        "-sS",
        "-f",
        "-v",
        "-T",
        dir.join("body.bin").to_str().unwrap(),
        "-H",
        &format!("Content-Range: bytes 0-{}/{size}", size - 1),
        "-H",
        &auth,
        &d.url("/videos/up"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "curl -T: {err}");
    assert!(
        err.contains("Expect: 100-continue"),
        "curl sent no Expect: {err}"
    );
    assert!(
        err.contains("HTTP/1.1 100 Continue"),
        "no 100 Continue: {err}"
    );
    let j = parse_json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(j.get("complete"), Some(&Json::Bool(true)));
    let r = d.get("/videos/up", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "read back differs");

    // curl --data-binary in two halves, read back with curl.
    let small = pseudo_random_bytes(300_000, 41);
    std::fs::write(dir.join("a.bin"), &small[..150_000]).unwrap();
    std::fs::write(dir.join("b.bin"), &small[150_000..]).unwrap();
    for (file, cr) in [
        ("b.bin", "bytes 150000-299999/300000"),
        ("a.bin", "bytes 0-149999/*"),
    ] {
        let out = curl(&[
            "-sS",
            "-f",
            "-X",
            "PUT",
            "--data-binary",
            &format!("@{}", dir.join(file).display()),
            "-H",
            &format!("Content-Range: {cr}"),
            "-H",
            &auth,
            &d.url("/videos/up2"),
        ]);
        assert!(
            out.status.success(),
            "{cr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = curl(&["-sS", "-f", &d.url("/videos/up2")]);
    assert!(out.status.success());
    assert!(out.stdout == small);
}

#[test]
fn write_tokens_global_and_per_video() {
    let (_dir, d) = slots_daemon(
        "wtoken",
        "",
        "[[video]]\nid = \"a\"\nkind = \"upload\"\nsize = 100\nwrite_token = \"per-a\"\n\n[[video]]\nid = \"b\"\nkind = \"upload\"\nsize = 100\nwrite_token = \"per-b\"\n",
    );
    let data = pseudo_random_bytes(100, 43);
    assert_eq!(
        put(&d, "a", Some(TOKEN), Some("bytes 0-9/100"), &data[0..10]).status,
        200
    );
    assert_eq!(
        put(
            &d,
            "a",
            Some("per-a"),
            Some("bytes 10-19/100"),
            &data[10..20]
        )
        .status,
        200
    );
    for tok in [
        Some("per-b"),
        Some("wrong"),
        Some(""),
        None,
        Some("per-a-and-more"),
        Some("per-"),
    ] {
        let r = put(&d, "a", tok, Some("bytes 20-29/100"), &data[20..30]);
        assert_eq!(r.status, 401, "token {tok:?}");
        assert_eq!(
            r.header("WWW-Authenticate"),
            Some("Bearer realm=\"vcache\"")
        );
    }
    // A non-Bearer scheme is refused even with the right secret.
    let r = request(
        d.addr(),
        "PUT",
        "/videos/a",
        &[
            ("Authorization", &format!("Basic {TOKEN}")),
            ("Content-Range", "bytes 20-29/100"),
        ],
        &data[20..30],
    );
    assert_eq!(r.status, 401);
    let r = request(d.addr(), "DELETE", "/videos/a", &[], b"");
    assert_eq!(r.status, 401);
    let r = request(
        d.addr(),
        "DELETE",
        "/videos/a",
        &[("Authorization", "Bearer per-b")],
        b"",
    );
    assert_eq!(r.status, 401);
    // What was accepted is there; what was refused is not.
    let r = d.get("/videos/a", &[("Range", "bytes=0-19")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[0..20]);
    assert_eq!(d.get("/videos/a", &[("Range", "bytes=20-29")]).status, 416);
    // Per-video token of b works on b only.
    assert_eq!(
        put(&d, "b", Some("per-b"), Some("bytes 0-9/100"), &data[0..10]).status,
        200
    );
}

#[test]
fn read_token_guards_reads_but_not_healthz() {
    let (_dir, d, data) = file_daemon("rtoken", 5000, 47, "read_token = \"reader\"\n", "");
    for path in ["/videos/m", "/videos"] {
        let r = d.get(path, &[]);
        assert_eq!(r.status, 401, "{path} without a token");
        assert!(
            !r.body
                .windows(16)
                .any(|w| data.windows(16).next() == Some(w))
        );
        assert_eq!(d.get(path, &[("Authorization", "Bearer nope")]).status, 401);
        assert_eq!(
            d.get(path, &[("Authorization", "Bearer reader")]).status,
            200
        );
    }
    assert_eq!(d.get("/videos/m", &[("Range", "bytes=0-9")]).status, 401);
    assert_eq!(request(d.addr(), "HEAD", "/videos/m", &[], b"").status, 401);
    let r = d.get(
        "/videos/m",
        &[("Range", "bytes=0-9"), ("Authorization", "Bearer reader")],
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[0..10]);
    let r = d.get("/healthz", &[]);
    assert_eq!(r.status, 200);
}

#[test]
fn upload_slot_holes_cut_ranges_and_refuse_whole_reads() {
    let (_dir, d) = slots_daemon(
        "holes",
        "",
        "[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 4000\n",
    );
    let data = pseudo_random_bytes(4000, 53);
    // Nothing yet: a whole GET is 409, any range 416.
    assert_eq!(d.get("/videos/s", &[]).status, 409);
    assert_eq!(
        put(
            &d,
            "s",
            Some(TOKEN),
            Some("bytes 0-999/4000"),
            &data[..1000]
        )
        .status,
        200
    );
    assert_eq!(
        put(
            &d,
            "s",
            Some(TOKEN),
            Some("bytes 2000-2999/*"),
            &data[2000..3000]
        )
        .status,
        200
    );
    // A range that reaches a hole is cut at the hole.
    let r = d.get("/videos/s", &[("Range", "bytes=500-2500")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 500-999/4000"));
    assert_eq!(r.body, &data[500..1000]);
    let r = d.get("/videos/s", &[("Range", "bytes=2500-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 2500-2999/4000"));
    assert_eq!(r.body, &data[2500..3000]);
    // A range that starts in a hole: 416, never zeros.
    for range in [
        "bytes=1500-1600",
        "bytes=1000-",
        "bytes=-500",
        "bytes=3000-3999",
    ] {
        let r = d.get("/videos/s", &[("Range", range)]);
        assert_eq!(r.status, 416, "{range}: {}", r.text());
        assert_eq!(r.header("Content-Range"), Some("bytes */4000"));
    }
    // Several ranges: only the present ones are served.
    let r = d.get("/videos/s", &[("Range", "bytes=0-9,1500-1600,2000-2009")]);
    assert_eq!(r.status, 206);
    let parts = multipart_parts(&r);
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].body, &data[0..10]);
    assert_eq!(parts[1].body, &data[2000..2010]);
    // Whole GET of an incomplete slot: 409, whatever is present.
    let r = d.get("/videos/s", &[]);
    assert_eq!(r.status, 409, "{}", r.text());
    // /videos shows the cached ranges.
    let e = video_entry(&d, "s");
    assert_eq!(e.get("present_bytes").and_then(Json::as_u64), Some(2000));
    assert_eq!(e.get("complete"), Some(&Json::Bool(false)));
    let ranges: Vec<(u64, u64)> = e
        .get("cached_ranges")
        .and_then(Json::as_array)
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("start").and_then(Json::as_u64).unwrap(),
                r.get("end").and_then(Json::as_u64).unwrap(),
            )
        })
        .collect();
    assert_eq!(ranges, vec![(0, 1000), (2000, 3000)]);
    // Fill the rest: now whole.
    assert_eq!(
        put(
            &d,
            "s",
            Some(TOKEN),
            Some("bytes 1000-1999/4000"),
            &data[1000..2000]
        )
        .status,
        200
    );
    assert_eq!(
        put(
            &d,
            "s",
            Some(TOKEN),
            Some("bytes 3000-3999/4000"),
            &data[3000..]
        )
        .status,
        200
    );
    let r = d.get("/videos/s", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == data);
}

#[test]
fn bad_writes_are_refused_and_leave_the_cache_untouched() {
    let dir = TestDir::new("badwrites");
    let file = pseudo_random_bytes(1000, 59);
    std::fs::write(dir.join("m.ts"), &file).unwrap();
    let d = Daemon::start(
        &dir.path,
        &format!(
            "[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n\n[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 64\n"
        ),
    );
    let b10 = [7u8; 10];
    // Outside the slot, or a total that is not the slot's size.
    for cr in [
        "bytes 64-73/*",
        "bytes 60-69/*",
        "bytes 0-9/65",
        "bytes 0-9/63",
    ] {
        let r = put(&d, "s", Some(TOKEN), Some(cr), &b10);
        assert_eq!(r.status, 416, "{cr}: {}", r.text());
    }
    // Malformed or overflowing Content-Range, or one that disagrees with Content-Length.
    for cr in [
        "bytes 0-99999999999999999999999/*",
        "bytes 99999999999999999999999-99999999999999999999999/*",
        "bytes 18446744073709551615-18446744073709551615/*",
        "bytes 0-9/99999999999999999999999",
        "bytes 9-0/64",
        "bytes 60-69/64",
        "bytes */64",
        "bytes 0-9",
        "items 0-9/64",
        "bytes 0-19/64",
    ] {
        let r = put(&d, "s", Some(TOKEN), Some(cr), &b10);
        assert!(
            r.status == 400 || r.status == 416,
            "{cr}: {} {}",
            r.status,
            r.text()
        );
    }
    // Writes to a file video.
    let r = put(&d, "m", Some(TOKEN), Some("bytes 0-9/1000"), &b10);
    assert_eq!(r.status, 405);
    assert!(r.header("Allow").is_some_and(|a| !a.contains("PUT")));
    let r = put(&d, "m", Some(TOKEN), None, &b10);
    assert_eq!(r.status, 405);
    // Writes to an unknown id.
    assert_eq!(
        put(&d, "nope", Some(TOKEN), Some("bytes 0-9/64"), &b10).status,
        404
    );
    // An oversized or overflowing Content-Length.
    let raw = raw_exchange(
        d.addr(),
        format!("PUT /videos/s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 99999999999999999999999\r\n\r\n0123456789").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 400);
    // A chunk size that overflows, to an append and to a ranged write.
    for extra in ["", "Content-Range: bytes 0-9/64\r\n"] {
        let raw = raw_exchange(
            d.addr(),
            format!("PUT /videos/s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n{extra}Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFFFF\r\n0123456789\r\n0\r\n\r\n").as_bytes(),
        );
        assert_eq!(raw_status(&raw), 400, "{}", String::from_utf8_lossy(&raw));
    }
    // Nothing of it reached the cache; the file video is intact.
    let e = video_entry(&d, "s");
    assert_eq!(
        e.get("present_bytes").and_then(Json::as_u64),
        Some(0),
        "{e:?}"
    );
    assert_eq!(d.get("/videos/s", &[("Range", "bytes=0-")]).status, 416);
    assert!(d.get("/videos/m", &[]).body == file);
    assert_eq!(std::fs::read(dir.join("m.ts")).unwrap(), file);
}

/// An error response's RFC 9457 problem details: its status and `detail`.
fn problem(r: &Response) -> (u64, String) {
    assert_eq!(
        r.header("Content-Type"),
        Some("application/problem+json"),
        "{} {}",
        r.status,
        r.text()
    );
    let j = parse_json(&r.text());
    assert_eq!(j.get("type").and_then(Json::as_str), Some("about:blank"));
    let title = j.get("title").and_then(Json::as_str).unwrap_or("");
    assert!(!title.is_empty(), "{}", r.text());
    let status = j.get("status").and_then(Json::as_u64).unwrap_or(0);
    assert_eq!(status, u64::from(r.status), "{}", r.text());
    let detail = j.get("detail").and_then(Json::as_str).unwrap_or("");
    (status, detail.to_string())
}

#[test]
fn errors_are_problem_details_json() {
    let (_dir, d, _) = file_daemon("problem", 100, 61, "", "");
    let r = d.get("/videos/nope", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(problem(&r), (404, "no video with id nope".to_string()));
    let title = parse_json(&r.text());
    assert_eq!(title.get("title").and_then(Json::as_str), Some("Not Found"));
    let r = d.get("/videos/m", &[("Range", "bytes=500-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100"));
    let (_, detail) = problem(&r);
    assert!(!detail.is_empty());
    let r = put(&d, "m", None, Some("bytes 0-9/100"), &[1; 10]);
    assert_eq!(r.status, 401);
    assert!(r.header("WWW-Authenticate").is_some());
    let (_, detail) = problem(&r);
    assert!(detail.contains("Authorization: Bearer"), "{detail}");
    // HEAD: the same head, no body.
    let mut c = Client::connect(d.addr());
    let r = ka(&mut c, "HEAD", "/videos/nope", &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.header("Content-Type"), Some("application/problem+json"));
    assert!(r.body.is_empty());
    assert_eq!(ka(&mut c, "GET", "/healthz", &[]).status, 200);
}

#[test]
fn every_405_says_what_the_path_allows() {
    let (_dir, d, _) = file_daemon(
        "allow405",
        100,
        67,
        "",
        "[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 64\n",
    );
    let auth = bearer(TOKEN);
    // Warming is for origin videos only: on any other video the fill path takes no method.
    for id in ["m", "s"] {
        let path = format!("/videos/{id}/fill");
        let r = request(d.addr(), "POST", &path, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 405, "{id}: {}", r.text());
        assert_eq!(r.header("Allow"), Some(""), "{id}");
        assert_eq!(problem(&r).0, 405);
        let r = request(d.addr(), "GET", &path, &[], b"");
        assert_eq!((r.status, r.header("Allow")), (405, Some("")), "{id}");
    }
    // A file video is read-only: its 405s and OPTIONS agree.
    let r = request(
        d.addr(),
        "DELETE",
        "/videos/m",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(
        (r.status, r.header("Allow")),
        (405, Some("GET, HEAD, OPTIONS"))
    );
    let r = request(d.addr(), "OPTIONS", "/videos/m", &[], b"");
    assert_eq!(
        (r.status, r.header("Allow")),
        (204, Some("GET, HEAD, OPTIONS"))
    );
    let r = request(d.addr(), "OPTIONS", "/videos/s", &[], b"");
    let all = "GET, HEAD, PUT, POST, DELETE, OPTIONS";
    assert_eq!((r.status, r.header("Allow")), (204, Some(all)));
}

#[test]
fn a_put_repeating_present_bytes_is_compared_not_written() {
    let (_dir, d) = slots_daemon(
        "repeat",
        "",
        "[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 200000\n",
    );
    let data = pseudo_random_bytes(150_000, 71);
    let cr = "bytes 0-149999/200000";
    let first = put(&d, "s", Some(TOKEN), Some(cr), &data);
    assert_eq!(first.status, 200, "{}", first.text());
    // The same bytes again (a retry after a lost answer): 200, the same answer as the write's.
    let again = put(&d, "s", Some(TOKEN), Some(cr), &data);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.header("Content-Type"), Some("application/json"));
    assert_eq!(again.text(), first.text());
    // A part of them, chunked in odd pieces.
    let part = &data[1000..71_000];
    let mut req = format!(
        "PUT /videos/s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Range: bytes 1000-70999/200000\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for piece in part.chunks(7001) {
        req.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        req.extend_from_slice(piece);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let raw = raw_exchange(d.addr(), &req);
    assert_eq!(raw_status(&raw), 200, "{}", String::from_utf8_lossy(&raw));
    assert!(String::from_utf8_lossy(&raw).contains("\"written\":{\"start\":1000,\"end\":71000}"));
    // Different bytes over present ones: 409 after the body, and nothing changes.
    let mut other = data.clone();
    other[120_000] ^= 1;
    let r = put(&d, "s", Some(TOKEN), Some(cr), &other);
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        problem(&r),
        (
            409,
            "the range is present with different content".to_string()
        )
    );
    let mut chunked = req.clone();
    let at = chunked.len() - 100;
    chunked[at] ^= 1;
    assert_eq!(raw_status(&raw_exchange(d.addr(), &chunked)), 409);
    // A range only partly present is still a conflict.
    let r = put(
        &d,
        "s",
        Some(TOKEN),
        Some("bytes 149990-150009/200000"),
        &[0; 20],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let r = d.get("/videos/s", &[("Range", "bytes=0-149999")]);
    assert_eq!(r.status, 206);
    assert!(r.body == data, "present bytes changed");
    let e = video_entry(&d, "s");
    assert_eq!(e.get("present_bytes").and_then(Json::as_u64), Some(150_000));
}

// ---------------------------------------------------------------- listings

#[test]
fn videos_json_and_metrics_text() {
    let dir = TestDir::new("listing");
    std::fs::write(dir.join("m.ts"), pseudo_random_bytes(1234, 61)).unwrap();
    let d = Daemon::start(
        &dir.path,
        &format!(
            "[server]\ndata_dir = \"data\"\nwrite_token = \"{TOKEN}\"\n\n[[video]]\nid = \"m\"\nkind = \"file\"\npath = \"m.ts\"\n\n[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 100\n"
        ),
    );
    assert_eq!(
        put(&d, "s", Some(TOKEN), Some("bytes 10-19/100"), &[1u8; 10]).status,
        200
    );
    let r = d.get("/videos", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("application/json")
    );
    let j = parse_json(&r.text());
    let videos = j
        .get("videos")
        .and_then(Json::as_array)
        .expect("videos array");
    assert_eq!(videos.len(), 2);
    let m = video_entry(&d, "m");
    assert_eq!(m.get("kind").and_then(Json::as_str), Some("file"));
    assert_eq!(m.get("size").and_then(Json::as_u64), Some(1234));
    assert_eq!(m.get("complete"), Some(&Json::Bool(true)));
    let m_ranges = m.get("cached_ranges").and_then(Json::as_array).unwrap();
    assert_eq!(m_ranges.len(), 1);
    assert_eq!(m_ranges[0].get("end").and_then(Json::as_u64), Some(1234));
    let s = video_entry(&d, "s");
    assert_eq!(s.get("kind").and_then(Json::as_str), Some("upload"));
    assert_eq!(s.get("size").and_then(Json::as_u64), Some(100));
    assert_eq!(s.get("present_bytes").and_then(Json::as_u64), Some(10));
    let sr = s.get("cached_ranges").and_then(Json::as_array).unwrap();
    assert_eq!(sr.len(), 1);
    assert_eq!(sr[0].get("start").and_then(Json::as_u64), Some(10));
    assert_eq!(sr[0].get("end").and_then(Json::as_u64), Some(20));

    let r = d.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain"));
    let text = r.text();
    let mut samples = 0;
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "comment {line:?}"
            );
            if let Some(t) = rest.strip_prefix("TYPE ") {
                let kind = t.split_whitespace().nth(1).unwrap();
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line:?}"
                );
            }
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("sample {line:?}"));
        let metric = name.split('{').next().unwrap();
        assert!(
            !metric.is_empty()
                && metric
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':'),
            "metric name in {line:?}"
        );
        assert!(value.parse::<f64>().is_ok(), "value in {line:?}");
        samples += 1;
    }
    assert!(samples > 5);
    assert!(
        text.contains("vcache_video_size_bytes{id=\"m\"} 1234\n"),
        "{text}"
    );
    assert!(
        text.contains("vcache_video_present_bytes{id=\"s\"} 10\n"),
        "{text}"
    );
    let requests: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("vcache_requests_total "))
        .expect("vcache_requests_total")
        .parse()
        .unwrap();
    assert!(requests >= 3.0);
}

#[test]
fn unknown_ids_and_paths_are_404_and_bad_ids_400() {
    let (_dir, d, _) = file_daemon("unknown", 100, 67, "", "");
    for path in ["/videos/nope", "/videos/m/nope", "/nothing", "/videos/m.ts"] {
        let r = d.get(path, &[]);
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            request(d.addr(), "HEAD", path, &[], b"").status,
            404,
            "HEAD {path}"
        );
    }
    let long = format!("/videos/{}", "x".repeat(129));
    for path in ["/videos/a%20b", "/videos/a:b", long.as_str()] {
        assert_eq!(d.get(path, &[]).status, 400, "{path}");
    }
}

// ---------------------------------------------------------------- bad input

#[test]
fn path_tricks_are_refused() {
    let (dir, d, _) = file_daemon("paths", 100, 71, "", "");
    std::fs::write(dir.join("secret.txt"), "TOP-SECRET").unwrap();
    for path in [
        "/videos/../vcache.toml",
        "/videos/%2e%2e/vcache.toml",
        "/videos/%2E%2E%2Fvcache.toml",
        "/videos/.%2e/secret.txt",
        "/videos/..%2fsecret.txt",
        "/videos/m/..",
        "/videos/m%2f..%2f..%2fsecret.txt",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/videos/./m",
        "/videos/%2e",
        "/videos/m%00",
        "/videos/%zz",
        "/videos/..%5csecret.txt",
    ] {
        let raw = raw_exchange(
            d.addr(),
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(raw_status(&raw), 400, "{path}: {text}");
        assert!(
            !text.contains("TOP-SECRET") && !text.contains("write_token"),
            "{path} leaked"
        );
    }
    assert_eq!(d.get("/healthz", &[]).status, 200);
}

#[test]
fn malformed_request_lines_get_4xx_and_the_server_stays_up() {
    let (_dir, d, _) = file_daemon("malformed", 100, 73, "", "");
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /videos/m HTTX/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /videos/m HTTP/9.9\r\nHost: x\r\n\r\n", 505),
        (b"GET videos/m HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /videos/m HTTP/1.1\r\n\r\n", 400), // HTTP/1.1 without Host
        (b"GET /vid eos/m HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET /videos/m\r\n\r\n", 400), // HTTP/0.9
        (b"GET /videos/m HTTP/1.1\r\nHost x\r\n\r\n", 400),
        (
            b"GET /videos/m HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
            400,
        ),
        (
            b"GET /videos/m HTTP/1.1\r\nHost: x\r\n Folded: y\r\n\r\n",
            400,
        ),
        (
            b"GET /videos/m HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            400,
        ),
        (b"GET /videos/m#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400), // TLS on a plain port
    ];
    for (bytes, want) in cases {
        let raw = raw_exchange(d.addr(), bytes);
        assert!(
            !raw.is_empty(),
            "{:?}: no answer",
            String::from_utf8_lossy(bytes)
        );
        assert_eq!(
            raw_status(&raw),
            *want,
            "{:?}: {}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&raw)
        );
        assert_eq!(
            count_responses(&raw),
            1,
            "{}",
            String::from_utf8_lossy(&raw)
        );
    }
    assert_eq!(d.get("/healthz", &[]).status, 200);
    assert!(!d.log().contains("panicked"));
}

#[test]
fn smuggling_shapes_are_refused_and_nothing_after_them_is_answered() {
    let (_dir, d) = slots_daemon(
        "smuggle",
        "",
        "[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 64\n",
    );
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let next = "GET /videos/s HTTP/1.1\r\nHost: x\r\n\r\n";
    let cases = [
        (
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            "0\r\n\r\n",
            400,
        ),
        (
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "0\r\n\r\n",
            400,
        ),
        ("Content-Length: 5\r\nContent-Length: 6\r\n", "hello!", 400),
        ("Content-Length: 5, 6\r\n", "hello!", 400),
        ("Content-Length: +5\r\n", "hello", 400),
        ("Content-Length: 0x5\r\n", "hello", 400),
        (
            "Transfer-Encoding: chunked, chunked\r\n",
            "5\r\nhello\r\n0\r\n\r\n",
            400,
        ),
        ("Transfer-Encoding: gzip\r\n", "hello", 501),
        (
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "hello",
            400,
        ),
        ("Transfer-Encoding:  xchunked\r\n", "hello", 501),
    ];
    for (headers, body, want) in &cases {
        let req = format!("PUT /videos/s HTTP/1.1\r\nHost: x\r\n{auth}{headers}\r\n{body}{next}");
        let raw = raw_exchange(d.addr(), req.as_bytes());
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(raw_status(&raw), *want, "{headers:?}: {text}");
        assert_eq!(
            count_responses(&raw),
            1,
            "{headers:?}: the request after it was answered: {text}"
        );
    }
    // Transfer-Encoding in HTTP/1.0 is refused too.
    let raw = raw_exchange(
        d.addr(),
        format!("PUT /videos/s HTTP/1.0\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 400);
    let e = video_entry(&d, "s");
    assert_eq!(
        e.get("present_bytes").and_then(Json::as_u64),
        Some(0),
        "{e:?}"
    );
}

#[test]
fn a_body_on_a_request_that_does_not_take_one_is_never_read_as_a_request() {
    // A GET (or a refused PUT) with a body: the body must be discarded or the connection closed;
    // it must never be parsed as the next request (a smuggling shape behind a front proxy).
    let (_dir, d, _) = file_daemon("bodyless", 100, 79, "", "");
    let inner = "GET /videos/nope HTTP/1.1\r\nHost: x\r\n\r\n";
    for (method, path) in [
        ("GET", "/videos/m"),
        ("HEAD", "/videos/m"),
        ("GET", "/healthz"),
        ("OPTIONS", "/videos/m"),
        ("PUT", "/videos"),
        ("POST", "/healthz"),
        ("PUT", "/nothing"),
        ("GET", "/metrics"),
    ] {
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inner}",
            inner.len()
        );
        let mut s = TcpStream::connect(d.addr()).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let (raw, _) = read_until_eof(&mut s, Duration::from_secs(3));
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(
            count_responses(&raw),
            1,
            "{method} {path} with a body: {text}"
        );
        assert!(
            !text.contains("404 Not Found") || path == "/nothing",
            "{method} {path}: body answered: {text}"
        );
    }
}

// ---------------------------------------------------------------- limits

#[test]
fn header_limits_give_414_and_431_and_body_limit_413() {
    let (_dir, d) = slots_daemon(
        "hlimits",
        "",
        "[limits]\nmax_request_line = 256\nmax_header_bytes = 1024\nmax_headers = 10\nmax_body_bytes = 1000\n\n[[video]]\nid = \"s\"\nkind = \"upload\"\nsize = 5000\n",
    );
    // Just under each limit works.
    let path = format!("/videos/s?{}", "q".repeat(200));
    let ok = raw_exchange(
        d.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&ok), 409); // routed: the slot is empty
    // max_request_line → 414.
    let path = format!("/videos/s?{}", "q".repeat(300));
    let raw = raw_exchange(
        d.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 414, "{}", String::from_utf8_lossy(&raw));
    // max_header_bytes → 431.
    let big = "v".repeat(1100);
    let raw = raw_exchange(
        d.addr(),
        format!("GET /videos/s HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 431, "{}", String::from_utf8_lossy(&raw));
    // max_headers → 431 (Host + 11 more).
    let many: String = (0..11).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let raw = raw_exchange(
        d.addr(),
        format!("GET /videos/s HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 431, "{}", String::from_utf8_lossy(&raw));
    let nine: String = (0..9).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let raw = raw_exchange(
        d.addr(),
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{nine}\r\n").as_bytes(),
    );
    assert_eq!(raw_status(&raw), 200);
    // max_body_bytes → 413, and nothing is written.
    let body = vec![1u8; 1001];
    let r = put(&d, "s", Some(TOKEN), Some("bytes 0-1000/5000"), &body);
    assert_eq!(r.status, 413);
    let r = put(&d, "s", Some(TOKEN), None, &body);
    assert_eq!(r.status, 413);
    assert_eq!(
        put(
            &d,
            "s",
            Some(TOKEN),
            Some("bytes 0-999/5000"),
            &body[..1000]
        )
        .status,
        200
    );
    assert_eq!(
        video_entry(&d, "s")
            .get("present_bytes")
            .and_then(Json::as_u64),
        Some(1000)
    );
}

#[test]
fn max_connections_refuses_with_503_and_recovers_when_one_closes() {
    let (_dir, d, _) = file_daemon("maxconn", 100, 83, "", "[limits]\nmax_connections = 2\n");
    // Open two keep-alive connections that are both served (retrying while the readiness probe's
    // connection may still be counted).
    let open = |d: &Daemon| -> Client {
        let mut served = None;
        wait_until(
            "a served keep-alive connection",
            Duration::from_secs(10),
            || {
                let mut c = Client::connect(d.addr());
                c.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
                if read_response(&mut c.reader, false).is_ok_and(|r| r.status == 200) {
                    served = Some(c);
                }
                served.is_some()
            },
        );
        served.expect("served")
    };
    let c1 = open(&d);
    let mut c2 = open(&d);
    // A third is refused with a well-framed 503 (read without sending, so no reset can hide it).
    let mut s3 = TcpStream::connect(d.addr()).unwrap();
    let (raw, eof) = read_until_eof(&mut s3, Duration::from_secs(5));
    assert!(eof, "the refused connection is closed");
    let mut reader = std::io::BufReader::new(&raw[..]);
    let r = read_response(&mut reader, false).expect("a 503 response");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("Connection"), Some("close"));
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(
        rest.is_empty(),
        "bytes after the 503's body (Content-Length wrong?): {rest:?}"
    );
    // The served ones still work.
    assert_eq!(ka(&mut c2, "GET", "/videos/m", &[]).status, 200);
    // Close one: the next connection is served.
    drop(c1);
    wait_until(
        "a connection to be served after one closed",
        Duration::from_secs(10),
        || try_request(d.addr(), "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200),
    );
    assert_eq!(ka(&mut c2, "GET", "/healthz", &[]).status, 200);
}

#[test]
fn header_timeout_gives_408_or_closes_and_idle_keep_alive_is_closed() {
    let (_dir, d, data) = file_daemon(
        "timeouts",
        1000,
        89,
        "",
        "[limits]\nheader_timeout_ms = 300\nidle_timeout_ms = 400\n",
    );
    // A head that never finishes: 408, then close.
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.write_all(b"GET /videos/m HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let (raw, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    assert!(eof, "slow head not closed");
    assert_eq!(raw_status(&raw), 408, "{}", String::from_utf8_lossy(&raw));
    // A connection that sends nothing is closed.
    let mut s = TcpStream::connect(d.addr()).unwrap();
    let (raw, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    assert!(eof, "silent connection not closed");
    assert!(raw.is_empty() || raw_status(&raw) == 408);
    // Keep-alive: a second request right away is served; then the idle connection is closed.
    let mut c = Client::connect(d.addr());
    assert_eq!(ka(&mut c, "GET", "/videos/m", &[]).body, data);
    assert_eq!(ka(&mut c, "GET", "/healthz", &[]).status, 200);
    let mut s = c.reader.into_inner();
    let (raw, eof) = read_until_eof(&mut s, Duration::from_secs(10));
    assert!(eof, "idle keep-alive connection not closed");
    assert!(raw.is_empty(), "nothing sent on an idle close: {raw:?}");
    // The server is fine afterwards.
    assert_eq!(d.get("/healthz", &[]).status, 200);
}

//! Live channels end to end: one publisher appends (chunked with odd chunk sizes, Content-Length, curl,
//! ffmpeg `-method PUT`) and followers stream from the live edge (TS-aligned for video/mp2t), from an
//! RFC 8673 open range, or read bounded ranges of the DVR window while the ring wraps many times. Also:
//! a second publisher is refused, max_followers, followers end cleanly when the publisher ends, a
//! publisher that disconnects keeps what arrived, a slow follower is closed without hurting others,
//! DELETE forgets the window, and SIGTERM / kill -9 mid-stream keep the window up to the last checkpoint
//! with never a wrong byte in it.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const AUTH: (&str, &str) = ("Authorization", "Bearer tok");
/// The RFC 8673 "live" last-byte-pos: 2^53 − 1.
const OPEN_END: u64 = 9_007_199_254_740_991;

fn live_daemon(
    name: &str,
    id: &str,
    capacity: u64,
    server_extra: &str,
    limits: &str,
) -> (TestDir, Daemon) {
    let dir = TestDir::new(name);
    let d = Daemon::start(
        &dir.path,
        &live_config(id, capacity, server_extra, limits, ""),
    );
    (dir, d)
}

// ---------------------------------------------------------------------------------------------------
// GET /videos

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LiveInfo {
    capacity: u64,
    window_start: u64,
    head: u64,
    publishing: bool,
    followers: u64,
}

fn field<'a>(obj: &'a str, key: &str) -> &'a str {
    let k = format!("\"{key}\":");
    let at = obj.find(&k).unwrap_or_else(|| panic!("no {key} in {obj}"));
    let rest = &obj[at + k.len()..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    &rest[..end]
}

fn live_info(d: &Daemon, id: &str) -> LiveInfo {
    let entry = video_entry(d, id);
    let cut = (entry.find("\"followers\":").expect("followers") + 40).min(entry.len());
    let obj = &entry[..cut];
    let num = |k: &str| -> u64 {
        field(obj, k)
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{k} is not a number in {obj}"))
    };
    let publishing = match field(obj, "publishing").trim() {
        "true" => true,
        "false" => false,
        other => panic!("publishing = {other} in {obj}"),
    };
    LiveInfo {
        capacity: num("capacity"),
        window_start: num("window_start"),
        head: num("head"),
        publishing,
        followers: num("followers"),
    }
}

/// Poll GET /videos until `pred` holds (bounded: 15 s).
fn wait_info(d: &Daemon, id: &str, what: &str, pred: impl Fn(&LiveInfo) -> bool) -> LiveInfo {
    let mut last = None;
    wait_until(&format!("{what} ({id})"), Duration::from_secs(15), || {
        let i = live_info(d, id);
        let done = pred(&i);
        last = Some(i);
        done
    });
    last.expect("polled")
}

fn wait_head(d: &Daemon, id: &str, head: u64) -> LiveInfo {
    wait_info(d, id, &format!("head {head}"), |i| i.head == head)
}

/// Read the whole reported window and check every byte against the source.
fn check_window(d: &Daemon, id: &str, src: &[u8], what: &str) -> LiveInfo {
    let i = live_info(d, id);
    assert!(i.window_start <= i.head, "{what}: {i:?}");
    if i.head > i.window_start {
        let r = get_range(d, id, i.window_start, i.head - 1);
        assert_eq!(r.status, 206, "{what}: window read: {}", r.text());
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {}-{}/*", i.window_start, i.head - 1).as_str()),
            "{what}"
        );
        assert_bytes(
            &r.body,
            &src[i.window_start as usize..i.head as usize],
            &format!("{what}: window {}-{}", i.window_start, i.head),
        );
    }
    i
}

// ---------------------------------------------------------------------------------------------------
// A publisher over a raw socket (chunked body, framing written by hand).

struct Publisher {
    s: TcpStream,
    sent: u64,
}

impl Publisher {
    fn start(addr: SocketAddr, method: &str, id: &str, extra: &[(&str, &str)]) -> Publisher {
        let mut s = TcpStream::connect(addr).expect("connect publisher");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "{method} /videos/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
        );
        for (k, v) in extra {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("send publisher head");
        Publisher { s, sent: 0 }
    }

    fn put(addr: SocketAddr, id: &str) -> Publisher {
        Publisher::start(addr, "PUT", id, &[AUTH])
    }

    /// One chunk.
    fn chunk(&mut self, data: &[u8]) {
        self.try_chunk(data).expect("send a chunk");
    }

    fn try_chunk(&mut self, data: &[u8]) -> std::io::Result<()> {
        assert!(!data.is_empty());
        self.s
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())?;
        self.s.write_all(data)?;
        self.s.write_all(b"\r\n")?;
        self.sent += data.len() as u64;
        Ok(())
    }

    /// Send `data` as chunks of odd, random sizes (1 byte up to `max`), some with a chunk extension
    /// and some with their framing split over several TCP segments.
    fn odd_chunks(&mut self, data: &[u8], rng: &mut Rng, max: u64) {
        let mut at = 0;
        while at < data.len() {
            let n = (1 + rng.below(max) as usize).min(data.len() - at);
            let piece = &data[at..at + n];
            match rng.below(8) {
                0 => {
                    // A chunk extension (RFC 9112 §7.1.1: ignored when not understood).
                    self.s
                        .write_all(format!("{n:X};name=\"v\"\r\n").as_bytes())
                        .unwrap();
                    self.s.write_all(piece).unwrap();
                    self.s.write_all(b"\r\n").unwrap();
                    self.sent += n as u64;
                }
                1 => {
                    // Framing byte by byte, the payload in two writes.
                    for b in format!("{n:x}\r\n").bytes() {
                        self.s.write_all(&[b]).unwrap();
                    }
                    let half = n / 2;
                    self.s.write_all(&piece[..half]).unwrap();
                    self.s.write_all(&piece[half..]).unwrap();
                    self.s.write_all(b"\r").unwrap();
                    self.s.write_all(b"\n").unwrap();
                    self.sent += n as u64;
                }
                _ => self.chunk(piece),
            }
            at += n;
        }
    }

    /// End the body and read the answer.
    fn finish(mut self) -> Response {
        self.s.write_all(b"0\r\n\r\n").expect("send last chunk");
        let mut r = BufReader::new(self.s);
        read_response(&mut r, false).expect("publisher response")
    }
}

/// The head's `"head":N` in a publisher's JSON answer.
fn answered_head(r: &Response) -> u64 {
    assert_eq!(r.status, 200, "publisher answer: {}", r.text());
    assert!(
        r.header("Content-Type").unwrap_or("").contains("json"),
        "{:?}",
        r.headers
    );
    field(&r.text(), "head").trim().parse().expect("head")
}

// ---------------------------------------------------------------------------------------------------
// A follower over a raw socket: the head is read at once, the chunked body on a thread.

#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The final `0` chunk with no trailer.
    Clean,
    /// The final `0` chunk with these trailer lines.
    Trailer(String),
    /// The connection ended without a final chunk.
    Cut,
}

struct Streamed {
    body: Vec<u8>,
    end: End,
}

struct Follower {
    reader: BufReader<TcpStream>,
    status: u16,
    headers: Vec<(String, String)>,
}

fn request_text(id: &str, range: Option<&str>, close: bool) -> String {
    let mut req = format!("GET /videos/{id} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    if let Some(r) = range {
        req.push_str(&format!("Range: {r}\r\n"));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req
}

impl Follower {
    fn open(addr: SocketAddr, id: &str, range: Option<&str>) -> Follower {
        let s = TcpStream::connect(addr).expect("connect follower");
        Follower::open_on(s, id, range, true)
    }

    fn open_on(mut s: TcpStream, id: &str, range: Option<&str>, close: bool) -> Follower {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request_text(id, range, close).as_bytes())
            .expect("send follower request");
        let mut reader = BufReader::new(s);
        let (status, headers) = read_response_head(&mut reader).expect("follower response head");
        Follower {
            reader,
            status,
            headers,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// Read the chunked body on a thread; `progress` counts payload bytes received.
    fn spawn(self, progress: Arc<AtomicU64>) -> JoinHandle<Streamed> {
        assert!(
            self.header("Transfer-Encoding")
                .is_some_and(|v| v.eq_ignore_ascii_case("chunked")),
            "a follower is chunked: {:?}",
            self.headers
        );
        let mut reader = self.reader;
        std::thread::spawn(move || read_chunked(&mut reader, &progress))
    }
}

/// A chunked body until its final chunk or until the connection ends; bytes of a chunk cut short are
/// kept (they were sent, so they must be right too).
fn read_chunked<R: BufRead>(r: &mut R, progress: &AtomicU64) -> Streamed {
    let mut body = Vec::new();
    loop {
        let mut sz = String::new();
        match r.read_line(&mut sz) {
            Ok(0) | Err(_) => {
                return Streamed {
                    body,
                    end: End::Cut,
                };
            }
            Ok(_) => {}
        }
        if !sz.ends_with("\r\n") {
            return Streamed {
                body,
                end: End::Cut,
            };
        }
        let n = usize::from_str_radix(sz.trim().split(';').next().unwrap_or(""), 16)
            .unwrap_or_else(|_| panic!("bad chunk size line {sz:?}"));
        if n == 0 {
            let mut trailer = String::new();
            loop {
                let mut l = String::new();
                match r.read_line(&mut l) {
                    Ok(0) | Err(_) => {
                        return Streamed {
                            body,
                            end: End::Cut,
                        };
                    }
                    Ok(_) => {}
                }
                if l == "\r\n" {
                    break;
                }
                trailer.push_str(&l);
            }
            let end = if trailer.is_empty() {
                End::Clean
            } else {
                End::Trailer(trailer)
            };
            return Streamed { body, end };
        }
        let mut left = n;
        let mut buf = vec![0u8; 64 * 1024];
        while left > 0 {
            let want = left.min(buf.len());
            match r.read(&mut buf[..want]) {
                Ok(0) | Err(_) => {
                    return Streamed {
                        body,
                        end: End::Cut,
                    };
                }
                Ok(k) => {
                    body.extend_from_slice(&buf[..k]);
                    left -= k;
                    progress.fetch_add(k as u64, Ordering::SeqCst);
                }
            }
        }
        let mut crlf = [0u8; 2];
        if r.read_exact(&mut crlf).is_err() {
            return Streamed {
                body,
                end: End::Cut,
            };
        }
        assert_eq!(&crlf, b"\r\n", "chunk not followed by CRLF");
    }
}

/// Wait (bounded) until `counter` reaches `n`.
fn wait_progress(counter: &AtomicU64, n: u64, what: &str) {
    wait_until(
        &format!("{what} to receive {n} bytes"),
        Duration::from_secs(20),
        || counter.load(Ordering::SeqCst) >= n,
    );
}

// ---------------------------------------------------------------------------------------------------
// Publishing and following

#[test]
fn follower_connected_before_the_publisher_gets_exactly_the_published_bytes() {
    let (_dir, d) = live_daemon("before", "ch", 1 << 20, "", "");
    let src = source(700_000, 11);
    let f = Follower::open(d.addr(), "ch", None);
    assert_eq!(f.status, 200);
    assert_eq!(f.header("X-Live-Start"), Some("0"));
    assert_eq!(f.header("X-Live-Publishing"), Some("false"));
    assert_eq!(f.header("Cache-Control"), Some("no-store"));
    assert!(f.header("Content-Length").is_none(), "{:?}", f.headers);
    assert_eq!(
        wait_info(&d, "ch", "one follower", |i| i.followers == 1).head,
        0
    );
    let got = Arc::new(AtomicU64::new(0));
    let h = f.spawn(got.clone());

    let mut p = Publisher::put(d.addr(), "ch");
    let mut rng = Rng(5);
    p.odd_chunks(&src[..300_000], &mut rng, 9000);
    // While the publisher is on: HEAD and GET /videos say so.
    let i = wait_head(&d, "ch", 300_000);
    assert!(i.publishing, "{i:?}");
    assert_eq!((i.capacity, i.window_start), (1 << 20, 0));
    let r = request(d.addr(), "HEAD", "/videos/ch", &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Live-Head"), Some("300000"));
    assert_eq!(r.header("X-Live-Window"), Some("0-300000"));
    assert_eq!(r.header("X-Live-Publishing"), Some("true"));
    assert!(r.body.is_empty());
    p.odd_chunks(&src[300_000..], &mut rng, 70_000);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);

    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean, "the follower ends with the final chunk");
    assert_bytes(&s.body, &src, "follower");
    let i = wait_info(&d, "ch", "follower place given back", |i| i.followers == 0);
    assert!(!i.publishing);
    assert_eq!(i.head, src.len() as u64);
    let r = request(d.addr(), "HEAD", "/videos/ch", &[], b"");
    assert_eq!(r.header("X-Live-Publishing"), Some("false"));
    check_window(&d, "ch", &src, "after the session");
}

#[test]
fn odd_chunk_sizes_content_length_and_post_all_append_at_the_head() {
    let (_dir, d) = live_daemon("odd", "ch", 4 << 20, "", "");
    let src = source(2_000_000, 12);
    let mut rng = Rng(99);
    // Session 1: chunked, 1..4097-byte chunks, extensions and split framing.
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[..200_000], &mut rng, 4097);
    // Some exact sizes around powers of two and TS packets.
    let mut at = 200_000;
    for n in [
        1usize,
        2,
        187,
        188,
        189,
        4095,
        4096,
        4097,
        65_535,
        65_536,
        65_537,
        1 << 20,
    ] {
        p.chunk(&src[at..at + n]);
        at += n;
    }
    assert_eq!(answered_head(&p.finish()), at as u64);
    // Session 2: PUT with Content-Length.
    let r = request(
        d.addr(),
        "PUT",
        "/videos/ch",
        &[AUTH],
        &src[at..at + 100_001],
    );
    at += 100_001;
    assert_eq!(answered_head(&r), at as u64);
    assert!(
        r.text().contains(&format!("\"start\":{}", at - 100_001)),
        "{}",
        r.text()
    );
    // Session 3: POST with Content-Length.
    let end = src.len();
    let r = request(d.addr(), "POST", "/videos/ch", &[AUTH], &src[at..end]);
    assert_eq!(answered_head(&r), end as u64);
    let i = check_window(&d, "ch", &src[..end], "three sessions");
    assert_eq!((i.window_start, i.head), (0, end as u64));
    // A few small ranges, including a suffix range.
    let r = get_range(&d, "ch", 1234, 1234);
    assert_eq!((r.status, r.body.as_slice()), (206, &src[1234..1235]));
    let r = d.get("/videos/ch", &[("Range", "bytes=-500")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &src[end - 500..end]);
}

#[test]
fn writes_need_the_token_and_content_range_is_refused() {
    let dir = TestDir::new("auth");
    let d = Daemon::start(
        &dir.path,
        &live_config("ch", 65536, "", "", "write_token = \"chan\""),
    );
    let r = request(d.addr(), "PUT", "/videos/ch", &[], b"abc");
    assert_eq!(r.status, 401);
    let r = request(
        d.addr(),
        "PUT",
        "/videos/ch",
        &[("Authorization", "Bearer nope")],
        b"abc",
    );
    assert_eq!(r.status, 401);
    assert_eq!(live_info(&d, "ch").head, 0);
    let r = request(
        d.addr(),
        "PUT",
        "/videos/ch",
        &[AUTH, ("Content-Range", "bytes 0-2/*")],
        b"abc",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // The per-video token works as well as the global one.
    let r = request(
        d.addr(),
        "PUT",
        "/videos/ch",
        &[("Authorization", "Bearer chan")],
        b"abc",
    );
    assert_eq!(answered_head(&r), 3);
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], b"defg");
    assert_eq!(answered_head(&r), 7);
    let r = get_range(&d, "ch", 0, 6);
    assert_eq!(r.body, b"abcdefg");
}

#[test]
fn a_second_publisher_is_refused_while_the_first_is_on() {
    let (_dir, d) = live_daemon("second", "ch", 1 << 20, "", "");
    let src = source(50_000, 13);
    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&src[..10_000]);
    wait_info(&d, "ch", "publishing", |i| i.publishing && i.head == 10_000);
    // A chunked second publisher, and a Content-Length one: 409, nothing appended.
    let mut q = Publisher::put(d.addr(), "ch");
    let _ = q.try_chunk(b"intruder bytes");
    let mut r = BufReader::new(q.s);
    let resp = read_response(&mut r, false).expect("second publisher's answer");
    assert_eq!(resp.status, 409, "{}", resp.text());
    let resp = request(
        d.addr(),
        "POST",
        "/videos/ch",
        &[AUTH],
        b"more intruder bytes",
    );
    assert_eq!(resp.status, 409, "{}", resp.text());
    // The first one goes on undisturbed.
    p.chunk(&src[10_000..]);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    check_window(&d, "ch", &src, "after the refusals");
    // Once it has ended, a new publisher is accepted.
    let more = source(70_000, 14);
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &more[50_000..]);
    assert_eq!(answered_head(&r), 70_000);
    let mut all = src.clone();
    all.extend_from_slice(&more[50_000..]);
    check_window(&d, "ch", &all, "after a new session");
}

#[test]
fn a_publisher_that_disconnects_mid_stream_keeps_what_arrived() {
    let (_dir, d) = live_daemon("disconnect", "ch", 1 << 20, "", "");
    let src = source(300_000, 15);
    let f = Follower::open(d.addr(), "ch", None);
    assert_eq!(f.status, 200);
    wait_info(&d, "ch", "follower", |i| i.followers == 1);
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[..100_000], &mut Rng(3), 5000);
    // Half of a chunk, then the publisher goes away.
    p.s.write_all(b"2710\r\n").unwrap(); // 10000 bytes announced
    p.s.write_all(&src[100_000..105_000]).unwrap();
    wait_head(&d, "ch", 105_000);
    drop(p);
    let i = wait_info(&d, "ch", "publisher gone", |i| !i.publishing);
    assert_eq!(i.head, 105_000, "every byte that arrived is kept");
    // The follower ends cleanly (the session ended) with exactly what arrived.
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[..105_000], "follower");
    check_window(&d, "ch", &src, "after the disconnect");
    // The channel is free for the next publisher, which appends after the kept bytes.
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[105_000..], &mut Rng(4), 7000);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    check_window(&d, "ch", &src, "after the next session");
}

#[test]
fn followers_end_cleanly_and_a_keep_alive_follower_can_ask_again() {
    let (_dir, d) = live_daemon("cleanend", "ch", 1 << 20, "", "");
    let src = source(400_000, 16);
    // A keep-alive follower (no Connection: close) through the harness client, plus a raw one.
    let mut c = Client::connect(d.addr());
    c.send(request_text("ch", None, false).as_bytes());
    let raw = Follower::open(d.addr(), "ch", None);
    wait_info(&d, "ch", "two followers", |i| i.followers == 2);
    let raw = raw.spawn(Arc::new(AtomicU64::new(0)));
    let reader = std::thread::spawn(move || {
        let r = c.read(false);
        (c, r)
    });
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src, &mut Rng(8), 30_000);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    let (mut c, r) = reader.join().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Transfer-Encoding"), Some("chunked"));
    assert!(
        r.header("Connection")
            .is_none_or(|v| !v.eq_ignore_ascii_case("close"))
    );
    assert_bytes(&r.body, &src, "keep-alive follower");
    let s = raw.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src, "raw follower");
    // The same connection serves the next request: the final chunk ended the response properly.
    c.send(b"GET /videos/ch HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n");
    let r = c.read(false);
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &src[10..20]);
    wait_info(&d, "ch", "places given back", |i| i.followers == 0);
}

#[test]
fn an_http10_follower_gets_the_raw_stream_closed_at_the_end() {
    let (_dir, d) = live_daemon("http10", "ch", 1 << 20, "", "");
    let src = source(300_000, 28);
    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&src[..1000]);
    wait_head(&d, "ch", 1000);
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /videos/ch HTTP/1.0\r\nRange: bytes=500-\r\n\r\n")
        .unwrap();
    let mut r = BufReader::new(s);
    let (status, headers) = read_response_head(&mut r).expect("response head");
    assert_eq!(status, 206);
    let has = |k: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(k));
    assert!(
        !has("Transfer-Encoding") && !has("Content-Length"),
        "{headers:?}"
    );
    let reader = std::thread::spawn(move || {
        let mut body = Vec::new();
        r.read_to_end(&mut body).expect("read to the close");
        body
    });
    wait_info(&d, "ch", "one follower", |i| i.followers == 1);
    p.odd_chunks(&src[1000..], &mut Rng(6), 20_000);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    assert_bytes(&reader.join().unwrap(), &src[500..], "HTTP/1.0 follower");
}

#[test]
fn ts_followers_start_on_a_packet_boundary_of_the_session() {
    let dir = TestDir::new("align");
    let d = Daemon::start(
        &dir.path,
        &format!(
            "{}\n[[video]]\nid = \"raw\"\nkind = \"live\"\ncapacity = 1048576\n",
            live_config("ch.ts", 1 << 20, "", "", "")
        ),
    );
    let src = source(20_000, 17);
    // Session 1 ends at 1000, which is not a multiple of 188: the next session is the base.
    let r = request(d.addr(), "PUT", "/videos/ch.ts", &[AUTH], &src[..1000]);
    assert_eq!(answered_head(&r), 1000);
    let mut p = Publisher::put(d.addr(), "ch.ts");
    p.chunk(&src[1000..1000 + 3 * 188 + 50]);
    wait_head(&d, "ch.ts", 1000 + 3 * 188 + 50);
    let f = Follower::open(d.addr(), "ch.ts", None);
    assert_eq!(f.status, 200);
    assert_eq!(f.header("Content-Type"), Some("video/mp2t"));
    let start = 1000 + 3 * 188;
    assert_eq!(f.header("X-Live-Start"), Some(start.to_string().as_str()));
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    p.chunk(&src[1000 + 3 * 188 + 50..10_000]);
    assert_eq!(answered_head(&p.finish()), 10_000);
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[start..10_000], "TS follower");
    assert_eq!(s.body[0], src[start]);

    // A channel that is not MPEG-TS starts at the head itself.
    let mut p = Publisher::put(d.addr(), "raw");
    p.chunk(&src[..777]);
    wait_head(&d, "raw", 777);
    let f = Follower::open(d.addr(), "raw", None);
    assert_eq!(f.header("Content-Type"), Some("application/octet-stream"));
    assert_eq!(f.header("X-Live-Start"), Some("777"));
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    p.chunk(&src[777..5000]);
    assert_eq!(answered_head(&p.finish()), 5000);
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[777..5000], "raw follower");
}

#[test]
fn rfc8673_open_ranges_stream_from_their_start() {
    let (_dir, d) = live_daemon("open", "ch", 1 << 20, "", "");
    let src = source(600_000, 18);
    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&src[..200_000]);
    wait_head(&d, "ch", 200_000);
    let a = Follower::open(d.addr(), "ch", Some(&format!("bytes=1000-{OPEN_END}")));
    assert_eq!(a.status, 206);
    assert_eq!(
        a.header("Content-Range"),
        Some(format!("bytes 1000-{OPEN_END}/*").as_str())
    );
    assert!(a.header("Content-Length").is_none());
    let b = Follower::open(d.addr(), "ch", Some("bytes=150000-"));
    assert_eq!(b.status, 206);
    let cr = b.header("Content-Range").unwrap_or("").to_string();
    assert!(
        cr.starts_with("bytes 150000-") && cr.ends_with("/*"),
        "{cr}"
    );
    // From the head itself: nothing yet, then everything that follows.
    let c = Follower::open(d.addr(), "ch", Some("bytes=200000-"));
    assert_eq!(c.status, 206);
    let (a, b, c) = (
        a.spawn(Arc::new(AtomicU64::new(0))),
        b.spawn(Arc::new(AtomicU64::new(0))),
        c.spawn(Arc::new(AtomicU64::new(0))),
    );
    p.odd_chunks(&src[200_000..], &mut Rng(21), 50_000);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    for (h, from) in [(a, 1000), (b, 150_000), (c, 200_000)] {
        let s = h.join().unwrap();
        assert_eq!(s.end, End::Clean, "open range from {from}");
        assert_bytes(&s.body, &src[from..], &format!("open range from {from}"));
    }
    // With no publisher on, an open range behind the head replays the window and ends once caught
    // up; one at the head waits for the next session and ends after it.
    let r = d.get(
        "/videos/ch",
        &[("Range", &format!("bytes=400000-{OPEN_END}"))],
    );
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes 400000-{OPEN_END}/*").as_str())
    );
    assert_bytes(&r.body, &src[400_000..], "replay");
    let f = Follower::open(d.addr(), "ch", Some("bytes=600000-"));
    assert_eq!(f.status, 206);
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    let more = source(650_000, 18);
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &more[600_000..]);
    assert_eq!(answered_head(&r), 650_000);
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &more[600_000..], "open range at the head");
}

#[test]
fn bounded_ranges_wait_for_bytes_being_published_then_cut_or_503() {
    let (_dir, d) = live_daemon("bounded", "ch", 1 << 20, "", "read_wait_ms = 1500");
    let src = source(10_000, 19);
    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&src[..1000]);
    wait_head(&d, "ch", 1000);
    // Wholly in the window: at once, with a Content-Length.
    let r = get_range(&d, "ch", 100, 899);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 100-899/*"));
    assert_eq!(r.header("Content-Length"), Some("800"));
    assert_eq!(r.body, &src[100..900]);
    // Past the head: the read waits while the publisher delivers the rest.
    let before = d.metric("vcache_requests_total");
    let addr = d.addr();
    let waiting = std::thread::spawn(move || {
        request(
            addr,
            "GET",
            "/videos/ch",
            &[("Range", "bytes=500-1499")],
            b"",
        )
    });
    d.wait_requests(before, 1, "the waiting range request");
    p.chunk(&src[1000..1300]);
    wait_head(&d, "ch", 1300);
    p.chunk(&src[1300..1600]);
    let r = waiting.join().unwrap();
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.header("Content-Range"), Some("bytes 500-1499/*"));
    assert_eq!(r.header("Content-Length"), Some("1000"));
    assert_eq!(r.body, &src[500..1500]);
    wait_head(&d, "ch", 1600);
    // The bytes never come in time: cut at the head after limits.read_wait_ms.
    let t0 = Instant::now();
    let r = get_range(&d, "ch", 1500, 2999);
    assert!(t0.elapsed() >= Duration::from_millis(1000), "it waited");
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.header("Content-Range"), Some("bytes 1500-1599/*"));
    assert_eq!(r.body, &src[1500..1600]);
    // Nothing of it published in time: 503.
    let r = get_range(&d, "ch", 5000, 5999);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    p.chunk(&src[1600..]);
    assert_eq!(answered_head(&p.finish()), 10_000);
    let r = get_range(&d, "ch", 5000, 5999);
    assert_eq!((r.status, r.body.as_slice()), (206, &src[5000..6000]));
}

#[test]
fn max_followers_gives_503_and_places_come_back() {
    let (_dir, d) = live_daemon("maxf", "ch", 1 << 20, "", "max_followers = 2");
    let src = source(100_000, 20);
    let a = Follower::open(d.addr(), "ch", None);
    // `bytes=0-` names no start: a plain follower (200), like no Range at all.
    let b = Follower::open(d.addr(), "ch", Some("bytes=0-"));
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!(live_info(&d, "ch").followers, 2);
    let r = d.get("/videos/ch", &[]);
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.header("Retry-After").is_some());
    assert!(r.text().contains("max_followers"), "{}", r.text());
    let r = d.get("/videos/ch", &[("Range", "bytes=0-")]);
    assert_eq!(r.status, 503);
    // Bounded ranges and HEAD are not followers.
    let r = request(d.addr(), "HEAD", "/videos/ch", &[], b"");
    assert_eq!(r.status, 200);
    // One follower leaves; once the server has noticed (at the latest when it next writes to it), a
    // new follower is accepted.
    drop(a);
    let mut p = Publisher::put(d.addr(), "ch");
    let b = b.spawn(Arc::new(AtomicU64::new(0)));
    let mut at = 0;
    wait_until("the place to come back", Duration::from_secs(15), || {
        if live_info(&d, "ch").followers == 1 {
            return true;
        }
        if at < 50_000 {
            p.chunk(&src[at..at + 1000]);
            at += 1000;
        }
        false
    });
    let c = Follower::open(d.addr(), "ch", Some(&format!("bytes={at}-")));
    // `bytes=0-` (the place came back before anything was published) names no start: a plain
    // follower from the edge, which is byte 0 here.
    assert_eq!(c.status, if at == 0 { 200 } else { 206 });
    let c = c.spawn(Arc::new(AtomicU64::new(0)));
    p.chunk(&src[at..]);
    assert_eq!(answered_head(&p.finish()), src.len() as u64);
    let s = b.join().unwrap();
    assert_bytes(&s.body, &src, "follower b");
    let s = c.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[at..], "follower c");
}

#[test]
fn the_ring_wraps_many_times_with_readers_in_and_out_of_the_window() {
    let cap: u64 = 64 * 1024;
    let (_dir, d) = live_daemon("wrap", "ch", cap, "", "");
    let total = 40 * cap as usize + 12_345;
    let src = source(total as u64, 21);
    let mut rng = Rng(77);
    let mut p = Publisher::put(d.addr(), "ch");
    // A follower from the start, one from the middle (an open range), each reading as it comes; the
    // publisher never runs more than half a ring ahead of them, so they must get every byte.
    let f0 = Follower::open(d.addr(), "ch", None);
    let got0 = Arc::new(AtomicU64::new(0));
    let h0 = f0.spawn(got0.clone());
    let mut mid: Option<(u64, Arc<AtomicU64>, JoinHandle<Streamed>)> = None;
    let mut at = 0usize;
    let mut checks = 0;
    while at < total {
        let n = (1 + rng.below(cap / 4)) as usize;
        let n = n.min(total - at);
        p.odd_chunks(&src[at..at + n], &mut rng, 9001);
        at += n;
        // The publisher is paced by the followers.
        wait_progress(
            &got0,
            (at as u64).saturating_sub(cap / 4),
            "follower from 0",
        );
        if let Some((from, got, _)) = &mid {
            wait_progress(
                got,
                (at as u64).saturating_sub(cap / 4 + from),
                "middle follower",
            );
        }
        if rng.below(3) != 0 {
            continue;
        }
        // A quiet moment: the window is exactly [head − capacity, head).
        let i = wait_head(&d, "ch", at as u64);
        assert_eq!(i.window_start, (at as u64).saturating_sub(cap), "{i:?}");
        checks += 1;
        let ws = i.window_start;
        let r = request(d.addr(), "HEAD", "/videos/ch", &[], b"");
        assert_eq!(
            r.header("X-Live-Window"),
            Some(format!("{ws}-{at}").as_str())
        );
        for _ in 0..4 {
            // Inside the window (possibly across the wrap point): the published bytes.
            let a = ws + rng.below(at as u64 - ws);
            let b = a + rng.below(at as u64 - a);
            let r = get_range(&d, "ch", a, b);
            assert_eq!(r.status, 206, "{a}-{b} in window {ws}-{at}: {}", r.text());
            assert_bytes(&r.body, &src[a as usize..=b as usize], &format!("{a}-{b}"));
        }
        if ws > 0 {
            // Below the window, or straddling its start: 416, naming the window.
            let a = rng.below(ws);
            let b = a + rng.below(cap);
            let r = get_range(&d, "ch", a, b);
            assert_eq!(r.status, 416, "{a}-{b} below window {ws}-{at}");
            assert!(r.text().contains(&format!("{ws}-{at}")), "{}", r.text());
            assert_eq!(
                r.header("Content-Range"),
                Some(format!("bytes */{at}").as_str())
            );
            let r = d.get("/videos/ch", &[("Range", &format!("bytes={a}-"))]);
            assert_eq!(r.status, 416, "an open range below the window");
        }
        if mid.is_none() && at as u64 > 10 * cap {
            let from = ws + rng.below(at as u64 - ws);
            let f = Follower::open(d.addr(), "ch", Some(&format!("bytes={from}-")));
            assert_eq!(f.status, 206);
            let got = Arc::new(AtomicU64::new(0));
            let h = f.spawn(got.clone());
            mid = Some((from, got, h));
        }
    }
    assert!(checks > 5, "few quiet checks: {checks}");
    // One chunk larger than the whole ring at the end: only its last capacity bytes stay readable.
    let big = source(total as u64 + 3 * cap, 21);
    // `source` is deterministic, so big[..total] == src.
    assert_eq!(&big[..total], &src[..]);
    assert_eq!(answered_head(&p.finish()), total as u64);
    let s = h0.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src, "follower from 0");
    let (from, _, h) = mid.expect("a middle follower was started");
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[from as usize..], "middle follower");

    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&big[total..]);
    let end = answered_head(&p.finish());
    assert_eq!(end, big.len() as u64);
    let i = check_window(&d, "ch", &big, "after a chunk of three capacities");
    assert_eq!(i.window_start, end - cap);
    wait_info(&d, "ch", "no followers left", |i| i.followers == 0);
}

// ---------------------------------------------------------------------------------------------------
// A slow follower

/// A connected socket with a small receive buffer (set before connecting, so the window stays small).
fn small_rcvbuf_stream(addr: SocketAddr) -> TcpStream {
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let size: libc::c_int = 4096;
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
        let s = TcpStream::from_raw_fd(fd);
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: addr.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &sa as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        s
    }
}

#[test]
fn a_slow_follower_is_closed_without_hurting_the_publisher_or_other_followers() {
    let cap: u64 = 256 * 1024;
    let (_dir, d) = live_daemon("slow", "ch", cap, "", "");
    let total = 40 * cap as usize;
    let src = source(total as u64, 22);
    let slow = Follower::open_on(small_rcvbuf_stream(d.addr()), "ch", None, true);
    assert_eq!(slow.status, 200);
    let fast = Follower::open(d.addr(), "ch", None);
    let got = Arc::new(AtomicU64::new(0));
    let fast = fast.spawn(got.clone());
    wait_info(&d, "ch", "two followers", |i| i.followers == 2);
    let mut p = Publisher::put(d.addr(), "ch");
    let mut at = 0;
    while at < total {
        let n = (32 * 1024).min(total - at);
        p.chunk(&src[at..at + n]);
        at += n;
        // The normal follower keeps up (at most half a ring behind); the slow one reads nothing.
        wait_progress(&got, (at as u64).saturating_sub(cap / 2), "normal follower");
    }
    assert_eq!(
        answered_head(&p.finish()),
        total as u64,
        "the publisher's PUT is answered"
    );
    let s = fast.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src, "normal follower");
    // Now read the slow one to its end: it was told it fell behind (a trailer) or cut, and every
    // byte it did get is the published byte at that offset.
    let mut reader = slow.reader;
    let s = read_chunked(&mut reader, &AtomicU64::new(0));
    assert!(
        (s.body.len() as u64) < total as u64 - cap,
        "the slow follower received {} of {total} bytes",
        s.body.len()
    );
    match &s.end {
        End::Cut => {}
        End::Trailer(t) => assert!(
            t.contains("X-Vcache-Error: fell behind the live window"),
            "{t}"
        ),
        End::Clean => panic!("the slow follower ended as if it had everything"),
    }
    assert_bytes(&s.body, &src[..s.body.len()], "slow follower's bytes");
    wait_info(&d, "ch", "places given back", |i| i.followers == 0);
    let m = d.get("/metrics", &[]).text();
    let dropped: u64 = m
        .lines()
        .find(|l| l.starts_with("vcache_followers_dropped_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no vcache_followers_dropped_total in {m}"));
    assert_eq!(dropped, 1, "exactly the slow follower was dropped");
    check_window(&d, "ch", &src, "after the slow follower");
}

// ---------------------------------------------------------------------------------------------------
// DELETE

#[test]
fn delete_forgets_the_window_and_the_stream_goes_on() {
    let (_dir, d) = live_daemon("delete", "ch", 1 << 20, "", "");
    let src = source(300_000, 23);
    let mut p = Publisher::put(d.addr(), "ch");
    p.chunk(&src[..100_000]);
    wait_head(&d, "ch", 100_000);
    // Not while a publisher holds the channel.
    let r = request(d.addr(), "DELETE", "/videos/ch", &[AUTH], b"");
    assert!(
        r.status == 503 || r.status == 409,
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(live_info(&d, "ch").window_start, 0);
    assert_eq!(answered_head(&p.finish()), 100_000);
    let r = request(d.addr(), "DELETE", "/videos/ch", &[], b"");
    assert_eq!(r.status, 401);
    let r = request(d.addr(), "DELETE", "/videos/ch", &[AUTH], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let i = live_info(&d, "ch");
    assert_eq!((i.window_start, i.head), (100_000, 100_000));
    let r = get_range(&d, "ch", 0, 99);
    assert_eq!(r.status, 416);
    // The next session appends at the head; only its bytes are in the window.
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &src[100_000..]);
    assert_eq!(answered_head(&r), src.len() as u64);
    let i = check_window(&d, "ch", &src, "after delete");
    assert_eq!(i.window_start, 100_000);
}

// ---------------------------------------------------------------------------------------------------
// Restarts

fn restart(dir: &TestDir, d: Daemon) -> Daemon {
    let config = d.config_path.clone();
    let port = d.port;
    drop(d);
    Daemon::start_with_config(&dir.path, &config, port)
}

/// After a restart: the window is never earlier than head − capacity, gives up at most an eighth of
/// the ring, and every byte in it is the published one.
fn check_recovered(d: &Daemon, src: &[u8], cap: u64, what: &str) -> LiveInfo {
    let i = check_window(d, "ch", src, what);
    eprintln!("{what}: recovered {i:?}");
    let lowest = i.head.saturating_sub(cap);
    assert!(i.window_start >= lowest, "{what}: {i:?}");
    assert!(
        i.window_start <= lowest + cap / 8,
        "{what}: gave up too much: {i:?}"
    );
    assert!(!i.publishing, "{what}: {i:?}");
    i
}

#[test]
fn sigterm_mid_stream_keeps_everything_received_and_the_stream_continues() {
    let cap: u64 = 256 * 1024;
    let dir = TestDir::new("sigterm");
    let mut d = Daemon::start(
        &dir.path,
        &live_config(
            "ch",
            cap,
            "checkpoint_interval_ms = 100",
            "shutdown_timeout_ms = 1000",
            "",
        ),
    );
    let total = 6 * cap as usize;
    let src = source(total as u64, 24);
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[..1_000_003], &mut Rng(1), 40_000);
    wait_head(&d, "ch", 1_000_003);
    let status = d.stop(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    let _ = p.try_chunk(&src[1_000_003..1_000_100]);
    drop(p);
    let d = restart(&dir, d);
    let i = check_recovered(&d, &src, cap, "after SIGTERM");
    assert_eq!(i.head, 1_000_003, "nothing received is lost on SIGTERM");
    // A clean stop writes nothing past the head, so it gives up none of the oldest window either.
    assert_eq!(
        i.window_start,
        i.head - cap,
        "the whole window survives a SIGTERM"
    );
    // The stream goes on from the recovered head.
    let h = i.head as usize;
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[h..], &mut Rng(2), 40_000);
    assert_eq!(answered_head(&p.finish()), total as u64);
    let i = check_window(&d, "ch", &src, "continued after SIGTERM");
    assert_eq!(i.window_start, total as u64 - cap);
}

#[test]
fn kill9_with_the_publisher_connected_keeps_the_last_checkpoint() {
    let cap: u64 = 256 * 1024;
    let dir = TestDir::new("kill9quiet");
    let mut d = Daemon::start(
        &dir.path,
        &live_config("ch", cap, "checkpoint_interval_ms = 50", "", ""),
    );
    let src = source(4 * cap, 25);
    let mut p = Publisher::put(d.addr(), "ch");
    p.odd_chunks(&src[..700_001], &mut Rng(3), 30_000);
    wait_head(&d, "ch", 700_001);
    // The publisher stays connected and quiet for many checkpoint intervals. (This sleep is the
    // behaviour under test: quiet time that the checkpoint timer must cover.)
    std::thread::sleep(Duration::from_millis(600));
    d.kill9();
    drop(p);
    let d = restart(&dir, d);
    let i = check_recovered(&d, &src, cap, "after kill -9");
    assert_eq!(
        i.head, 700_001,
        "the last checkpoint held everything received"
    );
    let h = i.head as usize;
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &src[h..]);
    assert_eq!(answered_head(&r), src.len() as u64);
    check_window(&d, "ch", &src, "continued after kill -9");
}

#[test]
fn kill9_while_the_publisher_pushes_never_serves_wrong_bytes() {
    let cap: u64 = 256 * 1024;
    for round in 0..3u64 {
        let dir = TestDir::new("kill9busy");
        let mut d = Daemon::start(
            &dir.path,
            &live_config("ch", cap, "checkpoint_interval_ms = 20", "", ""),
        );
        let total = 64 * cap as usize;
        let src = Arc::new(source(total as u64, 26 + round));
        let sent = Arc::new(AtomicU64::new(0));
        let addr = d.addr();
        let pusher = {
            let (src, sent) = (src.clone(), sent.clone());
            std::thread::spawn(move || {
                let mut p = Publisher::put(addr, "ch");
                let mut rng = Rng(round + 5);
                let mut at = 0usize;
                while at < total {
                    let n = (1 + rng.below(50_000) as usize).min(total - at);
                    if p.try_chunk(&src[at..at + n]).is_err() {
                        break;
                    }
                    at += n;
                    sent.store(at as u64, Ordering::SeqCst);
                    // A paced publisher (the pace is the behaviour, not a wait).
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let stop_at = (3 + round) * cap;
        let i = wait_info(&d, "ch", "streaming", |i| i.head >= stop_at);
        assert!(i.publishing);
        d.kill9();
        pusher.join().unwrap();
        let d = restart(&dir, d);
        let i = check_recovered(&d, &src, cap, &format!("round {round}"));
        assert!(
            i.head > 0,
            "round {round}: the checkpoints kept nothing: {i:?}"
        );
        assert!(i.head <= sent.load(Ordering::SeqCst));
        // A new session appends after the recovered head.
        let h = i.head as usize;
        let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &src[h..h + 100_000]);
        assert_eq!(answered_head(&r), (h + 100_000) as u64);
        check_window(
            &d,
            "ch",
            &src[..h + 100_000],
            &format!("round {round}: continued"),
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Real clients

#[test]
fn curl_publishes_chunked_and_with_content_length() {
    let Some(curl_bin) = require_tool("curl") else {
        return;
    };
    let (dir, d) = live_daemon("curl", "ch", 1 << 20, "", "");
    let src = source(500_000, 27);
    std::fs::write(dir.join("a.bin"), &src[..300_000]).unwrap();
    std::fs::write(dir.join("b.bin"), &src[300_000..]).unwrap();
    let curl = |file: &str, chunked: bool| {
        let mut c = Command::new(&curl_bin);
        c.args(["-sS", "--fail-with-body", "-T"])
            .arg(dir.join(file))
            .args(["-H", "Authorization: Bearer tok"]);
        if chunked {
            c.args(["-H", "Transfer-Encoding: chunked"]);
        }
        let out = c
            .arg(d.url("/videos/ch"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let out = curl("a.bin", true);
    assert!(out.contains("\"head\":300000"), "{out}");
    let f = Follower::open(d.addr(), "ch", None);
    assert_eq!(f.header("X-Live-Start"), Some("300000"));
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    let out = curl("b.bin", false);
    assert!(out.contains("\"head\":500000"), "{out}");
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean);
    assert_bytes(&s.body, &src[300_000..], "follower of the second session");
    check_window(&d, "ch", &src, "after curl");
    // curl as a follower too. An open range behind the head while no publisher is on replays the
    // window and ends once caught up.
    let out = Command::new(&curl_bin)
        .args(["-sS", "-N", "-r", "100000-", &d.url("/videos/ch")])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_bytes(&out.stdout, &src[100_000..], "curl replay");
    // At the live edge, it waits for the next session and ends after it.
    let addr_url = d.url("/videos/ch");
    let follower = std::thread::spawn(move || {
        Command::new(curl_bin)
            .args(["-sS", "-N", &addr_url])
            .output()
            .expect("run curl")
    });
    wait_info(&d, "ch", "curl follows", |i| i.followers == 1);
    let more = source(600_000, 27);
    let r = request(d.addr(), "PUT", "/videos/ch", &[AUTH], &more[500_000..]);
    assert_eq!(answered_head(&r), 600_000);
    let out = follower.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_bytes(&out.stdout, &more[500_000..], "curl follower");
}

#[test]
fn ffmpeg_publishes_with_put_and_the_recording_decodes() {
    let (Some(ffmpeg), Some(ffprobe)) = (require_tool("ffmpeg"), require_tool("ffprobe")) else {
        return;
    };
    let (dir, d) = live_daemon("ffmpeg", "cam.ts", 8 << 20, "", "");
    let f = Follower::open(d.addr(), "cam.ts", None);
    assert_eq!(f.status, 200);
    assert_eq!(f.header("Content-Type"), Some("video/mp2t"));
    let h = f.spawn(Arc::new(AtomicU64::new(0)));
    let out = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-f",
            "lavfi",
        ])
        .args(["-i", "testsrc=size=320x240:rate=25", "-t", "2"])
        .args([
            "-c:v", "libx264", "-g", "25", "-pix_fmt", "yuv420p", "-f", "mpegts",
        ])
        .args([
            "-method",
            "PUT",
            "-headers",
            "Authorization: Bearer tok\r\n",
        ])
        .arg(d.url("/videos/cam.ts"))
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let s = h.join().unwrap();
    assert_eq!(s.end, End::Clean, "the follower ends when ffmpeg does");
    assert!(!s.body.is_empty());
    assert_eq!(s.body.len() % 188, 0, "whole TS packets");
    assert_eq!(s.body[0], 0x47, "TS sync byte");
    // The recording is the channel's content.
    let i = live_info(&d, "cam.ts");
    assert_eq!((i.window_start, i.head), (0, s.body.len() as u64));
    let r = d.get(
        "/videos/cam.ts",
        &[("Range", &format!("bytes=0-{}", i.head - 1))],
    );
    assert_bytes(&r.body, &s.body, "recording vs window");
    let rec = dir.join("rec.ts");
    std::fs::write(&rec, &s.body).unwrap();
    let probe = Command::new(ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&rec)
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&probe.stdout).trim().to_string();
    assert!(
        probe.status.success() && probe.stderr.is_empty(),
        "ffprobe: {text} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    // (ffprobe lists the stream under its program too.)
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "ffprobe printed nothing");
    for l in lines {
        assert_eq!(l.trim(), "h264,320,240,50", "two seconds at 25 fps decode");
    }
}

//! Origin pull-through against a real nginx (started by the tests as a child process; its access log
//! says what it sent) and against small misbehaving origins written here: byte-exact random ranges,
//! zero origin bytes for cached ranges (also after SIGTERM and `kill -9`), one fetch per block however
//! many readers wait, a replaced origin object never mixed with the old one, a slow origin that does not
//! hold up cached reads, 502/504 on origin trouble, cut fetches that claim only what arrived, warming,
//! the bound on outbound connections, curl as a client and `vcache check`.

mod common;
use common::*;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

const AUTH: (&str, &str) = ("Authorization", "Bearer t");
const BLOCK: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------------
// nginx as the origin

/// No range was asked of the origin twice (one fetch per block), and every answer was a 206.
fn assert_each_range_once(log: &[Sent]) {
    let mut seen = BTreeSet::new();
    for s in log {
        assert_eq!(s.status, 206, "origin answered {s:?}");
        assert!(
            seen.insert((s.uri.clone(), s.range.clone())),
            "the origin was asked twice for {s:?}; log: {log:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// A scripted origin for what nginx will not do (fail, reset, stall, cut bodies short)

#[derive(Debug, Clone, Copy)]
enum Answer {
    Serve,
    Status(u16),
    /// Reset the connection instead of answering.
    Reset,
    /// Never answer.
    Stall,
    /// The whole head, then this many body bytes, then close.
    Short(usize),
    /// The whole head, then this many body bytes, then silence.
    StallAfter(usize),
    /// A 206 whose Content-Range starts one byte late.
    WrongRange,
    /// Wait this many ms, then serve.
    Delay(u64),
}

/// Decides the answer to a request for bytes starting at `first`, whose block was asked `nth` times
/// before.
type Rule = Arc<dyn Fn(u64, usize) -> Answer + Send + Sync>;

struct FakeOrigin {
    port: u16,
    /// Every (first, last) asked, in order.
    asked: Arc<Mutex<Vec<(u64, u64)>>>,
    /// Body bytes written.
    sent: Arc<AtomicU64>,
    accepted: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeOrigin {
    fn start(data: Vec<u8>, rule: Rule) -> FakeOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let o = FakeOrigin {
            port,
            asked: Arc::default(),
            sent: Arc::default(),
            accepted: Arc::default(),
            open: Arc::default(),
            max_open: Arc::default(),
            stop: Arc::default(),
        };
        let data = Arc::new(data);
        let (asked, sent, accepted, open, max_open, stop) = (
            o.asked.clone(),
            o.sent.clone(),
            o.accepted.clone(),
            o.open.clone(),
            o.max_open.clone(),
            o.stop.clone(),
        );
        std::thread::spawn(move || {
            for s in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                accepted.fetch_add(1, Ordering::SeqCst);
                let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
                max_open.fetch_max(now_open, Ordering::SeqCst);
                let guard = OpenGuard(open.clone());
                let (data, rule, asked, sent, stop) = (
                    data.clone(),
                    rule.clone(),
                    asked.clone(),
                    sent.clone(),
                    stop.clone(),
                );
                std::thread::spawn(move || {
                    let _guard = guard;
                    serve_fake(s, &data, &rule, &asked, &sent, &stop);
                });
            }
        });
        o
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn asked(&self) -> Vec<(u64, u64)> {
        self.asked.lock().unwrap().clone()
    }
}

impl Drop for FakeOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Read one request head; None at EOF or when stopping.
fn read_head(s: &mut TcpStream, stop: &AtomicBool) -> Option<String> {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        match s.read(&mut b) {
            Ok(0) => return None,
            Ok(_) => buf.push(b[0]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// A stalled origin: say nothing until the fake origin is dropped. (The sleep is the stall itself,
/// not a wait for something to happen.)
fn idle_until_stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_fake(
    mut s: TcpStream,
    data: &[u8],
    rule: &Rule,
    asked: &Mutex<Vec<(u64, u64)>>,
    sent: &AtomicU64,
    stop: &AtomicBool,
) {
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let len = data.len() as u64;
    while let Some(head) = read_head(&mut s, stop) {
        let range = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("range") {
                return None;
            }
            let (a, b) = v.trim().strip_prefix("bytes=")?.split_once('-')?;
            Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
        });
        let (first, last) = range.unwrap_or((0, len - 1));
        let last = last.min(len - 1);
        let nth = {
            let mut a = asked.lock().unwrap();
            let nth = a.iter().filter(|(f, _)| f / BLOCK == first / BLOCK).count();
            a.push((first, last));
            nth
        };
        let body = &data[first as usize..=last as usize];
        let head206 = |from: u64| {
            format!(
                "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {from}-{}/{len}\r\nContent-Length: {}\r\nETag: \"fake-1\"\r\n\r\n",
                from + body.len() as u64 - 1,
                body.len()
            )
        };
        let send = |s: &mut TcpStream, bytes: &[u8]| -> bool {
            let ok = s.write_all(bytes).is_ok();
            if ok {
                sent.fetch_add(bytes.len() as u64, Ordering::SeqCst);
            }
            ok
        };
        match rule(first, nth) {
            Answer::Serve => {
                if s.write_all(head206(first).as_bytes()).is_err() || !send(&mut s, body) {
                    return;
                }
            }
            Answer::Delay(ms) => {
                // The delay is the behaviour asked for: a slow origin.
                std::thread::sleep(Duration::from_millis(ms));
                if s.write_all(head206(first).as_bytes()).is_err() || !send(&mut s, body) {
                    return;
                }
            }
            Answer::Status(code) => {
                let _ = s.write_all(
                    format!(
                        "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
                return;
            }
            Answer::Reset => {
                // SO_LINGER 0: close sends RST.
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid socket fd and a correctly sized linger struct.
                unsafe {
                    libc::setsockopt(
                        s.as_raw_fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&linger as *const libc::linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    );
                }
                return;
            }
            Answer::Stall => {
                idle_until_stopped(stop);
                return;
            }
            Answer::Short(n) => {
                let _ = s.write_all(head206(first).as_bytes());
                send(&mut s, &body[..n]);
                let _ = s.flush();
                return;
            }
            Answer::StallAfter(n) => {
                let _ = s.write_all(head206(first).as_bytes());
                send(&mut s, &body[..n]);
                idle_until_stopped(stop);
                return;
            }
            Answer::WrongRange => {
                let _ = s.write_all(head206(first + 1).as_bytes());
                send(&mut s, body);
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// vcache side

/// A config with `[server]` extras, `[limits]` and origin videos `(id, url, fill_block)`.
fn config(server: &str, limits: &str, videos: &[(&str, String, &str)]) -> String {
    let mut c = format!(
        "[server]\ndata_dir = \"data\"\nwrite_token = \"t\"\n{server}\n\n[limits]\nshutdown_timeout_ms = 1000\n{limits}\n"
    );
    for (id, url, block) in videos {
        c.push_str(&format!(
            "\n[[video]]\nid = \"{id}\"\nkind = \"origin\"\nurl = \"{url}\"\nfill_block = \"{block}\"\n"
        ));
    }
    c
}

/// GET `first..=last` of `id` and check it is a 206 carrying exactly those bytes of `data`.
fn read_exact_range(d: &Daemon, id: &str, data: &[u8], first: u64, last: u64) {
    let r = d.get(
        &format!("/videos/{id}"),
        &[("Range", &format!("bytes={first}-{last}"))],
    );
    assert_eq!(r.status, 206, "bytes {first}-{last}: {}", r.text());
    assert_eq!(
        r.header("Content-Range"),
        Some(format!("bytes {first}-{last}/{}", data.len()).as_str())
    );
    assert!(
        r.body == data[first as usize..=last as usize],
        "bytes {first}-{last} of {id} differ from the origin's"
    );
}

/// A GET whose body may be cut: the status, the head and whatever body came before the close.
fn raw_get(d: &Daemon, path: &str, range: &str) -> (u16, String, Vec<u8>) {
    let raw = raw_exchange(
        d.addr(),
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nRange: {range}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, raw[end + 4..].to_vec())
}

fn field(d: &Daemon, id: &str, key: &str) -> u64 {
    let e = video_entry(d, id);
    numbers_after(&e, &format!("\"{key}\":"))
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no {key} in {e}"))
}

/// Random inclusive ranges of a `len`-byte object: bounded, open-ended and suffix shapes as `Range`
/// values, with the bytes they select.
fn random_ranges(rng: &mut Rng, len: u64, n: usize) -> Vec<(String, u64, u64)> {
    (0..n)
        .map(|i| match i % 5 {
            3 => {
                let a = len - 1 - rng.below(3 * BLOCK);
                (format!("bytes={a}-"), a, len - 1)
            }
            4 => {
                let k = 1 + rng.below(BLOCK + 7);
                (format!("bytes=-{k}"), len - k, len - 1)
            }
            _ => {
                let a = rng.below(len);
                let b = (a + rng.below(3 * BLOCK / 2)).min(len - 1);
                (format!("bytes={a}-{b}"), a, b)
            }
        })
        .collect()
}

fn check_ranges(d: &Daemon, id: &str, data: &[u8], ranges: &[(String, u64, u64)]) {
    for (spec, a, b) in ranges {
        let r = d.get(&format!("/videos/{id}"), &[("Range", spec)]);
        assert_eq!(r.status, 206, "{spec}: {}", r.text());
        assert_eq!(
            r.header("Content-Range"),
            Some(format!("bytes {a}-{b}/{}", data.len()).as_str()),
            "{spec}"
        );
        assert!(
            r.body == data[*a as usize..=*b as usize],
            "{spec}: bytes differ from the origin's"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Tests

#[test]
fn random_ranges_through_nginx_are_byte_exact_and_rereads_cost_the_origin_nothing() {
    let dir = TestDir::new("origin-random");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 1_000_003;
    let data = source(len, 11);
    ng.put("v.bin", &data, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.bin"), "64KiB")]),
    );
    let mut rng = Rng(0xC0FFEE);
    let ranges = random_ranges(&mut rng, len, 25);
    check_ranges(&d, "v", &data, &ranges);

    let log = ng.settled_log();
    assert!(!log.is_empty());
    assert_each_range_once(&log);
    let sent = bytes_of(&log);
    assert_eq!(field(&d, "v", "origin_bytes"), sent);
    assert_eq!(
        field(&d, "v", "present_bytes"),
        sent,
        "every byte fetched once"
    );
    assert_eq!(field(&d, "v", "length"), len);
    // Whole aligned blocks only.
    for s in &log {
        let (a, b) = s
            .range
            .strip_prefix("bytes=")
            .unwrap()
            .split_once('-')
            .unwrap();
        let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
        assert!(a % BLOCK == 0 && b == (a + BLOCK - 1).min(len - 1), "{s:?}");
    }

    // Re-reading: zero origin bytes.
    check_ranges(&d, "v", &data, &ranges);
    assert_eq!(
        ng.settled_log().len(),
        log.len(),
        "re-reads went to the origin"
    );

    // The whole object: each byte came from the origin exactly once.
    let r = d.get("/videos/v", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == data, "whole body differs");
    let log = ng.settled_log();
    assert_each_range_once(&log);
    assert_eq!(
        bytes_of(&log),
        len,
        "every byte sent by the origin exactly once"
    );
    assert!(
        log.iter()
            .skip(1)
            .all(|s| s.if_range == Nginx::etag(1_600_000_000, len)),
        "fetches after the first carry If-Range with the learned ETag: {log:?}"
    );
    let r = d.get("/videos/v", &[]);
    assert!(r.body == data);
    check_ranges(&d, "v", &data, &ranges);
    assert_eq!(ng.settled_log().len(), log.len());

    // The operator's view: every fetch and byte counted, no failure, hits and misses by X-Cache.
    assert_eq!(d.metric("vcache_origin_fetched_bytes_total"), len);
    assert_eq!(d.metric("vcache_origin_fetches_total"), log.len() as u64);
    assert_eq!(d.metric("vcache_origin_fetch_failures_total"), 0);
    let hits = d.metric("vcache_cache_responses_total{status=\"hit\"}");
    let misses = d.metric("vcache_cache_responses_total{status=\"miss\"}");
    let partial = d.metric("vcache_cache_responses_total{status=\"partial\"}");
    assert!(hits >= 2 * ranges.len() as u64, "re-reads are hits: {hits}");
    assert!(misses >= 1, "cold reads waited for the origin: {misses}");
    assert_eq!(
        hits + misses + partial,
        3 * ranges.len() as u64 + 2,
        "every origin response counted once"
    );
}

#[test]
fn cached_ranges_survive_sigterm_and_kill9_with_zero_origin_bytes() {
    let dir = TestDir::new("origin-restart");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 700_001;
    let data = source(len, 12);
    ng.put("v.bin", &data, 1_600_000_000);
    let cfg = config("", "", &[("v", ng.url("/v.bin"), "64KiB")]);
    let mut rng = Rng(77);
    let first = random_ranges(&mut rng, len, 10);

    let mut d = Daemon::start(&dir.path, &cfg);
    check_ranges(&d, "v", &data, &first);
    let held = cached(&d, "v");
    let before = ng.settled_log().len();
    assert!(d.stop(Duration::from_secs(15)).success());

    let mut d = Daemon::start(&dir.path, &cfg);
    assert_eq!(cached(&d, "v"), held, "cached ranges after SIGTERM");
    check_ranges(&d, "v", &data, &first);
    for &(a, e) in &held {
        read_exact_range(&d, "v", &data, a, e - 1);
    }
    assert_eq!(
        ng.settled_log().len(),
        before,
        "reading cached ranges after SIGTERM went to the origin"
    );

    // More ranges, then kill -9 right after they were served.
    let second = random_ranges(&mut rng, len, 10);
    check_ranges(&d, "v", &data, &second);
    let held = cached(&d, "v");
    let before = ng.settled_log().len();
    d.kill9();

    let d = Daemon::start(&dir.path, &cfg);
    assert_eq!(cached(&d, "v"), held, "cached ranges after kill -9");
    check_ranges(&d, "v", &data, &first);
    check_ranges(&d, "v", &data, &second);
    for &(a, e) in &held {
        read_exact_range(&d, "v", &data, a, e - 1);
    }
    assert_eq!(
        ng.settled_log().len(),
        before,
        "reading cached ranges after kill -9 went to the origin"
    );
}

#[test]
fn with_the_origin_down_cached_ranges_are_206_and_uncached_502_or_504() {
    let dir = TestDir::new("origin-down");
    let Some(mut ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 500_000;
    let data = source(len, 13);
    ng.put("v.bin", &data, 1_600_000_000);
    // A stalling origin: block 0 is served, every other block never answered.
    let stall_data = source(4 * BLOCK, 14);
    let stalling = FakeOrigin::start(
        stall_data.clone(),
        Arc::new(|first, _| {
            if first == 0 {
                Answer::Serve
            } else {
                Answer::Stall
            }
        }),
    );
    // A listener that never accepts: connects (the kernel's backlog) but never answers.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_url = format!("http://127.0.0.1:{}/x", mute.local_addr().unwrap().port());
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_timeout_ms = 400",
            "read_wait_ms = 5000",
            &[
                ("v", ng.url("/v.bin"), "64KiB"),
                ("s", stalling.url("/s"), "64KiB"),
                ("m", mute_url, "64KiB"),
            ],
        ),
    );
    read_exact_range(&d, "v", &data, 1000, 150_000);
    read_exact_range(&d, "v", &data, 400_000, 499_999);
    ng.stop();

    read_exact_range(&d, "v", &data, 1000, 150_000);
    read_exact_range(&d, "v", &data, 0, 196_607);
    read_exact_range(&d, "v", &data, 393_216, 499_999);
    let r = d.get("/videos/v", &[("Range", "bytes=250000-250099")]);
    assert_eq!(
        r.status,
        502,
        "uncached with the origin refusing: {}",
        r.text()
    );
    // Cached bytes are still served after the failure.
    read_exact_range(&d, "v", &data, 0, 99);
    // A response that starts in cached bytes and runs into uncached ones is cut, never padded.
    let (status, _, body) = raw_get(&d, "/videos/v", "bytes=150000-250000");
    assert_eq!(status, 206);
    assert_eq!(
        body.len(),
        196_608 - 150_000,
        "served up to the end of the cached run"
    );
    assert!(body == data[150_000..196_608]);

    // A stalled origin: 504 for what it does not deliver, 206 for what it did.
    read_exact_range(&d, "s", &stall_data, 0, 999);
    let r = d.get("/videos/s", &[("Range", "bytes=200000-200099")]);
    assert_eq!(r.status, 504, "stalled fetch: {}", r.text());
    read_exact_range(&d, "s", &stall_data, 0, 999);
    let r = d.get("/videos/m", &[("Range", "bytes=0-99")]);
    assert_eq!(r.status, 504, "an origin that never answers: {}", r.text());
    assert_eq!(cached(&d, "s"), vec![(0, BLOCK)]);
    drop(mute);
}

#[test]
fn a_hundred_concurrent_cold_readers_cause_one_origin_fetch_per_block() {
    let dir = TestDir::new("origin-herd");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 400_000u64;
    let data = Arc::new(source(len, 15));
    ng.put("v.bin", &data, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.bin"), "64KiB")]),
    );
    let (a, b) = (100_000u64, 350_000u64);
    let barrier = Arc::new(Barrier::new(100));
    let addr = d.addr();
    let readers: Vec<_> = (0..100)
        .map(|_| {
            let (barrier, data) = (barrier.clone(), data.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = request(
                    addr,
                    "GET",
                    "/videos/v",
                    &[("Range", &format!("bytes={a}-{b}"))],
                    b"",
                );
                assert_eq!(r.status, 206, "{}", r.text());
                assert!(r.body == data[a as usize..=b as usize], "bytes differ");
            })
        })
        .collect();
    for r in readers {
        r.join().expect("a reader failed");
    }
    let log = ng.settled_log();
    assert_each_range_once(&log);
    let mut asked: Vec<String> = log.iter().map(|s| s.range.clone()).collect();
    asked.sort_by_key(|r| r[6..].split('-').next().unwrap().parse::<u64>().unwrap());
    // Blocks 1..=5 hold the range; the first of them teaches the length (block 0 is not fetched:
    // nobody reads it).
    let expected: Vec<String> = (1..6)
        .map(|k| format!("bytes={}-{}", k * BLOCK, k * BLOCK + BLOCK - 1))
        .collect();
    assert_eq!(asked, expected);
    assert_eq!(field(&d, "v", "origin_fetches"), 5);
}

#[test]
fn a_replaced_origin_object_is_forgotten_and_only_new_bytes_are_served() {
    let dir = TestDir::new("origin-replace");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 8 * BLOCK;
    let v1 = source(len, 16);
    let v2 = source(len, 17);
    ng.put("v.bin", &v1, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.bin"), "64KiB")]),
    );
    let r1 = d.get("/videos/v", &[("Range", "bytes=0-262143")]);
    assert_eq!(r1.status, 206);
    assert!(r1.body == v1[..262_144]);
    let served_tag = r1.header("ETag").unwrap().to_string();
    let entry = video_entry(&d, "v");
    assert!(
        entry.contains(&format!(
            "\"validator\":\"\\\"{:x}-{:x}\\\"\"",
            1_600_000_000u64, len
        )),
        "{entry}"
    );

    ng.put("v.bin", &v2, 1_700_000_000);
    // The first fetch after the change finds it (If-Range no longer matches: nginx answers 200) and
    // the reader gets the new object's bytes.
    let r = d.get("/videos/v", &[("Range", "bytes=400000-459999")]);
    assert_eq!(r.status, 206, "{}", r.text());
    assert!(
        r.body == v2[400_000..460_000],
        "bytes of block 6 after the change are not the new ones"
    );
    assert_ne!(
        r.header("ETag").unwrap(),
        served_tag,
        "a new object gets a new ETag"
    );
    // What was cached of the old object is gone: the same bytes now come from the new one.
    let r = d.get("/videos/v", &[("Range", "bytes=0-262143")]);
    assert_eq!(r.status, 206);
    assert!(r.body == v2[..262_144], "old bytes served after the change");
    let r = d.get("/videos/v", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == v2, "the whole object is not the new one");
    // A client that holds part of the old object and resumes with If-Range gets the whole new one.
    let r = d.get(
        "/videos/v",
        &[("Range", "bytes=262144-"), ("If-Range", &served_tag)],
    );
    assert_eq!(r.status, 200, "If-Range with the old object's ETag");
    assert!(r.body == v2);

    let log = ng.settled_log();
    assert!(
        log.iter()
            .any(|s| s.status == 200 && s.if_range == Nginx::etag(1_600_000_000, len)),
        "the change was found by If-Range: {log:?}"
    );
    let new_tag = Nginx::etag(1_700_000_000, len);
    assert!(video_entry(&d, "v").contains(&format!(
        "\"validator\":\"\\\"{:x}-{:x}\\\"\"",
        1_700_000_000u64, len
    )));
    // Fetches that were in flight with the old validator got 200s; once the change was handled,
    // every fetch asked for the new object (or, the first one, for whatever is there now).
    let old_tag = Nginx::etag(1_600_000_000, len);
    let changed = log.iter().position(|s| s.status == 200).unwrap();
    let relearned = changed
        + log[changed..]
            .iter()
            .position(|s| s.if_range != old_tag)
            .expect("a fetch after the change");
    for s in &log[relearned..] {
        assert_eq!(s.status, 206, "{s:?}");
        assert!(s.if_range.is_empty() || s.if_range == new_tag, "{s:?}");
    }
    assert!(log[relearned..].iter().any(|s| s.if_range == new_tag));
}

#[test]
fn a_replaced_origin_object_of_another_length_is_learned_anew() {
    let dir = TestDir::new("origin-relength");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let v1 = source(200_000, 18);
    let v2 = source(300_000, 19);
    ng.put("v.bin", &v1, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.bin"), "64KiB")]),
    );
    read_exact_range(&d, "v", &v1, 0, 999);
    read_exact_range(&d, "v", &v1, 150_000, 150_999);
    ng.put("v.bin", &v2, 1_700_000_000);
    // An uncached block of the old length: its fetch finds the new object.
    read_exact_range(&d, "v", &v2, 100_000, 109_999);
    assert_eq!(field(&d, "v", "length"), 300_000);
    read_exact_range(&d, "v", &v2, 0, 999);
    read_exact_range(&d, "v", &v2, 250_000, 299_999);
    let r = d.get("/videos/v", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body == v2);
}

#[test]
fn a_response_started_on_the_old_object_is_cut_never_mixed() {
    let dir = TestDir::new("origin-cut");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    const MIB: u64 = 1 << 20;
    let len = 32 * MIB;
    let v1 = source(len, 20);
    let v2 = source(len, 21);
    ng.put("v.bin", &v1, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.bin"), "1MiB")]),
    );
    // Learn, then warm all but the last block.
    read_exact_range(&d, "v", &v1, 0, 9);
    let r = request(
        d.addr(),
        "POST",
        "/videos/v/fill",
        &[AUTH, ("Range", &format!("bytes=0-{}", 31 * MIB - 1))],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until("the warm-up", Duration::from_secs(60), || {
        field(&d, "v", "present_bytes") == 31 * MIB
    });

    // A reader starts a long response on the old object and does not read yet.
    let mut a = TcpStream::connect(d.addr()).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    a.write_all(
        format!(
            "GET /videos/v HTTP/1.1\r\nHost: x\r\nRange: bytes=0-{}\r\nConnection: close\r\n\r\n",
            31 * MIB - 1
        )
        .as_bytes(),
    )
    .unwrap();
    let mut a = BufReader::new(a);
    let mut status = String::new();
    a.read_line(&mut status).unwrap();
    assert!(status.contains(" 206 "), "{status}");
    loop {
        let mut l = String::new();
        a.read_line(&mut l).unwrap();
        if l == "\r\n" {
            break;
        }
    }

    ng.put("v.bin", &v2, 1_700_000_000);
    read_exact_range(&d, "v", &v2, 31 * MIB, len - 1);
    // The new object is all cached before the old response goes on: nothing may splice it in.
    let r = request(d.addr(), "POST", "/videos/v/fill", &[AUTH], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until("the new object's warm-up", Duration::from_secs(60), || {
        field(&d, "v", "present_bytes") == len
    });

    // The old response ends early; every byte it carried is the old object's.
    let mut body = Vec::new();
    let _ = a.read_to_end(&mut body);
    assert!(
        (body.len() as u64) < 31 * MIB,
        "the response begun on the old object was not cut"
    );
    assert!(
        body == v1[..body.len()],
        "a response mixed bytes of two objects"
    );
    read_exact_range(&d, "v", &v2, 0, 999_999);
}

#[test]
fn a_slow_origin_does_not_hold_up_reads_of_cached_bytes() {
    let dir = TestDir::new("origin-slow");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 8 * BLOCK;
    let data = Arc::new(source(len, 22));
    ng.put("v.bin", &data, 1_600_000_000);
    // /slow/ sends ranges starting at 0 at full speed and every other at 4 KiB/s; one origin
    // connection, so the slow block holds the only one.
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_connections = 1",
            "read_wait_ms = 1500",
            &[("v", ng.url("/slow/v.bin"), "64KiB")],
        ),
    );
    read_exact_range(&d, "v", &data, 0, BLOCK - 1);
    let addr = d.addr();
    let slow_data = data.clone();
    let slow = std::thread::spawn(move || {
        let r = try_request(
            addr,
            "GET",
            "/videos/v",
            &[("Range", &format!("bytes={BLOCK}-{}", 2 * BLOCK - 1))],
            b"",
        );
        if let Ok(r) = r {
            assert!(r.body == slow_data[BLOCK as usize..2 * BLOCK as usize]);
        }
    });
    wait_until("the slow fetch to start", Duration::from_secs(10), || {
        field(&d, "v", "fetching_blocks") == 1 && field(&d, "v", "origin_bytes") > BLOCK
    });
    for i in 0..20 {
        let a = i * 3000;
        read_exact_range(&d, "v", &data, a, BLOCK - 1);
    }
    // The cached reads finished while the slow block is still on its way.
    assert_eq!(field(&d, "v", "fetching_blocks"), 1);
    assert!(field(&d, "v", "origin_bytes") < 2 * BLOCK);
    assert!(!slow.is_finished());
    // A reader of another block waits behind the slow one and gets 504 when read_wait_ms runs out.
    let r = d.get("/videos/v", &[("Range", "bytes=300000-300099")]);
    assert_eq!(r.status, 504, "{}", r.text());
    read_exact_range(&d, "v", &data, 10, 20);
    drop(d);
    let _ = slow.join();
}

#[test]
fn misbehaving_origins_give_502_or_504_and_cached_bytes_stay_servable() {
    let len = 6 * BLOCK;
    let data = source(len, 23);
    // Block 0 is served; each other block misbehaves the first time it is asked for, then is served.
    let origin = FakeOrigin::start(
        data.clone(),
        Arc::new(|first, nth| match (first / BLOCK, nth) {
            (0, _) | (_, 1..) => Answer::Serve,
            (1, _) => Answer::Status(500),
            (2, _) => Answer::Reset,
            (3, _) => Answer::Stall,
            (4, _) => Answer::WrongRange,
            _ => Answer::Status(404),
        }),
    );
    let dead = free_port(); // nothing listens there: connection refused
    let always500 = FakeOrigin::start(data.clone(), Arc::new(|_, _| Answer::Status(503)));
    let dir = TestDir::new("origin-bad");
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_timeout_ms = 300",
            "read_wait_ms = 5000",
            &[
                ("v", origin.url("/v"), "64KiB"),
                ("dead", format!("http://127.0.0.1:{dead}/x"), "64KiB"),
                ("bad", always500.url("/b"), "64KiB"),
            ],
        ),
    );
    read_exact_range(&d, "v", &data, 0, 99);
    for (block, status) in [(1, 502), (2, 502), (3, 504), (4, 502), (5, 502)] {
        let a = block * BLOCK + 10;
        let r = d.get("/videos/v", &[("Range", &format!("bytes={a}-{}", a + 99))]);
        assert_eq!(r.status, status, "block {block}: {}", r.text());
        read_exact_range(&d, "v", &data, 0, 99);
    }
    assert_eq!(
        cached(&d, "v"),
        vec![(0, BLOCK)],
        "a failed fetch claimed bytes"
    );
    // A new request retries a failed block.
    for block in 1..6 {
        read_exact_range(&d, "v", &data, block * BLOCK, block * BLOCK + 999);
    }
    assert_eq!(cached(&d, "v"), vec![(0, len)]);

    // Cold videos whose origin fails before the length is known.
    let r = d.get("/videos/dead", &[("Range", "bytes=0-9")]);
    assert_eq!(r.status, 502, "{}", r.text());
    let r = d.get("/videos/bad", &[]);
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(d.get("/healthz", &[]).status == 200);
}

#[test]
fn a_cut_origin_fetch_claims_only_the_bytes_that_arrived() {
    let len = 4 * BLOCK;
    let data = source(len, 24);
    let origin = FakeOrigin::start(
        data.clone(),
        Arc::new(|first, nth| match (first / BLOCK, nth) {
            (2, 0) => Answer::Short(10_000),
            (3, 0) => Answer::StallAfter(5_000),
            _ => Answer::Serve,
        }),
    );
    let dir = TestDir::new("origin-short");
    let mut d = Daemon::start(
        &dir.path,
        &config(
            "origin_timeout_ms = 300",
            "read_wait_ms = 5000",
            &[("v", origin.url("/v"), "64KiB")],
        ),
    );
    read_exact_range(&d, "v", &data, 0, 99);
    let b2 = 2 * BLOCK;
    let b3 = 3 * BLOCK;
    let (status, head, body) = raw_get(&d, "/videos/v", &format!("bytes={b2}-{}", b3 - 1));
    assert_eq!(status, 206, "{head}");
    assert!(head.contains(&format!("Content-Length: {BLOCK}")), "{head}");
    assert_eq!(
        body.len(),
        10_000,
        "a body cut short by the origin is cut short"
    );
    assert!(body == data[b2 as usize..b2 as usize + 10_000]);
    let (status, _, body) = raw_get(&d, "/videos/v", &format!("bytes={b3}-{}", len - 1));
    assert_eq!(status, 206);
    assert_eq!(
        body.len(),
        5_000,
        "a stalled body is cut after what arrived"
    );
    assert!(body == data[b3 as usize..b3 as usize + 5_000]);

    let expected = vec![(0, BLOCK), (b2, b2 + 10_000), (b3, b3 + 5_000)];
    assert_eq!(cached(&d, "v"), expected);
    let sent = origin.sent.load(Ordering::SeqCst);
    assert_eq!(sent, BLOCK + 15_000);
    assert_eq!(field(&d, "v", "origin_bytes"), sent);

    // The claims survive kill -9.
    let asked = origin.asked().len();
    d.kill9();
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_timeout_ms = 300",
            "read_wait_ms = 5000",
            &[("v", origin.url("/v"), "64KiB")],
        ),
    );
    assert_eq!(cached(&d, "v"), expected);
    // What arrived is served as it is; only the rest of each block is fetched, once.
    read_exact_range(&d, "v", &data, b2, b2 + 9_999);
    read_exact_range(&d, "v", &data, b3, b3 + 4_999);
    read_exact_range(&d, "v", &data, 0, len - 1);
    let mut later = origin.asked()[asked..].to_vec();
    later.sort();
    assert_eq!(
        later,
        vec![
            (BLOCK, 2 * BLOCK - 1),
            (b2 + 10_000, b3 - 1),
            (b3 + 5_000, len - 1)
        ]
    );
    assert_eq!(
        origin.sent.load(Ordering::SeqCst),
        len,
        "each byte sent once"
    );
}

#[test]
fn fill_warms_in_the_background_then_reads_cost_the_origin_nothing() {
    let dir = TestDir::new("origin-fill");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 600_000;
    let data = source(len, 25);
    let part = source(500_000, 26);
    ng.put("w.bin", &data, 1_600_000_000);
    ng.put("p.bin", &part, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_connections = 2",
            "",
            &[
                ("w", ng.url("/w.bin"), "64KiB"),
                ("p", ng.url("/p.bin"), "64KiB"),
            ],
        ),
    );
    let r = request(d.addr(), "POST", "/videos/w/fill", &[], b"");
    assert_eq!(r.status, 401, "fill needs the write token");
    let r = request(d.addr(), "POST", "/videos/w/fill", &[AUTH], b"");
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until(
        "the whole video to be warmed",
        Duration::from_secs(20),
        || field(&d, "w", "present_bytes") == len,
    );
    let log = ng.settled_log();
    assert_each_range_once(&log);
    assert_eq!(bytes_of(&log), len);
    let mut rng = Rng(5);
    check_ranges(&d, "w", &data, &random_ranges(&mut rng, len, 20));
    assert!(d.get("/videos/w", &[]).body == data);
    assert_eq!(
        ng.settled_log().len(),
        log.len(),
        "reads after the warm-up went to the origin"
    );

    // A ranged warm-up of a known object fetches the blocks of that range only.
    read_exact_range(&d, "p", &part, 0, 9);
    let r = request(
        d.addr(),
        "POST",
        "/videos/p/fill",
        &[AUTH, ("Range", "bytes=200000-299999")],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    wait_until("the ranged warm-up", Duration::from_secs(20), || {
        cached(&d, "p") == vec![(0, BLOCK), (3 * BLOCK, 5 * BLOCK)]
    });
    let mut after: Vec<String> = ng.settled_log()[log.len()..]
        .iter()
        .map(|s| s.range.clone())
        .collect();
    after.sort();
    let mut expected = vec![
        format!("bytes=0-{}", BLOCK - 1),
        format!("bytes={}-{}", 3 * BLOCK, 4 * BLOCK - 1),
        format!("bytes={}-{}", 4 * BLOCK, 5 * BLOCK - 1),
    ];
    expected.sort();
    assert_eq!(after, expected);
    // At most origin_connections connections to nginx, kept alive and reused.
    let log = ng.settled_log();
    let conns: BTreeSet<u64> = log.iter().map(|s| s.connection).collect();
    assert!(conns.len() <= 2, "nginx saw connections {conns:?}");
    assert!(log.len() > conns.len(), "connections were not reused");
}

#[test]
fn origin_connections_bound_concurrent_outbound_connections() {
    let len = 24 * BLOCK;
    let data = source(len, 27);
    let origin = FakeOrigin::start(data.clone(), Arc::new(|_, _| Answer::Delay(60)));
    let dir = TestDir::new("origin-conns");
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_connections = 3",
            "",
            &[("v", origin.url("/v"), "64KiB")],
        ),
    );
    read_exact_range(&d, "v", &data, 0, 9);
    // Readers and a warm-up want every block at once.
    let r = request(d.addr(), "POST", "/videos/v/fill", &[AUTH], b"");
    assert_eq!(r.status, 202);
    let addr = d.addr();
    let readers: Vec<_> = (0..8u64)
        .map(|k| {
            let data = data.clone();
            std::thread::spawn(move || {
                let (a, b) = (k * 3 * BLOCK, k * 3 * BLOCK + 3 * BLOCK - 1);
                let r = request(
                    addr,
                    "GET",
                    "/videos/v",
                    &[("Range", &format!("bytes={a}-{b}"))],
                    b"",
                );
                assert_eq!(r.status, 206);
                assert!(r.body == data[a as usize..=b as usize]);
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    wait_until("the warm-up", Duration::from_secs(20), || {
        field(&d, "v", "present_bytes") == len
    });
    let max = origin.max_open.load(Ordering::SeqCst);
    assert!(
        max <= 3,
        "{max} connections open at once with origin_connections = 3"
    );
    assert!(max >= 2, "fetches never ran in parallel (max {max})");
    let accepted = origin.accepted.load(Ordering::SeqCst);
    assert!(
        accepted < origin.asked().len(),
        "{accepted} connections for {} requests: none reused",
        origin.asked().len()
    );
    // Each block fetched once.
    let mut firsts: BTreeMap<u64, usize> = BTreeMap::new();
    for (f, _) in origin.asked() {
        *firsts.entry(f).or_default() += 1;
    }
    assert!(firsts.values().all(|&n| n == 1), "{firsts:?}");
}

#[test]
fn curl_reads_an_origin_video_through_vcache() {
    let Some(curl) = require_tool("curl") else {
        return;
    };
    let dir = TestDir::new("origin-curl");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 333_333;
    let data = source(len, 28);
    ng.put("v.mp4", &data, 1_600_000_000);
    let d = Daemon::start(
        &dir.path,
        &config("", "", &[("v", ng.url("/v.mp4"), "64KiB")]),
    );
    let out = dir.join("part");
    let st = Command::new(&curl)
        .args(["-sS", "-f", "-r", "1000-99999", "-o"])
        .arg(&out)
        .arg(d.url("/videos/v"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == data[1000..100_000]);
    let out = dir.join("whole");
    let st = Command::new(&curl)
        .args(["-sS", "-f", "-o"])
        .arg(&out)
        .arg(d.url("/videos/v"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == data);
    let sent = bytes_of(&ng.settled_log());
    assert_eq!(sent, len);
    // A resumed download (curl -C) of the cached object: no origin traffic.
    std::fs::write(&out, &data[..123_456]).unwrap();
    let st = Command::new(&curl)
        .args(["-sS", "-f", "-C", "-", "-o"])
        .arg(&out)
        .arg(d.url("/videos/v"))
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&out).unwrap() == data);
    assert_eq!(bytes_of(&ng.settled_log()), len);
}

#[test]
fn vcache_check_reports_cached_bytes_and_the_validator() {
    let dir = TestDir::new("origin-check");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len = 300_000;
    let data = source(len, 29);
    ng.put("v.bin", &data, 1_600_000_000);
    let url = ng.url("/v.bin");
    let cfg = config("", "", &[("v", url.clone(), "64KiB")]);
    let check = |path: &Path| {
        let out = Command::new(vcache_bin())
            .arg("check")
            .arg("--config")
            .arg(path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut d = Daemon::start(&dir.path, &cfg);
    let config_path = d.config_path.clone();
    d.stop(Duration::from_secs(15));
    let text = check(&config_path);
    assert!(
        text.contains(&format!(
            "v (origin): origin video at {url}, length not learned yet"
        )),
        "{text}"
    );
    let mut d = Daemon::start(&dir.path, &cfg);
    read_exact_range(&d, "v", &data, 0, 99);
    read_exact_range(&d, "v", &data, 200_000, 200_099);
    // The rest of each block may still be landing after the read returned: wait (bounded) for it.
    wait_until("both blocks to be present", Duration::from_secs(10), || {
        field(&d, "v", "present_bytes") >= 2 * BLOCK
    });
    let present = field(&d, "v", "present_bytes");
    assert_eq!(present, 2 * BLOCK);
    assert!(d.stop(Duration::from_secs(15)).success());
    let text = check(&config_path);
    assert!(
        text.contains(&format!(
            "v (origin): origin video at {url}, {len} bytes, {present} cached in 2 ranges ({} on disk), validator known ({})",
            2 * BLOCK,
            Nginx::etag(1_600_000_000, len)
        )),
        "{text}"
    );
}

/// The ETag, Last-Modified and If-Range answer of `id` on `d` for the first byte.
fn validators_of(d: &Daemon, id: &str) -> (String, String) {
    let r = d.get(&format!("/videos/{id}"), &[("Range", "bytes=0-0")]);
    assert_eq!(r.status, 206, "{}", r.text());
    let etag = r.header("ETag").expect("an ETag").to_string();
    let lm = r
        .header("Last-Modified")
        .expect("a Last-Modified")
        .to_string();
    (etag, lm)
}

/// GET bytes 1000-1999 of `id` with `If-Range: if_range`: the status.
fn resume(d: &Daemon, id: &str, if_range: &str) -> u16 {
    let r = d.get(
        &format!("/videos/{id}"),
        &[("Range", "bytes=1000-1999"), ("If-Range", if_range)],
    );
    r.status
}

#[test]
fn origin_videos_answer_with_the_origins_validators_on_every_node_and_after_restarts() {
    let dir = TestDir::new("origin-validators");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let data = source(300_001, 21);
    let mtime = 1_650_000_000;
    ng.put("v.bin", &data, mtime);
    let etag = Nginx::etag(mtime, data.len() as u64);
    let lm = "Fri, 15 Apr 2022 05:20:00 GMT"; // mtime as an HTTP-date
    let videos = [
        ("v", ng.url("/v.bin"), "64KiB"),
        ("w", ng.url("/noetag/v.bin"), "64KiB"),
    ];
    let cfg = config("", "", &videos);
    // Two nodes (two data directories) caching the same objects.
    let (a_dir, b_dir) = (dir.path.join("a"), dir.path.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut a = Daemon::start(&a_dir, &cfg);
    let b = Daemon::start(&b_dir, &cfg);

    assert_eq!(validators_of(&a, "v"), (etag.clone(), lm.to_string()));
    assert_eq!(validators_of(&b, "v"), (etag.clone(), lm.to_string()));
    // A client resuming on another node with the first node's ETag gets the rest, not the whole.
    assert_eq!(resume(&b, "v", &etag), 206);
    assert_eq!(resume(&b, "v", "\"other\""), 200);

    // Without an ETag from the origin: the origin's Last-Modified, and a weak ETag equal on both nodes
    // (weak: it cannot validate a range, so If-Range works by the date).
    let (wa, wlm) = validators_of(&a, "w");
    assert_eq!(wlm, lm);
    assert!(wa.starts_with("W/\""), "weak ETag {wa}");
    assert_eq!(validators_of(&b, "w"), (wa.clone(), lm.to_string()));
    assert_eq!(resume(&b, "w", lm), 206);
    assert_eq!(resume(&b, "w", &wa), 200);

    // The origin's Last-Modified is kept across a kill -9 (fast records) and a SIGTERM restart.
    read_exact_range(&a, "v", &data, 100_000, 200_000);
    a.kill9();
    let mut a = Daemon::start(&a_dir, &cfg);
    assert_eq!(validators_of(&a, "v"), (etag.clone(), lm.to_string()));
    assert_eq!(validators_of(&a, "w"), (wa.clone(), lm.to_string()));
    assert!(a.stop(Duration::from_secs(15)).success());
    let a = Daemon::start(&a_dir, &cfg);
    assert_eq!(validators_of(&a, "v"), (etag, lm.to_string()));
    assert_eq!(validators_of(&a, "w"), (wa, lm.to_string()));
}

#[test]
fn a_node_fills_from_its_peer_before_the_origin_and_a_peer_answers_from_its_cache_only() {
    let dir = TestDir::new("origin-peers");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let len: u64 = 600_001;
    let data = source(len, 33);
    ng.put("v.bin", &data, 1_600_000_000);
    ng.put("w.bin", &data[..100_000], 1_600_000_000);
    let videos = [
        ("v", ng.url("/v.bin"), "64KiB"),
        ("w", ng.url("/w.bin"), "64KiB"),
    ];
    let (a_dir, b_dir) = (dir.path.join("a"), dir.path.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut a = Daemon::start(&a_dir, &config("", "", &videos));
    // A holds blocks 0..=4 and 9 of v (64 KiB blocks: bytes 0..327680 and 589824..600001).
    read_exact_range(&a, "v", &data, 0, 299_999);
    read_exact_range(&a, "v", &data, len - 1000, len - 1);
    let held = field(&a, "v", "present_bytes");
    assert_eq!(held, 5 * 65_536 + (len - 9 * 65_536));
    let origin = bytes_of(&ng.settled_log());

    // B's tier: A and itself (B's own address is never asked).
    let cluster = format!(
        "\n[cluster]\nself = \"http://127.0.0.1:1\"\npeers = [\"http://{}\", \"http://127.0.0.1:1\"]\n",
        a.addr()
    );
    let b = Daemon::start(&b_dir, &(config("", "", &videos) + &cluster));
    read_exact_range(&b, "v", &data, 0, 299_999);
    assert_eq!(
        bytes_of(&ng.settled_log()),
        origin,
        "bytes A holds went to the origin"
    );
    // Blocks 5..=8: A lacks them (504 to B's peer requests), so B gets them from the origin, and A,
    // which only answered from its cache, holds no more than before.
    read_exact_range(&b, "v", &data, 300_000, 9 * 65_536 - 1);
    assert_eq!(bytes_of(&ng.settled_log()), origin + 4 * 65_536);
    assert_eq!(field(&a, "v", "present_bytes"), held);
    // A's misses did not make B stop asking it: block 9 comes from A.
    read_exact_range(&b, "v", &data, 0, len - 1);
    assert_eq!(bytes_of(&ng.settled_log()), origin + 4 * 65_536);
    assert_eq!(field(&b, "v", "present_bytes"), len);

    // A peer request is never forwarded: missing bytes, another object (If-Range) or an unknown length
    // get 504 and cost the origin nothing.
    let peer = ("X-Vcache-Peer", "1");
    let r = a.get("/videos/v", &[("Range", "bytes=400000-400099"), peer]);
    assert_eq!(r.status, 504, "{}", r.text());
    let r = a.get(
        "/videos/v",
        &[("Range", "bytes=0-99"), ("If-Range", "\"other\""), peer],
    );
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(
        a.get("/videos/w", &[("Range", "bytes=0-99"), peer]).status,
        504
    );
    let r = a.get("/videos/v", &[("Range", "bytes=0-99"), peer]);
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("X-Vcache-Validator"),
        Some(Nginx::etag(1_600_000_000, len).as_str())
    );
    assert_eq!(bytes_of(&ng.settled_log()), origin + 4 * 65_536);

    // With A gone, B fetches from the origin.
    a.kill9();
    read_exact_range(&b, "w", &data[..100_000], 0, 99_999);
    assert_eq!(bytes_of(&ng.settled_log()), origin + 4 * 65_536 + 100_000);
}

#[test]
fn with_a_read_token_a_node_still_fills_from_its_peer() {
    let dir = TestDir::new("origin-peer-token");
    let Some(ng) = Nginx::start(&dir.path) else {
        return;
    };
    let data = source(200_000, 34);
    ng.put("v.bin", &data, 1_600_000_000);
    let videos = [("v", ng.url("/v.bin"), "64KiB")];
    let server = "read_token = \"r\"";
    let auth = ("Authorization", "Bearer r");
    let (a_dir, b_dir) = (dir.path.join("a"), dir.path.join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();
    let a = Daemon::start(&a_dir, &config(server, "", &videos));
    assert_eq!(a.get("/videos/v", &[]).status, 401);
    assert_eq!(a.get("/videos/v", &[auth]).body, data);
    let origin = bytes_of(&ng.settled_log());
    let cluster = format!(
        "\n[cluster]\nself = \"http://127.0.0.1:1\"\npeers = [\"http://{}\"]\n",
        a.addr()
    );
    let b = Daemon::start(&b_dir, &(config(server, "", &videos) + &cluster));
    let r = b.get("/videos/v", &[auth]);
    assert_eq!((r.status, r.body == data), (200, true));
    assert_eq!(bytes_of(&ng.settled_log()), origin, "B went to the origin");
}

#[test]
fn a_readers_blocks_are_fetched_in_the_order_it_reads_them() {
    let dir = TestDir::new("origin-order");
    let len = 40 * BLOCK;
    let data = source(len, 23);
    let origin = FakeOrigin::start(data.clone(), Arc::new(|_, _| Answer::Serve));
    // One origin connection: the origin sees the fetches in the order they start.
    let d = Daemon::start(
        &dir.path,
        &config(
            "origin_connections = 1",
            "",
            &[("v", origin.url("/v.bin"), "64KiB")],
        ),
    );
    read_exact_range(&d, "v", &data, 0, 99);
    let (first, last) = (5 * BLOCK + 100, 7 * BLOCK + 100);
    read_exact_range(&d, "v", &data, first, last);
    let blocks: Vec<u64> = origin
        .asked()
        .iter()
        .skip(1)
        .map(|(f, _)| f / BLOCK)
        .collect();
    assert!(
        blocks.len() >= 3 && blocks[..3] == [5, 6, 7],
        "the range's blocks first, in order (allocated together, they used to start newest first): {blocks:?}"
    );
    assert!(
        blocks.windows(2).all(|w| w[0] < w[1]),
        "read-ahead blocks follow in order: {blocks:?}"
    );
}

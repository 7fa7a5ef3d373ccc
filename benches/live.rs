//! Live fan-out benchmark: one publisher pushes a chunked `PUT /videos/ch1` at a fixed rate while N
//! followers (`GET /videos/ch1`, default 1,000) read the chunked stream over loopback. Every 1316-byte
//! block (7 TS packets) starts with a stamp — magic, nanoseconds since a shared origin when the
//! publisher wrote it, block number — so each follower measures the delay from ingest to delivery and
//! checks that it got every block, in order. Printed per ingest rate: followers, achieved ingest rate,
//! delivered bytes per second (all followers together), delay median / p99 / max, and incomplete
//! followers (those without every byte and the clean end within 15 s of the publisher's end: dropped
//! by the server, or still behind), with vcache's own `vcache_followers_dropped_total`. The delay runs
//! from the publisher's write call, so a server that back-pressures the publisher shows it there and
//! in the achieved ingest rate.
//! The reference in the same run: the same publisher, followers and bytes through a trivial in-process
//! fan-out (one thread, mio, forwarding the PUT body as-is to every follower), and the single-stream
//! loopback throughput. Run: `cargo bench --bench live`. Environment: BENCH_SECS (default 5),
//! BENCH_FOLLOWERS (1000), BENCH_RATES (ingest MB/s, 10^6 bytes, comma-separated; default "1,4,50":
//! an 8 Mbit/s stream, a 32 Mbit/s one, and an overload far past the loopback ceiling),
//! BENCH_READERS (follower threads, default 2), BENCH_TICK_MS (publisher write period, default 2),
//! BENCH_CAPACITY (ring capacity, default "256MiB"), BENCH_SERVERS (default "fanout,vcache").

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};

/// Bytes per stamped block: 7 MPEG-TS packets, a common UDP/RTP payload.
const BLOCK: u64 = 1316;
/// Stamp at the start of each block: magic (8), send time in ns since the origin (8), block number (8).
const STAMP: usize = 24;
const MAGIC: [u8; 8] = *b"\x47VCLIVE!";
/// How long followers may take to catch up after the publisher ends before they count as stalled.
const CATCH_UP: Duration = Duration::from_secs(15);

struct Killer(Child);
impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Log-linear histogram of nanoseconds: exact below 1024, then 512 buckets per power of two (<0.2%).
struct Hist {
    buckets: Vec<u64>,
    count: u64,
    max: u64,
}

impl Hist {
    fn new() -> Hist {
        Hist {
            buckets: vec![0; 1024 + 55 * 512],
            count: 0,
            max: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < 1024 {
            return v as usize;
        }
        let msb = 63 - v.leading_zeros() as u64;
        let shift = msb - 9;
        let mant = v >> shift;
        (1024 + (shift - 1) * 512 + (mant - 512)) as usize
    }

    fn lower_bound(i: usize) -> u64 {
        if i < 1024 {
            return i as u64;
        }
        let shift = ((i - 1024) / 512 + 1) as u64;
        let mant = ((i - 1024) % 512 + 512) as u64;
        mant << shift
    }

    fn add(&mut self, v: u64) {
        self.buckets[Self::index(v)] += 1;
        self.count += 1;
        self.max = self.max.max(v);
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
            *a += b;
        }
        self.count += o.count;
        self.max = self.max.max(o.max);
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 - 1.0) * q) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen > rank {
                return Self::lower_bound(i);
            }
        }
        self.max
    }
}

/// What the follower threads and the main thread share.
struct Shared {
    origin: Instant,
    port: u16,
    /// Followers whose 200 head arrived (they are registered at the live edge).
    heads_ok: AtomicUsize,
    /// Followers that failed before or at the head.
    heads_failed: AtomicUsize,
    /// Payload bytes received by all followers so far.
    delivered: AtomicU64,
    /// Nanoseconds since origin after which unfinished followers count as stalled.
    deadline_ns: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

#[derive(Debug, PartialEq)]
enum Phase {
    Head,
    Size,
    Data,
    DataCrlf(u8),
    Trailer,
    Done,
    Failed,
}

/// One follower connection and its chunked-stream parser.
struct Follower {
    index: usize,
    stream: Option<MioStream>,
    phase: Phase,
    head: Vec<u8>,
    line: Vec<u8>,
    chunk_left: u64,
    /// Absolute channel offset of the next payload byte (from X-Live-Start).
    offset: u64,
    stamp: [u8; STAMP],
    payload: u64,
    trailer: Vec<String>,
    error: Option<String>,
    bad_stamps: u64,
    first_bad: Option<String>,
}

impl Follower {
    fn fail(&mut self, why: String) {
        if self.error.is_none() {
            self.error = Some(why);
        }
        self.phase = Phase::Failed;
    }

    fn on_payload(&mut self, s: &[u8], now: u64, hist: &mut Hist) {
        let mut i = 0;
        while i < s.len() {
            let pos = (self.offset % BLOCK) as usize;
            if pos < STAMP {
                let take = (STAMP - pos).min(s.len() - i);
                self.stamp[pos..pos + take].copy_from_slice(&s[i..i + take]);
                i += take;
                self.offset += take as u64;
                if pos + take == STAMP {
                    let sent = u64::from_le_bytes(self.stamp[8..16].try_into().unwrap());
                    let seq = u64::from_le_bytes(self.stamp[16..24].try_into().unwrap());
                    let want = (self.offset - STAMP as u64) / BLOCK;
                    if self.stamp[..8] != MAGIC || seq != want {
                        self.bad_stamps += 1;
                        if self.first_bad.is_none() {
                            self.first_bad = Some(format!(
                                "block {want} at offset {}: stamp {:02x?}",
                                self.offset - STAMP as u64,
                                &self.stamp
                            ));
                        }
                    } else {
                        hist.add(now.saturating_sub(sent));
                    }
                }
            } else {
                let skip = (BLOCK as usize - pos).min(s.len() - i);
                i += skip;
                self.offset += skip as u64;
            }
        }
        self.payload += s.len() as u64;
    }

    /// Feed bytes from the socket through the response parser.
    fn on_bytes(&mut self, mut d: &[u8], now: u64, hist: &mut Hist, shared: &Shared) {
        while !d.is_empty() {
            match self.phase {
                Phase::Head => {
                    let from = self.head.len().saturating_sub(3);
                    let take = d.len().min(16384 - self.head.len().min(16384));
                    self.head.extend_from_slice(&d[..take]);
                    let Some(end) = find(&self.head[from..], b"\r\n\r\n").map(|p| p + from + 4)
                    else {
                        if self.head.len() >= 16384 {
                            self.fail("response head over 16 KiB".into());
                            shared.heads_failed.fetch_add(1, Ordering::Relaxed);
                        }
                        d = &d[take..];
                        continue;
                    };
                    // Bytes past the head go back to the stream.
                    let extra = self.head.len() - end;
                    d = &d[take - extra..];
                    self.head.truncate(end);
                    let text = String::from_utf8_lossy(&self.head).to_ascii_lowercase();
                    let status = text.lines().next().unwrap_or("").to_string();
                    if !status.starts_with("http/1.1 200") || !text.contains("chunked") {
                        self.fail(format!("response: {status}"));
                        shared.heads_failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                    self.offset = text
                        .lines()
                        .find_map(|l| l.strip_prefix("x-live-start:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    self.phase = Phase::Size;
                    shared.heads_ok.fetch_add(1, Ordering::Relaxed);
                }
                Phase::Size | Phase::Trailer => {
                    let (line_end, done) = match d.iter().position(|&b| b == b'\n') {
                        Some(p) => (p + 1, true),
                        None => (d.len(), false),
                    };
                    self.line.extend_from_slice(&d[..line_end]);
                    d = &d[line_end..];
                    if self.line.len() > 4096 {
                        self.fail("chunk line over 4 KiB".into());
                        return;
                    }
                    if !done {
                        continue;
                    }
                    let line = String::from_utf8_lossy(&self.line).trim().to_string();
                    self.line.clear();
                    if self.phase == Phase::Trailer {
                        if line.is_empty() {
                            self.phase = Phase::Done;
                        } else {
                            self.trailer.push(line);
                        }
                        continue;
                    }
                    let hex = line.split(';').next().unwrap_or("").trim();
                    match u64::from_str_radix(hex, 16) {
                        Ok(0) => self.phase = Phase::Trailer,
                        Ok(n) => {
                            self.chunk_left = n;
                            self.phase = Phase::Data;
                        }
                        Err(_) => {
                            self.fail(format!("bad chunk size line {line:?}"));
                            return;
                        }
                    }
                }
                Phase::Data => {
                    let n = (self.chunk_left.min(d.len() as u64)) as usize;
                    self.on_payload(&d[..n], now, hist);
                    shared.delivered.fetch_add(n as u64, Ordering::Relaxed);
                    self.chunk_left -= n as u64;
                    d = &d[n..];
                    if self.chunk_left == 0 {
                        self.phase = Phase::DataCrlf(0);
                    }
                }
                Phase::DataCrlf(k) => {
                    let want = b"\r\n"[k as usize];
                    if d[0] != want {
                        self.fail(format!("no CRLF after a chunk at offset {}", self.offset));
                        return;
                    }
                    d = &d[1..];
                    self.phase = if k == 0 {
                        Phase::DataCrlf(1)
                    } else {
                        Phase::Size
                    };
                }
                Phase::Done | Phase::Failed => return,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// How a follower ended.
struct Outcome {
    index: usize,
    payload: u64,
    /// None: the stream ended with the last chunk and no error trailer.
    problem: Option<String>,
    bad_stamps: u64,
    first_bad: Option<String>,
}

struct ReaderResult {
    hist: Hist,
    outcomes: Vec<Outcome>,
    last_done_ns: u64,
}

/// One follower thread: connects `count` followers (indices from `first`), then reads them all with
/// mio until each has finished or failed, or the deadline passes.
fn reader(shared: Arc<Shared>, path: String, first: usize, count: usize) -> ReaderResult {
    let mut poll = Poll::new().expect("poll");
    let mut followers: Vec<Follower> = Vec::with_capacity(count);
    let mut active = 0;
    for k in 0..count {
        let mut f = Follower {
            index: first + k,
            stream: None,
            phase: Phase::Head,
            head: Vec::new(),
            line: Vec::new(),
            chunk_left: 0,
            offset: 0,
            stamp: [0; STAMP],
            payload: 0,
            trailer: Vec::new(),
            error: None,
            bad_stamps: 0,
            first_bad: None,
        };
        let req = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        let connected = TcpStream::connect(("127.0.0.1", shared.port)).and_then(|mut s| {
            s.write_all(req.as_bytes())?;
            s.set_nonblocking(true)?;
            Ok(s)
        });
        match connected {
            Ok(s) => {
                let mut s = MioStream::from_std(s);
                poll.registry()
                    .register(&mut s, Token(k), Interest::READABLE)
                    .expect("register");
                f.stream = Some(s);
                active += 1;
            }
            Err(e) => {
                f.fail(format!("connect: {e}"));
                shared.heads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        followers.push(f);
    }
    let mut hist = Hist::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    let mut last_done_ns = 0;
    while active > 0 {
        if shared.now_ns() > shared.deadline_ns.load(Ordering::Relaxed) {
            break;
        }
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            panic!("poll: {e}");
        }
        for ev in events.iter() {
            let f = &mut followers[ev.token().0];
            while let Some(s) = f.stream.as_mut() {
                match s.read(&mut buf) {
                    Ok(0) => {
                        if f.phase != Phase::Done {
                            let why = format!(
                                "closed by the server at offset {} (phase {:?}, trailer {:?})",
                                f.offset, f.phase, f.trailer
                            );
                            if f.phase == Phase::Head {
                                shared.heads_failed.fetch_add(1, Ordering::Relaxed);
                            }
                            f.fail(why);
                        }
                    }
                    Ok(n) => {
                        let now = shared.now_ns();
                        f.on_bytes(&buf[..n], now, &mut hist, &shared);
                        if f.phase != Phase::Done && f.phase != Phase::Failed {
                            continue;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => {
                        let why = format!("read error at offset {}: {e}", f.offset);
                        if f.phase == Phase::Head {
                            shared.heads_failed.fetch_add(1, Ordering::Relaxed);
                        }
                        f.fail(why);
                    }
                }
                // Done or failed: close this follower.
                if f.phase == Phase::Done {
                    last_done_ns = last_done_ns.max(shared.now_ns());
                }
                if let Some(mut s) = f.stream.take() {
                    let _ = poll.registry().deregister(&mut s);
                    active -= 1;
                }
                break;
            }
        }
    }
    let outcomes = followers
        .into_iter()
        .map(|f| {
            let problem = match (&f.phase, f.trailer.is_empty()) {
                (Phase::Done, true) => None,
                (Phase::Done, false) => Some(format!(
                    "ended at offset {} with trailer {:?}",
                    f.offset, f.trailer
                )),
                (Phase::Failed, _) => f.error.clone(),
                (p, _) => Some(format!(
                    "stalled: no end {} s after the publisher ended, at offset {} (phase {p:?})",
                    CATCH_UP.as_secs(),
                    f.offset
                )),
            };
            Outcome {
                index: f.index,
                payload: f.payload,
                problem,
                bad_stamps: f.bad_stamps,
                first_bad: f.first_bad,
            }
        })
        .collect();
    ReaderResult {
        hist,
        outcomes,
        last_done_ns,
    }
}

struct Published {
    bytes: u64,
    start_ns: u64,
    end_ns: u64,
    response: String,
}

/// The publisher: a chunked PUT, one chunk of whole stamped blocks every `tick` at `rate` bytes/s.
fn publish(shared: &Shared, path: &str, rate: f64, secs: f64, tick: Duration) -> Published {
    let mut s = match TcpStream::connect(("127.0.0.1", shared.port)) {
        Ok(s) => s,
        Err(e) => {
            let now = shared.now_ns();
            return Published {
                bytes: 0,
                start_ns: now,
                end_ns: now + 1,
                response: format!("publisher connect failed: {e}"),
            };
        }
    };
    s.set_nodelay(true).ok();
    let head = format!(
        "PUT {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer t\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let _ = s.write_all(head.as_bytes()); // a failure shows at the first chunk
    // Filler: the same pseudo-random bytes after every stamp.
    let mut filler = vec![0u8; BLOCK as usize];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for b in filler.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let t0 = Instant::now();
    let start_ns = shared.now_ns();
    let mut seq = 0u64;
    let mut out = Vec::new();
    let max_blocks = ((rate * 0.1) as u64 / BLOCK).max(1);
    loop {
        let elapsed = t0.elapsed().as_secs_f64();
        if elapsed >= secs {
            break;
        }
        let due = ((elapsed * rate) as u64 / BLOCK).saturating_sub(seq);
        let blocks = due.min(max_blocks);
        if blocks > 0 {
            out.clear();
            let len = blocks * BLOCK;
            out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
            let now = shared.now_ns();
            for _ in 0..blocks {
                let at = out.len();
                out.extend_from_slice(&filler);
                out[at..at + 8].copy_from_slice(&MAGIC);
                out[at + 8..at + 16].copy_from_slice(&now.to_le_bytes());
                out[at + 16..at + 24].copy_from_slice(&seq.to_le_bytes());
                seq += 1;
            }
            out.extend_from_slice(b"\r\n");
            if let Err(e) = s.write_all(&out) {
                return Published {
                    bytes: (seq - blocks) * BLOCK,
                    start_ns,
                    end_ns: shared.now_ns(),
                    response: format!("publisher write failed: {e}"),
                };
            }
        }
        let next = Duration::from_secs_f64(elapsed) + tick;
        let spent = t0.elapsed();
        if next > spent {
            std::thread::sleep(next - spent);
        }
    }
    let end_ns = shared.now_ns();
    let _ = s.write_all(b"0\r\n\r\n");
    // The server's answer to the PUT.
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut resp = Vec::new();
    let mut b = [0u8; 4096];
    while !resp.windows(2).any(|w| w == b"\r\n") {
        match s.read(&mut b) {
            Ok(0) | Err(_) => break,
            Ok(n) => resp.extend_from_slice(&b[..n]),
        }
    }
    let response = String::from_utf8_lossy(&resp)
        .lines()
        .next()
        .unwrap_or("(none)")
        .to_string();
    Published {
        bytes: seq * BLOCK,
        start_ns,
        end_ns,
        response,
    }
}

/// One row: followers connect, all heads arrive, the publisher runs, followers catch up.
fn run_row(
    port: u16,
    followers: usize,
    readers: usize,
    rate: f64,
    secs: f64,
    tick: Duration,
) -> Row {
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        port,
        heads_ok: AtomicUsize::new(0),
        heads_failed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        deadline_ns: AtomicU64::new(u64::MAX),
    });
    let path = "/videos/ch1".to_string();
    let mut handles = Vec::new();
    let per = followers.div_ceil(readers);
    for r in 0..readers {
        let first = r * per;
        let count = per.min(followers.saturating_sub(first));
        let shared = shared.clone();
        let path = path.clone();
        handles.push(std::thread::spawn(move || {
            reader(shared, path, first, count)
        }));
    }
    // Bounded wait: every follower is registered at the live edge before the first byte.
    let t = Instant::now();
    while shared.heads_ok.load(Ordering::Relaxed) + shared.heads_failed.load(Ordering::Relaxed)
        < followers
        && t.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let ready = shared.heads_ok.load(Ordering::Relaxed);
    let d0 = shared.delivered.load(Ordering::Relaxed);
    let p = publish(&shared, &path, rate, secs, tick);
    let d1 = shared.delivered.load(Ordering::Relaxed);
    let window = (p.end_ns - p.start_ns) as f64 / 1e9;
    shared.deadline_ns.store(
        shared.now_ns() + CATCH_UP.as_nanos() as u64,
        Ordering::Relaxed,
    );
    let mut hist = Hist::new();
    let mut outcomes = Vec::new();
    let mut last_done_ns = 0;
    for h in handles {
        let r = h.join().expect("reader thread");
        hist.merge(&r.hist);
        outcomes.extend(r.outcomes);
        last_done_ns = last_done_ns.max(r.last_done_ns);
    }
    outcomes.sort_by_key(|o| o.index);
    Row {
        followers,
        ready,
        published: p.bytes,
        ingest: p.bytes as f64 / window,
        delivered_rate: (d1 - d0) as f64 / window,
        delivered_total: outcomes.iter().map(|o| o.payload).sum(),
        catch_up: if last_done_ns > p.end_ns {
            (last_done_ns - p.end_ns) as f64 / 1e9
        } else {
            0.0
        },
        hist,
        outcomes,
        response: p.response,
    }
}

struct Row {
    followers: usize,
    ready: usize,
    published: u64,
    ingest: f64,
    delivered_rate: f64,
    delivered_total: u64,
    catch_up: f64,
    hist: Hist,
    outcomes: Vec<Outcome>,
    response: String,
}

impl Row {
    fn print(&self, name: &str) {
        let mb = |b: f64| b / 1e6;
        let us = |ns: u64| ns as f64 / 1e3;
        let incomplete: Vec<&Outcome> = self
            .outcomes
            .iter()
            .filter(|o| o.problem.is_some() || o.payload != self.published)
            .collect();
        let bad: u64 = self.outcomes.iter().map(|o| o.bad_stamps).sum();
        println!(
            "{name:<24} {:>5} followers  ingest {:>6.2} MB/s  delivered {:>8.1} MB/s ({:>5.1}% of followers x ingest)  \
             delay p50 {:>8.1} us  p99 {:>9.1} us  max {:>9.1} us  incomplete {}  bad blocks {}  catch-up {:.2} s",
            self.followers,
            mb(self.ingest),
            mb(self.delivered_rate),
            100.0 * self.delivered_rate / (self.ingest * self.followers as f64).max(1.0),
            us(self.hist.quantile(0.5)),
            us(self.hist.quantile(0.99)),
            us(self.hist.max),
            incomplete.len(),
            bad,
            self.catch_up,
        );
        let expected = self.published as f64 * self.followers as f64;
        println!(
            "{:<24} ready {} of {}, {} delay samples, {:.1} MB published, {:.1}% of it delivered to every follower in total, PUT answer: {}",
            "",
            self.ready,
            self.followers,
            self.hist.count,
            mb(self.published as f64),
            100.0 * self.delivered_total as f64 / expected.max(1.0),
            self.response
        );
        for o in incomplete.iter().take(5) {
            println!(
                "{:<24}   follower {}: {} bytes of {}: {}",
                "",
                o.index,
                o.payload,
                self.published,
                o.problem
                    .as_deref()
                    .unwrap_or("ended cleanly with bytes missing")
            );
        }
        if incomplete.len() > 5 {
            println!("{:<24}   ... and {} more", "", incomplete.len() - 5);
        }
        if let Some(o) = self.outcomes.iter().find(|o| o.first_bad.is_some()) {
            println!(
                "{:<24}   follower {}: first bad block: {}",
                "",
                o.index,
                o.first_bad.as_deref().unwrap_or("")
            );
        }
    }
}

fn start_vcache(dir: &Path, tag: &str, followers: usize, capacity: &str) -> (Killer, u16) {
    let port = free_port();
    let cfg = dir.join(format!("vcache-{tag}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"data-{tag}\"\nwrite_token = \"t\"\n\n\
             [limits]\nmax_followers = {}\nmax_connections = {}\n\n\
             [[video]]\nid = \"ch1\"\nkind = \"live\"\ncapacity = \"{capacity}\"\ncontent_type = \"video/mp2t\"\n",
            followers + 16,
            followers + 64
        ),
    )
    .expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_vcache"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join(format!("vcache-{tag}.log"))).expect("log file"),
        ))
        .spawn()
        .expect("spawn vcache");
    wait_port(port);
    (Killer(child), port)
}

/// `vcache_followers_dropped_total` from /metrics.
fn metric(port: u16, name: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return "?".into();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

/// The reference fan-out: one thread, mio, the first `PUT` connection's body bytes forwarded as they
/// arrive — chunk framing included — to every `GET` connection after a fixed 200 head. No parsing,
/// no storage, an unbounded backlog per follower: what a single thread can push through loopback.
fn fanout_server(listener: TcpListener, stop: Arc<AtomicBool>) {
    enum Kind {
        New(Vec<u8>),
        Follower { pos: u64, blocked: bool },
        Ingest,
    }
    struct Conn {
        s: MioStream,
        kind: Kind,
    }
    const LISTENER: Token = Token(usize::MAX);
    listener.set_nonblocking(true).expect("nonblocking");
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new().expect("poll");
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
        .expect("register");
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut log: Vec<u8> = Vec::new();
    let mut base = 0u64; // offset of log[0]
    let mut ended = false;
    let mut tail: Vec<u8> = Vec::new(); // the last 7 body bytes: the end is "\r\n0\r\n\r\n"
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 256 * 1024];
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\nX-Live-Start: 0\r\n\r\n";

    fn push(c: &mut Conn, log: &[u8], base: u64) -> bool {
        let Kind::Follower { pos, blocked } = &mut c.kind else {
            return true;
        };
        while !*blocked && *pos < base + log.len() as u64 {
            match c.s.write(&log[(*pos - base) as usize..]) {
                Ok(n) => *pos += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => *blocked = true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    while !stop.load(Ordering::Relaxed) {
        if ended
            && !conns.iter().any(|c| {
                matches!(
                    c,
                    Some(Conn {
                        kind: Kind::Follower { .. },
                        ..
                    })
                )
            })
        {
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(50))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        let mut new_data = false;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                while let Ok((mut s, _)) = listener.accept() {
                    let t = Token(conns.len());
                    poll.registry()
                        .register(&mut s, t, Interest::READABLE | Interest::WRITABLE)
                        .expect("register");
                    conns.push(Some(Conn {
                        s,
                        kind: Kind::New(Vec::new()),
                    }));
                }
                continue;
            }
            let i = ev.token().0;
            let Some(c) = conns[i].as_mut() else { continue };
            let mut close = false;
            if ev.is_readable() || ev.is_read_closed() {
                loop {
                    match c.s.read(&mut buf) {
                        Ok(0) => {
                            if matches!(c.kind, Kind::Ingest) {
                                ended = true;
                            }
                            close = true;
                            break;
                        }
                        Ok(n) => match &mut c.kind {
                            Kind::New(head) => {
                                head.extend_from_slice(&buf[..n]);
                                if let Some(p) = find(head, b"\r\n\r\n") {
                                    if head.starts_with(b"PUT") {
                                        log.extend_from_slice(&head[p + 4..]);
                                        new_data = true;
                                        c.kind = Kind::Ingest;
                                    } else {
                                        let _ = c.s.write_all(HEAD);
                                        c.kind = Kind::Follower {
                                            pos: base + log.len() as u64,
                                            blocked: false,
                                        };
                                    }
                                }
                            }
                            Kind::Ingest => {
                                log.extend_from_slice(&buf[..n]);
                                new_data = true;
                                tail.extend_from_slice(&buf[n.saturating_sub(7)..n]);
                                tail.drain(..tail.len().saturating_sub(7));
                                if tail == b"\r\n0\r\n\r\n" && !ended {
                                    ended = true;
                                    let _ = c.s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                                }
                            }
                            Kind::Follower { .. } => {}
                        },
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => {}
                        Err(_) => {
                            close = true;
                            break;
                        }
                    }
                }
            }
            if !close && ev.is_writable() {
                if let Kind::Follower { blocked, .. } = &mut c.kind {
                    *blocked = false;
                }
                close = !push(c, &log, base);
            }
            if close && let Some(mut c) = conns[i].take() {
                let _ = poll.registry().deregister(&mut c.s);
            }
        }
        if new_data {
            for slot in conns.iter_mut() {
                if let Some(c) = slot
                    && !push(c, &log, base)
                {
                    *slot = None;
                }
            }
        }
        // Drop what every follower has been sent.
        if log.len() > 16 << 20 {
            let min = conns
                .iter()
                .filter_map(|c| match c {
                    Some(Conn {
                        kind: Kind::Follower { pos, .. },
                        ..
                    }) => Some(*pos),
                    _ => None,
                })
                .min()
                .unwrap_or(base + log.len() as u64);
            let n = (min - base) as usize;
            if n > 8 << 20 {
                log.drain(..n);
                base += n as u64;
            }
        }
    }
}

/// Single-stream loopback throughput: one writer thread pushing 1 MiB writes, one reader.
fn single_stream(secs: f64) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = std::thread::spawn(move || {
        let (mut s, _) = l.accept().expect("accept");
        let buf = vec![7u8; 1 << 20];
        while !s2.load(Ordering::Relaxed) {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut buf = vec![0u8; 1 << 20];
    let t0 = Instant::now();
    let mut total = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n as u64,
        }
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    drop(s);
    let _ = writer.join();
    rate
}

fn main() {
    let secs: f64 = env_or("BENCH_SECS", 5.0);
    let followers: usize = env_or("BENCH_FOLLOWERS", 1000);
    let readers: usize = env_or::<usize>("BENCH_READERS", 2).max(1);
    let tick = Duration::from_secs_f64(env_or::<f64>("BENCH_TICK_MS", 2.0) / 1e3);
    let capacity: String = env_or("BENCH_CAPACITY", "256MiB".to_string());
    let rates: Vec<f64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "1,4,50".into())
        .split(',')
        .filter_map(|r| r.trim().parse::<f64>().ok())
        .map(|r| r * 1e6)
        .collect();
    let servers: String = env_or("BENCH_SERVERS", "fanout,vcache".to_string());
    let nofile = raise_nofile();
    let dir = std::env::temp_dir().join(format!("vcache-bench-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");

    println!(
        "live fan-out benchmark: {followers} followers on {readers} reader threads, one chunked PUT publisher \
         writing every {:.1} ms, {secs} s per row, ring {capacity}, {} cores, loopback, RLIMIT_NOFILE {nofile}",
        tick.as_secs_f64() * 1e3,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    println!(
        "single-stream loopback throughput (1 MiB writes): {:.1} MB/s",
        single_stream(secs.min(3.0)) / 1e6
    );
    for (i, rate) in rates.iter().enumerate() {
        println!(
            "\n-- ingest {:.0} MB/s ({:.0} Mbit/s) to {followers} followers",
            rate / 1e6,
            rate * 8.0 / 1e6
        );
        if servers.contains("fanout") {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = l.local_addr().expect("addr").port();
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = stop.clone();
            let server = std::thread::spawn(move || fanout_server(l, s2));
            let row = run_row(port, followers, readers, *rate, secs, tick);
            stop.store(true, Ordering::Relaxed);
            let _ = server.join();
            row.print("in-process fan-out");
        }
        if servers.contains("vcache") {
            let tag = format!("r{i}");
            let (mut v, port) = start_vcache(&dir, &tag, followers, &capacity);
            let row = run_row(port, followers, readers, *rate, secs, tick);
            row.print("vcache");
            if let Ok(Some(status)) = v.0.try_wait() {
                println!(
                    "{:<24} vcache EXITED during the row: {status}; its log ends:",
                    ""
                );
                let log = std::fs::read_to_string(dir.join(format!("vcache-{tag}.log")))
                    .unwrap_or_default();
                let keep = std::env::temp_dir().join(format!(
                    "vcache-bench-live-died-{}-{tag}.log",
                    std::process::id()
                ));
                if std::fs::write(&keep, &log).is_ok() {
                    println!("{:<24} (log kept at {})", "", keep.display());
                }
                let lines: Vec<&str> = log.lines().collect();
                for l in &lines[lines.len().saturating_sub(20)..] {
                    println!("{:<24}   {l}", "");
                }
            }
            println!(
                "{:<24} vcache_followers_dropped_total {}",
                "",
                metric(port, "vcache_followers_dropped_total")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

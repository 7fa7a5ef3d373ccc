//! `live`: 1,000 followers of one channel published at 1.3 Mbit/s (an 8 KiB block every 50 ms, each
//! starting with its send time), publish-to-delivery delay p50/p99 as seen by one epoll follower
//! client thread — from vcache and from a minimal relay in this file (one thread, epoll: one read from
//! the publisher, one write per follower). Also vcache's own `vcache_follower_delay_seconds`
//! histogram from /metrics when it has one.

use crate::common::*;
use crate::{Ctx, Report, Samples, start_vcache};

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const BLOCK: u64 = 8192;
/// Magic (8), send time in ns since the shared origin (8), block number (8).
const STAMP: usize = 24;
const MAGIC: [u8; 8] = *b"VCTABLE!";
const LISTENER: u64 = u64::MAX;

/// A level-triggered epoll set.
struct Epoll(i32);

impl Epoll {
    fn new() -> Epoll {
        // SAFETY: epoll_create1 has no memory preconditions.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1");
        Epoll(fd)
    }

    fn add(&self, fd: i32, token: u64) {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: a valid epoll fd, a valid fd and an initialised event.
        let r = unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl");
    }

    /// Ready tokens (waits at most `ms`).
    fn wait(&self, events: &mut [libc::epoll_event], ms: i32) -> Vec<u64> {
        // SAFETY: `events` is a valid buffer of its length.
        let n = unsafe { libc::epoll_wait(self.0, events.as_mut_ptr(), events.len() as i32, ms) };
        events[..n.max(0) as usize].iter().map(|e| e.u64).collect()
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: closing the fd this owns.
        unsafe { libc::close(self.0) };
    }
}

/// One follower's response parser: head, then chunks; stamps at every block start.
struct Follower {
    s: Option<TcpStream>,
    head: Vec<u8>,
    /// Chunk-size line so far, or None inside a chunk's data / its CRLF.
    line: Option<Vec<u8>>,
    left: u64,
    crlf: u8,
    offset: u64,
    stamp: [u8; STAMP],
}

impl Follower {
    /// Feed bytes; delays (ns) into `out`. False when the stream is bad.
    fn feed(&mut self, d: &[u8], now: u64, out: &mut Vec<u64>, ready: &AtomicUsize) -> bool {
        if self.line.is_none() && self.left == 0 && self.crlf == 0 {
            self.head.extend_from_slice(d);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return true;
            };
            let head = String::from_utf8_lossy(&self.head[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") || !head.contains("chunked") {
                eprintln!("live: follower answer: {head}");
                return false;
            }
            self.offset = crate::header(&head, "x-live-start")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            ready.fetch_add(1, Ordering::Relaxed);
            let rest = self.head.split_off(end + 4);
            self.line = Some(Vec::new());
            return self.feed_body(&rest, now, out);
        }
        self.feed_body(d, now, out)
    }

    fn feed_body(&mut self, mut d: &[u8], now: u64, out: &mut Vec<u64>) -> bool {
        while !d.is_empty() {
            if let Some(line) = self.line.as_mut() {
                let p = d.iter().position(|&b| b == b'\n');
                line.extend_from_slice(&d[..p.map_or(d.len(), |p| p + 1)]);
                d = &d[p.map_or(d.len(), |p| p + 1)..];
                if p.is_none() {
                    continue;
                }
                let text = String::from_utf8_lossy(line).trim().to_string();
                line.clear();
                match u64::from_str_radix(text.split(';').next().unwrap_or(""), 16) {
                    Ok(0) => return true, // the end
                    Ok(n) => (self.left, self.crlf, self.line) = (n, 2, None),
                    Err(_) => return false,
                }
            } else if self.left > 0 {
                let n = (self.left as usize).min(d.len());
                self.payload(&d[..n], now, out);
                self.left -= n as u64;
                d = &d[n..];
            } else {
                d = &d[1..];
                self.crlf -= 1;
                if self.crlf == 0 {
                    self.line = Some(Vec::new());
                }
            }
        }
        true
    }

    fn payload(&mut self, s: &[u8], now: u64, out: &mut Vec<u64>) {
        let mut i = 0;
        while i < s.len() {
            let pos = (self.offset % BLOCK) as usize;
            let take = if pos < STAMP {
                let take = (STAMP - pos).min(s.len() - i);
                self.stamp[pos..pos + take].copy_from_slice(&s[i..i + take]);
                if pos + take == STAMP && self.stamp[..8] == MAGIC {
                    let sent = u64::from_le_bytes(self.stamp[8..16].try_into().expect("8"));
                    out.push(now.saturating_sub(sent));
                }
                take
            } else {
                (BLOCK as usize - pos).min(s.len() - i)
            };
            i += take;
            self.offset += take as u64;
        }
    }
}

/// The client: `n` followers of `path` on one thread until `deadline` (ns since `origin`) passes.
fn follow(
    port: u16,
    n: usize,
    origin: Instant,
    ready: &AtomicUsize,
    deadline: &AtomicU64,
) -> Vec<u64> {
    let ep = Epoll::new();
    let mut fs: Vec<Follower> = (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("follower connect");
            s.write_all(b"GET /videos/ch1 HTTP/1.1\r\nHost: b\r\n\r\n")
                .expect("follower request");
            s.set_nonblocking(true).expect("nonblocking");
            ep.add(s.as_raw_fd(), i as u64);
            Follower {
                s: Some(s),
                head: Vec::new(),
                line: None,
                left: 0,
                crlf: 0,
                offset: 0,
                stamp: [0; STAMP],
            }
        })
        .collect();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let (mut buf, mut out) = (vec![0u8; 1 << 16], Vec::new());
    while (origin.elapsed().as_nanos() as u64) < deadline.load(Ordering::Relaxed) {
        for t in ep.wait(&mut events, 10) {
            let f = &mut fs[t as usize];
            while let Some(s) = f.s.as_mut() {
                match s.read(&mut buf) {
                    Ok(n)
                        if n > 0
                            && f.feed(
                                &buf[..n],
                                origin.elapsed().as_nanos() as u64,
                                &mut out,
                                ready,
                            ) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    _ => f.s = None, // closed, failed or bad: dropping it closes and unregisters
                }
            }
        }
    }
    out
}

/// The publisher: a chunked PUT, one 8 KiB block per `tick` for `secs`; blocks sent, and the socket.
fn publish(port: u16, tick: Duration, secs: f64, origin: Instant) -> (u64, TcpStream) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("publisher connect");
    s.set_nodelay(true).ok();
    s.write_all(b"PUT /videos/ch1 HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .expect("publisher head");
    let mut frame = format!("{BLOCK:x}\r\n").into_bytes();
    let at = frame.len();
    frame.extend_from_slice(&random_bytes(BLOCK as usize));
    frame.extend_from_slice(b"\r\n");
    frame[at..at + 8].copy_from_slice(&MAGIC);
    let t0 = Instant::now();
    let mut seq = 0u64;
    while t0.elapsed().as_secs_f64() < secs {
        frame[at + 16..at + 24].copy_from_slice(&seq.to_le_bytes());
        let now = origin.elapsed().as_nanos() as u64;
        frame[at + 8..at + 16].copy_from_slice(&now.to_le_bytes());
        s.write_all(&frame).expect("publish");
        seq += 1;
        let next = tick * seq as u32;
        if let Some(wait) = next.checked_sub(t0.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    (seq, s)
}

/// Delays (ns) and the blocks published, through the server on `port`.
fn measure(port: u16, n: usize, tick: Duration, secs: f64) -> (Vec<u64>, u64) {
    let origin = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let deadline = Arc::new(AtomicU64::new(u64::MAX));
    let (r, d) = (ready.clone(), deadline.clone());
    let client = std::thread::spawn(move || follow(port, n, origin, &r, &d));
    let t = Instant::now();
    while ready.load(Ordering::Relaxed) < n {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "live: only {} of {n} followers got a 200 head",
            ready.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (blocks, s) = publish(port, tick, secs, origin);
    deadline.store(
        origin.elapsed().as_nanos() as u64 + 1_000_000_000,
        Ordering::Relaxed,
    );
    let delays = client.join().expect("follower client");
    drop(s);
    (delays, blocks)
}

/// A relay connection.
enum Role {
    New(Vec<u8>),
    Publisher,
    Follower(Vec<u8>),
}

/// The minimal relay: accept; a PUT is the publisher, anything else a follower that gets a chunked 200
/// head; each publisher read is written once to every follower (the rest kept if the write was short).
fn relay(l: TcpListener, stop: Arc<AtomicBool>) {
    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nTransfer-Encoding: chunked\r\nX-Live-Start: 0\r\n\r\n";
    let ep = Epoll::new();
    l.set_nonblocking(true).expect("nonblocking");
    ep.add(l.as_raw_fd(), LISTENER);
    let mut conns: Vec<Option<(TcpStream, Role)>> = Vec::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut buf = vec![0u8; 1 << 16];
    while !stop.load(Ordering::Relaxed) {
        let pending = conns
            .iter()
            .any(|c| matches!(c, Some((_, Role::Follower(p))) if !p.is_empty()));
        for t in ep.wait(&mut events, if pending { 1 } else { 20 }) {
            if t == LISTENER {
                while let Ok((s, _)) = l.accept() {
                    s.set_nonblocking(true).expect("nonblocking");
                    s.set_nodelay(true).ok();
                    ep.add(s.as_raw_fd(), conns.len() as u64);
                    conns.push(Some((s, Role::New(Vec::new()))));
                }
                continue;
            }
            let Some((s, role)) = conns[t as usize].as_mut() else {
                continue;
            };
            let n = match s.read(&mut buf) {
                Ok(0) => {
                    conns[t as usize] = None;
                    continue;
                }
                Ok(n) => n,
                Err(_) => continue,
            };
            match role {
                Role::New(head) => {
                    head.extend_from_slice(&buf[..n]);
                    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    if head.starts_with(b"PUT") {
                        let rest = head.split_off(end + 4);
                        *role = Role::Publisher;
                        broadcast(&mut conns, &rest);
                    } else {
                        s.write_all(HEAD).expect("follower head");
                        *role = Role::Follower(Vec::new());
                    }
                }
                Role::Publisher => broadcast(&mut conns, &buf[..n]),
                Role::Follower(_) => {}
            }
        }
        if pending {
            broadcast(&mut conns, &[]);
        }
    }
}

/// One write of `data` (after anything still pending) to every follower.
fn broadcast(conns: &mut [Option<(TcpStream, Role)>], data: &[u8]) {
    for c in conns.iter_mut() {
        let Some((s, Role::Follower(pending))) = c.as_mut() else {
            continue;
        };
        pending.extend_from_slice(data);
        if pending.is_empty() {
            continue;
        }
        match s.write(pending) {
            Ok(n) => drop(pending.drain(..n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => *c = None,
        }
    }
}

/// Quantile `q` of a Prometheus histogram `name` in `text` (linear inside the bucket), in seconds.
fn histogram_quantile(text: &str, name: &str, q: f64) -> Option<f64> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, n) in buckets {
        if n >= rank && total > 0.0 {
            if le.is_infinite() {
                return Some(lo);
            }
            return Some(lo + (le - lo) * (rank - below) / (n - below).max(1e-9));
        }
        (lo, below) = (le, n);
    }
    None
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics connect");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .expect("metrics");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn record(s: &mut Samples, who: &str, delays: &mut [u64], blocks: u64, n: usize) {
    delays.sort_unstable();
    let q = |p: f64| {
        delays
            .get(((delays.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, |&v| v as f64 / 1e6)
    };
    s.add(&format!("{who}/p50"), q(0.5));
    s.add(&format!("{who}/p99"), q(0.99));
    s.add(
        &format!("{who}/delivered"),
        100.0 * delays.len() as f64 / (blocks * n as u64).max(1) as f64,
    );
    eprintln!(
        "live: {who} p50 {:.2} ms p99 {:.2} ms, {} of {} blocks",
        q(0.5),
        q(0.99),
        delays.len(),
        blocks * n as u64
    );
}

pub fn run(ctx: &Ctx, report: &mut Report) {
    let n: usize = env_or("BENCH_LIVE_FOLLOWERS", 1000);
    let tick = Duration::from_secs_f64(env_or::<f64>("BENCH_LIVE_TICK_MS", 50.0) / 1e3);
    let body = format!(
        "[limits]\nmax_followers = {}\nmax_connections = {}\n\n[[video]]\nid = \"ch1\"\nkind = \"live\"\ncapacity = \"64MiB\"\ncontent_type = \"video/mp2t\"\n",
        n + 16,
        n + 64
    );
    let mut s = Samples::default();
    let mut server_side = true;
    for _ in 0..ctx.rounds {
        let _ = std::fs::remove_dir_all(ctx.dir.join("data-live"));
        let (p, port) = start_vcache(ctx, "live", &body, &[]);
        let (mut d, blocks) = measure(port, n, tick, ctx.secs);
        record(&mut s, "vcache", &mut d, blocks, n);
        let text = metrics(port);
        for (k, q) in [("server/p50", 0.5), ("server/p99", 0.99)] {
            match histogram_quantile(&text, "vcache_follower_delay_seconds", q) {
                Some(v) => s.add(k, v * 1e3),
                None => server_side = false,
            }
        }
        drop(p);
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let server = std::thread::spawn(move || relay(l, st));
        let (mut d, blocks) = measure(port, n, tick, ctx.secs);
        record(&mut s, "relay", &mut d, blocks, n);
        stop.store(true, Ordering::Relaxed);
        server.join().expect("relay");
    }
    let rate = BLOCK as f64 * 8.0 / tick.as_secs_f64() / 1e6;
    let base = "minimal epoll relay (in-bench)";
    for (k, what) in [("p50", "p50"), ("p99", "p99")] {
        let name = format!("live {n} followers, {rate:.2} Mbit/s: delay {what} (ms)");
        report.row(
            &name,
            Some(s.med(&format!("vcache/{k}"))),
            base,
            Some(s.med(&format!("relay/{k}"))),
        );
    }
    report.row(
        &format!("live {n} followers: blocks delivered (%)"),
        Some(s.med("vcache/delivered")),
        base,
        Some(s.med("relay/delivered")),
    );
    for k in ["p50", "p99"] {
        let v = server_side.then(|| s.med(&format!("server/{k}")));
        report.row(
            &format!("live server-side vcache_follower_delay_seconds {k} (ms)"),
            v,
            "- (vcache's own histogram)",
            None,
        );
    }
    report.notes.push(format!(
        "live: {n} followers on one epoll client thread, one publisher thread writing one {BLOCK}-byte chunk \
         every {:.0} ms (stamped just before write(2)); followers connect and get their 200 head before the \
         first byte; delay = client receive time - stamp; the relay forwards the publisher's chunked body as-is",
        tick.as_secs_f64() * 1e3
    ));
}
